"""The model card: the JSON beside the weights naming the architecture, its input shape and normalisation.

A zoo model's card is `model.json`; an open architecture's is timm's `config.json` (the Hub layout).
Cards come from strangers, so they are read strictly: size-limited, no repeated fields, no NaN.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from contracts.cards import MAX_HEADER_BYTES
from contracts.encoding import is_int, is_number, parse_json
from contracts.errors import ZooError
from schemes.models.catalog import check_input_shape, create_model, is_open, is_registered, list_models
from schemes.models.hub import card_fields, check_open, config_of

#: File names inside an artifact directory.
WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "model.json"
#: An open architecture's card: timm's `config.json`, so the directory is in the Hub layout.
CONFIG_FILE = "config.json"
#: A card is a few hundred bytes; anything this large is not a card.
MAX_CARD_BYTES = 64 * 1024
#: The safetensors metadata key that carries the card.
CARD_METADATA_KEY = "wmnode.card"


@dataclass(frozen=True)
class ModelCard:
    """The JSON card beside the weights: which architecture to build and how inputs are normalised.

    `arch` is a zoo name or an open architecture (`timm:NAME`, `torchvision:NAME`, `schemes.hub`),
    whose keyword arguments are `model_args` and whose final layer `classifier` names. `mean` and
    `std` hold one value per input channel. `extra` is free-form JSON (scheme info, ...); it is
    copied through JSON on construction, so tuples in it become lists.

    A zoo model's card is written in the zoo's own shape (`model.json`); an open architecture's in
    timm's `config.json` shape, so its artifact directory is in the Hub layout. `from_json` reads
    either.
    """

    arch: str
    num_classes: int
    input_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    extra: dict[str, Any] = field(default_factory=dict, hash=False)
    model_args: dict[str, Any] = field(default_factory=dict, hash=False)
    classifier: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.arch, str) or not (is_registered(self.arch) or is_open(self.arch)):
            raise ZooError(f"field 'arch': unknown model {self.arch!r}; known models: {', '.join(list_models())}, "
                           "timm:NAME, torchvision:NAME")  # fmt: skip
        if not is_int(self.num_classes, low=1):
            raise ZooError(f"field 'num_classes' must be a positive integer, got {self.num_classes!r}")
        try:
            shape = check_input_shape(self.input_shape)
        except ZooError as exc:
            raise ZooError(f"field 'input_shape': {exc}") from None
        object.__setattr__(self, "input_shape", shape)
        object.__setattr__(self, "mean", _channel_floats("mean", self.mean, shape[0], positive=False))
        object.__setattr__(self, "std", _channel_floats("std", self.std, shape[0], positive=True))
        object.__setattr__(self, "extra", _json_copy(self.extra))
        object.__setattr__(self, "model_args", _json_copy(self.model_args, "model_args"))
        if is_open(self.arch):
            check_open(self.arch, self.model_args, shape)
        elif self.model_args or self.classifier:
            raise ZooError(f"model {self.arch!r} is a zoo model: its card takes no model_args or classifier")

    @property
    def open(self) -> bool:
        """Whether the architecture is an open one (its card is a `config.json`)."""
        return is_open(self.arch)

    def to_json(self) -> dict[str, Any]:
        """The card as a JSON-ready dict (tuples become lists), in the shape its file takes."""
        if self.open:
            return config_of(self.arch, self.num_classes, self.input_shape, self.mean, self.std,
                             self.model_args, self.classifier, self.extra)  # fmt: skip
        return {
            "arch": self.arch,
            "num_classes": self.num_classes,
            "input_shape": list(self.input_shape),
            "mean": list(self.mean),
            "std": list(self.std),
            "extra": _json_copy(self.extra),
        }

    @classmethod
    def from_json(cls, obj: object) -> ModelCard:
        """Validate a decoded card; unknown or missing fields and wrong types name the field."""
        if not isinstance(obj, dict):
            raise ZooError("a model card must be a JSON object")
        if "architecture" in obj:  # timm's config.json shape
            return cls(**card_fields(obj))
        names = {"arch", "num_classes", "input_shape", "mean", "std", "extra"}
        unknown = sorted(str(key) for key in set(obj) - names)
        if unknown:
            raise ZooError(f"unknown field(s) in model card: {', '.join(unknown)}")
        missing = sorted(names - set(obj))
        if missing:
            raise ZooError(f"missing field(s) in model card: {', '.join(missing)}")
        if not isinstance(obj["arch"], str):
            raise ZooError("field 'arch' must be a string")
        if is_open(obj["arch"]):
            raise ZooError("field 'arch' must name a zoo model (an open architecture's card is a config.json)")
        for name in ("input_shape", "mean", "std"):
            if not isinstance(obj[name], list):
                raise ZooError(f"field {name!r} must be a JSON array")
        return cls(**obj)

    def to_bytes(self) -> bytes:
        """The card file's bytes: sorted keys, indent 2, trailing newline."""
        return (json.dumps(self.to_json(), sort_keys=True, indent=2, allow_nan=False) + "\n").encode()

    @property
    def file_name(self) -> str:
        """`model.json` for a zoo model, `config.json` (the Hub layout) for an open architecture."""
        return CONFIG_FILE if self.open else CARD_FILE

    def build(self, *, max_parameters: int | None = None) -> nn.Module:
        """A freshly initialised model of this card's architecture."""
        return create_model(self.arch, num_classes=self.num_classes, input_shape=self.input_shape,
                            model_args=self.model_args, max_parameters=max_parameters)  # fmt: skip


def _channel_floats(name: str, values: object, channels: int, *, positive: bool) -> tuple[float, ...]:
    if not isinstance(values, tuple | list) or len(values) != channels:
        raise ZooError(f"field {name!r} must hold one number per input channel ({channels}), got {values!r}")
    out: list[float] = []
    for value in values:
        if not is_number(value):
            raise ZooError(f"field {name!r} must hold finite numbers, got {value!r}")
        if positive and value <= 0:
            raise ZooError(f"field {name!r} must hold positive numbers, got {value!r}")
        out.append(float(value))
    return tuple(out)


def _json_copy(extra: object, name: str = "extra") -> dict[str, Any]:
    if not isinstance(extra, dict) or not all(isinstance(key, str) for key in extra):
        raise ZooError(f"field {name!r} must be a JSON object with string keys")
    try:
        copied: dict[str, Any] = json.loads(json.dumps(extra, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ZooError(f"field {name!r} is not JSON-serialisable: {exc}") from exc
    return copied


def read_card(path: Path) -> ModelCard:
    """Read and validate a card file (at most `MAX_CARD_BYTES`)."""
    return ModelCard.from_json(read_json_file(path, MAX_CARD_BYTES, "model card"))


def read_json_file(path: Path, limit: int, what: str) -> Any:
    """Strict JSON from an untrusted file: size-limited, no repeated fields, no NaN/Infinity."""
    return strict_json(read_limited(path, limit, what), f"{what} {path}")


def strict_json(data: bytes | str, what: str) -> Any:
    """Strict JSON from untrusted bytes (contracts.encoding.parse_json): no repeated fields, no
    NaN/Infinity; `what` names it in a ZooError."""
    return parse_json(data, limit=MAX_HEADER_BYTES, floats=True, what=what, error=ZooError)


def read_limited(path: Path, limit: int, what: str) -> bytes:
    try:
        with path.open("rb") as handle:
            raw = handle.read(limit + 1)
    except OSError as exc:
        raise ZooError(f"cannot read {what} {path}: {exc}") from exc
    if len(raw) > limit:
        raise ZooError(f"{what} {path} is larger than {limit} bytes")
    return raw
