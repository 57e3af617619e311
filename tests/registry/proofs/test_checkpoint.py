from __future__ import annotations

import base64
import hashlib

import pytest

from contracts.errors import MessageError, VerificationError
from contracts.identity import Identity
from registry.proofs.checkpoint import Checkpoint, checkpoint_body, key_id, open_note, sign_note, verifier_key

ROOT = hashlib.sha256(b"root").digest()


def test_json_checkpoint_round_trips_and_verifies() -> None:
    node = Identity.generate()
    cp = Checkpoint.create(node, 7, ROOT, 1_700_000_000_000)
    again = Checkpoint.from_json(cp.to_json())
    assert again == cp
    again.verify(node.public_hex)


def test_json_checkpoint_tampering_is_detected() -> None:
    node = Identity.generate()
    obj = Checkpoint.create(node, 7, ROOT, 1).to_json()
    obj["size"] = 8
    with pytest.raises(VerificationError, match="checkpoint signature does not verify"):
        Checkpoint.from_json(obj).verify()


def test_json_checkpoint_from_another_node_is_refused() -> None:
    cp = Checkpoint.create(Identity.generate(), 7, ROOT, 1)
    with pytest.raises(VerificationError, match="expected"):
        cp.verify(Identity.generate().public_hex)


def test_json_checkpoint_validation() -> None:
    with pytest.raises(MessageError, match="exactly the fields"):
        Checkpoint.from_json({"size": 1})
    obj = Checkpoint.create(Identity.generate(), 7, ROOT, 1).to_json()
    obj["root"] = "xyz"
    with pytest.raises(MessageError, match="'root' must be 32 bytes"):
        Checkpoint.from_json(obj)


def test_note_layout_follows_c2sp() -> None:
    node = Identity.generate()
    note = sign_note(checkpoint_body("wmnode.example/local", 12, ROOT), "node1", node)
    lines = note.split("\n")
    assert lines[:4] == ["wmnode.example/local", "12", base64.b64encode(ROOT).decode(), ""]
    assert lines[4].startswith("\u2014 node1 ")
    assert note.endswith("\n")
    raw = base64.b64decode(lines[4].split(" ")[2])
    pub = bytes.fromhex(node.public_hex)
    # C2SP signed-note: key ID = SHA-256(name || 0x0A || 0x01 || key)[:4], then the signature.
    assert raw[:4] == hashlib.sha256(b"node1\n\x01" + pub).digest()[:4] == key_id("node1", pub)
    node.public_key.verify(raw[4:], "\n".join(lines[:3]).encode() + b"\n")


def test_note_opens_with_the_right_key_only() -> None:
    node = Identity.generate()
    note = sign_note(checkpoint_body("o", 3, ROOT), "node1", node)
    parsed = open_note(note, "node1", node.public_hex)
    assert (parsed.origin, parsed.size, parsed.root) == ("o", 3, ROOT)
    with pytest.raises(VerificationError, match="no signature by 'node1'"):
        open_note(note, "node1", Identity.generate().public_hex)
    with pytest.raises(VerificationError, match="bad signature"):
        open_note(note.replace("\n3\n", "\n4\n"), "node1", node.public_hex)


def test_verifier_key_format() -> None:
    node = Identity.generate()
    name, kid, key = verifier_key("node1", node.public_hex).split("+", 2)
    assert name == "node1"
    assert bytes.fromhex(kid) == key_id("node1", bytes.fromhex(node.public_hex))
    assert base64.b64decode(key) == b"\x01" + bytes.fromhex(node.public_hex)


@pytest.mark.parametrize("bad", ["with space", "with+plus", "", "ctl\x01char", "tab\there", "caf\u00e9"])
def test_names_with_spaces_or_plus_are_refused(bad: str) -> None:
    with pytest.raises(MessageError, match="no spaces or"):
        checkpoint_body(bad, 1, ROOT)


@pytest.mark.parametrize("size_line", ["037", "\u0663\u0667", "\u00b2", "-1", "1e3"])
def test_note_size_line_must_be_a_plain_decimal(size_line: str) -> None:
    node = Identity.generate()
    body = f"o\n{size_line}\n{base64.b64encode(ROOT).decode()}\n"
    with pytest.raises(VerificationError, match="expected origin, size and root lines"):
        open_note(sign_note(body, "node1", node), "node1", node.public_hex)
