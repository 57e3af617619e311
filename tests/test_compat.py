"""Data written before the one-way layout still reads, verifies and serves, byte for byte.

`tests/fixtures/compat/` was made by wmnode at commit 8cbb45c (before the layout change): the three
nodes' Raft journals after `wmnode demo`, the owner's bundle, the owner's certificate, a receipt, the
signed-note checkpoint and the entries the community served. Moving the encoders, leaf builders and
header readers must not change a byte of what they produce or accept.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import rfc8785

from contracts.encoding import canonical
from node_config import example_config
from registry.client.certificate import verify_certificate
from registry.client.localnet import LocalCommunity, free_ports
from registry.client.receipt import entry_leaf, verify_receipt
from registry.community.config import load_config
from registry.log.messages import message_from_json
from registry.proofs.checkpoint import Checkpoint, open_note
from registry.proofs.merkle import verify_consistency

FIXTURES = Path(__file__).parent / "fixtures" / "compat"
MEMBERS = list(load_config(example_config(1)).member_keys)
SIZE = 25  # the tree's size when the note was signed


def _json(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def test_old_certificate_still_verifies() -> None:
    summary = verify_certificate(_json("certificate.json"), MEMBERS, "wmnode.example/local")
    assert summary["decided"] == "owner"
    assert summary["result"] == "owner"
    assert summary["tally"] == {"owner": 2}


@pytest.mark.parametrize("name", ["receipt-11.json", "bundle/receipt.json"])
def test_old_receipts_still_verify(name: str) -> None:
    receipt = _json(name)
    verify_receipt(receipt, members=MEMBERS)
    receipt["entry"]["msg"]["time"] += 1
    with pytest.raises(Exception, match="inclusion|root|signature"):
        verify_receipt(receipt, members=MEMBERS)


def test_old_note_and_checkpoint_still_open() -> None:
    note = open_note((FIXTURES / "checkpoint.note").read_text(), "node1", MEMBERS[0])
    checkpoint = Checkpoint.from_json(_json("checkpoint.json"))
    checkpoint.verify()
    assert (note.size, note.root.hex()) == (checkpoint.size, checkpoint.root) == (SIZE, checkpoint.root)


def test_entries_reencode_to_the_same_leaves() -> None:
    """Every served entry's message parses and re-encodes to the bytes its leaf hash was made of."""
    for entry in _json("entries.json"):
        body = rfc8785.dumps({"index": entry["index"], "msg": entry["msg"], "time": entry["time"]})
        assert hashlib.sha256(b"\x00" + body).hexdigest() == entry["leaf_hash"] == entry_leaf(entry).hex()
        msg = message_from_json(entry["msg"])
        assert canonical(msg.to_json()) == canonical(entry["msg"])


def test_old_bundle_matches_its_published_record() -> None:
    """The bundle's files hash to what its receipt's publish names, and its key proof still checks."""
    from contracts.identity import verify_owner_key

    bundle = FIXTURES / "bundle"
    publish = _json("bundle/receipt.json")["entry"]["msg"]
    key = _json("bundle/key.json")
    assert hashlib.sha256((bundle / "info.json").read_bytes()).hexdigest() == publish["info_hash"]
    assert hashlib.sha256((bundle / "verifier.safetensors").read_bytes()).hexdigest() == publish["verifier_hash"]
    proof = bytes.fromhex(key["key_proof"])
    revealed = hashlib.sha256(b"wmnode/key/v1" + proof).digest()
    verify_owner_key(key["owner"], bytes.fromhex(key["nonce"]), revealed, proof)
    assert hashlib.sha256(revealed).hexdigest() == publish["key_hash"]


def _old_configs(base: Path) -> list[Path]:
    """The example community (its names, secret and identities) on free ports, without references."""
    ports = free_ports(6)
    members = "".join(
        f'\n[[members]]\nname = "node{i}"\nraft = "127.0.0.1:{ports[i - 1]}"\napi = "127.0.0.1:{ports[i + 2]}"\n'
        f'key = "{MEMBERS[i - 1]}"\n'
        for i in (1, 2, 3)
    )
    paths = []
    for i in (1, 2, 3):
        old = load_config(example_config(i))
        path = base / f"node{i}.toml"
        path.write_text(
            f'community = "{old.community}"\nname = "node{i}"\nraft = "127.0.0.1:{ports[i - 1]}"\n'
            f'api = "127.0.0.1:{ports[i + 2]}"\nsecret = "wmnode-example-community-secret-not-for-real-use"\n'
            f'max_skew_seconds = 300\nidentity_seed = "wmnode-example-node{i}-not-for-real-use"\n'
            "[time]\nstamp_bound_seconds = 30\nbeacon_seconds = 5\n"
            '[limits]\nexempt_networks = ["127.0.0.0/8"]\n'
            f"{members}"
        )
        paths.append(path)
    return paths


@pytest.mark.cluster
def test_node_restarts_on_an_old_data_dir_and_serves_the_same_tree(tmp_path: Path) -> None:
    for i in (1, 2, 3):
        shutil.copytree(FIXTURES / "nodes" / f"node{i}", tmp_path / f"node{i}")
    entries = _json("entries.json")
    note = open_note((FIXTURES / "checkpoint.note").read_text(), "node1", MEMBERS[0])
    with LocalCommunity(_old_configs(tmp_path), tmp_path, judges=False) as community:
        community.wait_converged(timeout=60)
        client = community.client(0)
        assert [client.entry(i) for i in range(SIZE)] == entries
        assert client.signed_checkpoint(SIZE).root == note.root.hex()
        now = client.signed_checkpoint()
        proof = [bytes.fromhex(p) for p in client.consistency(SIZE, now.size)["path"]]
        verify_consistency(SIZE, now.size, note.root, bytes.fromhex(now.root), proof)
        client.close()
