"""Typed, signed protocol messages (DESIGN §4.1) with one canonical encoding.

Every message is a JSON object with `type` and `v`; its signature is Ed25519 over the canonical
bytes (RFC 8785) of the object without `sig`. Parsing validates every field, so an instance that
exists is well formed; `verify()` checks the signature.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, fields
from functools import cached_property
from typing import Any, ClassVar, cast

from registry.encoding import canonical, is_hex, parse_json
from registry.errors import MessageError, VerificationError
from registry.identity import Identity, verify_signature

#: Integers must survive every JSON implementation (I-JSON, RFC 7493 §2.2).
MAX_SAFE_INT = 2**53 - 1
_SCHEME_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")


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

    owner: str
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
        _check_hex("owner", obj["owner"], 32)
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

    def verify(self) -> None:
        try:
            verify_signature(self.owner, bytes.fromhex(self.sig), self._signing_bytes)
        except VerificationError as exc:
            raise VerificationError(f"{self.TYPE}: signature does not match owner {self.owner[:16]}…") from exc


@dataclass(frozen=True)
class Publish(Message):
    """The paper's `<Publish: time ‖ hash(key) ‖ hash(cWM) ‖ hash(info)>` (MTLSign §3.3)."""

    TYPE: ClassVar[str] = "publish"

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
            "type": cls.TYPE,
            "v": cls.VERSION,
            "scheme": scheme,
            "time": time,
            "key_hash": key_hash,
            "verifier_hash": verifier_hash,
            "info_hash": info_hash,
            "owner": identity.public_hex,
            "nonce": nonce,
        }
        sig = identity.sign(canonical(unsigned)).hex()
        return cast(Publish, cls.from_json({**unsigned, "sig": sig}))


#: Message types by their `type` field; the protocol issue adds `claim` and `vote` here.
MESSAGE_TYPES: dict[str, type[Message]] = {Publish.TYPE: Publish}


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
