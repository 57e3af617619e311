"""What a claim's `info` may say, and the community's floors on it (DESIGN §6.1 rule 2, §6.2).

Each scheme's info has one schema, its typed, frozen `Info` here: every field with its type, size
and range, the values it may name, and whether the scheme is black-box. The node's API parses a
claim's info with it when the claim arrives, every judge again, and the scheme's own `verify`
before it builds anything from it (`schemes.watermarks.base.read_info`), so no rule has a second
home to drift in. A parsed info is then checked against the community's `VerificationPolicy`
before any work: a claimant chooses its watermark before it publishes, but never the bar it is
judged by (threshold, N, β, query counts), the data its verification inputs are drawn from (only
data every member holds: `EMBEDDED_DATASETS` or a set the community pins), or an extra class Δ
that the task already has. Torch-free.

The floors here are the built-in minimums; a community config may raise them (`[verification]`),
never lower them, and a claimant's info can only meet them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

from contracts._fields import (
    channels_of,
    dataset_of,
    fail,
    hex64,
    integer,
    number,
    one_of,
    passport_shapes,
    shape_of,
)
from contracts.datasets import COMMUNITY_SPLIT_SEED, COMMUNITY_TEST_FRACTION
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


# --------------------------------------------------------------------------------------------
# The infos


@dataclass(frozen=True)
class Info:
    """Common part of every scheme's info; subclasses add their fields, `_parse` and `check`."""

    SCHEME: ClassVar[str] = ""
    FIELDS: ClassVar[frozenset[str]] = frozenset()
    #: Whether verification reads only the suspect's labels, so a prediction API may stand in for
    #: the model; white-box schemes need its weights.
    BLACK_BOX: ClassVar[bool] = False
    #: The tensors the verifier artifact may hold (None: whatever the scheme's own parser takes);
    #: empty where every input comes from the key, so shipped inputs are refused on arrival.
    VERIFIER: ClassVar[frozenset[str] | None] = None

    input_shape: tuple[int, int, int]
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()

    @classmethod
    def from_json(cls, obj: object) -> Self:
        """The info `obj` (a parsed JSON object) checked field by field; InfoError names the first bad one."""
        if not isinstance(obj, Mapping):
            raise InfoError("info must be a JSON object")
        missing, unknown = sorted(cls.FIELDS - set(obj)), sorted(set(obj) - cls.FIELDS)
        if missing or unknown:
            raise InfoError(f"{cls.SCHEME} info: missing fields {missing}, unknown fields {unknown}")
        if obj["scheme"] != cls.SCHEME:
            raise InfoError(f"info describes a {str(obj['scheme'])[:40]!r} watermark, not {cls.SCHEME!r}")
        shape = shape_of(obj, cls.SCHEME)
        common = {
            "input_shape": shape,
            "mean": channels_of(obj, cls.SCHEME, "mean", shape[0], positive=False),
            "std": channels_of(obj, cls.SCHEME, "std", shape[0], positive=True),
        }
        return cls._parse(obj, common)

    @classmethod
    def _parse(cls, obj: Mapping[str, Any], common: dict[str, Any]) -> Self:
        """The scheme's own fields; `common` holds the parsed input_shape, mean and std."""
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
    def _parse(cls, obj: Mapping[str, Any], common: dict[str, Any]) -> Self:
        s = cls.SCHEME
        taps = obj["taps"]
        if not (isinstance(taps, list) and 1 <= len(taps) <= 64 and all(isinstance(t, str) and 0 < len(t) <= 200
                                                                       for t in taps)):  # fmt: skip
            raise fail(s, "taps", "a list of module paths", taps)
        # Algorithm 1 passes at ≥ γ·N right answers of N label bits: at γ = 0.5 a coin passes.
        return cls(
            **common, n=integer(obj, s, "n", 2, 100_000), gamma=number(obj, s, "gamma", 0.5, 1.0, open_low=True),
            taps=tuple(taps), pool=integer(obj, s, "pool", 1, 64), hidden=integer(obj, s, "hidden", 1, 4096),
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
    BLACK_BOX: ClassVar[bool] = True
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
    def _parse(cls, obj: Mapping[str, Any], common: dict[str, Any]) -> Self:
        s = cls.SCHEME
        return cls(
            **common, dataset=dataset_of(obj, s), delta=integer(obj, s, "delta", 1, 100_000),
            beta=number(obj, s, "beta", 1e-9, 1.0), n=integer(obj, s, "n", 1, 100_000),
            threshold=number(obj, s, "threshold", 1e-9, 1.0),
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
    BLACK_BOX: ClassVar[bool] = True
    VERIFIER: ClassVar[frozenset[str] | None] = frozenset()
    FIELDS: ClassVar[frozenset[str]] = frozenset(
        {"scheme", "version", "mode", "r", "n_train", "n_verify", "threshold", "candidate", "num_classes",
         "input_shape", "mean", "std", "dataset", "split_seed", "test_fraction", "dataset_sha256"}
    )  # fmt: skip
    #: Version 2: PARTS triples per key (schemes.watermarks.function_coupled's docstring).
    VERSION: ClassVar[int] = 2
    MODES: ClassVar[tuple[str, ...]] = FunctionCoupledFloors.MODES
    #: Candidate sets of triples a key may use (embed's screening); a vote's bound counts each.
    CANDIDATES: ClassVar[int] = 4

    version: int = 0
    mode: str = ""
    r: float = 0.0
    n_train: int = 0
    n_verify: int = 0
    threshold: float = 0.0
    candidate: int = 0
    num_classes: int = 0
    dataset: str = ""
    split_seed: int = 0
    test_fraction: float = 0.0
    dataset_sha256: str = ""

    @classmethod
    def _parse(cls, obj: Mapping[str, Any], common: dict[str, Any]) -> Self:
        s = cls.SCHEME
        if obj["split_seed"] is None or obj["test_fraction"] is None:
            raise InfoError(
                "function-coupled info: split_seed and test_fraction must not be null: the triggers must come from "
                "a data set every node holds"
            )
        n_train = integer(obj, s, "n_train", 1, 1_000_000)
        info = cls(
            **common, version=one_of(obj, s, "version", (cls.VERSION,)), mode=one_of(obj, s, "mode", cls.MODES),
            r=number(obj, s, "r", 0.0, 1.0), n_train=n_train,
            n_verify=integer(obj, s, "n_verify", 1, min(n_train, 100_000)),
            threshold=number(obj, s, "threshold", 1e-9, 1.0),
            candidate=integer(obj, s, "candidate", 0, cls.CANDIDATES - 1),
            num_classes=integer(obj, s, "num_classes", 4, 100_000), dataset=dataset_of(obj, s),
            split_seed=integer(obj, s, "split_seed", 0, 2**32 - 1),
            test_fraction=number(obj, s, "test_fraction", 1e-9, 1 - 1e-9),
            dataset_sha256=hex64(obj, s, "dataset_sha256"),
        )  # fmt: skip
        if (info.split_seed, info.test_fraction) != (COMMUNITY_SPLIT_SEED, COMMUNITY_TEST_FRACTION):
            raise InfoError(
                f"{s} info: the data must be split as the community splits it (split_seed "
                f"{COMMUNITY_SPLIT_SEED}, test_fraction {COMMUNITY_TEST_FRACTION}), got {info.split_seed} and "
                f"{info.test_fraction}"
            )
        return info

    def check(self, policy: VerificationPolicy) -> None:
        f: FunctionCoupledFloors = policy.function_coupled
        self._check_classes(policy, self.num_classes, self.dataset)
        if self.mode != f.mode:
            raise InfoError(f"function-coupled info: mode must be the community's {f.mode!r}")
        _exactly(self.SCHEME, "r", self.r, f.r)
        self._floor("n_verify", self.n_verify, f.min_n_verify)
        self._floor("threshold", self.threshold, f.min_threshold)
        self._check_work(policy, self.n_verify, FUNCTION_COUPLED_SURVEY_QUERIES)

    @property
    def queries(self) -> int:
        return self.n_verify + FUNCTION_COUPLED_SURVEY_QUERIES


def _exactly(scheme: str, name: str, value: float, wanted: float) -> None:
    if not abs(value - wanted) <= 1e-9:
        raise InfoError(f"{scheme} info: {name} must be the community's {wanted:g}, got {value:g}")


@dataclass(frozen=True)
class BlindInfo(Info):
    SCHEME: ClassVar[str] = "blind"
    BLACK_BOX: ClassVar[bool] = True
    VERIFIER: ClassVar[frozenset[str] | None] = frozenset({"key_samples", "logo"})
    FIELDS: ClassVar[frozenset[str]] = frozenset(
        {"scheme", "dataset", "n", "threshold", "num_classes", "input_shape", "mean", "std", "alpha", "beta",
         "gamma", "delta", "epochs", "logo_sha256", "logo_source", "encoder", "discriminator", "min_ssim"}
    )  # fmt: skip
    #: Where the logo came from: a file, a text, or text drawn from the key.
    LOGO_SOURCES: ClassVar[tuple[str, ...]] = ("file", "key", "text")
    #: The encoder, by its width (schemes.data._imaging.Encoder), and the discriminator (the authors' MLP).
    ENCODER: ClassVar[re.Pattern[str]] = re.compile(r"residual-cnn-([1-9][0-9]{0,3})")
    DISCRIMINATOR: ClassVar[str] = "mlp-64-32"
    #: The most key samples a verifier artifact ships (float32 images, each checked against its cover).
    MAX_N: ClassVar[int] = 10_000

    dataset: str = ""
    n: int = 0
    threshold: float = 0.0
    num_classes: int = 0
    min_ssim: float = 0.0
    alpha: float = 0.0
    beta: float = 0.0
    gamma: float = 0.0
    delta: float = 0.0
    epochs: int = 0
    logo_sha256: str = ""
    logo_source: str = ""
    encoder: str = ""
    discriminator: str = ""

    @classmethod
    def _parse(cls, obj: Mapping[str, Any], common: dict[str, Any]) -> Self:
        s = cls.SCHEME
        encoder = obj["encoder"]
        if not isinstance(encoder, str) or not cls.ENCODER.fullmatch(encoder):
            raise fail(s, "encoder", "residual-cnn-<channels> (1-9999 channels)", encoder)
        # Eq. 4 passes at acc_g > T_acc: a threshold of 1 could never pass.
        return cls(
            **common, dataset=dataset_of(obj, s), n=integer(obj, s, "n", 1, cls.MAX_N),
            threshold=number(obj, s, "threshold", 1e-9, 1.0, open_high=True),
            num_classes=integer(obj, s, "num_classes", 2, 100_000), min_ssim=number(obj, s, "min_ssim", 0.0, 1.0),
            alpha=number(obj, s, "alpha", 0.0, 1e6), beta=number(obj, s, "beta", 0.0, 1e6),
            gamma=number(obj, s, "gamma", 0.0, 1e6), delta=number(obj, s, "delta", 0.0, 1e6),
            epochs=integer(obj, s, "epochs", 1, 10**6), logo_sha256=hex64(obj, s, "logo_sha256"),
            logo_source=one_of(obj, s, "logo_source", cls.LOGO_SOURCES), encoder=encoder,
            discriminator=one_of(obj, s, "discriminator", (cls.DISCRIMINATOR,)),
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
    #: Table 1's passport functions and §2.4's passport types.
    VERSIONS: ClassVar[tuple[str, ...]] = ("V1", "V2", "V3")
    TYPES: ClassVar[tuple[str, ...]] = ("T1", "T2", "T3")

    version: str = ""
    passport_type: str = ""
    layers: Mapping[str, tuple[int, ...]] = field(default_factory=dict, hash=False)
    delta: float = 0.0
    noise_sigmas: float = 0.0
    noise_floor: float = 0.0
    noise_draws: int = 0
    dataset: str = ""
    n_eval: int = 0
    num_classes: int = 0

    @classmethod
    def _parse(cls, obj: Mapping[str, Any], common: dict[str, Any]) -> Self:
        s = cls.SCHEME
        return cls(
            **common, version=one_of(obj, s, "version", cls.VERSIONS),
            passport_type=one_of(obj, s, "passport_type", cls.TYPES), layers=passport_shapes(obj, s),
            delta=number(obj, s, "delta", 0.0, 1.0), noise_sigmas=number(obj, s, "noise_sigmas", 0.0, 100.0),
            noise_floor=number(obj, s, "noise_floor", 0.0, 1.0), noise_draws=integer(obj, s, "noise_draws", 1, 100),
            dataset=dataset_of(obj, s), n_eval=integer(obj, s, "n_eval", 1, 100_000),
            num_classes=integer(obj, s, "num_classes", 2, 100_000),
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


def is_black_box(scheme: str) -> bool:
    """Whether `scheme` is judged on the suspect's labels alone, so a prediction API may stand in for
    the model (`Info.BLACK_BOX`); False for a scheme this community does not judge."""
    kind = INFO_TYPES.get(scheme)
    return kind is not None and kind.BLACK_BOX


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
