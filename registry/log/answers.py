"""What the log answers, typed: an entry, a submit's outcome, a claim's status, a model's standing owner.

Each is a frozen value with one JSON encoding, `to_json()`, which is exactly the object a node
serves (`GET /v1/entries/{i}`, `POST /v1/entries`, `GET /v1/claims/{i}`, `GET /v1/owner`), and a
`from_json` that validates everything a node, or a file, could put there: an answer that exists
is well formed, and every message in it is a signed message whose signature checks. Whether the
answer is *true* (an entry in the tree a majority signed, a decision its votes make) is for
receipts and certificates to prove (registry.client).

An answer also reads as the JSON object it encodes (`status["votes"]`, `dict(entry)`, `entry ==
{...}`): code written against the node's JSON keeps working, while attributes give typed values.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from contracts.encoding import MAX_SAFE_INT, is_hex, is_int
from contracts.errors import MessageError
from registry.log.messages import (
    NOT_OWNER,
    OWNER,
    VERDICTS,
    Claim,
    Message,
    Publish,
    Vote,
    message_from_json,
)
from registry.proofs.merkle import entry_bytes, leaf_hash

__all__ = [
    "SUBMIT_STATUSES",
    "ClaimStatus",
    "Entry",
    "JsonAnswer",
    "Standing",
    "Submitted",
    "json_object",
    "require_count",
    "require_hex32",
    "require_text",
]

#: A submit is answered `appended` (201) or `duplicate` (200: stored before, the same index).
SUBMIT_STATUSES = ("appended", "duplicate")
#: The standing's `why` is one sentence the node writes; a certificate's is checked for type only.
MAX_WHY_CHARS = 2000


class JsonAnswer(Mapping[str, Any]):
    """A typed answer that also reads as the JSON object `to_json()` returns (a fresh copy each time)."""

    __slots__ = ()

    def to_json(self) -> dict[str, Any]:
        raise NotImplementedError

    def __getitem__(self, key: str) -> Any:
        return self.to_json()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_json())

    def __len__(self) -> int:
        return len(self.to_json())


# -- field checks shared by every answer: "<where>.<name> must be ..., got ..." ------------------


def json_object(obj: object, where: str, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict[str, Any]:
    """`obj` as a JSON object with every `required` field and nothing but those and `optional`."""
    if not isinstance(obj, dict):
        raise MessageError(f"{where} must be a JSON object, got {type(obj).__name__}")
    missing = [name for name in required if name not in obj]
    unknown = sorted(str(name) for name in set(obj) - set(required) - set(optional))
    if missing or unknown:
        raise MessageError(f"{where}: missing field(s) {missing}, unknown field(s) {unknown}")
    return obj


def require_count(obj: Mapping[str, Any], name: str, where: str) -> int:
    """A non-negative integer within I-JSON's range (not a bool: JSON's `true` parses to 1)."""
    value = obj.get(name)
    if not is_int(value, low=0, high=MAX_SAFE_INT):
        raise MessageError(f"{where}.{name} must be a non-negative integer, got {value!r:.40}")
    return value


def require_hex32(obj: Mapping[str, Any], name: str, where: str) -> str:
    value = obj.get(name)
    if not isinstance(value, str) or not is_hex(value, 32):
        raise MessageError(f"{where}.{name} must be 64 lowercase hex digits, got {value!r:.40}")
    return value


def require_text(obj: Mapping[str, Any], name: str, where: str, limit: int) -> str:
    value = obj.get(name)
    if not isinstance(value, str) or len(value) > limit:
        raise MessageError(f"{where}.{name} must be text of at most {limit} characters, got {value!r:.40}")
    return value


def _choice(obj: Mapping[str, Any], name: str, where: str, allowed: tuple[str | None, ...]) -> Any:
    value = obj.get(name)
    if not (value is None or isinstance(value, str)) or value not in allowed:
        raise MessageError(f"{where}.{name} must be one of {', '.join(map(str, allowed))}, got {value!r:.40}")
    return value


def _sorted(obj: dict[str, Any]) -> dict[str, Any]:
    """A message's fields in canonical order: the order its leaf bytes hold them (RFC 8785 §3.2.3;
    message keys are ASCII, for which Python's order is the RFC's), so an answer re-encodes to the
    bytes a node sends."""
    return {key: obj[key] for key in sorted(obj)}


# -- the answers --------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Entry(JsonAnswer):
    """One leaf of the log as a node serves it: its index, the log's time for it, the signed message
    and its RFC 6962 leaf hash (every node states it; `None` only where a file left it out)."""

    index: int
    time: int
    msg: Message
    leaf_hash: str | None = None

    @classmethod
    def from_json(cls, obj: object, where: str = "entry") -> Entry:
        fields = json_object(obj, where, ("index", "time", "msg"), ("leaf_hash",))
        index, time = require_count(fields, "index", where), require_count(fields, "time", where)
        stated = require_hex32(fields, "leaf_hash", where) if "leaf_hash" in fields else None
        try:
            msg = message_from_json(fields["msg"])
        except MessageError as exc:  # a bad signature stays the VerificationError it is
            raise MessageError(f"{where}.msg: {exc.diagnostics()}") from None
        return cls(index, time, msg, stated)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"index": self.index, "time": self.time, "msg": _sorted(self.msg.to_json())}
        if self.leaf_hash is not None:
            out["leaf_hash"] = self.leaf_hash
        return out

    def leaf(self) -> bytes:
        """The RFC 6962 leaf hash of the entry's bytes, recomputed (what `leaf_hash` states)."""
        return leaf_hash(entry_bytes(self.index, self.msg.to_json(), self.time))


@dataclass(frozen=True, eq=False)
class Submitted(JsonAnswer):
    """The answer to `POST /v1/entries`: where the message is in the log, and whether it is new."""

    index: int
    time: int
    leaf_hash: str
    status: str

    @classmethod
    def from_json(cls, obj: object, where: str = "submit answer") -> Submitted:
        fields = json_object(obj, where, ("index", "time", "leaf_hash", "status"))
        return cls(
            require_count(fields, "index", where),
            require_count(fields, "time", where),
            require_hex32(fields, "leaf_hash", where),
            _choice(fields, "status", where, SUBMIT_STATUSES),
        )

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "time": self.time, "leaf_hash": self.leaf_hash, "status": self.status}


@dataclass(frozen=True, eq=False)
class Standing(JsonAnswer):
    """A model's standing owner (DESIGN §4.4): among the claims on it decided `owner`, the one whose
    publish came first. The model is named by its function identity (`model_id`); standings written
    before function identities existed name its artifact (`model_hash`) instead: exactly one is set."""

    owner: str
    claim: int
    publish: int
    publish_time: int
    passed_claims: tuple[int, ...]
    why: str
    model_id: str | None = None
    model_hash: str | None = None

    FIELDS: ClassVar[tuple[str, ...]] = ("owner", "claim", "publish", "publish_time", "passed_claims", "why")

    @classmethod
    def from_json(cls, obj: object, where: str = "standing") -> Standing:
        fields = json_object(obj, where, cls.FIELDS, ("model_id", "model_hash"))
        numbers = [require_count(fields, name, where) for name in ("claim", "publish", "publish_time")]
        owner = require_hex32(fields, "owner", where)
        named = [name for name in ("model_id", "model_hash") if name in fields]
        if len(named) != 1:
            raise MessageError(f"{where} must name its model by exactly one of model_id, model_hash")
        model = require_hex32(fields, named[0], where)
        passed = fields["passed_claims"]
        if not isinstance(passed, list) or not all(is_int(i, low=0, high=MAX_SAFE_INT) for i in passed):
            raise MessageError(f"{where}.passed_claims must be a list of non-negative integers")
        why = require_text(fields, "why", where, MAX_WHY_CHARS)
        ids = {"model_id": model} if named[0] == "model_id" else {"model_hash": model}
        return cls(owner, numbers[0], numbers[1], numbers[2], tuple(passed), why, **ids)

    def to_json(self) -> dict[str, Any]:
        model = {"model_id": self.model_id} if self.model_id is not None else {"model_hash": self.model_hash}
        return {
            **model,
            "owner": self.owner,
            "claim": self.claim,
            "publish": self.publish,
            "publish_time": self.publish_time,
            "passed_claims": list(self.passed_claims),
            "why": self.why,
        }


@dataclass(frozen=True, eq=False)
class ClaimStatus(JsonAnswer):
    """A claim as `GET /v1/claims/{index}` answers it: the claim, the publish it rests on, its votes
    in log order, the decision once a verdict has a majority of the members, and the standing owner
    of its model. `result` is the decision, or `not-owner` when the claim passed but another owner's
    publish came first (RegistryLog.claim_status)."""

    claim: Entry
    publish: Entry
    votes: tuple[Entry, ...]
    members: int
    majority: int
    decided: str | None
    decided_at: int | None
    result: str | None
    standing: Standing | None

    FIELDS: ClassVar[tuple[str, ...]] = (
        "claim",
        "publish",
        "votes",
        "members",
        "majority",
        "decided",
        "decided_at",
        "result",
        "standing",
    )

    @classmethod
    def from_json(cls, obj: object, where: str = "claim status") -> ClaimStatus:
        fields = json_object(obj, where, cls.FIELDS)
        claim = Entry.from_json(fields["claim"], f"{where}.claim")
        publish = Entry.from_json(fields["publish"], f"{where}.publish")
        if not isinstance(claim.msg, Claim) or not isinstance(publish.msg, Publish):
            raise MessageError(f"{where}: its claim and publish are not a claim and a publish")
        if claim.msg.publish != publish.index:
            raise MessageError(f"{where}: the claim rests on entry #{claim.msg.publish}, not on #{publish.index}")
        if not isinstance(fields["votes"], list):
            raise MessageError(f"{where}.votes must be a list of entries")
        votes = tuple(Entry.from_json(vote, f"{where}.votes[{i}]") for i, vote in enumerate(fields["votes"]))
        if not all(isinstance(v.msg, Vote) and v.msg.claim == claim.index for v in votes):
            raise MessageError(f"{where}: every vote must be a vote on claim #{claim.index}")
        members, majority = require_count(fields, "members", where), require_count(fields, "majority", where)
        if not 1 <= majority <= members:
            raise MessageError(f"{where}: a majority of {majority} among {members} members")
        decided = _choice(fields, "decided", where, (None, *VERDICTS))
        at = None if fields["decided_at"] is None else require_count(fields, "decided_at", where)
        result = _choice(fields, "result", where, (None, *VERDICTS))
        if (decided is None) != (at is None) or (decided is None) != (result is None):
            raise MessageError(f"{where}: decided, decided_at and result are set together, or none of them")
        if result != decided and (decided, result) != (OWNER, NOT_OWNER):
            raise MessageError(f"{where}: result {result!r} cannot follow from the decision {decided!r}")
        standing = None if fields["standing"] is None else Standing.from_json(fields["standing"], f"{where}.standing")
        return cls(claim, publish, votes, members, majority, decided, at, result, standing)

    def to_json(self) -> dict[str, Any]:
        return {
            "claim": self.claim.to_json(),
            "publish": self.publish.to_json(),
            "votes": [vote.to_json() for vote in self.votes],
            "members": self.members,
            "majority": self.majority,
            "decided": self.decided,
            "decided_at": self.decided_at,
            "result": self.result,
            "standing": None if self.standing is None else self.standing.to_json(),
        }

    @property
    def claim_msg(self) -> Claim:
        """The claim's message, typed (from_json checked that it is one)."""
        assert isinstance(self.claim.msg, Claim)
        return self.claim.msg

    @property
    def vote_msgs(self) -> tuple[Vote, ...]:
        """The votes' messages in log order, typed."""
        return tuple(v.msg for v in self.votes if isinstance(v.msg, Vote))
