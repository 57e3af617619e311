"""The owner's bundle directory, written and loaded with its model (its layout: contracts.bundle).

Nothing is unpickled: weights are safetensors, everything else strict JSON.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import safetensors.torch
import torch

from contracts.bundle import (
    INFO_FILE,
    KEY_FILE,
    MAX_INFO_BYTES,
    MAX_VERIFIER_BYTES,
    REPORT_FILE,
    VERIFIER_FILE,
    KeyRecord,
)
from contracts.errors import MessageError, WmnodeError
from schemes.models.zoo import ModelCard, load_model, read_json_file, read_weights, save_model
from schemes.watermarks.base import get_scheme


class BundleError(WmnodeError):
    http_status = 400


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
    return read_json_file(path, MAX_INFO_BYTES, "bundle file")


def save_bundle(directory: Path, bundle: Bundle) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    save_model(bundle.model, bundle.card, directory)
    state = {k: v.detach().cpu().contiguous() for k, v in bundle.verifier.items()}
    safetensors.torch.save_file(state, str(directory / VERIFIER_FILE))
    _write_json(directory / INFO_FILE, bundle.info)
    _write_json(directory / KEY_FILE, bundle.key.to_json())
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
    try:
        key = KeyRecord.from_json(_read_json(directory / KEY_FILE), str(directory / KEY_FILE))
    except MessageError as exc:
        raise BundleError(str(exc)) from None
    report = _read_json(directory / REPORT_FILE) if (directory / REPORT_FILE).exists() else {}
    return Bundle(model, card, read_verifier(directory / VERIFIER_FILE), info, key, report)
