"""The judge protocol's messages: the jobs a node sends its judge processes and the answers it reads.

A job is one line of JSON to the judge's stdin, an answer one line from its stdout (registry.serve.
judges). Both sides parse with the `from_json` here, so a job the node builds is the job the judge
runs (the fetch policy included, field by field), and an answer the node records as a vote has the
vote's shape. The judge process has read a stranger's files before it answers: its answers are
validated like anything else that crosses a process boundary. Torch-free: the judge process
(registry.judge.process) imports this module from below.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from contracts.bounds import BOUND_RE
from contracts.encoding import is_hex, is_int, is_number
from contracts.errors import MessageError, WmnodeError
from contracts.fetch import FetchPolicy
from registry.log.answers import JsonAnswer, json_object, require_count, require_hex32, require_text
from registry.log.messages import MAX_REASON_CHARS, MAX_URI_CHARS, MAX_VOTE_REFERENCES, PREDICT, VERDICTS, uri_kind

__all__ = ["BuildJob", "BuildPolicy", "Built", "DatasetFile", "JudgeJob", "JudgeVerdict", "ReferenceFile", "read_job"]

JUDGE, BUILD = "judge", "build"
#: A file a judge reads, named by the node (its store, its spool, its pinned data sets).
MAX_PATH_CHARS = 4096
#: The transport's own fields in an answer: the judge's seconds, the node's peak RSS reading.
_TRANSPORT = ("seconds", "peak_rss")


def _path(obj: Mapping[str, Any], name: str, where: str) -> str:
    value = require_text(obj, name, where, MAX_PATH_CHARS)
    if not value:
        raise MessageError(f"{where}.{name} must name a file")
    return value


def _number(obj: Mapping[str, Any], name: str, where: str, low: float = 0.0, high: float = float("inf")) -> float:
    value = obj.get(name)
    if not is_number(value, low, high):
        raise MessageError(f"{where}.{name} must be a number in [{low:g}, {high:g}], got {value!r:.40}")
    return float(value)


def _list(obj: Mapping[str, Any], name: str, where: str, limit: int) -> list[Any]:
    value = obj.get(name)
    if not isinstance(value, list) or len(value) > limit:
        raise MessageError(f"{where}.{name} must be a list of at most {limit} items")
    return value


def _predict_uri(obj: Mapping[str, Any], where: str) -> str:
    value = require_text(obj, "predict_uri", where, MAX_URI_CHARS)
    try:
        kind = uri_kind(value)
    except MessageError as exc:
        raise MessageError(f"{where}.predict_uri: {exc.diagnostics()}") from None
    if kind != PREDICT:
        raise MessageError(f"{where}.predict_uri must be a prediction API (predict+http(s)://…)")
    return value


def policy_to_json(policy: FetchPolicy) -> dict[str, Any]:
    return {
        "allow_loopback": policy.allow_loopback,
        "allow_private": policy.allow_private,
        "allow_hosts": list(policy.allow_hosts),
        "max_bytes": policy.max_bytes,
        "timeout_s": policy.timeout_s,
    }


def policy_from_json(obj: object, where: str = "fetch policy") -> FetchPolicy:
    fields = json_object(obj, where, ("allow_loopback", "allow_private", "allow_hosts", "max_bytes", "timeout_s"))
    for name in ("allow_loopback", "allow_private"):
        if not isinstance(fields[name], bool):
            raise MessageError(f"{where}.{name} must be true or false")
    hosts = _list(fields, "allow_hosts", where, 1000)
    if not all(isinstance(h, str) and 0 < len(h) <= 255 for h in hosts):
        raise MessageError(f"{where}.allow_hosts must be host names")
    return FetchPolicy(
        allow_loopback=fields["allow_loopback"],
        allow_private=fields["allow_private"],
        allow_hosts=tuple(hosts),
        max_bytes=require_count(fields, "max_bytes", where),
        timeout_s=_number(fields, "timeout_s", where, low=0.001),
    )


@dataclass(frozen=True)
class ReferenceFile:
    """A reference model the judge also verifies: its hash (the cache key) and its file in the store."""

    model_hash: str
    path: str

    @classmethod
    def from_json(cls, obj: object, where: str = "reference") -> ReferenceFile:
        fields = json_object(obj, where, ("model_hash", "path"))
        return cls(require_hex32(fields, "model_hash", where), _path(fields, "path", where))

    def to_json(self) -> dict[str, Any]:
        return {"model_hash": self.model_hash, "path": self.path}


@dataclass(frozen=True)
class DatasetFile:
    """A data set the community pinned (contracts.infos.PinnedDataset), where this node keeps it."""

    name: str
    format: str
    path: str
    num_classes: int

    @classmethod
    def from_json(cls, obj: object, where: str = "data set") -> DatasetFile:
        fields = json_object(obj, where, ("name", "format", "path", "num_classes"))
        name, kind = require_text(fields, "name", where, 128), require_text(fields, "format", where, 64)
        classes = fields["num_classes"]
        if not is_int(classes, low=1, high=100_000):
            raise MessageError(f"{where}.num_classes must be 1-100000, got {classes!r:.40}")
        return cls(name, kind, _path(fields, "path", where), classes)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "format": self.format, "path": self.path, "num_classes": self.num_classes}


@dataclass(frozen=True)
class BuildPolicy:
    """What the community lets a judge build from a card: architecture patterns and a parameter cap."""

    architectures: tuple[str, ...] = ("*",)
    max_parameters: int = 100_000_000

    @classmethod
    def from_json(cls, obj: object, where: str = "build policy") -> BuildPolicy:
        fields = json_object(obj, where, ("architectures", "max_parameters"))
        patterns = _list(fields, "architectures", where, 1000)
        if not all(isinstance(p, str) and 0 < len(p) <= 128 and p.isprintable() for p in patterns):
            raise MessageError(f"{where}.architectures must be architecture names or patterns")
        cap = fields["max_parameters"]
        if not is_int(cap, low=1):
            raise MessageError(f"{where}.max_parameters must be a positive integer, got {cap!r:.40}")
        return cls(tuple(patterns), cap)

    def to_json(self) -> dict[str, Any]:
        return {"architectures": list(self.architectures), "max_parameters": self.max_parameters}


@dataclass(frozen=True, eq=False)
class JudgeJob(JsonAnswer):
    """Judge one claim (registry.judge.process.judge): run the publish's scheme on the suspect (a
    model file, or a prediction API under the fetch policy and deadline), on `controls` control keys
    seeded by the claim's leaf hash, and on the matching reference models; decide against the
    community's threshold floor and false-positive maximum, over `tries` earlier claims."""

    scheme: str
    key: str
    info_path: str
    verifier_path: str
    model_path: str | None
    predict_uri: str | None
    fetch: FetchPolicy
    references: tuple[ReferenceFile, ...]
    threshold_floor: float
    max_false_positive: float
    controls: int
    control_seed: str
    datasets: tuple[DatasetFile, ...] = ()
    build: BuildPolicy = BuildPolicy()
    predict_deadline_s: float | None = None
    tries: int = 1

    REQUIRED: ClassVar[tuple[str, ...]] = (
        "scheme", "key", "info_path", "verifier_path", "model_path", "predict_uri", "fetch", "references",
        "threshold_floor", "max_false_positive", "controls", "control_seed", "datasets",
    )  # fmt: skip
    OPTIONAL: ClassVar[tuple[str, ...]] = ("op", "build", "predict_deadline_s", "tries")

    @classmethod
    def from_json(cls, obj: object, where: str = "judge job") -> JudgeJob:
        fields = json_object(obj, where, cls.REQUIRED, cls.OPTIONAL)
        if fields.get("op", JUDGE) != JUDGE:
            raise MessageError(f"{where}.op must be {JUDGE!r}")
        model, api = fields["model_path"], fields["predict_uri"]
        if (model is None) == (api is None):
            raise MessageError(f"{where}: exactly one of model_path and predict_uri names the suspect")
        controls, tries = fields["controls"], fields.get("tries", 1)
        if not is_int(controls, low=0, high=1000) or not is_int(tries, low=1):
            raise MessageError(f"{where}: controls must be 0-1000 control keys and tries a positive integer")
        references = _list(fields, "references", where, MAX_VOTE_REFERENCES)
        datasets = _list(fields, "datasets", where, 100)
        return cls(
            scheme=require_text(fields, "scheme", where, 32),
            key=require_hex32(fields, "key", where),
            info_path=_path(fields, "info_path", where),
            verifier_path=_path(fields, "verifier_path", where),
            model_path=None if model is None else _path(fields, "model_path", where),
            predict_uri=None if api is None else _predict_uri(fields, where),
            fetch=policy_from_json(fields["fetch"], f"{where}.fetch"),
            references=tuple(ReferenceFile.from_json(r, f"{where}.references") for r in references),
            threshold_floor=_number(fields, "threshold_floor", where),
            max_false_positive=_number(fields, "max_false_positive", where, high=1.0),
            controls=controls,
            control_seed=require_hex32(fields, "control_seed", where),
            datasets=tuple(DatasetFile.from_json(d, f"{where}.datasets") for d in datasets),
            build=BuildPolicy.from_json(fields["build"], f"{where}.build") if "build" in fields else BuildPolicy(),
            predict_deadline_s=None
            if fields.get("predict_deadline_s") is None
            else _number(fields, "predict_deadline_s", where, low=0.001),
            tries=tries,
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "op": JUDGE,
            "scheme": self.scheme,
            "key": self.key,
            "info_path": self.info_path,
            "verifier_path": self.verifier_path,
            "model_path": self.model_path,
            "predict_uri": self.predict_uri,
            "fetch": policy_to_json(self.fetch),
            "references": [r.to_json() for r in self.references],
            "threshold_floor": self.threshold_floor,
            "max_false_positive": self.max_false_positive,
            "controls": self.controls,
            "control_seed": self.control_seed,
            "datasets": [d.to_json() for d in self.datasets],
            "build": self.build.to_json(),
            "tries": self.tries,
        }
        if self.predict_deadline_s is not None:
            out["predict_deadline_s"] = self.predict_deadline_s
        return out


@dataclass(frozen=True, eq=False)
class BuildJob(JsonAnswer):
    """Train the reference model a `[[references]]` table names (contracts.infos.ReferenceSpec) and
    write it, as one model artifact, to `out`."""

    recipe: str
    arch: str
    dataset: str
    input_shape: tuple[int, int, int]
    seed: int
    epochs: int
    out: str

    FIELDS: ClassVar[tuple[str, ...]] = ("recipe", "arch", "dataset", "input_shape", "seed", "epochs", "out")

    @classmethod
    def from_json(cls, obj: object, where: str = "build job") -> BuildJob:
        fields = json_object(obj, where, cls.FIELDS, ("op",))
        if fields.get("op", BUILD) != BUILD:
            raise MessageError(f"{where}.op must be {BUILD!r}")
        shape = _list(fields, "input_shape", where, 3)
        if len(shape) != 3 or not all(is_int(n, low=1, high=100_000) for n in shape):
            raise MessageError(f"{where}.input_shape must be [channels, height, width]")
        epochs = fields["epochs"]
        if not is_int(epochs, low=0, high=100_000):
            raise MessageError(f"{where}.epochs must be 0-100000, got {epochs!r:.40}")
        return cls(
            recipe=require_text(fields, "recipe", where, 64),
            arch=require_text(fields, "arch", where, 128),
            dataset=require_text(fields, "dataset", where, 128),
            input_shape=(shape[0], shape[1], shape[2]),
            seed=require_count(fields, "seed", where),
            epochs=epochs,
            out=_path(fields, "out", where),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "op": BUILD,
            "recipe": self.recipe,
            "arch": self.arch,
            "dataset": self.dataset,
            "input_shape": list(self.input_shape),
            "seed": self.seed,
            "epochs": self.epochs,
            "out": self.out,
        }


def read_job(obj: object) -> JudgeJob | BuildJob:
    """A job line as the judge reads it: `op` says which."""
    op = obj.get("op") if isinstance(obj, dict) else None
    if op == JUDGE:
        return JudgeJob.from_json(obj)
    if op == BUILD:
        return BuildJob.from_json(obj)
    raise MessageError(f"a job's op must be {JUDGE!r} or {BUILD!r}, got {op!r:.40}")


def _failure(obj: object) -> None:
    """An answer `{"error": ...}` is the judge saying it could not do the job: raised as one."""
    if isinstance(obj, dict) and "error" in obj:
        raise WmnodeError(str(obj["error"])[:500])


@dataclass(frozen=True, eq=False)
class JudgeVerdict(JsonAnswer):
    """A judge's answer to a `JudgeJob`: the fields of the node's vote (registry.log.messages.Vote),
    score and threshold per mille, the false-positive bound as a decimal string, the reference
    models checked, and the control figures ("" when the claim was refused before any control ran)."""

    verdict: str
    score: int
    threshold: int
    reason: str
    fp_bound: str
    references: tuple[str, ...] = ()
    controls: str = ""

    FIELDS: ClassVar[tuple[str, ...]] = (
        "verdict",
        "score",
        "threshold",
        "reason",
        "fp_bound",
        "references",
        "controls",
    )

    @classmethod
    def from_json(cls, obj: object, where: str = "judge's answer") -> JudgeVerdict:
        """Parse an answer; an `{"error": ...}` answer raises `WmnodeError` with the judge's words."""
        _failure(obj)
        fields = json_object(obj, where, cls.FIELDS, _TRANSPORT)
        if fields["verdict"] not in VERDICTS:
            raise MessageError(f"{where}.verdict must be one of {', '.join(VERDICTS)}")
        for name in ("score", "threshold"):
            if not is_int(fields[name], low=0, high=1000):
                raise MessageError(f"{where}.{name} must be an integer per mille (0-1000)")
        bound = fields["fp_bound"]
        if not isinstance(bound, str) or not BOUND_RE.fullmatch(bound):
            raise MessageError(f"{where}.fp_bound must be a decimal string like '2.30e-09'")
        refs = _list(fields, "references", where, MAX_VOTE_REFERENCES)
        if not all(is_hex(r, 32) for r in refs):
            raise MessageError(f"{where}.references must be SHA-256 hex digests")
        return cls(
            fields["verdict"], fields["score"], fields["threshold"],
            require_text(fields, "reason", where, 20 * MAX_REASON_CHARS), bound, tuple(refs),
            require_text(fields, "controls", where, 200),
        )  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "score": self.score, "threshold": self.threshold, "reason": self.reason,
                "fp_bound": self.fp_bound, "references": list(self.references), "controls": self.controls}  # fmt: skip


@dataclass(frozen=True, eq=False)
class Built(JsonAnswer):
    """A judge's answer to a `BuildJob`: the reference it wrote."""

    arch: str
    num_classes: int
    nbytes: int

    @classmethod
    def from_json(cls, obj: object, where: str = "judge's answer") -> Built:
        """Parse an answer; an `{"error": ...}` answer raises `WmnodeError` with the judge's words."""
        _failure(obj)
        fields = json_object(obj, where, ("arch", "num_classes", "bytes"), _TRANSPORT)
        return cls(
            require_text(fields, "arch", where, 128),
            require_count(fields, "num_classes", where),
            require_count(fields, "bytes", where),
        )

    def to_json(self) -> dict[str, Any]:
        return {"num_classes": self.num_classes, "arch": self.arch, "bytes": self.nbytes}
