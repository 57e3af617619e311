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

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from contracts.datasets import COMMUNITY_SPLIT_SEED, COMMUNITY_TEST_FRACTION, DATASET_NAME_RE
from contracts.errors import InfoError
from contracts.policy import (
    DEFAULT_POLICY,
    BlindFloors,
    FunctionCoupledFloors,
    MtlsignFloors,
    NewLabelFloors,
    PassportFloors,
    VerificationPolicy,
)

#: Function-coupled's survey of the suspect: fresh blends per ordered base pair, and the most pairs
#: it asks about (`schemes.function_coupled.survey`); counted against the query cap once a claim.
FUNCTION_COUPLED_SURVEY_BLENDS, FUNCTION_COUPLED_SURVEY_PAIRS = 80, 90
FUNCTION_COUPLED_SURVEY_QUERIES = FUNCTION_COUPLED_SURVEY_BLENDS * FUNCTION_COUPLED_SURVEY_PAIRS
_MAX_DIM = 4096


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
    if not isinstance(name, str) or not DATASET_NAME_RE.fullmatch(name):
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


def check_verifier(info: Info, names: set[str]) -> None:
    """Refuse shipped inputs where the scheme rebuilds them from the key (DESIGN §6.1 rule 1)."""
    if info.VERIFIER is not None and not names <= info.VERIFIER:
        extra = ", ".join(sorted(names - info.VERIFIER))[:200]
        allowed = ", ".join(sorted(info.VERIFIER)) or "nothing"
        raise InfoError(
            f"{info.SCHEME}: the verifier artifact ships {extra}, but this scheme's verification inputs come "
            f"from the key; it may hold {allowed}"
        )


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
