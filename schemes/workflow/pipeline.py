"""What the CLI (and later the node's verifier) runs: embed into a bundle, verify a suspect, and
write key samples as images for a person to look at."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import shutil
import struct
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from contracts.bundle import KeyRecord
from contracts.datasets import COMMUNITY_SPLIT_SEED, COMMUNITY_TEST_FRACTION, PinnedDataset, check_pinned
from contracts.errors import ConfigError, SchemeError
from contracts.identity import Identity, derive_owner_key
from mtlsign.pikey import key_sequence
from mtlsign.qr import qr_modules, render
from mtlsign.verify import Verdict, WatermarkInfo
from schemes.data.community import pin, require_community_data
from schemes.data.dataset import Dataset
from schemes.data.datasets import load_dataset
from schemes.models._passport_layer import passport_variant
from schemes.models.zoo import ModelCard, check_state, load_model, model_to_bytes, save_model, transfer_weights
from schemes.training.attacks import prune_global_l1
from schemes.training.distributed import broadcast_bytes, broadcast_modules, check_in_step, distributed
from schemes.training.loops import Progress, accuracy, default_device, rank, train_classifier
from schemes.training.resume import barrier, checkpoints
from schemes.watermarks.base import get_scheme, make_config
from schemes.workflow.bundle import Bundle, load_bundle, save_bundle


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
    start_from: torch.nn.Module | None = None,
    model_path: Path | None = None,
    pinned: Sequence[PinnedDataset] = (),
    resume: bool = False,
    notice: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Derive an owner-bound key (DESIGN §4.2) from a fresh nonce (or the one given, to repeat an
    embedding), embed `scheme` into a fresh `arch` model (or the variant the scheme asks for), or
    into `start_from` (an existing model of that architecture: the overwriting attack), write the
    bundle; returns the report.

    With `model_path` (an artifact directory, a Hub-layout directory or a `.safetensors` file) the
    owner's own trained model is watermarked by fine-tuning: the architecture, input shape and
    normalisation come from its card (`arch` is not used), the data must have its classes, and the
    fidelity baseline (`clean_accuracy`) is that model on the same test split.

    `pinned` are the data sets a community pins (its config's `[[datasets]]`): a `dataset` named
    as one of them is read in its format from its files (or `data_path`), which must match its
    manifest, and goes by its community name, so every member can rebuild the verification inputs."""
    request = _EmbedRequest(identity, arch, dataset, Path(out), scheme, data_path, overrides, progress, nonce,
                            start_from, model_path, tuple(pinned), resume, notice)  # fmt: skip
    with distributed():  # one process, or one of torchrun's (schemes.distributed)
        return _embed_to_bundle(request)


@dataclass(frozen=True)
class _EmbedRequest:
    """What `embed_to_bundle` was asked for (its arguments, in its order)."""

    identity: Identity
    arch: str
    dataset: str
    out: Path
    scheme: str
    data_path: Path | None
    overrides: dict[str, Any] | None
    progress: Progress | None
    nonce: bytes | None
    start_from: torch.nn.Module | None
    model_path: Path | None
    pinned: tuple[PinnedDataset, ...]
    resume: bool
    notice: Callable[[str], None] | None


def _embed_to_bundle(request: _EmbedRequest) -> dict[str, Any]:
    """The embedding as named steps: the scheme and its config, the owner's model if given, the
    community's split of the data, the card, the initial model, the run's nonce and key, the scheme's
    embed, the bundle."""
    spec = get_scheme(request.scheme)
    config = make_config(spec, request.overrides)
    given, given_card = (None, None) if request.model_path is None else load_model(request.model_path)
    data = _community_split(request, given_card)
    card = _card_for(spec.model_arch(request.arch if given_card is None else given_card.arch),
                     data.num_classes + spec.extra_classes, data, request.dataset, given_card)  # fmt: skip
    torch.manual_seed(config.seed)  # the initial weights, in the one place a model is created
    model, given = _initial_model(card, data.num_classes, given, given_card, request.start_from)
    given_hash = None if given is None or given_card is None else hashlib.sha256(model_to_bytes(given, given_card))
    run = {"scheme": spec.name, "config": _plain(dataclasses.asdict(config)), "card": card.to_json(),
           "dataset": request.dataset, "owner": request.identity.public_hex,
           "model": None if given_hash is None else given_hash.hexdigest()}  # fmt: skip
    if not spec.key_inputs:
        require_community_data(data, spec.name)  # refuses, saying what would work, before any training
    report_verifiable = verifiable(spec.key_inputs, spec.name, data.name)
    if request.notice is not None and rank() == 0:
        request.notice(report_verifiable)  # said before any training
    nonce = _run_nonce(request.out / CHECKPOINT_DIR, run, request.nonce, request.resume)
    owner_key = derive_owner_key(request.identity, nonce)
    with checkpoints(request.out / CHECKPOINT_DIR):
        wm = spec.embed(model, data, owner_key.key, config, request.progress, clean=given)
    check_in_step(wm.model)
    key = KeyRecord(nonce.hex(), request.identity.public_hex, owner_key.key_proof.hex())
    report = {
        **wm.report,
        "baseline": "the given model" if given is not None else "a clean model trained alike",
        "verifiable": report_verifiable,
    }
    if rank() == 0:
        save_bundle(request.out, Bundle(wm.model, card, wm.verifier, wm.info, key, report))
        shutil.rmtree(request.out / CHECKPOINT_DIR, ignore_errors=True)
    return {**report, "scheme": spec.name, "bundle": str(request.out), "key_hash": owner_key.key_hash}


def _community_split(request: _EmbedRequest, given_card: ModelCard | None) -> Dataset:
    """The data as the community splits it (contracts.datasets), so every node can rebuild key-derived
    inputs from it; at the given model's input shape and normalisation, and named as asked."""
    fmt, data_path = _resolve_pinned(request.dataset, request.data_path, request.pinned)
    data = load_dataset(
        fmt,
        path=data_path,
        seed=COMMUNITY_SPLIT_SEED,
        test_fraction=COMMUNITY_TEST_FRACTION,
        input_shape=None if given_card is None else given_card.input_shape,
        normalisation=None if given_card is None else (given_card.mean, given_card.std),
    )
    return replace(data, name=request.dataset)


def _card_for(arch: str, num_classes: int, data: Dataset, dataset: str, given_card: ModelCard | None) -> ModelCard:
    """The card of the model the scheme trains: its arch and classes, the data's shape and
    normalisation, and the given model's arguments and classifier."""
    return ModelCard(
        arch,
        num_classes,
        data.input_shape,
        tuple(data.mean),
        tuple(data.std),
        {"dataset": dataset},
        model_args={} if given_card is None else given_card.model_args,
        classifier="" if given_card is None else given_card.classifier,
    )


def _initial_model(
    card: ModelCard,
    classes: int,
    given: torch.nn.Module | None,
    given_card: ModelCard | None,
    start_from: torch.nn.Module | None,
) -> tuple[torch.nn.Module, torch.nn.Module | None]:
    """(the model to embed into, the given model), on the device: a fresh `card` model, or one holding
    the given model's weights; `start_from`'s weights loaded over it (the overwriting attack); every
    rank starting from rank 0's weights."""
    device = default_device()
    if given is not None and given_card is not None:
        model = _start_from_given(given, given_card, card, classes).to(device)
        given = given.to(device)
    else:
        model = card.build().to(device)
    if start_from is not None:
        model.load_state_dict(start_from.state_dict())
    broadcast_modules(model)  # every rank starts from rank 0's weights
    return model, given


def verifiable(key_inputs: bool, scheme: str, dataset: str) -> str:
    """Whether a community could verify a claim on the result (DESIGN §6.1), in words; data no
    member holds is refused by the scheme itself, before any training, saying what would work."""
    if key_inputs:
        return f"verifiable by any community: {scheme}'s verification inputs are generated from the key"
    return f"verifiable by communities that hold {dataset!r}: {scheme} rebuilds its inputs from the key over it"


#: Where an embedding keeps its epoch checkpoints, inside the bundle directory it writes.
CHECKPOINT_DIR = ".checkpoint"
_RUN_FILE = "run.json"


def _plain(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=list))


def _run_nonce(directory: Path, run: dict[str, Any], nonce: bytes | None, resume: bool) -> bytes:
    """The nonce of this run: a resumed run's own (its command must be the one that started it),
    else a fresh one (or the one given), recorded beside the checkpoints before any training."""
    record = directory / _RUN_FILE
    found = record.is_file()
    barrier()  # every rank has looked before rank 0 writes
    if resume:
        if not found:
            raise SchemeError(f"nothing to resume: {directory} holds no checkpoint of an earlier run")
        saved = json.loads(record.read_text())
        if {k: v for k, v in saved.items() if k != "nonce"} != run:
            changed = sorted(k for k in run if saved.get(k) != run[k])
            raise SchemeError(f"--resume: this command differs from the run it would resume in {', '.join(changed)}")
        return bytes.fromhex(saved["nonce"])
    if found:
        raise SchemeError(
            f"{directory.parent} holds the checkpoints of an unfinished embedding: pass --resume to continue it, "
            f"or remove {directory} to start again"
        )
    chosen = broadcast_bytes(os.urandom(16) if nonce is None else nonce, 16)  # rank 0's, on every rank
    if rank() == 0:
        directory.mkdir(parents=True, exist_ok=True)
        tmp = record.with_name(record.name + ".tmp")
        tmp.write_text(json.dumps({**run, "nonce": chosen.hex()}, sort_keys=True))
        os.replace(tmp, record)
    barrier()
    return chosen


def _resolve_pinned(dataset: str, data_path: Path | None, pinned: Sequence[PinnedDataset]) -> tuple[str, Path | None]:
    """(format, path) of `dataset`: a pinned set's, checked against its manifest and made available
    under its community name in this process; any other name is a format read from `data_path`."""
    chosen = next((p for p in pinned if p.name == dataset), None)
    if chosen is None:
        return dataset, data_path
    local = replace(chosen, path=Path(data_path)) if data_path is not None else chosen
    try:
        check_pinned(local)
    except ConfigError as exc:
        raise SchemeError(str(exc)) from None
    pin(local.name, local.format, local.path, local.num_classes)
    return local.format, local.path


def _start_from_given(given: torch.nn.Module, given_card: ModelCard, card: ModelCard, classes: int) -> torch.nn.Module:
    """The scheme's model holding the given model's weights: the same architecture with its trained
    classifier extended (new label's extra class), or its passport variant computing what it did."""
    if given_card.num_classes != classes:
        raise SchemeError(
            f"the given model answers {given_card.num_classes} classes but the data set has {classes}: "
            "watermark it on the data it was trained for"
        )
    if card.arch.endswith("-passport"):
        if not card.open:
            raise SchemeError(
                f"passport: {given_card.arch} is a zoo model, whose passport variant is its own network: "
                "watermark a zoo model from scratch (--arch), or give a timm: or torchvision: model"
            )
        model = passport_variant(copy.deepcopy(given), card.input_shape, card.arch)
        check_state(card.build().state_dict(), model.state_dict())
        return model
    model = card.build()
    transfer_weights(given, model)
    return model


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


def attack_model(
    model_path: Path,
    kind: str,
    out: Path,
    *,
    dataset: str = "digits",
    data_path: Path | None = None,
    epochs: int = 5,
    lr: float = 5e-4,
    amount: float = 0.3,
    seed: int = 1,
    identity: Identity | None = None,
    scheme: str = "mtlsign",
    overrides: dict[str, Any] | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """The thief's moves on a stolen model file: `finetune` every layer on the thief's data, `prune`
    the smallest weights, or `overwrite` (embed the thief's own watermark into the stolen weights,
    skipping the scheme's clean training, and write the thief's bundle)."""
    started = time.perf_counter()
    model, card = load_model(model_path)
    data = load_dataset(dataset, path=data_path)  # the default split: `seed` drives the training only
    if data.input_shape != card.input_shape:
        raise SchemeError(f"{dataset} has inputs {data.input_shape}; the model takes {card.input_shape}")
    before = accuracy(model, data.x_test, data.y_test)
    if kind == "overwrite":
        if identity is None:
            raise SchemeError("the overwriting attack embeds the thief's watermark: it needs the thief's identity")
        report = embed_to_bundle(identity, card.arch, dataset, out, scheme=scheme, data_path=data_path,
                                 overrides={**_skip_clean_training(scheme), **(overrides or {})}, progress=progress,
                                 start_from=model)  # fmt: skip
        overwritten, _ = load_model(out)
        return {
            **report,
            "kind": kind,
            "accuracy_before": before,
            "accuracy": accuracy(overwritten, data.x_test, data.y_test),  # on the same split as `before`
            "seconds": time.perf_counter() - started,
        }
    if kind == "finetune":
        generator = torch.Generator().manual_seed(seed)
        attacked = train_classifier(copy.deepcopy(model), data.x_train, data.y_train, epochs=epochs, lr=lr,
                                    batch_size=64, generator=generator, progress=progress)  # fmt: skip
    elif kind == "prune":
        attacked = prune_global_l1(model, amount)
    else:
        raise SchemeError(f"unknown attack {kind!r}: finetune, prune or overwrite")
    attacked.eval()
    save_model(attacked, card, out)
    return {
        "kind": kind,
        "accuracy_before": before,
        "accuracy": accuracy(attacked, data.x_test, data.y_test),
        "out": str(out),
        "seconds": time.perf_counter() - started,
    }


def _skip_clean_training(scheme: str) -> dict[str, Any]:
    """The option that skips a scheme's own clean training, where it has one (MTLSign's)."""
    names = {f.name for f in dataclasses.fields(get_scheme(scheme).config)}
    return {"clean_epochs": 0} if "clean_epochs" in names else {}
