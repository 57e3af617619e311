"""One interface for every watermarking scheme (DESIGN §4.6), registered by name the way timm registers models.

    embed(model, data, key, config, progress) -> Watermarked(model, verifier, info, report)
    verify(suspect, key, verifier, info)       -> Verdict(passed, score, threshold, details)

* `model` is a freshly initialised zoo model built for the scheme (`Scheme.model_arch` and
  `Scheme.extra_classes` say how: the passport scheme asks for the arch's passport variant, new
  label for one more output). `embed` trains it and returns it watermarked.
* `clean`, when given, is the owner's own trained model: `model` then already holds its weights
  (in the scheme's variant, the classifier extended), and `embed` watermarks by fine-tuning
  instead of training from scratch, with `clean` as the fidelity baseline (`clean_accuracy`) in
  place of a clean model trained alongside. Each scheme's docstring says what that changes.
* `verifier` is a flat dict of tensors, saved as safetensors: only what a node cannot derive from
  the key (MTLSign: cWM's weights; a scheme whose whole secret derives from the key ships none).
* `info` is the scheme's public parameters as a JSON object; `info["scheme"]` names the scheme,
  so a verifier looks the scheme up by that name and never branches on it.
* `suspect` is a module (white-box) or a `Predict` function that maps a batch of model inputs
  to labels (black-box: a remote prediction API fits behind it). White-box schemes refuse a
  `Predict`.
* `report` holds at least `clean_accuracy`, `accuracy`, `wm_score`, `threshold` and `seconds`.

Every secret derives from the 32-byte key through a named PRG stream (`key_stream`,
`key_generator`), so every node rebuilds the same trigger set bit for bit on any machine.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import torch
from torch import nn

from contracts.errors import InfoError, SchemeError
from contracts.infos import INFO_TYPES, Info
from mtlsign.verify import Verdict
from schemes.data.dataset import Dataset
from schemes.training.loops import Progress

__all__ = [
    "REPORT_FIELDS",
    "Predict",
    "Scheme",
    "Suspect",
    "Verdict",
    "Watermarked",
    "get_scheme",
    "list_schemes",
    "make_config",
    "predict_labels",
    "read_info",
    "register_scheme",
    "require_module",
]

#: Fields every embedding report carries (the CLI's `--json` promise).
REPORT_FIELDS = ("clean_accuracy", "accuracy", "wm_score", "threshold", "seconds")

#: A black-box suspect: model inputs (N, C, H, W), normalised as the card says → labels (N,).
Predict = Callable[[torch.Tensor], torch.Tensor]
Suspect = nn.Module | Predict
_InfoT = TypeVar("_InfoT", bound=Info)


@dataclass
class Watermarked:
    model: nn.Module
    verifier: dict[str, torch.Tensor]
    info: dict[str, Any]
    report: dict[str, Any] = field(default_factory=dict)


class _Embed(Protocol):
    def __call__(
        self,
        model: nn.Module,
        data: Dataset,
        key: bytes,
        config: Any,
        progress: Progress | None = None,
        *,
        clean: nn.Module | None = None,
    ) -> Watermarked: ...


class _Verify(Protocol):
    def __call__(
        self, suspect: Suspect, key: bytes, verifier: Mapping[str, torch.Tensor], info: Mapping[str, Any]
    ) -> Verdict: ...


class _Survey(Protocol):
    def __call__(
        self, suspect: Suspect, seed: bytes, verifier: Mapping[str, torch.Tensor], info: Mapping[str, Any]
    ) -> Verdict: ...


class _Control(Protocol):
    def __call__(
        self,
        suspect: Suspect,
        key: bytes,
        control_key: bytes,
        verifier: Mapping[str, torch.Tensor],
        info: Mapping[str, Any],
    ) -> Verdict: ...


@dataclass(frozen=True)
class Scheme:
    """A registered scheme: its module's `Config`, `embed` and `verify`, and how to build its model.
    Its info's schema, and whether it is black-box, are the contracts `Info` of its name."""

    name: str
    summary: str
    config: type[Any]
    embed: _Embed
    verify: _Verify
    paper: str = ""
    #: The zoo name of the model the scheme trains for a requested arch (passport: its variant).
    model_arch: Callable[[str], str] = field(default=lambda arch: arch)
    #: Outputs the scheme adds to the task's classes (new label: the extra class Δ).
    extra_classes: int = 0
    #: How a vote bounds the chance that a model independent of the key passes (DESIGN §6.1 rule 3):
    #: "binomial" (the exact tail P[Bin(n, p) ≥ k]) or "chernoff" (MTLSign's appendix A).
    bound: str = "binomial"
    #: Config overrides for a seconds-long embedding on the digits data (contract tests, smoke runs).
    quick: Mapping[str, object] = field(default_factory=dict)
    #: Whether every verification input is generated from the key alone (MTLSign's QR codes), so any
    #: community can verify a claim whatever data the model was trained on.
    key_inputs: bool = False
    #: A control (DESIGN §6.1 rule 3): the claim's verification under a control key the claimant
    #: could not know. None: `verify` with the control key in place of the claimant's; a scheme
    #: whose inputs are not all derived from the key (blind's shipped samples) says what stands in.
    control: _Control | None = None
    #: Where a key's answers share one choice (function-coupled's triple), the null of that choice
    #: measured on the suspect: a Verdict whose score bounds the chance that a key independent of
    #: the suspect passes (seeded by the claim's control seed). None: the answers share none.
    survey: _Survey | None = None

    @property
    def info_type(self) -> type[Info]:
        """The one schema of this scheme's info (`contracts.infos`)."""
        return _info_type(self.name)

    @property
    def black_box(self) -> bool:
        """Whether verification reads only the suspect's labels (a prediction API may stand in)."""
        return self.info_type.BLACK_BOX

    def verify_control(
        self,
        suspect: Suspect,
        key: bytes,
        control_key: bytes,
        verifier: Mapping[str, torch.Tensor],
        info: Mapping[str, Any],
    ) -> Verdict:
        """The claim's verification with `control_key` standing in for the claimant's `key`."""
        if self.control is not None:
            return self.control(suspect, key, control_key, verifier, info)
        return self.verify(suspect, control_key, verifier, info)


_SCHEMES: dict[str, Scheme] = {}


def register_scheme(scheme: Scheme) -> Scheme:
    """Register `scheme` under its name; a duplicate name, a Config that is not a frozen dataclass
    with a `seed`, or a name without a contracts `Info` (its info's schema) is an error."""
    if scheme.name in _SCHEMES:
        raise SchemeError(f"scheme {scheme.name!r} is already registered")
    params = getattr(scheme.config, "__dataclass_params__", None)
    if params is None or not params.frozen or "seed" not in {f.name for f in dataclasses.fields(scheme.config)}:
        raise SchemeError(f"scheme {scheme.name!r}: Config must be a frozen dataclass with a 'seed' field")
    _info_type(scheme.name)
    _SCHEMES[scheme.name] = scheme
    return scheme


def _info_type(name: str) -> type[Info]:
    kind = INFO_TYPES.get(name)
    if kind is None:
        raise SchemeError(f"scheme {name!r} has no Info in contracts.infos: nothing would check its info")
    return kind


def list_schemes() -> list[Scheme]:
    """The registered schemes, sorted by name."""
    return [_SCHEMES[name] for name in sorted(_SCHEMES)]


def get_scheme(name: object) -> Scheme:
    if not isinstance(name, str) or name not in _SCHEMES:
        raise SchemeError(f"unknown scheme {name!r}; known schemes: {', '.join(sorted(_SCHEMES))}")
    return _SCHEMES[name]


def make_config(scheme: Scheme, overrides: Mapping[str, object] | None = None) -> Any:
    """The scheme's Config with `overrides` applied; values may be strings from a command line.

    Unknown option names and values of the wrong type fail loudly, naming the option."""
    fields = {f.name: f for f in dataclasses.fields(scheme.config)}
    hints = typing.get_type_hints(scheme.config)
    values: dict[str, object] = {}
    for name, raw in (overrides or {}).items():
        if name not in fields:
            raise SchemeError(f"scheme {scheme.name!r} has no option {name!r}; options: {', '.join(sorted(fields))}")
        values[name] = _coerce(name, raw, hints[name])
    try:
        return scheme.config(**values)
    except (TypeError, ValueError) as exc:
        raise SchemeError(f"scheme {scheme.name!r}: {exc}") from exc


def _coerce(name: str, raw: object, hint: Any) -> object:
    """`raw` (a value, or its command-line spelling) as the option's declared type."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is tuple:
        parts = raw.split(",") if isinstance(raw, str) else raw
        if not isinstance(parts, list | tuple) or not parts:
            raise SchemeError(f"option {name!r} takes a comma-separated list, got {raw!r}")
        return tuple(_coerce(name, part, args[0]) for part in parts)
    if origin in (typing.Union, types.UnionType):
        if raw is None or (isinstance(raw, str) and raw.lower() == "none"):
            return None
        hint = next(a for a in args if a is not type(None))
    if hint is bool:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.lower() in ("true", "false", "1", "0", "yes", "no"):
            return raw.lower() in ("true", "1", "yes")
    elif hint in (int, float, str) and not isinstance(raw, bool):
        try:
            value = hint(raw)
        except (TypeError, ValueError):
            pass
        else:
            if hint is not int or isinstance(raw, int | str):
                return value
    raise SchemeError(f"option {name!r} takes a {getattr(hint, '__name__', hint)}, got {raw!r}")


def read_info(kind: type[_InfoT], info: object) -> _InfoT:
    """`info` through its scheme's one schema (`kind`: types, sizes and ranges, not the community's
    floors), refused as the SchemeError a scheme's callers expect, with the schema's words."""
    try:
        return kind.from_json(info)
    except InfoError as exc:
        raise SchemeError(str(exc)) from exc


def predict_labels(suspect: Suspect, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Labels (int64, CPU) for `x`, from a module or a Predict function, a batch at a time."""
    out = []
    for start in range(0, x.shape[0], batch_size):
        chunk = x[start : start + batch_size]
        if isinstance(suspect, nn.Module):
            with torch.no_grad():
                was = suspect.training
                suspect.eval()
                device = next(suspect.parameters()).device
                labels = suspect(chunk.to(device)).argmax(1)
                suspect.train(was)
        else:
            labels = suspect(chunk)
        labels = torch.as_tensor(labels).to("cpu", torch.int64).reshape(-1)
        if labels.shape[0] != chunk.shape[0]:
            raise SchemeError(f"the suspect answered {labels.shape[0]} labels for {chunk.shape[0]} inputs")
        out.append(labels)
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.int64)


def require_module(scheme: str, suspect: Suspect) -> nn.Module:
    """White-box schemes need the suspect's weights, not only its answers."""
    if not isinstance(suspect, nn.Module):
        raise SchemeError(f"scheme {scheme!r} is white-box: it needs the suspect model, not a prediction API")
    return suspect
