"""Signed checkpoints of the log: our JSON form and the C2SP tlog-checkpoint signed note.

The JSON checkpoint `{"size", "root", "time", "node", "sig"}` is signed Ed25519 over the
canonical bytes of the object without `sig`. The same (size, root) is served as a C2SP
*tlog-checkpoint* (origin line, decimal size, standard base64 root hash) wrapped in a C2SP
*signed-note*, so existing note verifiers and witnesses can check it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import asdict, dataclass
from typing import Any

from contracts.encoding import canonical, is_hex, is_int
from contracts.errors import MessageError, VerificationError
from contracts.identity import Identity, verify_signature

#: C2SP signed-note: signature lines start with an em dash and a space.
_SIG_PREFIX = "\u2014 "
#: C2SP signed-note §Ed25519: signature type byte of an Ed25519 key.
_ED25519_ALG = b"\x01"
#: C2SP signed-note names: no spaces or "+"; we also keep them printable ASCII, as Go's note package
#: refuses control characters anywhere in a note.
_NAME_RE = re.compile(r"[!-*,-~]+")
_SIZE_RE = re.compile(r"0|[1-9][0-9]*")


@dataclass(frozen=True)
class Checkpoint:
    """A node's signed statement "my tree had `size` leaves with this `root` at `time` (ms)"."""

    size: int
    root: str
    time: int
    node: str
    sig: str

    @classmethod
    def create(cls, identity: Identity, size: int, root: bytes, time: int) -> Checkpoint:
        body = {"size": size, "root": root.hex(), "time": time, "node": identity.public_hex}
        sig = identity.sign(canonical(body)).hex()
        return cls(size=size, root=root.hex(), time=time, node=identity.public_hex, sig=sig)

    @classmethod
    def from_json(cls, obj: object) -> Checkpoint:
        if not isinstance(obj, dict) or set(obj) != {"size", "root", "time", "node", "sig"}:
            raise MessageError("a checkpoint has exactly the fields size, root, time, node, sig")
        for name in ("size", "time"):
            if not is_int(obj[name], low=0):
                raise MessageError(f"checkpoint field {name!r} must be a non-negative integer")
        for name, nbytes in (("root", 32), ("node", 32), ("sig", 64)):
            if not is_hex(obj[name], nbytes):
                raise MessageError(f"checkpoint field {name!r} must be {nbytes} bytes of lowercase hex")
        return cls(**obj)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def verify(self, node: str | None = None) -> None:
        """Check the signature (and, when given, that it is `node`'s)."""
        if node is not None and node != self.node:
            raise VerificationError(f"checkpoint is signed by {self.node[:16]}…, expected {node[:16]}…")
        body = {k: v for k, v in self.to_json().items() if k != "sig"}
        try:
            verify_signature(self.node, bytes.fromhex(self.sig), canonical(body))
        except VerificationError as exc:
            raise VerificationError("checkpoint signature does not verify") from exc


def key_id(name: str, public_key: bytes) -> bytes:
    """C2SP signed-note: key ID = SHA-256(name ‖ 0x0A ‖ 0x01 ‖ public key)[:4]."""
    return hashlib.sha256(name.encode() + b"\n" + _ED25519_ALG + public_key).digest()[:4]


def verifier_key(name: str, public_hex: str) -> str:
    """The vkey string note verifiers take: `<name>+<hex key ID>+<base64(0x01 ‖ public key)>`."""
    public_key = bytes.fromhex(public_hex)
    return f"{name}+{key_id(name, public_key).hex()}+{base64.b64encode(_ED25519_ALG + public_key).decode()}"


def _check_name(name: str, what: str) -> None:
    if not _NAME_RE.fullmatch(name):
        raise MessageError(f"{what} {name!r} must be non-empty printable ASCII with no spaces or '+'")


def checkpoint_body(origin: str, size: int, root: bytes) -> str:
    """C2SP tlog-checkpoint body: origin, decimal tree size, base64 root, each ending in a newline."""
    _check_name(origin, "origin")
    return f"{origin}\n{size}\n{base64.b64encode(root).decode()}\n"


def sign_note(body: str, name: str, identity: Identity) -> str:
    """Wrap `body` in a C2SP signed note with one Ed25519 signature by `name`."""
    _check_name(name, "key name")
    public_key = bytes.fromhex(identity.public_hex)
    sig = identity.sign(body.encode())
    line = base64.b64encode(key_id(name, public_key) + sig).decode()
    return f"{body}\n{_SIG_PREFIX}{name} {line}\n"


@dataclass(frozen=True)
class NoteCheckpoint:
    origin: str
    size: int
    root: bytes


def open_note(text: str, name: str, public_hex: str) -> NoteCheckpoint:
    """Verify a signed note against one key and parse its tlog-checkpoint body."""
    body, sep, sigs = text.rpartition("\n\n")
    if not sep:
        raise VerificationError("signed note: no blank line between the text and the signatures")
    body += "\n"
    public_key = bytes.fromhex(public_hex)
    want_id = key_id(name, public_key)
    for line in sigs.splitlines():
        if not line.startswith(_SIG_PREFIX):
            raise VerificationError(f"signed note: malformed signature line {line!r}")
        line_name, _, encoded = line[len(_SIG_PREFIX) :].partition(" ")
        try:
            raw = base64.b64decode(encoded, validate=True)
        except binascii.Error as exc:
            raise VerificationError("signed note: signature is not base64") from exc
        if line_name != name or raw[:4] != want_id:
            continue
        verify_signature(public_hex, raw[4:], body.encode())
        return _parse_checkpoint_body(body)
    raise VerificationError(f"signed note: no signature by {name!r}")


def _parse_checkpoint_body(body: str) -> NoteCheckpoint:
    lines = body.split("\n")
    if len(lines) < 4 or not _SIZE_RE.fullmatch(lines[1]):
        raise VerificationError("tlog-checkpoint: expected origin, size and root lines")
    try:
        root = base64.b64decode(lines[2], validate=True)
    except binascii.Error as exc:
        raise VerificationError("tlog-checkpoint: root is not base64") from exc
    if len(root) != 32:
        raise VerificationError("tlog-checkpoint: root is not 32 bytes")
    return NoteCheckpoint(origin=lines[0], size=int(lines[1]), root=root)
