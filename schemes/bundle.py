"""The owner's bundle directory: everything `embed` made, and everything `verify` needs.

    model.safetensors + model.json   the watermarked model and its card (schemes.zoo)
    verifier.safetensors             the scheme's verifier artifact (MTLSign: cWM's weights)
    info.json                        the scheme's public parameters (MTLSign: WatermarkInfo)
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

from mtlsign.head import WatermarkHead, head_input_size
from mtlsign.verify import WatermarkInfo
from registry.errors import WmnodeError
from registry.identity import KEY_DOMAIN, verify_owner_key
from schemes.zoo import ModelCard, check_state, load_model, read_json_file, read_weights, save_model

VERIFIER_FILE, INFO_FILE, KEY_FILE, REPORT_FILE = "verifier.safetensors", "info.json", "key.json", "report.json"
_MAX_JSON_BYTES = 64 * 1024


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
        key = hashlib.sha256(KEY_DOMAIN + bytes.fromhex(self.key_proof)).digest()
        verify_owner_key(self.owner, bytes.fromhex(self.nonce), key, bytes.fromhex(self.key_proof))
        return key


@dataclass
class Bundle:
    model: torch.nn.Module
    card: ModelCard
    head: WatermarkHead
    info: WatermarkInfo
    key: KeyRecord
    report: dict[str, Any]


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def _read_json(path: Path) -> Any:
    return read_json_file(path, _MAX_JSON_BYTES, "bundle file")


def save_bundle(directory: Path, bundle: Bundle) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    save_model(bundle.model, bundle.card, directory)
    state = {k: v.detach().cpu().contiguous() for k, v in bundle.head.state_dict().items()}
    safetensors.torch.save_file(state, str(directory / VERIFIER_FILE))
    _write_json(directory / INFO_FILE, bundle.info.to_json())
    _write_json(
        directory / KEY_FILE, {"nonce": bundle.key.nonce, "owner": bundle.key.owner, "key_proof": bundle.key.key_proof}
    )
    _write_json(directory / REPORT_FILE, bundle.report)


def load_head(path: Path, model: torch.nn.Module, info: WatermarkInfo) -> WatermarkHead:
    """cWM from its safetensors file, shaped for `model` (the suspect) and `info`."""
    head = WatermarkHead(head_input_size(model, info.taps, info.input_shape, info.pool), info.hidden, info.pool)
    weights = read_weights(path, 64 * 2**20)
    check_state(head.state_dict(), weights)
    head.load_state_dict(weights)
    return head.eval()


def load_bundle(directory: Path) -> Bundle:
    model, card = load_model(directory)
    try:
        info = WatermarkInfo.from_json(_read_json(directory / INFO_FILE))
        key_obj = _read_json(directory / KEY_FILE)
        key = (
            KeyRecord(**key_obj)
            if isinstance(key_obj, dict) and set(key_obj) == {"nonce", "owner", "key_proof"}
            else None
        )
    except (TypeError, ValueError) as exc:
        raise BundleError(f"{directory}: {exc}") from exc
    if key is None:
        raise BundleError(f"{directory / KEY_FILE} must hold exactly nonce, owner and key_proof")
    report = _read_json(directory / REPORT_FILE) if (directory / REPORT_FILE).exists() else {}
    return Bundle(model, card, load_head(directory / VERIFIER_FILE, model, info), info, key, report)
