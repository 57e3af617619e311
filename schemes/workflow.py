"""What the CLI (and later the node's verifier) runs: embed into a bundle, verify a suspect, and
write key samples as images for a person to look at."""

from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mtlsign.pikey import key_sequence
from mtlsign.qr import qr_modules, render
from mtlsign.verify import Verdict, WatermarkInfo
from registry.identity import Identity, derive_owner_key
from schemes.base import SchemeError, get_scheme, make_config
from schemes.bundle import Bundle, KeyRecord, load_bundle, save_bundle
from schemes.data import load_dataset
from schemes.training import Progress, default_device
from schemes.zoo import ModelCard, create_model, load_model


def embed_to_bundle(
    identity: Identity,
    arch: str,
    dataset: str,
    out: Path,
    *,
    scheme: str = "mtlsign",
    data_path: Path | None = None,
    overrides: dict[str, Any] | None = None,
    progress: Progress | None = None,
    nonce: bytes | None = None,
) -> dict[str, Any]:
    """Derive an owner-bound key (DESIGN §4.2) from a fresh nonce (or the one given, to repeat an
    embedding), embed `scheme` into a fresh `arch` model (or the variant the scheme asks for),
    write the bundle; returns the report."""
    spec = get_scheme(scheme)
    config = make_config(spec, overrides)
    data = load_dataset(dataset, path=data_path, seed=config.seed)
    model_arch, num_classes = spec.model_arch(arch), data.num_classes + spec.extra_classes
    torch.manual_seed(config.seed)  # the initial weights, in the one place a model is created
    model = create_model(model_arch, num_classes=num_classes, input_shape=data.input_shape).to(default_device())
    nonce = os.urandom(16) if nonce is None else nonce
    owner_key = derive_owner_key(identity, nonce)
    wm = spec.embed(model, data, owner_key.key, config, progress)
    card = ModelCard(model_arch, num_classes, data.input_shape, tuple(data.mean), tuple(data.std), {"dataset": dataset})
    key = KeyRecord(nonce.hex(), identity.public_hex, owner_key.key_proof.hex())
    save_bundle(out, Bundle(wm.model, card, wm.verifier, wm.info, key, wm.report))
    return {**wm.report, "scheme": spec.name, "bundle": str(out), "key_hash": owner_key.key_hash}


def verify_suspect(bundle_dir: Path, suspect: Path) -> Verdict:
    """The bundle's scheme, looked up by the name in its info, on a suspect model file."""
    bundle = load_bundle(bundle_dir)
    model, _ = load_model(suspect)
    return get_scheme(bundle.info["scheme"]).verify(
        model.to(default_device()), bundle.key.key, bundle.verifier, bundle.info
    )


def _png(pixels: np.ndarray) -> bytes:
    """A greyscale 8-bit PNG (RFC 2083) of an (H, W) uint8 array."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    height, width = pixels.shape
    rows = b"".join(b"\x00" + pixels[r].tobytes() for r in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def write_samples(bundle_dir: Path, n: int, out: Path, scale: int = 4) -> list[dict[str, Any]]:
    """The first n key samples as PNG files (before normalisation, scaled by a whole number) and
    a JSON list of their integers and label bits."""
    bundle = load_bundle(bundle_dir)
    if bundle.info["scheme"] != "mtlsign":
        raise SchemeError(f"{bundle_dir} holds a {bundle.info['scheme']!r} watermark; QR key samples are MTLSign's")
    info = WatermarkInfo.from_json(bundle.info)
    seq = key_sequence(bundle.key.key, info.n)
    count = min(n, info.n)
    images = render(qr_modules(seq.integers[:count], seq.m), *info.input_shape)
    out.mkdir(parents=True, exist_ok=True)
    listing = []
    for i in range(count):
        grey = (images[i].mean(axis=0) * 255).astype(np.uint8)
        name = f"sample_{i:04d}.png"
        (out / name).write_bytes(_png(np.repeat(np.repeat(grey, scale, 0), scale, 1)))
        listing.append({"file": name, "integer": int(seq.integers[i]), "label": int(seq.labels[i])})
    (out / "samples.json").write_text(json.dumps(listing, indent=2) + "\n")
    return listing
