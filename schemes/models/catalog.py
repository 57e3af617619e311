"""The names the zoo builds: architectures registered by name (timm-style), and open ones (`timm:NAME`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from torch import nn

from contracts.encoding import is_int
from contracts.errors import ZooError
from contracts.limits import MAX_PARAMETERS
from schemes.models.hub import create_open

__all__ = ["check_input_shape", "create_model", "is_open", "is_registered", "list_models", "register_model"]

_ModelT = TypeVar("_ModelT", bound=nn.Module)
_MODELS: dict[str, type[nn.Module]] = {}


def register_model(name: str) -> Callable[[type[_ModelT]], type[_ModelT]]:
    """Class decorator registering an architecture under `name`; a duplicate name is an error.

    The class is built as `cls(num_classes=..., input_shape=...)` and must declare `wm_taps`
    (module paths whose outputs a watermark head may read) and `classifier` (the final layer).
    """

    def decorate(cls: type[_ModelT]) -> type[_ModelT]:
        if name in _MODELS:
            raise ZooError(f"model {name!r} is already registered (by {_MODELS[name].__qualname__})")
        taps = getattr(cls, "wm_taps", None)
        if not isinstance(taps, tuple) or not all(isinstance(tap, str) for tap in taps):
            raise ZooError(f"model {name!r}: class attribute 'wm_taps' must be a tuple of module paths")
        if not isinstance(getattr(cls, "classifier", None), str):
            raise ZooError(f"model {name!r}: class attribute 'classifier' must name the final layer")
        _MODELS[name] = cls
        return cls

    return decorate


def list_models() -> list[str]:
    """The registered architecture names, sorted."""
    return sorted(_MODELS)


def create_model(
    name: str,
    *,
    num_classes: int,
    input_shape: tuple[int, int, int],
    model_args: Mapping[str, Any] | None = None,
    max_parameters: int | None = None,
) -> nn.Module:
    """A freshly initialised `name` model for `input_shape` = (channels, height, width) inputs:
    a registered zoo model, or an open architecture (`timm:NAME`, `torchvision:NAME`, see
    `schemes.hub`) built with `model_args` and counted on `meta` against `max_parameters` first."""
    if not is_int(num_classes, low=1):
        raise ZooError(f"num_classes must be a positive integer, got {num_classes!r}")
    shape = check_input_shape(input_shape)
    if is_open(name):
        cap = MAX_PARAMETERS if max_parameters is None else max_parameters
        return create_open(name, num_classes=num_classes, input_shape=shape, model_args=model_args, max_parameters=cap)
    if model_args:
        raise ZooError(f"model {name!r} is a zoo model: it takes no model_args")
    cls = _model_class(name)
    model = cls(num_classes=num_classes, input_shape=shape)
    if max_parameters is not None:
        count = sum(p.numel() for p in model.parameters())
        if count > max_parameters:
            raise ZooError(f"{name} has {count:,} parameters, over the cap of {max_parameters:,}")
    return model


def is_registered(name: str) -> bool:
    """Whether `name` is a registered zoo architecture."""
    return name in _MODELS


def is_open(arch: object) -> bool:
    """Whether `arch` names an open architecture (`library:NAME`) rather than a zoo model."""
    return isinstance(arch, str) and ":" in arch


def _model_class(name: str) -> type[nn.Module]:
    try:
        return _MODELS[name]
    except KeyError:
        raise ZooError(f"unknown model {name!r}; known models: {', '.join(list_models())}") from None


def check_input_shape(shape: object) -> tuple[int, int, int]:
    if not isinstance(shape, tuple | list) or len(shape) != 3 or not all(is_int(n, low=1) for n in shape):
        raise ZooError(f"input_shape must be three positive integers (channels, height, width), got {shape!r}")
    return (shape[0], shape[1], shape[2])
