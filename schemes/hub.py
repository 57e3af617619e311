"""The open zoo: any timm or torchvision classification architecture, built by name from a card in
timm's `config.json` shape, and model directories in timm's Hugging Face Hub layout.

A card names the architecture (`timm:NAME`, `torchvision:NAME`, or a bare timm name as timm's own
`config.json` writes it), `num_classes`, `pretrained_cfg` (`input_size`, `mean`, `std`,
`classifier`) and `model_args`, plus `wmnode_format`. Everything in it is untrusted:

* **Names** must be a plain identifier that the library lists; `hf-hub:` / `timm/` names, paths
  and versions are refused (timm would fetch a config for those).
* **Keyword arguments** pass an allow-list of plain hyper-parameters with bounded values.
  `pretrained`, `weights`, `checkpoint_path` (a `torch.load`), `pretrained_cfg*`, `cache_dir`,
  file paths and URLs are refused by name; everything else not listed is refused too. Models are
  always built with `pretrained=False` / `weights=None`: nothing is downloaded or unpickled.
* **Size**: the parameter count is taken on the `meta` device before anything is allocated, and
  checked against the caller's cap.
* **Weights** come from `model.safetensors` only, checked key by key, shape and dtype against the
  architecture on `meta` before they are loaded.

`pretrained_cfg` fields other than the four above (`url`, `hf_hub_id`, `crop_pct`, ...) are kept in
the card as they are, never acted upon.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from schemes.zoo import ZooError, check_state, read_json_file, read_weights

__all__ = [
    "CONFIG_FILE",
    "FORMAT",
    "HubCard",
    "MAX_PARAMETERS",
    "build_model",
    "load_hub_dir",
    "parameter_count",
]

CONFIG_FILE = "config.json"
HUB_WEIGHTS_FILE = "model.safetensors"
#: The card format this module writes and reads.
FORMAT = 1
#: Default cap on parameters (a ViT-L is ~300 M); communities set their own.
MAX_PARAMETERS = 350_000_000
_MAX_CONFIG_BYTES = 64 * 1024
_NAME_RE = re.compile(r"[a-z][a-z0-9_]*(?:\.[a-z0-9_]+)?")
_REFUSED = {
    "pretrained": "models are built untrained here; the weights come from model.safetensors",
    "weights": "models are built untrained here; the weights come from model.safetensors",
    "checkpoint_path": "a checkpoint path is a torch.load of a file the card names",
    "pretrained_cfg": "pretrained_cfg is read from the card's own field, never passed on",
    "pretrained_cfg_overlay": "pretrained_cfg is read from the card's own field, never passed on",
    "cache_dir": "nothing is downloaded",
    "features_only": "a classifier is what is watermarked",
}


def _fraction(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and 0.0 <= float(value) < 1.0


def _side(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 8 <= value <= 1024


def _small_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 64


#: The keyword arguments a card may set, per library, with what their values may be.
ALLOWED_ARGS: dict[str, dict[str, Callable[[object], bool]]] = {
    "timm": {
        "drop_rate": _fraction,
        "drop_path_rate": _fraction,
        "proj_drop_rate": _fraction,
        "attn_drop_rate": _fraction,
        "global_pool": lambda v: v in ("avg", "max", "avgmax", "catavgmax", "token", "map", ""),
        "in_chans": lambda v: v in (1, 3),
        "img_size": _side,
        "patch_size": _small_int,
    },
    "torchvision": {
        "dropout": _fraction,
        "attention_dropout": _fraction,
        "stochastic_depth_prob": _fraction,
        "image_size": _side,
        "aux_logits": lambda v: v is False,
        "init_weights": lambda v: isinstance(v, bool),
    },
}


@dataclass(frozen=True)
class HubCard:
    """What builds a model: library, name, classes, input and normalisation, allow-listed args."""

    library: str
    name: str
    num_classes: int
    input_size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classifier: str = ""
    model_args: dict[str, Any] = field(default_factory=dict, hash=False)
    #: `pretrained_cfg` fields kept as they came (never acted upon).
    extra_cfg: dict[str, Any] = field(default_factory=dict, hash=False)

    @property
    def architecture(self) -> str:
        return f"{self.library}:{self.name}"

    @classmethod
    def from_config(cls, obj: object) -> HubCard:
        """Validate a decoded `config.json`; every refusal names the field and says why."""
        if not isinstance(obj, dict):
            raise ZooError("config.json must be a JSON object")
        version = obj.get("wmnode_format", FORMAT)
        if version != FORMAT:
            raise ZooError(f"config.json: wmnode_format {version!r} is not {FORMAT}")
        library, name = _architecture(obj.get("architecture"))
        classes = obj.get("num_classes")
        if isinstance(classes, bool) or not isinstance(classes, int) or not 1 <= classes <= 100_000:
            raise ZooError(f"config.json: num_classes must be an integer in 1-100000, got {classes!r}")
        cfg = obj.get("pretrained_cfg", {})
        if not isinstance(cfg, dict):
            raise ZooError("config.json: pretrained_cfg must be an object")
        size = cfg.get("input_size")
        if not (isinstance(size, list) and len(size) == 3 and size[0] in (1, 3) and all(_side(n) for n in size[1:])):
            raise ZooError(
                f"config.json: pretrained_cfg.input_size must be [1 or 3, H, W] with sides 8-1024, got {size!r}"
            )
        channels = size[0]
        mean, std = _floats(cfg.get("mean"), "mean", channels, False), _floats(cfg.get("std"), "std", channels, True)
        classifier = cfg.get("classifier", "")
        if not isinstance(classifier, str) or not re.fullmatch(r"[A-Za-z0-9_.]{0,64}", classifier):
            raise ZooError(f"config.json: pretrained_cfg.classifier must be a module path, got {classifier!r}")
        args = obj.get("model_args", {})
        if not isinstance(args, dict):
            raise ZooError("config.json: model_args must be an object")
        _check_args(library, args)
        takes = args.get("in_chans", 3) if library == "timm" else 3
        if takes != channels:
            raise ZooError(f"config.json: the model takes {takes} channels but input_size has {channels}"
                           + (" (set model_args.in_chans)" if library == "timm" else ""))  # fmt: skip
        extra = {k: v for k, v in cfg.items() if k not in ("input_size", "mean", "std", "classifier")}
        return cls(library, name, classes, (channels, size[1], size[2]), mean, std, classifier, dict(args), extra)

    def to_config(self) -> dict[str, Any]:
        """The card in timm's `config.json` shape (with the library prefix in `architecture`)."""
        return {
            "architecture": self.architecture,
            "num_classes": self.num_classes,
            "model_args": dict(self.model_args),
            "pretrained_cfg": {
                **self.extra_cfg,
                "input_size": list(self.input_size),
                "mean": list(self.mean),
                "std": list(self.std),
                "classifier": self.classifier,
            },
            "wmnode_format": FORMAT,
        }


def _architecture(value: object) -> tuple[str, str]:
    if not isinstance(value, str):
        raise ZooError(f"config.json: architecture must be a string, got {value!r}")
    library, sep, name = value.partition(":")
    if not sep:  # timm's own config.json names the architecture bare
        library, name = "timm", value
    if library not in ALLOWED_ARGS:
        raise ZooError(f"config.json: architecture {value!r}: only timm: and torchvision: names are built")
    if not _NAME_RE.fullmatch(name):
        raise ZooError(f"config.json: architecture {value!r} is not a plain model name (no hub ids, paths or tags)")
    if name not in _listed(library):
        raise ZooError(f"config.json: {library} has no model {name!r}")
    return library, name


def _listed(library: str) -> set[str]:
    if library == "timm":
        import timm

        return set(timm.list_models())
    import torchvision.models

    return set(torchvision.models.list_models(module=torchvision.models))


def _check_args(library: str, args: Mapping[str, object]) -> None:
    allowed = ALLOWED_ARGS[library]
    for key, value in args.items():
        if key in _REFUSED:
            raise ZooError(f"config.json: model_args.{key} is refused: {_REFUSED[key]}")
        if key not in allowed:
            raise ZooError(f"config.json: model_args.{key} is not one a card may set ({', '.join(sorted(allowed))})")
        if not allowed[key](value):
            raise ZooError(f"config.json: model_args.{key} = {value!r} is out of range")


def _floats(values: object, name: str, channels: int, positive: bool) -> tuple[float, ...]:
    if not isinstance(values, list) or len(values) != channels:
        raise ZooError(f"config.json: pretrained_cfg.{name} must hold one number per channel ({channels})")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or (positive and v <= 0):
            raise ZooError(f"config.json: pretrained_cfg.{name} holds {v!r}")
        out.append(float(v))
    return tuple(out)


def _construct(card: HubCard) -> nn.Module:
    kwargs = dict(card.model_args)
    if card.library == "timm":
        import timm

        model: nn.Module = timm.create_model(card.name, pretrained=False, num_classes=card.num_classes, **kwargs)
        return model
    import torchvision.models

    built: nn.Module = torchvision.models.get_model(card.name, weights=None, num_classes=card.num_classes, **kwargs)
    return built


def parameter_count(card: HubCard) -> int:
    """Parameters of the carded model, counted on the `meta` device (nothing is allocated)."""
    with torch.device("meta"):
        skeleton = _construct(card)
    return sum(p.numel() for p in skeleton.parameters())


def build_model(
    card: HubCard, state: Mapping[str, torch.Tensor] | None = None, *, max_parameters: int = MAX_PARAMETERS
) -> nn.Module:
    """The carded architecture, checked on `meta` first (size cap; `state`'s keys, shapes and
    dtypes), then built for real, with `state` loaded when given (eval mode)."""
    with torch.device("meta"):
        skeleton = _construct(card)
    count = sum(p.numel() for p in skeleton.parameters())
    if count > max_parameters:
        raise ZooError(f"{card.architecture} has {count:,} parameters, over the cap of {max_parameters:,}")
    if state is not None:
        check_state(skeleton.state_dict(), state)
    model = _construct(card)
    if state is not None:
        model.load_state_dict(state, strict=True)
        model.eval()
    return model


def load_hub_dir(
    path: Path, *, max_bytes: int = 2 * 2**30, max_parameters: int = MAX_PARAMETERS
) -> tuple[nn.Module, HubCard]:
    """A model directory in timm's Hub layout (`config.json` + `model.safetensors`), as it is."""
    path = Path(path)
    config, weights = path / CONFIG_FILE, path / HUB_WEIGHTS_FILE
    if not config.is_file() or not weights.is_file():
        raise ZooError(f"{path} is not a model directory in the Hub layout ({CONFIG_FILE} + {HUB_WEIGHTS_FILE})")
    card = HubCard.from_config(read_json_file(config, _MAX_CONFIG_BYTES, "config.json"))
    count = parameter_count(card)  # before the weights are read: they would be allocated
    if count > max_parameters:
        raise ZooError(f"{card.architecture} has {count:,} parameters, over the cap of {max_parameters:,}")
    return build_model(card, read_weights(weights, max_bytes), max_parameters=max_parameters), card
