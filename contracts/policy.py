"""The community's policy on claims: the built-in floors a community may only raise and caps it may only
lower (`[verification]`), per scheme and for every claim (DESIGN §6.1 rule 2, §6.2)."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any, ClassVar

from contracts.datasets import EMBEDDED_DATASETS, PinnedDataset
from contracts.encoding import is_number
from contracts.errors import ConfigError, InfoError


@dataclass(frozen=True)
class MtlsignFloors:
    min_n: int = 600  # §4.1: N = 600 with γ = 0.7
    min_gamma: float = 0.7
    #: The head reads the taps pooled to at most pool × pool: it bounds the work of a check and the
    #: head's capacity (a head fitted to other LeNet-5s read unseen ones at 0.45-0.58 even at full
    #: resolution, tests/schemes/watermarks/test_mtlsign_universal_head.py; larger backbones are unmeasured).
    max_pool: int = 4
    max_hidden: int = 256
    max_taps: int = 4
    #: Judge MTLSign on timm:/torchvision: suspects. Off: cWM reads the first stages, and a public
    #: pretrained checkpoint's first stages survive in every fine-tune of it, so a head fitted to them
    #: would claim them all; a community that turns this on should admit those checkpoints as
    #: reference models.
    open_architectures: bool = False


@dataclass(frozen=True)
class NewLabelFloors:
    min_n: int = 100
    min_threshold: float = 0.25
    #: The community's one noise strength. Not the claimant's choice: a model trained with decoys at
    #: its own β answers Δ to another key's samples at that β about 1 % of the time (the chance rate
    #: a vote states), but to louder samples (β 0.5-1.0 against a β 0.1-0.3 model) most of the time.
    beta: float = 0.3


@dataclass(frozen=True)
class FunctionCoupledFloors:
    #: Eq. 3b (invisible) and Eq. 2b (direct) fusion: what a community may choose, and an info name.
    MODES: ClassVar[tuple[str, ...]] = ("invisible", "direct")

    min_n_verify: int = 90  # §4.4
    min_threshold: float = 0.9
    #: The community's fusion (Eq. 3b, r = 0.5): claimants do not pick out-of-distribution triggers.
    mode: str = "invisible"
    r: float = 0.5


@dataclass(frozen=True)
class BlindFloors:
    min_n: int = 100
    min_threshold: float = 0.8
    #: Each key sample must stay this close (SSIM, §4.3 Eq. 8) to its key-chosen cover.
    min_ssim: float = 0.9


@dataclass(frozen=True)
class PassportFloors:
    min_eval: int = 200
    min_threshold: float = 0.5
    #: T2/T3 passports are images the claimant ships; only key-derived T1 passports are judged.
    types: tuple[str, ...] = ("T1",)


@dataclass(frozen=True)
class VerificationPolicy:
    """A community's rules for judging claims; every node of a community holds the same."""

    mtlsign: MtlsignFloors = MtlsignFloors()
    new_label: NewLabelFloors = NewLabelFloors()
    function_coupled: FunctionCoupledFloors = FunctionCoupledFloors()
    blind: BlindFloors = BlindFloors()
    passport: PassportFloors = PassportFloors()
    #: The largest false-positive bound an `owner` vote may rest on (DESIGN §6.1 rule 3).
    max_false_positive: float = 1e-6
    #: Caps on the work one claim can cause (§6.2): inputs × C × H × W, queries to an API.
    max_input_elements: int = 32_000_000
    max_queries: int = 20_000
    #: Control keys each judge verifies on the suspect (DESIGN §6.1 rule 3, schemes.controls); their
    #: inputs count against the caps above with the claim's own.
    control_keys: int = 8
    #: A prediction API answers each request (at most 256 inputs) within this many seconds, or the
    #: claim is refused: a slow API holds a judge for seconds, not minutes (§6.2).
    predict_deadline_seconds: int = 2
    #: Inputs are at most this many pixels high and wide, with 1 or 3 channels: a judge resizes the
    #: whole data set to the claim's input shape, so the shape bounds its memory as well as the queries.
    max_input_side: int = 64
    #: Without a reference model that matches the suspect, vote `error` (undecided) instead of judging.
    require_references: bool = False
    #: Judges: child processes per node, and each one's limits.
    judges: int = 2
    judge_memory_mib: int = 2048
    judge_cpu_seconds: int = 120
    judge_wall_seconds: int = 60
    #: Data sets the community pins besides the embedded ones (`[[datasets]]`).
    datasets: tuple[PinnedDataset, ...] = ()
    #: The architectures a node builds from a suspect's or reference's card (shell patterns over
    #: zoo names and `timm:NAME` / `torchvision:NAME`, variants included), and the most parameters
    #: one may have, counted on `meta` before any weight is read (schemes.zoo.BuildLimits).
    architectures: tuple[str, ...] = ("*",)
    max_parameters: int = 100_000_000

    def floors(self, scheme: str) -> Any:
        return getattr(self, scheme.replace("-", "_"))

    def classes_of(self, dataset: str) -> int:
        """The number of classes of a data set every member holds; InfoError for any other."""
        if dataset in EMBEDDED_DATASETS:
            return EMBEDDED_DATASETS[dataset]
        for pinned in self.datasets:
            if pinned.name == dataset:
                return pinned.num_classes
        held = sorted([*EMBEDDED_DATASETS, *(d.name for d in self.datasets)])
        raise InfoError(
            f"data set {dataset[:40]!r} is not one every member holds ({', '.join(held)}), so no node could "
            "rebuild the verification inputs from the key"
        )


DEFAULT_POLICY = VerificationPolicy()
_FLOOR_TABLES = ("mtlsign", "new_label", "function_coupled", "blind", "passport")
#: Floors a community may only raise ("min_*"), caps it may only lower ("max_*").
_GLOBAL_BOUNDS: dict[str, tuple[float, float]] = {
    "max_false_positive": (1e-300, DEFAULT_POLICY.max_false_positive),
    "max_input_elements": (1, 32_000_000),
    "max_queries": (1, 20_000),
    "control_keys": (8, 64),
    "predict_deadline_seconds": (1, 30),
    "max_input_side": (8, 1024),
    "judges": (2, 64),
    "judge_memory_mib": (256, 65_536),
    "judge_cpu_seconds": (1, 3_600),
    "judge_wall_seconds": (1, 3_600),
    "max_parameters": (1, 350_000_000),
}
_ARCH_PATTERN = re.compile(r"[A-Za-z0-9_:*?.\[\]-]{1,80}")


def parse_policy(table: Mapping[str, Any], where: str) -> VerificationPolicy:
    """The `[verification]` table of a community config; floors may only rise, caps only fall."""
    policy = DEFAULT_POLICY
    for name, value in table.items():
        if name in _FLOOR_TABLES:
            if not isinstance(value, Mapping):
                raise ConfigError(f"{where}.{name} must be a table")
            floors = _raise_floors(getattr(policy, name), value, f"{where}.{name}")
            policy = replace(policy, **{name: floors})
        elif name == "require_references":
            if not isinstance(value, bool):
                raise ConfigError(f"{where}.require_references must be true or false")
            policy = replace(policy, require_references=value)
        elif name == "architectures":
            if (
                not isinstance(value, list)
                or not 1 <= len(value) <= 256
                or not all(isinstance(v, str) and _ARCH_PATTERN.fullmatch(v) for v in value)
            ):
                raise ConfigError(
                    f"{where}.architectures must list 1-256 names or shell patterns such as "
                    '"lenet5", "timm:resnet*", "torchvision:*"'
                )
            policy = replace(policy, architectures=tuple(value))
        elif name in _GLOBAL_BOUNDS:
            low, high = _GLOBAL_BOUNDS[name]
            kind = float if name == "max_false_positive" else int
            if not is_number(value, low, high):
                raise ConfigError(f"{where}.{name} must be a number in [{low:g}, {high:g}], got {value!r}")
            if kind is int and not isinstance(value, int):
                raise ConfigError(f"{where}.{name} must be an integer")
            policy = replace(policy, **{name: kind(value)})  # type: ignore[arg-type]
        else:
            allowed = sorted([*_FLOOR_TABLES, *_GLOBAL_BOUNDS, "require_references", "architectures"])
            raise ConfigError(f"{where}: unknown field {name!r} (allowed: {', '.join(allowed)})")
    return policy


def _raise_floors(floors: Any, table: Mapping[str, Any], where: str) -> Any:
    known = {f.name: f for f in fields(floors)}
    changes: dict[str, Any] = {}
    for name, value in table.items():
        if name not in known:
            raise ConfigError(f"{where}: unknown field {name!r} (allowed: {', '.join(sorted(known))})")
        current = getattr(floors, name)
        if name == "types":
            if not isinstance(value, list) or not value or not set(value) <= set(current):
                raise ConfigError(f"{where}.types must be a non-empty subset of {list(current)}")
            changes[name] = tuple(value)
            continue
        if name == "open_architectures":  # a community's choice (see MtlsignFloors)
            if not isinstance(value, bool):
                raise ConfigError(f"{where}.open_architectures must be true or false")
            changes[name] = value
            continue
        if name == "mode":
            if value not in FunctionCoupledFloors.MODES:
                raise ConfigError(f"{where}.mode must be 'invisible' or 'direct'")
            changes[name] = value
            continue
        if name in ("beta", "r"):  # a community-wide setting, not a floor: any value in range
            ok = is_number(value)
            if not ok or not (0.1 <= value <= 1 if name == "beta" else 0 < value < 1):
                raise ConfigError(f"{where}.{name} must be a number in {'[0.1, 1]' if name == 'beta' else '(0, 1)'}")
            changes[name] = float(value)
            continue
        if isinstance(value, bool) or not isinstance(value, type(current) | int) or not math.isfinite(value):
            raise ConfigError(f"{where}.{name} must be a finite {type(current).__name__}")
        lowers = value < current if name.startswith("min_") else value > current
        if lowers or (name.startswith("min_") and isinstance(current, float) and value > 1):
            rule = "at least" if name.startswith("min_") else "at most"
            raise ConfigError(f"{where}.{name} must be {rule} the built-in {current} (communities may only tighten)")
        changes[name] = type(current)(value)
    return replace(floors, **changes)
