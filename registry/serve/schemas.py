"""The node's answers as JSON schemas: the FastAPI response models behind `/openapi.json`.

Each model is the shape of one answer as a node sends it; the typed answers that clients parse
(registry.log.answers, registry.proofs.checkpoint) encode to exactly these shapes, which the tests
hold them to, and the schemathesis test holds every route to its model. The signed messages'
schemas are built from the message classes themselves (registry.log.messages), so a field added
to a message is in the schema the day it is added.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel, create_model

from contracts.encoding import MAX_SAFE_INT
from registry.log.messages import MESSAGE_TYPES, Message

__all__ = [
    "Checkpoint",
    "ClaimStatus",
    "Consistency",
    "Entry",
    "EntryPage",
    "ErrorAnswer",
    "Inclusion",
    "Member",
    "NodeStatus",
    "References",
    "Root",
    "SignedMessage",
    "Standing",
    "Submitted",
    "Uploaded",
]

Hex32 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$", description="32 bytes, lowercase hex")]
Hex64 = Annotated[str, Field(pattern=r"^[0-9a-f]{128}$", description="64 bytes, lowercase hex")]
Count = Annotated[int, Field(ge=0, le=MAX_SAFE_INT)]
Verdict = Literal["owner", "not-owner", "error"]


class _Answer(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ErrorAnswer(_Answer):
    """Every refusal: the error's class in the wmnode error tree, and what went wrong."""

    error: str = Field(description="the class of the error (MessageError, NotFoundError, RejectedError, ...)")
    detail: str


def _message_model(cls: type[Message]) -> type[BaseModel]:
    """A signed message's schema, from its dataclass: `type` and `v`, then its fields (str or int)."""
    hints = typing.get_type_hints(cls)
    fields: dict[str, Any] = {"type": (Literal[cls.TYPE], ...), "v": (Literal[cls.VERSION], ...)}
    for field in dataclasses.fields(cls):
        fields[field.name] = (Count if hints[field.name] is int else str, ...)
    model: type[BaseModel] = create_model(f"{cls.__name__}Message", __base__=_Answer, **fields)
    model.__doc__ = (cls.__doc__ or cls.__name__).split("\n\n")[0]
    return model


_MESSAGES = tuple(_message_model(cls) for cls in MESSAGE_TYPES.values())


class SignedMessage(RootModel[Any]):
    """A signed message (DESIGN §4.1): publish, claim, vote or reference, told apart by `type`."""

    root: Annotated[typing.Union[_MESSAGES], Field(discriminator="type")]  # type: ignore[valid-type]  # noqa: UP007


class Entry(_Answer):
    """One leaf of the log: its index, the log's time for it (ms), the message and its RFC 6962 leaf hash."""

    index: Count
    time: Count
    msg: SignedMessage
    leaf_hash: Hex32


class Submitted(_Answer):
    """Where a submitted message is in the log; `duplicate` when it was there already."""

    index: Count
    time: Count
    leaf_hash: Hex32
    status: Literal["appended", "duplicate"]


class EntryPage(_Answer):
    """The log's size and a run of its entries."""

    size: Count
    entries: list[Entry]


class Member(_Answer):
    """A member of the community as this node's config names it."""

    name: str
    raft: str
    api: str
    key: str = ""


class NodeStatus(_Answer):
    """This node's view: its Raft role and leader, the log's head, and whether its verifier is ready."""

    node: Hex32
    name: str
    community: str
    role: Literal["follower", "candidate", "leader", "unknown"]
    leader: str | None
    term: int | None
    commit_index: int | None
    last_applied: int | None
    has_quorum: bool
    size: Count
    root: Hex32
    members: list[Member]
    verifier_ready: bool
    references_ready: bool
    references: Count


class AdmittedReference(_Answer):
    """A reference model a majority of the members recorded for one slot."""

    arch: str
    num_classes: Count
    input_shape: str
    dataset: str
    recipe: str
    model_hash: Hex32
    members: Count


class References(_Answer):
    references: list[AdmittedReference]


class Checkpoint(_Answer):
    """A node's signed statement that its tree had `size` leaves with `root` at `time` (ms)."""

    size: Count
    root: Hex32
    time: Count
    node: Hex32
    sig: Hex64


class Standing(_Answer):
    """A model's standing owner: the earliest publish among the claims on it decided `owner`."""

    model_id: Hex32
    owner: Hex32
    claim: Count
    publish: Count
    publish_time: Count
    passed_claims: list[Count]
    why: str


class ClaimStatus(_Answer):
    """A claim, its publish, its votes in log order, the decision and the model's standing owner."""

    claim: Entry
    publish: Entry
    votes: list[Entry]
    members: Count
    majority: Count
    decided: Verdict | None
    decided_at: Count | None
    result: Verdict | None
    standing: Standing | None


class Uploaded(_Answer):
    """An artifact in the store, by its SHA-256; `stored` is false when it was there already."""

    artifact: Annotated[str, Field(pattern=r"^sha256:[0-9a-f]{64}$")]
    size: Count
    stored: bool


class Inclusion(_Answer):
    """RFC 6962 audit path of leaf `index` in the tree of `size` leaves, leaf to root."""

    index: Count
    size: Count
    leaf_hash: Hex32
    path: list[Hex32]
    root: Hex32


class Consistency(_Answer):
    """RFC 6962 consistency proof from the tree of `first` leaves to that of `second`."""

    first: Count
    second: Count
    path: list[Hex32]


class Root(_Answer):
    size: Count
    root: Hex32
