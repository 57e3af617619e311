"""What a claim's `info` may say, and the community's floors on it (DESIGN §6.1 rule 2, §6.2).

Every scheme's public parameters are parsed once into a typed, frozen `Info`, and checked against
the community's `VerificationPolicy` before any work: a claimant chooses its watermark before it
publishes, but never the bar it is judged by (threshold, N, β, query counts), the data its
verification inputs are drawn from (only data every member holds: `EMBEDDED_DATASETS` or a set
the community pins), or an extra class Δ that the task already has. Torch-free: the API checks
a claim's info when the claim arrives, before it commits, and every judge checks it again.

The floors here are the built-in minimums; a community config may raise them (`[verification]`),
never lower them, and a claimant's info can only meet them.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, ClassVar

from contracts.errors import ConfigError, MessageError, RejectedError

#: Data sets every node holds without a path: scikit-learn's bundled digits, split by the community
#: as `load_dataset("digits", seed=COMMUNITY_SPLIT_SEED, test_fraction=COMMUNITY_TEST_FRACTION)`.
EMBEDDED_DATASETS = {"digits": 10}
COMMUNITY_SPLIT_SEED = 0
COMMUNITY_TEST_FRACTION = 0.2
#: Function-coupled's survey of the suspect: fresh blends per ordered base pair, and the most pairs
#: it asks about (`schemes.function_coupled.survey`); counted against the query cap once a claim.
FUNCTION_COUPLED_SURVEY_BLENDS, FUNCTION_COUPLED_SURVEY_PAIRS = 80, 90
FUNCTION_COUPLED_SURVEY_QUERIES = FUNCTION_COUPLED_SURVEY_BLENDS * FUNCTION_COUPLED_SURVEY_PAIRS
_HEX64 = re.compile(r"[0-9a-f]{64}")
_MAX_DIM = 4096


class InfoError(RejectedError):
    """A claim's info is malformed, below the community's floors or over its caps."""


# --------------------------------------------------------------------------------------------
# Data sets a community pins


PINNED_FORMATS = ("mnist", "fashion-mnist", "cifar10", "cifar100", "npz", "folder")
_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,39}")


@dataclass(frozen=True)
class PinnedDataset:
    """A data set every member keeps a copy of (`[[datasets]]`), pinned by a manifest of its files.

    The manifest is the SHA-256 of the lines "<sha256 of the file>  <path relative to `path`>\n" of
    every regular file, sorted by path (a file alone: its own name). Files, not decoded tensors,
    are pinned: a float tensor's bits may change across torch versions and devices."""

    name: str
    format: str
    path: Path
    manifest_sha256: str
    num_classes: int

    def job(self) -> dict[str, Any]:
        return {"name": self.name, "format": self.format, "path": str(self.path), "num_classes": self.num_classes}


def manifest_digest(path: Path) -> str:
    """The manifest SHA-256 of a file or of every regular file under a directory (symlinks refused)."""
    if path.is_symlink():
        raise ConfigError(f"{path}: a pinned data set may not be a symbolic link")
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file() or p.is_symlink())
    if not files:
        raise ConfigError(f"{path}: no files to pin")
    lines = []
    for file in files:
        if file.is_symlink():
            raise ConfigError(f"{file}: a pinned data set may not hold symbolic links")
        digest = hashlib.sha256()
        with file.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
        name = file.name if file == path else file.relative_to(path).as_posix()
        lines.append(f"{digest.hexdigest()}  {name}\n")
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def check_pinned(dataset: PinnedDataset) -> None:
    """Refuse a node whose copy of a pinned data set is not the community's."""
    try:
        got = manifest_digest(dataset.path)
    except OSError as exc:
        raise ConfigError(f"data set {dataset.name!r}: cannot read {dataset.path}: {exc.strerror}") from exc
    if got != dataset.manifest_sha256:
        raise ConfigError(
            f"data set {dataset.name!r}: the files at {dataset.path} have manifest {got}, not the community's "
            f"{dataset.manifest_sha256}: this node would rebuild other verification inputs than its peers"
        )


_DATASET_KEYS = {"name": str, "format": str, "path": str, "manifest_sha256": str, "num_classes": int}


def parse_datasets(items: object, where: str, base: Path) -> tuple[PinnedDataset, ...]:
    """The `[[datasets]]` tables of a node config (paths relative to the config's folder)."""
    if not isinstance(items, list):
        raise ConfigError(f"{where} must be a list of tables ([[datasets]])")
    out: list[PinnedDataset] = []
    for i, table in enumerate(items):
        at = f"{where}[{i}]"
        if not isinstance(table, dict) or set(table) != set(_DATASET_KEYS):
            raise ConfigError(f"{at} must be a table with exactly {', '.join(sorted(_DATASET_KEYS))}")
        for name, want in _DATASET_KEYS.items():
            if isinstance(table[name], bool) or not isinstance(table[name], want):
                raise ConfigError(f"{at}.{name} must be a {want.__name__}")
        if not _NAME_RE.fullmatch(table["name"]) or table["name"] in EMBEDDED_DATASETS:
            raise ConfigError(f"{at}.name must be a short lowercase name other than {sorted(EMBEDDED_DATASETS)}")
        if table["format"] not in PINNED_FORMATS:
            raise ConfigError(f"{at}.format must be one of {', '.join(PINNED_FORMATS)}")
        if not _HEX64.fullmatch(table["manifest_sha256"]) or not 2 <= table["num_classes"] <= 100_000:
            raise ConfigError(f"{at}: manifest_sha256 must be 64 lowercase hex digits, num_classes 2-100000")
        if any(d.name == table["name"] for d in out):
            raise ConfigError(f"{at}.name {table['name']!r} is pinned twice")
        out.append(PinnedDataset(table["name"], table["format"], base / table["path"], table["manifest_sha256"],
                                 table["num_classes"]))  # fmt: skip
    return tuple(out)


# --------------------------------------------------------------------------------------------
# The community's policy


@dataclass(frozen=True)
class MtlsignFloors:
    min_n: int = 600  # §4.1: N = 600 with γ = 0.7
    min_gamma: float = 0.7
    #: The head reads the taps pooled to at most pool × pool: it bounds the work of a check and the
    #: head's capacity (a head fitted to other LeNet-5s read unseen ones at 0.45-0.58 even at full
    #: resolution, tests/schemes/test_mtlsign_universal_head.py; larger backbones are unmeasured).
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
            if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:  # NaN fails
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
            if value not in ("invisible", "direct"):
                raise ConfigError(f"{where}.mode must be 'invisible' or 'direct'")
            changes[name] = value
            continue
        if name in ("beta", "r"):  # a community-wide setting, not a floor: any value in range
            ok = not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)
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


# --------------------------------------------------------------------------------------------
# Typed infos


def _fail(scheme: str, name: str, rule: str, value: object) -> InfoError:
    return InfoError(f"{scheme} info: {name} must be {rule}, got {str(value)[:80]!r}")


def _int(obj: Mapping[str, Any], scheme: str, name: str, low: int, high: int) -> int:
    value = obj[name]
    if type(value) is not int or not low <= value <= high:
        raise _fail(scheme, name, f"an integer in [{low}, {high}]", value)
    return value


def _num(obj: Mapping[str, Any], scheme: str, name: str, low: float, high: float) -> float:
    value = obj[name]
    if type(value) not in (int, float) or not math.isfinite(value) or not low <= value <= high:
        raise _fail(scheme, name, f"a number in [{low:g}, {high:g}]", value)
    return float(value)


def _shape(obj: Mapping[str, Any], scheme: str) -> tuple[int, int, int]:
    value = obj["input_shape"]
    if not (isinstance(value, list) and len(value) == 3 and all(type(v) is int and 1 <= v <= _MAX_DIM for v in value)):
        raise _fail(scheme, "input_shape", f"three integers in [1, {_MAX_DIM}]", value)
    return (value[0], value[1], value[2])


def _channels(obj: Mapping[str, Any], scheme: str, name: str, channels: int, low: float) -> tuple[float, ...]:
    value = obj[name]
    ok = isinstance(value, list) and len(value) == channels
    ok = ok and all(type(v) in (int, float) and math.isfinite(v) and low < v < 1e6 for v in value)
    if not ok:
        raise _fail(scheme, name, f"{channels} finite number(s), one per channel", value)
    return tuple(float(v) for v in value)


def _dataset(obj: Mapping[str, Any], scheme: str) -> str:
    name = obj["dataset"]
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise _fail(scheme, "dataset", "a data set's name", name)
    return name


@dataclass(frozen=True)
class Info:
    """Common part of every scheme's info; subclasses add their fields, `_parse` and `check`."""

    SCHEME: ClassVar[str] = ""
    FIELDS: ClassVar[frozenset[str]] = frozenset()
    #: The tensors the verifier artifact may hold (None: whatever the scheme's own parser takes);
    #: empty where every input comes from the key, so shipped inputs are refused on arrival.
    VERIFIER: ClassVar[frozenset[str] | None] = None

    input_shape: tuple[int, int, int]
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, obj: object) -> Info:
        if not isinstance(obj, Mapping):
            raise InfoError("info must be a JSON object")
        missing, unknown = sorted(cls.FIELDS - set(obj)), sorted(set(obj) - cls.FIELDS)
        if missing or unknown:
            raise InfoError(f"{cls.SCHEME} info: missing fields {missing}, unknown fields {unknown}")
        if obj["scheme"] != cls.SCHEME:
            raise InfoError(f"info describes a {str(obj['scheme'])[:40]!r} watermark, not {cls.SCHEME!r}")
        shape = _shape(obj, cls.SCHEME)
        common = {
            "input_shape": shape,
            "mean": _channels(obj, cls.SCHEME, "mean", shape[0], -1e6),
            "std": _channels(obj, cls.SCHEME, "std", shape[0], 0.0),
            "extra": obj,
        }
        return cls._parse(obj, common)

    @classmethod
    def _parse(cls, obj: Mapping[str, Any], common: dict[str, Any]) -> Info:
        """The scheme's own fields; `common` holds the parsed input_shape, mean, std and the raw info."""
        raise NotImplementedError

    def _check_classes(self, policy: VerificationPolicy, num_classes: int, dataset: str) -> None:
        if num_classes != policy.classes_of(dataset):
            raise InfoError(f"{self.SCHEME} info: num_classes must be {dataset!r}'s, got {num_classes}")

    def check(self, policy: VerificationPolicy) -> None:
        """Refuse info below the community's floors or over its caps (InfoError naming the field)."""
        raise NotImplementedError

    @property
    def queries(self) -> int:
        """Inputs the judge sends the suspect (one pass); capped by the policy."""
        raise NotImplementedError

    @property
    def classes(self) -> int | None:
        """The outputs a suspect of this info answers (None where the info does not say)."""
        value = getattr(self, "num_classes", None)
        return value if isinstance(value, int) else None

    def _check_work(self, policy: VerificationPolicy, count: int, once: int = 0) -> None:
        """`count` inputs a key asks, for the claim's key and each control key; `once` more the judge
        asks the suspect once a claim (function-coupled's survey)."""
        channels, height, width = self.input_shape
        if channels not in (1, 3) or max(height, width) > policy.max_input_side:
            raise InfoError(
                f"{self.SCHEME} info: input_shape {list(self.input_shape)} must have 1 or 3 channels and sides of at "
                f"most {policy.max_input_side} pixels (the community's cap)"
            )
        count = count * (1 + policy.control_keys) + once  # the controls ask the same number each
        elements = count * math.prod(self.input_shape)
        if count > policy.max_queries or elements > policy.max_input_elements:
            raise InfoError(
                f"{self.SCHEME} info: {count} inputs of {list(self.input_shape)} ({elements} elements) exceed the "
                f"community's caps ({policy.max_queries} inputs, {policy.max_input_elements} elements), with "
                f"{policy.control_keys} control keys"
            )

    def _floor(self, name: str, value: float, least: float) -> None:
        if value < least:
            raise InfoError(f"{self.SCHEME} info: {name} {value:g} is below the community's floor {least:g}")


@dataclass(frozen=True)
class MtlsignInfo(Info):
    SCHEME: ClassVar[str] = "mtlsign"
    FIELDS: ClassVar[frozenset[str]] = frozenset(
        {"scheme", "n", "gamma", "taps", "pool", "hidden", "input_shape", "mean", "std"}
    )

    n: int = 0
    gamma: float = 0.0
    taps: tuple[str, ...] = ()
    pool: int = 0
    hidden: int = 0

    @classmethod
    def _parse(cls, obj: Mapping[str, Any], common: dict[str, Any]) -> Info:
        s = cls.SCHEME
        taps = obj["taps"]
        if not (isinstance(taps, list) and 1 <= len(taps) <= 64 and all(isinstance(t, str) and 0 < len(t) <= 200
                                                                       for t in taps)):  # fmt: skip
            raise _fail(s, "taps", "a list of module paths", taps)
        return cls(
            **common, n=_int(obj, s, "n", 2, 100_000), gamma=_num(obj, s, "gamma", 0.5, 1.0), taps=tuple(taps),
            pool=_int(obj, s, "pool", 1, 64), hidden=_int(obj, s, "hidden", 1, 4096),
        )  # fmt: skip

    def check(self, policy: VerificationPolicy) -> None:
        f: MtlsignFloors = policy.mtlsign
        self._floor("n", self.n, f.min_n)
        self._floor("gamma", self.gamma, f.min_gamma)
        for name, value, cap in (("pool", self.pool, f.max_pool), ("hidden", self.hidden, f.max_hidden),
                                 ("number of taps", len(self.taps), f.max_taps)):  # fmt: skip
            if value > cap:
                raise InfoError(f"mtlsign info: {name} {value} is over the community's cap {cap}")
        self._check_work(policy, self.n)

    @property
    def queries(self) -> int:
        return self.n


@dataclass(frozen=True)
class NewLabelInfo(Info):
    SCHEME: ClassVar[str] = "new-label"
    VERIFIER: ClassVar[frozenset[str] | None] = frozenset()
    FIELDS: ClassVar[frozenset[str]] = frozenset(
        {"scheme", "dataset", "delta", "beta", "n", "threshold", "input_shape", "mean", "std"}
    )

    dataset: str = ""
    delta: int = 0
    beta: float = 0.0
    n: int = 0
    threshold: float = 0.0

    @classmethod
    def _parse(cls, obj: Mapping[str, Any], common: dict[str, Any]) -> Info:
        s = cls.SCHEME
        return cls(
            **common, dataset=_dataset(obj, s), delta=_int(obj, s, "delta", 1, 100_000),
            beta=_num(obj, s, "beta", 1e-9, 1.0), n=_int(obj, s, "n", 1, 100_000),
            threshold=_num(obj, s, "threshold", 1e-9, 1.0),
        )  # fmt: skip

    def check(self, policy: VerificationPolicy) -> None:
        f: NewLabelFloors = policy.new_label
        classes = policy.classes_of(self.dataset)
        if self.delta != classes:
            raise InfoError(
                f"new-label info: Δ must be the one output the task does not have, class {classes} of "
                f"{self.dataset!r} (its classes are 0-{classes - 1}); got {self.delta}"
            )
        self._floor("n", self.n, f.min_n)
        self._floor("threshold", self.threshold, f.min_threshold)
        _exactly(self.SCHEME, "beta", self.beta, f.beta)
        self._check_work(policy, self.n)

    @property
    def queries(self) -> int:
        return self.n

    @property
    def classes(self) -> int | None:
        return self.delta + 1  # the task's classes and Δ


@dataclass(frozen=True)
class FunctionCoupledInfo(Info):
    SCHEME: ClassVar[str] = "function-coupled"
    VERIFIER: ClassVar[frozenset[str] | None] = frozenset()
    FIELDS: ClassVar[frozenset[str]] = frozenset(
        {"scheme", "version", "mode", "r", "n_train", "n_verify", "threshold", "candidate", "num_classes",
         "input_shape", "mean", "std", "dataset", "split_seed", "test_fraction", "dataset_sha256"}
    )  # fmt: skip

    dataset: str = ""
    n_verify: int = 0
    threshold: float = 0.0
    num_classes: int = 0
    split_seed: int = 0
    test_fraction: float = 0.0

    @classmethod
    def _parse(cls, obj: Mapping[str, Any], common: dict[str, Any]) -> Info:
        s = cls.SCHEME
        if obj["split_seed"] is None or obj["test_fraction"] is None:
            raise InfoError("function-coupled info: the triggers must come from a data set every node holds")
        return cls(
            **common, dataset=_dataset(obj, s), n_verify=_int(obj, s, "n_verify", 1, 100_000),
            threshold=_num(obj, s, "threshold", 1e-9, 1.0), num_classes=_int(obj, s, "num_classes", 4, 100_000),
            split_seed=_int(obj, s, "split_seed", 0, 2**32 - 1),
            test_fraction=_num(obj, s, "test_fraction", 1e-9, 1 - 1e-9),
        )  # fmt: skip

    def check(self, policy: VerificationPolicy) -> None:
        f: FunctionCoupledFloors = policy.function_coupled
        _community_split(self.SCHEME, self.split_seed, self.test_fraction)
        self._check_classes(policy, self.num_classes, self.dataset)
        if self.extra.get("mode") != f.mode:
            raise InfoError(f"function-coupled info: mode must be the community's {f.mode!r}")
        _exactly(self.SCHEME, "r", float(self.extra.get("r", -1)), f.r)
        self._floor("n_verify", self.n_verify, f.min_n_verify)
        self._floor("threshold", self.threshold, f.min_threshold)
        self._check_work(policy, self.n_verify, FUNCTION_COUPLED_SURVEY_QUERIES)

    @property
    def queries(self) -> int:
        return self.n_verify + FUNCTION_COUPLED_SURVEY_QUERIES


def _exactly(scheme: str, name: str, value: float, wanted: float) -> None:
    if not abs(value - wanted) <= 1e-9:
        raise InfoError(f"{scheme} info: {name} must be the community's {wanted:g}, got {value:g}")


def _community_split(scheme: str, seed: int, fraction: float) -> None:
    if (seed, fraction) != (COMMUNITY_SPLIT_SEED, COMMUNITY_TEST_FRACTION):
        raise InfoError(
            f"{scheme} info: the data must be split as the community splits it (split_seed "
            f"{COMMUNITY_SPLIT_SEED}, test_fraction {COMMUNITY_TEST_FRACTION}), got {seed} and {fraction}"
        )


@dataclass(frozen=True)
class BlindInfo(Info):
    SCHEME: ClassVar[str] = "blind"
    VERIFIER: ClassVar[frozenset[str] | None] = frozenset({"key_samples", "logo"})
    FIELDS: ClassVar[frozenset[str]] = frozenset(
        {"scheme", "dataset", "n", "threshold", "num_classes", "input_shape", "mean", "std", "alpha", "beta",
         "gamma", "delta", "epochs", "logo_sha256", "logo_source", "encoder", "discriminator", "min_ssim"}
    )  # fmt: skip

    dataset: str = ""
    n: int = 0
    threshold: float = 0.0
    num_classes: int = 0
    min_ssim: float = 0.0

    @classmethod
    def _parse(cls, obj: Mapping[str, Any], common: dict[str, Any]) -> Info:
        s = cls.SCHEME
        return cls(
            **common, dataset=_dataset(obj, s), n=_int(obj, s, "n", 1, 100_000),
            threshold=_num(obj, s, "threshold", 1e-9, 1.0), num_classes=_int(obj, s, "num_classes", 2, 100_000),
            min_ssim=_num(obj, s, "min_ssim", 0.0, 1.0),
        )  # fmt: skip

    def check(self, policy: VerificationPolicy) -> None:
        f: BlindFloors = policy.blind
        self._check_classes(policy, self.num_classes, self.dataset)
        self._floor("n", self.n, f.min_n)
        self._floor("threshold", self.threshold, f.min_threshold)
        self._floor("min_ssim", self.min_ssim, f.min_ssim)
        self._check_work(policy, self.n)

    @property
    def queries(self) -> int:
        return self.n


@dataclass(frozen=True)
class PassportInfo(Info):
    SCHEME: ClassVar[str] = "passport"
    VERIFIER: ClassVar[frozenset[str] | None] = frozenset({"expected_acc", "noise_levels", "noise_mean", "noise_std"})
    FIELDS: ClassVar[frozenset[str]] = frozenset(
        {"scheme", "version", "passport_type", "layers", "delta", "noise_sigmas", "noise_floor", "noise_draws",
         "dataset", "n_eval", "input_shape", "mean", "std", "num_classes"}
    )  # fmt: skip

    dataset: str = ""
    passport_type: str = ""
    n_eval: int = 0
    noise_draws: int = 0
    num_classes: int = 0

    @classmethod
    def _parse(cls, obj: Mapping[str, Any], common: dict[str, Any]) -> Info:
        s = cls.SCHEME
        kind = obj["passport_type"]
        if kind not in ("T1", "T2", "T3"):
            raise _fail(s, "passport_type", "T1, T2 or T3", kind)
        return cls(
            **common, dataset=_dataset(obj, s), passport_type=kind, n_eval=_int(obj, s, "n_eval", 1, 100_000),
            noise_draws=_int(obj, s, "noise_draws", 1, 100), num_classes=_int(obj, s, "num_classes", 2, 100_000),
        )  # fmt: skip

    def check(self, policy: VerificationPolicy) -> None:
        f: PassportFloors = policy.passport
        if self.passport_type not in f.types:
            raise InfoError(
                f"passport info: {self.passport_type} passports are images the claimant ships, not derived from "
                f"the key; this community judges {', '.join(f.types)} passports only"
            )
        self._check_classes(policy, self.num_classes, self.dataset)
        self._floor("n_eval", self.n_eval, f.min_eval)
        self._check_work(policy, self.n_eval)

    @property
    def queries(self) -> int:
        return self.n_eval


INFO_TYPES: dict[str, type[Info]] = {
    t.SCHEME: t for t in (MtlsignInfo, NewLabelInfo, FunctionCoupledInfo, BlindInfo, PassportInfo)
}


def parse_info(scheme: str, obj: object, policy: VerificationPolicy = DEFAULT_POLICY) -> Info:
    """The typed info of a claim on a `scheme` publish, checked against the community's policy."""
    kind = INFO_TYPES.get(scheme)
    if kind is None:
        raise InfoError(f"this community judges no {scheme[:40]!r} claims; schemes: {', '.join(sorted(INFO_TYPES))}")
    info = kind.from_json(obj)
    info.check(policy)
    return info


# --------------------------------------------------------------------------------------------
# The suspect's card, read torch-free from a model artifact's safetensors header


def card_from_artifact(data: bytes) -> dict[str, Any]:
    """The card a model artifact carries in its safetensors metadata (`wmnode.card`)."""
    return card_summary(header_card(_header(data, "the suspect model")))


def header_card(header: Mapping[str, Any]) -> dict[str, Any]:
    """The whole card in a parsed safetensors header's metadata (`wmnode.card`), as JSON."""
    try:
        card = json.loads(header["__metadata__"]["wmnode.card"])
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise MessageError("the suspect model carries no model card in its metadata") from exc
    if not isinstance(card, dict):
        raise MessageError("the suspect model's card is not a JSON object")
    return card


def card_summary(card: Mapping[str, Any]) -> dict[str, Any]:
    """The fields a node checks, from either card shape (schemes.zoo.ModelCard): the zoo's own
    (`arch`, `input_shape`, `mean`, `std` at the top) or timm's config.json (`architecture`, and
    `pretrained_cfg` with `input_size`, `mean`, `std`), read exactly as the judge's loader reads it
    (a bare timm name is `timm:NAME`), so the node and its judge see one card."""
    if "architecture" not in card:
        return {k: card.get(k) for k in ("arch", "num_classes", "input_shape", "mean", "std")}
    arch = card.get("architecture")
    cfg = card.get("pretrained_cfg")
    cfg = cfg if isinstance(cfg, dict) else {}
    if isinstance(arch, str) and ":" not in arch:
        arch = f"timm:{arch}"
    return {"arch": arch, "num_classes": card.get("num_classes"), "input_shape": cfg.get("input_size"),
            "mean": cfg.get("mean"), "std": cfg.get("std")}  # fmt: skip


def safetensors_header(path: Path) -> bytes:
    """The length prefix and header of a stored safetensors file (at most 16 MiB of header)."""
    with path.open("rb") as handle:
        prefix = handle.read(8)
        length = int.from_bytes(prefix, "little") if len(prefix) == 8 else 0
        if length > 16 * 2**20:
            raise MessageError(f"{path.name}: safetensors header over 16 MiB")
        return prefix + handle.read(length)


def tensor_names(data: bytes) -> set[str]:
    """The tensor names in a safetensors header (`data` holds at least the header)."""
    header = _header(data, "the verifier artifact")
    return {name for name in header if name != "__metadata__"}


def check_verifier(info: Info, names: set[str]) -> None:
    """Refuse shipped inputs where the scheme rebuilds them from the key (DESIGN §6.1 rule 1)."""
    if info.VERIFIER is not None and not names <= info.VERIFIER:
        extra = ", ".join(sorted(names - info.VERIFIER))[:200]
        allowed = ", ".join(sorted(info.VERIFIER)) or "nothing"
        raise InfoError(
            f"{info.SCHEME}: the verifier artifact ships {extra}, but this scheme's verification inputs come "
            f"from the key; it may hold {allowed}"
        )


def _header(data: bytes, what: str) -> dict[str, Any]:
    if len(data) < 8:
        raise MessageError(f"{what} is not a safetensors file")
    (length,) = struct.unpack("<Q", data[:8])
    if not 2 <= length <= min(len(data) - 8, 16 * 2**20):
        raise MessageError(f"{what}'s safetensors header is malformed")
    try:
        header = json.loads(data[8 : 8 + length])
    except (ValueError, RecursionError) as exc:
        raise MessageError(f"{what}'s safetensors header is not JSON") from exc
    if not isinstance(header, dict):
        raise MessageError(f"{what}'s safetensors header is not a JSON object")
    return header


#: An info's normalisation is only the encoding its verification inputs are built in (the judge turns
#: them back into raw pixels, schemes.suspect): its data set's own statistics, or one in these bounds
#: ([0, 1]-pixel units), so the round trip through it keeps every pixel's precision.
MEAN_RANGE = (0.0, 1.0)
STD_RANGE = (0.1, 0.5)


def image_normalisation(mean: Sequence[float], std: Sequence[float]) -> bool:
    return all(MEAN_RANGE[0] <= m <= MEAN_RANGE[1] for m in mean) and all(
        STD_RANGE[0] <= s <= STD_RANGE[1] for s in std
    )


def check_against_card(
    info: Info,
    card: Mapping[str, Any],
    policy: VerificationPolicy = DEFAULT_POLICY,
    checkpoints: frozenset[str] = frozenset(),
) -> None:
    """What a node refuses of a suspect's card before any work (`card` is a `card_summary`).

    Neither the card's input size nor its normalisation is checked against the info: the judge
    runs the suspect as its own function of raw pixels, normalised by its own card, at the input
    shape the owner published (schemes.suspect, DESIGN §6.1 rule 4), so a thief who re-cards a copy
    does not void the owner's claim, and the claimant chooses neither after the fact. MTLSign on an
    open architecture is judged where the community admitted a public checkpoint of it as a reference
    (`checkpoints`: their base architectures) or opted in."""
    arch = card.get("arch")
    opened = policy.mtlsign.open_architectures or base_arch(arch) in checkpoints
    if info.SCHEME == "mtlsign" and isinstance(arch, str) and ":" in arch and not opened:
        raise InfoError(
            f"mtlsign: the suspect is a {arch.split('-')[0]} network, whose first stages public pretrained "
            "checkpoints share: a head fitted to them would pass on anyone's fine-tune of that checkpoint. This "
            "community has admitted no public checkpoint of it as a reference (wmnode reference add) and does not "
            "judge MTLSign on open architectures without one ([verification.mtlsign] open_architectures); claim "
            "with passport or a black-box scheme"
        )


def base_arch(arch: object) -> str:
    """An architecture without its scheme variant (a passport model is its plain network's kind)."""
    return arch.removesuffix("-passport") if isinstance(arch, str) else ""


# --------------------------------------------------------------------------------------------
# Reference models a node builds (DESIGN §6.1 rule 3)

REFERENCE_RECIPES = ("plain", "new-label", "passport")
#: The recipe of a public checkpoint a community admits by hash (`wmnode reference add`): its slot's
#: data set is the model hash itself, so every checkpoint is a slot of its own.
CHECKPOINT = "checkpoint"
_REFERENCE_KEYS = {"recipe": str, "arch": str, "dataset": str, "input_shape": list, "seed": int, "epochs": int}


@dataclass(frozen=True)
class ReferenceSpec:
    """One `[[references]]` entry: a reference model this node trains and records at first start."""

    recipe: str
    arch: str = "lenet5"
    dataset: str = "digits"
    input_shape: tuple[int, int, int] = (1, 28, 28)
    seed: int = 1
    epochs: int = 10

    @property
    def shape_text(self) -> str:
        return "x".join(str(v) for v in self.input_shape)

    @property
    def slot(self) -> tuple[str, int, str, str, str]:
        """The log's key for this reference (registry.messages.Reference.slot): the zoo model the
        recipe trains (passport: the arch's passport variant; new label: one extra class)."""
        arch = f"{self.arch}-passport" if self.recipe == "passport" else self.arch
        classes = EMBEDDED_DATASETS[self.dataset] + (1 if self.recipe == "new-label" else 0)
        return (arch, classes, self.shape_text, self.dataset, self.recipe)

    def job(self) -> dict[str, Any]:
        return {"recipe": self.recipe, "arch": self.arch, "dataset": self.dataset,
                "input_shape": list(self.input_shape), "seed": self.seed, "epochs": self.epochs}  # fmt: skip


def parse_references(items: object, where: str) -> tuple[ReferenceSpec, ...]:
    """The `[[references]]` tables of a node config."""
    if not isinstance(items, list):
        raise ConfigError(f"{where} must be a list of tables ([[references]])")
    specs = []
    for i, table in enumerate(items):
        at = f"{where}[{i}]"
        if not isinstance(table, dict):
            raise ConfigError(f"{at} must be a table")
        for name, value in table.items():
            want = _REFERENCE_KEYS.get(name)
            if want is None:
                raise ConfigError(f"{at}: unknown field {name!r} (allowed: {', '.join(sorted(_REFERENCE_KEYS))})")
            if isinstance(value, bool) or not isinstance(value, want):
                raise ConfigError(f"{at}.{name} must be a {want.__name__}")
        if table.get("recipe") not in REFERENCE_RECIPES:
            raise ConfigError(f"{at}.recipe must be one of {', '.join(REFERENCE_RECIPES)}")
        if table.get("dataset", "digits") not in EMBEDDED_DATASETS:
            raise ConfigError(f"{at}.dataset must be one of {', '.join(sorted(EMBEDDED_DATASETS))}")
        shape = table.get("input_shape", [1, 28, 28])
        if not (len(shape) == 3 and all(type(v) is int and 1 <= v <= 512 for v in shape)):
            raise ConfigError(f"{at}.input_shape must be three integers in [1, 512]")
        if not 0 <= table.get("seed", 1) <= 2**31 or not 1 <= table.get("epochs", 10) <= 1000:
            raise ConfigError(f"{at}: seed must be in [0, 2^31] and epochs in [1, 1000]")
        specs.append(ReferenceSpec(**{**table, "input_shape": tuple(shape)}))
    return tuple(specs)
