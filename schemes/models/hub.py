"""The open zoo: any timm or torchvision classification architecture, built by name from a card in
timm's `config.json` shape, and model directories in timm's Hugging Face Hub layout.

A card (`schemes.zoo.ModelCard`, written as `config.json`) names the architecture (`timm:NAME`,
`torchvision:NAME`, or a bare timm name as timm's own `config.json` writes it, optionally with a
scheme's variant suffix such as `-passport`), `num_classes`, `pretrained_cfg` (`input_size`,
`mean`, `std`, `classifier`) and `model_args`, plus `wmnode_format`. Everything in it is untrusted:

* **Names** must be a plain identifier that the library lists; `hf-hub:` / `timm/` names, paths
  and versions are refused (timm would fetch a config for those).
* **Keyword arguments** pass an allow-list of plain hyper-parameters with bounded values.
  `pretrained`, `weights`, `checkpoint_path` (a `torch.load`), `pretrained_cfg*`, `cache_dir`,
  file paths and URLs are refused by name; everything else not listed is refused too. Models are
  always built with `pretrained=False` / `weights=None`: nothing is downloaded or unpickled.
* **Size**: the parameter count is taken on the `meta` device before anything is allocated, and
  checked against the caller's cap (a community's `max_parameters`).
* **Weights** come from `model.safetensors` only (`schemes.zoo.load_model`), checked key by key,
  shape and dtype against the architecture on `meta` before they are loaded.

Other `pretrained_cfg` fields (`url`, `hf_hub_id`, `crop_pct`, ...) and other top-level fields
(`label_names`, ...) are read past, never acted upon, and not carried into the cards written here.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from contracts.cards import card_summary
from contracts.encoding import is_int, is_number
from contracts.errors import ZooError
from contracts.limits import MAX_PARAMETERS
from schemes.models._passport_layer import passport_variant

__all__ = [
    "ALLOWED_ARGS",
    "CONFIG_FILE",
    "FORMAT",
    "VARIANTS",
    "card_fields",
    "check_open",
    "config_of",
    "create_open",
    "parameter_count",
    "parse_architecture",
]

CONFIG_FILE = "config.json"
#: The card format this module writes and reads.
FORMAT = 1
#: Default cap on parameters (a ViT-L is ~300 M); communities set their own.
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
    return is_number(value, 0.0, 1.0) and value < 1.0


def _side(value: object) -> bool:
    return is_int(value, 8, 1024)


def _small_int(value: object) -> bool:
    return is_int(value, 1, 64)


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


#: Variants a scheme may ask for, as a suffix of the architecture: `timm:resnet18-passport` is
#: timm's ResNet-18 with a passport layer in place of each convolution's batch norm.
VARIANTS = ("passport",)


def parse_architecture(value: object) -> tuple[str, str, str]:
    """(library, name, variant) of an open architecture: `timm:NAME`, `torchvision:NAME`, a bare
    timm name (as timm's own config.json writes it), each optionally with a `-VARIANT` suffix."""
    if not isinstance(value, str) or len(value) > 128:
        raise ZooError(f"config.json: architecture must be a short string, got {value!r:.80}")
    library, sep, name = value.partition(":")
    if not sep:  # timm's own config.json names the architecture bare
        library, name = "timm", value
    name, dash, variant = name.partition("-")
    if library not in ALLOWED_ARGS:
        raise ZooError(f"config.json: architecture {value!r}: only timm: and torchvision: names are built")
    if not _NAME_RE.fullmatch(name):
        raise ZooError(f"config.json: architecture {value!r} is not a plain model name (no hub ids, paths or tags)")
    if dash and variant not in VARIANTS:
        raise ZooError(f"config.json: architecture {value!r}: unknown variant {variant!r} ({', '.join(VARIANTS)})")
    if name not in _listed(library):
        raise ZooError(f"config.json: {library} has no model {name!r}")
    return library, name, variant


@functools.lru_cache(maxsize=2)
def _listed(library: str) -> frozenset[str]:
    if library == "timm":
        import timm

        return frozenset(timm.list_models())
    import torchvision.models

    return frozenset(torchvision.models.list_models(module=torchvision.models))


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
        if not is_number(v) or (positive and v <= 0):
            raise ZooError(f"config.json: pretrained_cfg.{name} holds {v!r}")
        out.append(float(v))
    return tuple(out)


def card_fields(obj: object) -> dict[str, Any]:
    """The fields of a `schemes.zoo.ModelCard` from a decoded `config.json`; every refusal names
    the field and says why."""
    if not isinstance(obj, dict):
        raise ZooError("config.json must be a JSON object")
    version = obj.get("wmnode_format", FORMAT)
    if version != FORMAT:
        raise ZooError(f"config.json: wmnode_format {version!r} is not {FORMAT}")
    # Which field is which: the one reading of either card shape, shared with the node's checks.
    summary = card_summary(obj)
    library, name, variant = parse_architecture(summary["arch"])
    classes = summary["num_classes"]
    if not is_int(classes, 1, 100_000):
        raise ZooError(f"config.json: num_classes must be an integer in 1-100000, got {classes!r}")
    cfg = obj.get("pretrained_cfg", {})
    if not isinstance(cfg, dict):
        raise ZooError("config.json: pretrained_cfg must be an object")
    size = summary["input_shape"]
    if not (isinstance(size, list) and len(size) == 3 and size[0] in (1, 3) and all(_side(n) for n in size[1:])):
        raise ZooError(f"config.json: pretrained_cfg.input_size must be [1 or 3, H, W] with sides 8-1024, got {size!r}")
    channels = size[0]
    classifier = cfg.get("classifier", "")
    if not isinstance(classifier, str) or not re.fullmatch(r"[A-Za-z0-9_.]{0,64}", classifier):
        raise ZooError(f"config.json: pretrained_cfg.classifier must be a module path, got {classifier!r}")
    args = obj.get("model_args", {})
    if not isinstance(args, dict):
        raise ZooError("config.json: model_args must be an object")
    extra = obj.get("wmnode_extra", {})
    if not isinstance(extra, dict):
        raise ZooError("config.json: wmnode_extra must be an object")
    return {
        "arch": f"{library}:{name}" + (f"-{variant}" if variant else ""),
        "num_classes": classes,
        "input_shape": (channels, size[1], size[2]),
        "mean": _floats(summary["mean"], "mean", channels, False),
        "std": _floats(summary["std"], "std", channels, True),
        "extra": extra,
        "model_args": dict(args),
        "classifier": classifier,
    }


def config_of(
    arch: str,
    num_classes: int,
    input_shape: tuple[int, int, int],
    mean: tuple[float, ...],
    std: tuple[float, ...],
    model_args: Mapping[str, Any],
    classifier: str,
    extra: Mapping[str, Any],
) -> dict[str, Any]:
    """A card in timm's `config.json` shape, with the library prefix in `architecture`; the
    directory it is written to, with `model.safetensors`, is in the Hub layout."""
    out: dict[str, Any] = {
        "architecture": arch,
        "num_classes": num_classes,
        "model_args": dict(model_args),
        "pretrained_cfg": {
            "input_size": list(input_shape),
            "mean": list(mean),
            "std": list(std),
            "classifier": classifier,
        },
        "wmnode_format": FORMAT,
    }
    if extra:
        out["wmnode_extra"] = dict(extra)
    return out


def check_open(arch: str, model_args: Mapping[str, object], input_shape: tuple[int, int, int]) -> None:
    """Refuse an open architecture, arguments or input a card may not ask for."""
    library, _, _ = parse_architecture(arch)
    _check_args(library, model_args)
    takes = model_args.get("in_chans", 3) if library == "timm" else 3
    if takes != input_shape[0]:
        raise ZooError(
            f"config.json: {arch} takes {takes} channels but input_size has {input_shape[0]}"
            + (" (set model_args.in_chans)" if library == "timm" else "")
        )


def _construct(library: str, name: str, num_classes: int, model_args: Mapping[str, Any]) -> nn.Module:
    kwargs = dict(model_args)
    try:
        if library == "timm":
            import timm

            model: nn.Module = timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs)
            return model
        import torchvision.models

        built: nn.Module = torchvision.models.get_model(name, weights=None, num_classes=num_classes, **kwargs)
        return built
    except (TypeError, ValueError, AssertionError, NotImplementedError, RuntimeError, KeyError) as exc:
        # An allow-listed argument this model does not take, or a model that cannot be built here.
        raise ZooError(f"{library}:{name} cannot be built with {dict(model_args)}: {str(exc)[:200]}") from None


def parameter_count(arch: str, num_classes: int, model_args: Mapping[str, Any] | None = None) -> int:
    """Parameters of the architecture, counted on the `meta` device (nothing is allocated)."""
    library, name, _ = parse_architecture(arch)
    _check_args(library, model_args or {})
    with torch.device("meta"):
        skeleton = _construct(library, name, num_classes, model_args or {})
    return sum(p.numel() for p in skeleton.parameters())


_RUNS: dict[tuple[str, int, tuple[int, ...], str], str | None] = {}
_CACHED = 256


def _check_runs(
    skeleton: nn.Module, arch: str, num_classes: int, input_shape: tuple[int, int, int], args: Mapping[str, Any]
) -> None:
    """Refuse an input shape the architecture cannot take (a ViT's fixed size, AlexNet's minimum),
    found by one forward pass on `meta`, so the refusal comes before anything is allocated."""
    key = (arch, num_classes, tuple(input_shape), repr(sorted(args.items())))
    if len(_RUNS) >= _CACHED:  # keys come from strangers' cards: bounded
        _RUNS.clear()
    if key not in _RUNS:
        try:
            with torch.no_grad():
                out = skeleton.eval()(torch.zeros(1, *input_shape, device="meta"))
            _RUNS[key] = None if tuple(out.shape) == (1, num_classes) else f"answers shape {tuple(out.shape)}"
        except (RuntimeError, ValueError, AssertionError, TypeError) as exc:
            _RUNS[key] = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
    if _RUNS[key] is not None:
        raise ZooError(f"{arch} cannot run on inputs of shape {list(input_shape)}: {_RUNS[key]}")


def create_open(
    arch: str,
    *,
    num_classes: int,
    input_shape: tuple[int, int, int],
    model_args: Mapping[str, Any] | None = None,
    max_parameters: int = MAX_PARAMETERS,
) -> nn.Module:
    """A freshly initialised open architecture: checked, counted on `meta` and capped first, then
    built where the caller builds (on `meta` inside `with torch.device("meta")`), variant applied."""
    args = dict(model_args or {})
    check_open(arch, args, input_shape)
    library, name, variant = parse_architecture(arch)
    with torch.device("meta"):
        skeleton = _construct(library, name, num_classes, args)
    # Buffers too: some hold tensors the weights file never carries (position indices of size
    # (img_size / patch_size)^4), allocated when the model is built.
    count = sum(p.numel() for p in skeleton.parameters()) + sum(b.numel() for b in skeleton.buffers())
    if count > max_parameters:
        raise ZooError(f"{arch} has {count:,} parameters and buffer elements, over the cap of {max_parameters:,}")
    _check_runs(skeleton, arch, num_classes, input_shape, args)
    model = skeleton if torch.get_default_device().type == "meta" else _construct(library, name, num_classes, args)
    if variant == "passport":
        model = passport_variant(model, input_shape, f"{arch} ({num_classes} classes, {sorted(args.items())})")
    return model
