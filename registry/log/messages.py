"""Typed, signed protocol messages (DESIGN §4.1) with one canonical encoding.

Every message is a JSON object with `type` and `v`; its signature is Ed25519 over the canonical
bytes (RFC 8785) of the object without `sig`, by the key in its signer field (`owner` for
publish and claim, `node` for vote). Parsing validates every field, so an instance that exists is
well formed; `verify()` checks the signature.

    publish   the paper's <Publish: time ‖ hash(key) ‖ hash(cWM) ‖ hash(info)> (MTLSign §3.3)
    claim     the paper's ownership-verification message OV: the publish it rests on (log index),
              the suspect (model_uri, model_hash), where the verifier artifact and info are
              (verifier_uri, info_uri: DESIGN's `info`, as a pointer, since info may hold floats),
              and the revealed key with its key_proof (DESIGN §4.2)
    vote      one member node's verdict on one claim (its log index and the hash of its signed part,
              so a vote cannot be replayed onto another claim that got the same index elsewhere),
              score and threshold per mille, the false-positive bound the verdict rests on (a decimal
              string: per mille cannot hold 3e-8) and the reference models it was checked against
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, fields
from functools import cached_property
from typing import Any, ClassVar, cast

from contracts.bounds import BOUND_RE
from contracts.encoding import MAX_SAFE_INT, canonical, is_hex, is_int, parse_json
from contracts.errors import MessageError, VerificationError
from contracts.identity import Identity, verify_signature

_SCHEME_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
MAX_URI_CHARS = 2048
MAX_REASON_CHARS = 500
#: A vote names at most this many reference models (comma-separated SHA-256 hex).
MAX_VOTE_REFERENCES = 16
#: Votes: the verification passed, failed, or could not be carried out (fetch, hash, format...).
OWNER, NOT_OWNER, ERROR = "owner", "not-owner", "error"
VERDICTS = (OWNER, NOT_OWNER, ERROR)
#: URI kinds: an artifact in the nodes' store, an http(s) file, a prediction API (black-box).
ARTIFACT, HTTP, PREDICT = "artifact", "http", "predict"
_URI_RE = re.compile(r"(?:predict\+)?https?://[\x21-\x7e]+")


def uri_kind(uri: str) -> str:
    """`artifact` for `sha256:<hex>`, `http` for an http(s) URL, `predict` for `predict+http(s)://`.

    Only the syntax is checked here; whether a node may fetch from the host is the fetcher's call
    (registry.fetch), after DNS resolution.
    """
    if uri.startswith("sha256:"):
        if not is_hex(uri[7:], 32):
            raise MessageError(f"artifact URI {uri[:80]!r} must be 'sha256:' and 64 lowercase hex digits")
        return ARTIFACT
    if not _URI_RE.fullmatch(uri):
        raise MessageError(
            f"URI {uri[:80]!r} must be sha256:<hex>, an http(s) URL or predict+http(s)://… (printable ASCII)"
        )
    rest = uri.split("://", 1)[1]
    authority = rest.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
    if not authority or "@" in authority:
        raise MessageError(f"URL {uri[:80]!r} needs a host and may not carry user:password@")
    return PREDICT if uri.startswith("predict+") else HTTP


def _check_uri(name: str, value: object, kinds: tuple[str, ...]) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_URI_CHARS:
        raise MessageError(f"field {name!r} must be a URI of 1-{MAX_URI_CHARS} characters")
    try:
        kind = uri_kind(value)
    except MessageError as exc:
        raise MessageError(f"field {name!r}: {exc}") from None
    if kind not in kinds:
        raise MessageError(f"field {name!r} cannot be a {kind} URI (allowed: {', '.join(kinds)})")
    return kind


def _check_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise MessageError(f"field {name!r} must be an integer, got {type(value).__name__}")
    if not 0 <= value <= MAX_SAFE_INT:
        raise MessageError(f"field {name!r} is out of range: {value}")


def _check_hex(name: str, value: object, nbytes: int | None = None, *, low: int = 1, high: int = 64) -> None:
    if not isinstance(value, str):
        raise MessageError(f"field {name!r} must be a lowercase hex string, got {type(value).__name__}")
    if not is_hex(value, nbytes):
        want = f"{nbytes} bytes of" if nbytes else ""
        raise MessageError(f"field {name!r} must be {want} lowercase hex".replace("  ", " "))
    if nbytes is None and not low <= len(value) // 2 <= high:
        raise MessageError(f"field {name!r} must be {low}-{high} bytes of hex")


@dataclass(frozen=True)
class Message:
    """Common shape of every signed message; subclasses add fields and `_validate_fields`."""

    TYPE: ClassVar[str] = ""
    VERSION: ClassVar[int] = 1
    #: The field holding the signer's public key.
    SIGNER: ClassVar[str] = "owner"

    sig: str

    @classmethod
    def from_json(cls, obj: object) -> Message:
        """Validate a decoded JSON object against this type; unknown and missing fields are errors."""
        if not isinstance(obj, dict):
            raise MessageError("a message must be a JSON object")
        if obj.get("type") != cls.TYPE:
            raise MessageError(f"field 'type' must be {cls.TYPE!r}")
        if obj.get("v") != cls.VERSION or isinstance(obj.get("v"), bool):
            raise MessageError(f"field 'v' must be {cls.VERSION} for {cls.TYPE!r}")
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(obj) - names - {"type", "v"})
        if unknown:
            raise MessageError(f"unknown field(s) in {cls.TYPE!r}: {', '.join(unknown)}")
        missing = sorted(names - set(obj))
        if missing:
            raise MessageError(f"missing field(s) in {cls.TYPE!r}: {', '.join(missing)}")
        _check_hex(cls.SIGNER, obj[cls.SIGNER], 32)
        _check_hex("sig", obj["sig"], 64)
        cls._validate_fields(obj)
        return cls(**{name: obj[name] for name in names})

    @classmethod
    def _validate_fields(cls, obj: dict[str, Any]) -> None:
        raise NotImplementedError

    def to_json(self) -> dict[str, Any]:
        # Fields are str and int: a shallow dict is a faithful copy (asdict deep-copies, slowly).
        return {"type": self.TYPE, "v": self.VERSION, **{f.name: getattr(self, f.name) for f in fields(self)}}

    def signed_part(self) -> dict[str, Any]:
        body = self.to_json()
        del body["sig"]
        return body

    @cached_property
    def _signing_bytes(self) -> bytes:
        return canonical(self.signed_part())

    def signing_bytes(self) -> bytes:
        return self._signing_bytes

    def canonical_bytes(self) -> bytes:
        return canonical(self.to_json())

    @cached_property
    def _body_hash(self) -> str:
        return hashlib.sha256(self._signing_bytes).hexdigest()

    def body_hash(self) -> str:
        """Identity of the message for de-duplication: SHA-256 of the signed part."""
        return self._body_hash

    @property
    def signer(self) -> str:
        signer: str = getattr(self, self.SIGNER)
        return signer

    def verify(self) -> None:
        try:
            verify_signature(self.signer, bytes.fromhex(self.sig), self._signing_bytes)
        except VerificationError as exc:
            raise VerificationError(f"{self.TYPE}: signature does not match {self.SIGNER} {self.signer[:16]}…") from exc

    @classmethod
    def _sign(cls, identity: Identity, unsigned: dict[str, Any]) -> Message:
        body = {"type": cls.TYPE, "v": cls.VERSION, **unsigned, cls.SIGNER: identity.public_hex}
        return cls.from_json({**body, "sig": identity.sign(canonical(body)).hex()})


@dataclass(frozen=True)
class Publish(Message):
    """The paper's `<Publish: time ‖ hash(key) ‖ hash(cWM) ‖ hash(info)>` (MTLSign §3.3)."""

    TYPE: ClassVar[str] = "publish"

    owner: str
    scheme: str
    time: int
    key_hash: str
    verifier_hash: str
    info_hash: str
    nonce: str

    @classmethod
    def _validate_fields(cls, obj: dict[str, Any]) -> None:
        scheme = obj["scheme"]
        if not isinstance(scheme, str) or not _SCHEME_RE.fullmatch(scheme):
            raise MessageError("field 'scheme' must be a lowercase name like 'mtlsign' (a-z, 0-9, '-')")
        _check_int("time", obj["time"])
        for name in ("key_hash", "verifier_hash", "info_hash"):
            _check_hex(name, obj[name], 32)
        _check_hex("nonce", obj["nonce"], low=16, high=64)

    @classmethod
    def create(
        cls,
        identity: Identity,
        *,
        scheme: str,
        time: int,
        key_hash: str,
        verifier_hash: str,
        info_hash: str,
        nonce: str,
    ) -> Publish:
        """Build and sign a publish; validation runs on the result, so bad values fail here."""
        unsigned = {
            "scheme": scheme,
            "time": time,
            "key_hash": key_hash,
            "verifier_hash": verifier_hash,
            "info_hash": info_hash,
            "nonce": nonce,
        }
        return cast(Publish, cls._sign(identity, unsigned))


@dataclass(frozen=True)
class Claim(Message):
    """The paper's OV (MTLSign §3.3): reveal the key of publish #`publish` against a suspect."""

    TYPE: ClassVar[str] = "claim"

    owner: str
    publish: int
    model_uri: str
    model_hash: str
    verifier_uri: str
    info_uri: str
    key: str
    key_proof: str
    time: int

    @classmethod
    def _validate_fields(cls, obj: dict[str, Any]) -> None:
        _check_int("publish", obj["publish"])
        _check_int("time", obj["time"])
        _check_hex("model_hash", obj["model_hash"], 32)
        _check_hex("key", obj["key"], 32)
        _check_hex("key_proof", obj["key_proof"], 64)
        if _check_uri("model_uri", obj["model_uri"], (ARTIFACT, HTTP, PREDICT)) == ARTIFACT:
            if obj["model_uri"][7:] != obj["model_hash"]:
                raise MessageError("field 'model_uri' names an artifact other than model_hash")
        elif obj["model_uri"].startswith("predict+") and obj["model_hash"] != predict_model_hash(obj["model_uri"]):
            raise MessageError("field 'model_hash' of a prediction API must be the SHA-256 of its URI")
        _check_uri("verifier_uri", obj["verifier_uri"], (ARTIFACT, HTTP))
        _check_uri("info_uri", obj["info_uri"], (ARTIFACT, HTTP))

    @classmethod
    def create(
        cls,
        identity: Identity,
        *,
        publish: int,
        model_uri: str,
        model_hash: str,
        verifier_uri: str,
        info_uri: str,
        key: bytes,
        key_proof: bytes,
        time: int,
    ) -> Claim:
        unsigned = {
            "publish": publish,
            "model_uri": model_uri,
            "model_hash": model_hash,
            "verifier_uri": verifier_uri,
            "info_uri": info_uri,
            "key": key.hex(),
            "key_proof": key_proof.hex(),
            "time": time,
        }
        return cast(Claim, cls._sign(identity, unsigned))


def predict_model_hash(uri: str) -> str:
    """A prediction API has no weights to hash: the model it serves is named by its URI."""
    return hashlib.sha256(uri.encode()).hexdigest()


@dataclass(frozen=True)
class Vote(Message):
    """One member's verdict on claim #`claim` (DESIGN §4.1, §6.1); score and threshold per mille.

    `fp_bound` is the chance that a model independent of the key passes, as the node bounded it
    (registry.bounds); `references` the model hashes of the community's reference models the
    verification also ran on (comma-separated, empty when none matched the suspect); `controls` the
    control keys it verified on the suspect (schemes.controls): "COUNT:MAX:NEAR:RATE", their number,
    the best control's score per mille, how many came near the threshold and the upper bound on
    their pooled per-answer rate (empty when the claim was not verified); `model_id` the suspect's
    function identity as this node read it (registry.modelid; a prediction API's is its model_hash;
    empty when the node could not read the suspect), by which decisions and standing owners go."""

    TYPE: ClassVar[str] = "vote"
    VERSION: ClassVar[int] = 3
    SIGNER: ClassVar[str] = "node"

    node: str
    claim: int
    claim_hash: str
    verdict: str
    score: int
    threshold: int
    reason: str
    fp_bound: str
    references: str
    controls: str
    model_id: str

    @classmethod
    def _validate_fields(cls, obj: dict[str, Any]) -> None:
        _check_int("claim", obj["claim"])
        _check_hex("claim_hash", obj["claim_hash"], 32)
        if obj["verdict"] not in VERDICTS:
            raise MessageError(f"field 'verdict' must be one of {', '.join(VERDICTS)}")
        for name in ("score", "threshold"):
            value = obj[name]
            if not is_int(value, 0, 1000):
                raise MessageError(f"field {name!r} must be an integer per mille (0-1000)")
        reason = obj["reason"]
        if not isinstance(reason, str) or len(reason) > MAX_REASON_CHARS or not reason.isprintable():
            raise MessageError(f"field 'reason' must be printable text of at most {MAX_REASON_CHARS} characters")
        bound = obj["fp_bound"]
        if not isinstance(bound, str) or not BOUND_RE.fullmatch(bound):
            raise MessageError("field 'fp_bound' must be a decimal string like '2.30e-09'")
        refs = obj["references"]
        if not isinstance(refs, str) or len(refs) > MAX_VOTE_REFERENCES * 65:
            raise MessageError(f"field 'references' must name at most {MAX_VOTE_REFERENCES} reference models")
        if refs and not all(is_hex(r, 32) for r in refs.split(",")):
            raise MessageError("field 'references' must be comma-separated SHA-256 hex digests")
        controls = obj["controls"]
        if not isinstance(controls, str) or not (controls == "" or _CONTROLS_RE.fullmatch(controls)):
            raise MessageError("field 'controls' must be empty or 'COUNT:MAX:NEAR:RATE' like '8:120:0:1.40e-02'")
        if obj["model_id"] != "" and not is_hex(obj["model_id"], 32):
            raise MessageError("field 'model_id' must be empty or a SHA-256 hex digest")

    @classmethod
    def create(
        cls,
        identity: Identity,
        *,
        claim: int,
        claim_hash: str,
        verdict: str,
        score: int,
        threshold: int,
        reason: str,
        fp_bound: str = "1.00e+00",
        references: tuple[str, ...] = (),
        controls: str = "",
        model_id: str = "",
    ) -> Vote:
        unsigned = {
            "claim": claim,
            "claim_hash": claim_hash,
            "verdict": verdict,
            "score": score,
            "threshold": threshold,
            "reason": reason,
            "fp_bound": fp_bound,
            "references": ",".join(references),
            "controls": controls,
            "model_id": model_id,
        }
        return cast(Vote, cls._sign(identity, unsigned))


_CONTROLS_RE = re.compile(r"[1-9][0-9]{0,2}:(?:1000|[0-9]{1,3}):[0-9]{1,3}:" + BOUND_RE.pattern)
_ARCH_RE = re.compile(r"[a-z0-9][a-z0-9_.:-]{0,63}")
_SHAPE_RE = re.compile(r"[1-9][0-9]{0,3}x[1-9][0-9]{0,3}x[1-9][0-9]{0,3}")


@dataclass(frozen=True)
class Reference(Message):
    """A member's record of a reference model (DESIGN §6.1 rule 3): a model independent of every
    claimant, trained by `recipe` with `seed` on `dataset`, whose weights travel by `model_hash`.

    A reference counts once a majority of the members have recorded the same hash for the same
    (arch, num_classes, input_shape, dataset, recipe): one lying member cannot plant a model."""

    TYPE: ClassVar[str] = "reference"
    SIGNER: ClassVar[str] = "node"

    node: str
    arch: str
    num_classes: int
    input_shape: str
    dataset: str
    recipe: str
    seed: int
    model_hash: str

    @classmethod
    def _validate_fields(cls, obj: dict[str, Any]) -> None:
        for name in ("arch", "dataset", "recipe"):
            if not isinstance(obj[name], str) or not _ARCH_RE.fullmatch(obj[name]):
                raise MessageError(f"field {name!r} must be a short lowercase name")
        if not isinstance(obj["input_shape"], str) or not _SHAPE_RE.fullmatch(obj["input_shape"]):
            raise MessageError("field 'input_shape' must be CxHxW, like '1x28x28'")
        _check_int("num_classes", obj["num_classes"])
        _check_int("seed", obj["seed"])
        if not 1 <= obj["num_classes"] <= 100_000:
            raise MessageError("field 'num_classes' must be 1-100000")
        _check_hex("model_hash", obj["model_hash"], 32)

    @property
    def slot(self) -> tuple[str, int, str, str, str]:
        """What a reference stands for; members agree on one model hash per slot."""
        return (self.arch, self.num_classes, self.input_shape, self.dataset, self.recipe)

    @classmethod
    def create(
        cls,
        identity: Identity,
        *,
        arch: str,
        num_classes: int,
        input_shape: str,
        dataset: str,
        recipe: str,
        seed: int,
        model_hash: str,
    ) -> Reference:
        unsigned = {
            "arch": arch,
            "num_classes": num_classes,
            "input_shape": input_shape,
            "dataset": dataset,
            "recipe": recipe,
            "seed": seed,
            "model_hash": model_hash,
        }
        return cast(Reference, cls._sign(identity, unsigned))


#: Message types by their `type` field.
MESSAGE_TYPES: dict[str, type[Message]] = {
    Publish.TYPE: Publish,
    Claim.TYPE: Claim,
    Vote.TYPE: Vote,
    Reference.TYPE: Reference,
}


def message_from_json(obj: object) -> Message:
    """Dispatch on `type`, validate the fields and the signature."""
    if not isinstance(obj, dict):
        raise MessageError("a message must be a JSON object")
    kind = obj.get("type")
    if not isinstance(kind, str) or kind not in MESSAGE_TYPES:
        raise MessageError(f"unknown message type {kind!r}; known: {', '.join(sorted(MESSAGE_TYPES))}")
    msg = MESSAGE_TYPES[kind].from_json(obj)
    msg.verify()
    return msg


def message_from_bytes(data: bytes) -> Message:
    return message_from_json(parse_json(data))
