"""The owner's bundle directory: everything `embed` made, and everything `verify` needs.

    model.safetensors + model.json   the watermarked model and its card (schemes.zoo)
    verifier.safetensors             the scheme's verifier artifact: what a node cannot derive from
                                     the key (MTLSign: cWM's weights; it may hold no tensor at all)
    info.json                        the scheme's public parameters; "scheme" names the scheme
    key.json                         nonce, owner public key and key_proof (DESIGN §4.2) - the
                                     watermark key derives from key_proof, so keep the bundle
                                     private until you claim; the owner's private key is never here
    report.json                      the embedding report

Nothing is unpickled: weights are safetensors, everything else strict JSON.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import safetensors.torch
import torch

from contracts.errors import WmnodeError
from contracts.identity import KEY_DOMAIN, verify_owner_key
from schemes.models.zoo import ModelCard, load_model, read_json_file, read_weights, save_model
from schemes.watermarks.base import get_scheme

VERIFIER_FILE, INFO_FILE, KEY_FILE, REPORT_FILE = "verifier.safetensors", "info.json", "key.json", "report.json"
_MAX_JSON_BYTES = 64 * 1024
#: A verifier artifact is a small network at most (cWM is about 1 MB).
MAX_VERIFIER_BYTES = 64 * 2**20


class BundleError(WmnodeError):
    http_status = 400


@dataclass(frozen=True)
class KeyRecord:
    nonce: str
    owner: str
    key_proof: str

    @property
    def key(self) -> bytes:
        """The watermark key: SHA-256(D ‖ key_proof), checked against the owner's public key."""
        try:
            proof, nonce = bytes.fromhex(self.key_proof), bytes.fromhex(self.nonce)
        except ValueError as exc:
            raise BundleError(f"key.json: nonce and key_proof must be hex: {exc}") from exc
        key = hashlib.sha256(KEY_DOMAIN + proof).digest()
        verify_owner_key(self.owner, nonce, key, proof)
        return key


@dataclass
class Bundle:
    model: torch.nn.Module
    card: ModelCard
    verifier: dict[str, torch.Tensor]
    info: dict[str, Any]
    key: KeyRecord
    report: dict[str, Any]


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def _read_json(path: Path) -> Any:
    return read_json_file(path, _MAX_JSON_BYTES, "bundle file")


def save_bundle(directory: Path, bundle: Bundle) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    save_model(bundle.model, bundle.card, directory)
    state = {k: v.detach().cpu().contiguous() for k, v in bundle.verifier.items()}
    safetensors.torch.save_file(state, str(directory / VERIFIER_FILE))
    _write_json(directory / INFO_FILE, bundle.info)
    _write_json(
        directory / KEY_FILE, {"nonce": bundle.key.nonce, "owner": bundle.key.owner, "key_proof": bundle.key.key_proof}
    )
    _write_json(directory / REPORT_FILE, bundle.report)


def read_info(path: Path) -> dict[str, Any]:
    """info.json: a JSON object whose "scheme" is a registered scheme (its verify checks the rest, by the
    scheme's one schema in contracts.infos)."""
    info = _read_json(path)
    if not isinstance(info, dict):
        raise BundleError(f"{path} must hold a JSON object")
    get_scheme(info.get("scheme"))
    return info


def read_verifier(path: Path) -> dict[str, torch.Tensor]:
    return read_weights(path, MAX_VERIFIER_BYTES)


def load_bundle(directory: Path) -> Bundle:
    model, card = load_model(directory)
    info = read_info(directory / INFO_FILE)
    key_obj = _read_json(directory / KEY_FILE)
    fields = {"nonce", "owner", "key_proof"}
    if not isinstance(key_obj, dict) or set(key_obj) != fields or not all(isinstance(key_obj[f], str) for f in fields):
        raise BundleError(f"{directory / KEY_FILE} must hold exactly the strings nonce, owner and key_proof")
    key = KeyRecord(**key_obj)
    report = _read_json(directory / REPORT_FILE) if (directory / REPORT_FILE).exists() else {}
    return Bundle(model, card, read_verifier(directory / VERIFIER_FILE), info, key, report)
