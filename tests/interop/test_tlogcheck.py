"""Cross-check our Merkle tree and C2SP signed checkpoints against Go's reference libraries.

`tlogcheck` (tests/interop/tlogcheck/main.go) verifies with golang.org/x/mod/sumdb/note and
golang.org/x/mod/sumdb/tlog only, recomputing the tree from the raw leaves; see gotlog.py for how
it is built offline.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest

from contracts.identity import Identity
from registry.proofs.checkpoint import checkpoint_body, sign_note, verifier_key
from registry.proofs.merkle import MerkleTree, leaf_hash

from .gotlog import run_tlogcheck

pytestmark = pytest.mark.interop

ORIGIN = "example.org/wmnode/log"
KEY_NAME = "example.org/wmnode/node-1"
N = 37
#: Sizes whose every index gets an inclusion proof: edges around powers of two, and N.
FULL_SIZES = (1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, N)


def make_leaves(n: int) -> list[bytes]:
    leaves = [
        json.dumps(
            {"i": i, "kind": "record", "name": f"entry-{i}", "note": "é✓"},
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
        ).encode()
        for i in range(n)
    ]
    leaves[5] = b""  # an empty leaf is a valid record too
    return leaves


def make_tree(leaves: list[bytes]) -> MerkleTree:
    tree = MerkleTree()
    for data in leaves:
        tree.append(leaf_hash(data))
    return tree


def inclusion_item(tree: MerkleTree, index: int, size: int) -> dict:
    return {
        "index": index,
        "size": size,
        "leaf_hash": tree.leaf(index).hex(),
        "path": [h.hex() for h in tree.inclusion_proof(index, size)],
        "root": tree.root(size).hex(),
    }


def consistency_item(tree: MerkleTree, first: int, second: int) -> dict:
    return {"first": first, "second": second, "path": [h.hex() for h in tree.consistency_proof(first, second)]}


def payload(
    identity: Identity,
    leaves: list[bytes],
    tree: MerkleTree,
    *,
    size: int | None = None,
    inclusion: list[dict] | None = None,
    consistency: list[dict] | None = None,
    signer: Identity | None = None,
) -> dict:
    size = len(leaves) if size is None else size
    note = sign_note(checkpoint_body(ORIGIN, size, tree.root(size)), KEY_NAME, signer or identity)
    return {
        "vkey": verifier_key(KEY_NAME, identity.public_hex),
        "note": note,
        "leaves": [base64.b64encode(leaf).decode() for leaf in leaves],
        "inclusion": inclusion or [],
        "consistency": consistency or [],
    }


@pytest.fixture(scope="module")
def log() -> tuple[Identity, list[bytes], MerkleTree]:
    leaves = make_leaves(N)
    return Identity.generate(), leaves, make_tree(leaves)


def all_inclusion(tree: MerkleTree) -> list[dict]:
    items = [inclusion_item(tree, i, n) for n in FULL_SIZES for i in range(n)]
    # ... and the last leaf of every size, so Go's root for every size 1..N is compared with ours.
    items += [inclusion_item(tree, n - 1, n) for n in range(1, N + 1) if n not in FULL_SIZES]
    return items


def all_consistency(tree: MerkleTree) -> list[dict]:
    return [consistency_item(tree, a, b) for b in range(1, N + 1) for a in range(1, b + 1)]


def assert_rejected(verdict: dict, stage: str) -> None:
    assert verdict["ok"] is False, verdict
    assert verdict["error"].startswith(stage), verdict


# --- accepted -----------------------------------------------------------------------------


def test_go_accepts_our_tree_checkpoint_and_proofs(tlogcheck: Path, log) -> None:
    identity, leaves, tree = log
    inclusion, consistency = all_inclusion(tree), all_consistency(tree)
    verdict = run_tlogcheck(tlogcheck, payload(identity, leaves, tree, inclusion=inclusion, consistency=consistency))
    assert verdict == {
        "ok": True,
        "origin": ORIGIN,
        "size": N,
        "root": tree.root().hex(),
        "inclusion_checked": len(inclusion),
        "consistency_checked": len(consistency),
    }
    assert len(inclusion) == sum(FULL_SIZES) + N - len(FULL_SIZES)
    assert len(consistency) == N * (N + 1) // 2


@pytest.mark.parametrize("size", [1, 2, 20, 32, N])
def test_go_accepts_checkpoint_of_every_prefix(tlogcheck: Path, log, size: int) -> None:
    identity, leaves, tree = log
    verdict = run_tlogcheck(tlogcheck, payload(identity, leaves, tree, size=size))
    assert verdict["ok"] is True, verdict
    assert (verdict["size"], verdict["root"]) == (size, tree.root(size).hex())


def test_go_accepts_empty_tree_checkpoint_with_rfc6962_root(tlogcheck: Path) -> None:
    # RFC 6962 MTH({}) = SHA-256(""); tlog.TreeHash(0) is all zeros, so tlogcheck special-cases 0.
    identity, tree = Identity.generate(), MerkleTree()
    assert tree.root() == hashlib.sha256(b"").digest()
    verdict = run_tlogcheck(tlogcheck, payload(identity, [], tree))
    assert verdict["ok"] is True, verdict
    assert (verdict["size"], verdict["root"]) == (0, hashlib.sha256(b"").hexdigest())


def test_go_accepts_single_leaf_tree(tlogcheck: Path) -> None:
    identity, leaves = Identity.generate(), [b"only"]
    tree = make_tree(leaves)
    verdict = run_tlogcheck(
        tlogcheck,
        payload(
            identity, leaves, tree, inclusion=[inclusion_item(tree, 0, 1)], consistency=[consistency_item(tree, 1, 1)]
        ),
    )
    assert verdict["ok"] is True, verdict
    assert verdict["root"] == leaf_hash(b"only").hex()


# --- rejected -----------------------------------------------------------------------------


def test_go_rejects_note_signed_by_another_key(tlogcheck: Path, log) -> None:
    identity, leaves, tree = log
    verdict = run_tlogcheck(tlogcheck, payload(identity, leaves, tree, signer=Identity.generate()))
    assert_rejected(verdict, "note:")


def test_go_rejects_forged_signature_under_the_right_key_id(tlogcheck: Path, log) -> None:
    # Same name and key ID as the real key, signature bytes from another key: an invalid signature.
    identity, leaves, tree = log
    good = payload(identity, leaves, tree)
    forged = payload(identity, leaves, tree, signer=Identity.generate())
    good_line, forged_line = good["note"].splitlines()[-1], forged["note"].splitlines()[-1]
    good_raw = base64.b64decode(good_line.rsplit(" ", 1)[1])
    forged_raw = base64.b64decode(forged_line.rsplit(" ", 1)[1])
    line = good_line.rsplit(" ", 1)[0] + " " + base64.b64encode(good_raw[:4] + forged_raw[4:]).decode()
    good["note"] = good["note"].replace(good_line, line)
    assert_rejected(run_tlogcheck(tlogcheck, good), "note:")


def test_go_rejects_tampered_note_body(tlogcheck: Path, log) -> None:
    identity, leaves, tree = log
    p = payload(identity, leaves, tree, size=N)
    assert f"\n{N}\n" in p["note"]
    p["note"] = p["note"].replace(f"\n{N}\n", f"\n{N - 1}\n", 1)
    assert_rejected(run_tlogcheck(tlogcheck, p), "note:")


def test_go_rejects_tampered_leaf(tlogcheck: Path, log) -> None:
    identity, leaves, tree = log
    p = payload(identity, leaves, tree)
    bad = bytearray(leaves[11])
    bad[0] ^= 1
    p["leaves"][11] = base64.b64encode(bytes(bad)).decode()
    assert_rejected(run_tlogcheck(tlogcheck, p), "checkpoint: root")


def test_go_rejects_tampered_leaf_beyond_checkpoint_via_inclusion(tlogcheck: Path, log) -> None:
    # A leaf outside the checkpoint's size does not affect its root, but its inclusion item must fail.
    identity, leaves, tree = log
    p = payload(identity, leaves, tree, size=20, inclusion=[inclusion_item(tree, 30, N)])
    p["leaves"][30] = base64.b64encode(leaves[30] + b" ").decode()
    assert_rejected(run_tlogcheck(tlogcheck, p), "inclusion[0]")


@pytest.mark.parametrize("which", [0, -1])
def test_go_rejects_tampered_inclusion_proof_element(tlogcheck: Path, log, which: int) -> None:
    identity, leaves, tree = log
    item = inclusion_item(tree, 13, N)
    raw = bytearray.fromhex(item["path"][which])
    raw[7] ^= 0x80
    item["path"][which] = raw.hex()
    p = payload(identity, leaves, tree, inclusion=[inclusion_item(tree, 12, N), item])
    verdict = run_tlogcheck(tlogcheck, p)
    assert_rejected(verdict, "inclusion[1]")
    assert "CheckRecord" in verdict["error"]


def test_go_rejects_reordered_inclusion_path(tlogcheck: Path, log) -> None:
    # Guards the order: root-to-leaf (reversed) is not what tlog or RFC 6962 accept.
    identity, leaves, tree = log
    item = inclusion_item(tree, 13, N)
    item["path"].reverse()
    verdict = run_tlogcheck(tlogcheck, payload(identity, leaves, tree, inclusion=[item]))
    assert_rejected(verdict, "inclusion[0]")
    assert "CheckRecord" in verdict["error"]


def test_go_rejects_tampered_consistency_proof_element(tlogcheck: Path, log) -> None:
    identity, leaves, tree = log
    item = consistency_item(tree, 11, N)
    raw = bytearray.fromhex(item["path"][1])
    raw[0] ^= 1
    item["path"][1] = raw.hex()
    verdict = run_tlogcheck(tlogcheck, payload(identity, leaves, tree, consistency=[item]))
    assert_rejected(verdict, "consistency[0]")
    assert "CheckTree" in verdict["error"]


@pytest.mark.parametrize(("first", "second"), [(11, N), (3, 8), (7, 32), (20, 21)])
def test_go_rejects_truncated_consistency_proof(tlogcheck: Path, log, first: int, second: int) -> None:
    identity, leaves, tree = log
    item = consistency_item(tree, first, second)
    assert item["path"]
    item["path"] = item["path"][:-1]
    verdict = run_tlogcheck(tlogcheck, payload(identity, leaves, tree, consistency=[item]))
    assert_rejected(verdict, "consistency[0]")
    assert "CheckTree" in verdict["error"]


def test_go_rejects_checkpoint_larger_than_leaves(tlogcheck: Path, log) -> None:
    identity, leaves, tree = log
    assert_rejected(run_tlogcheck(tlogcheck, payload(identity, leaves[:-1], tree, size=N)), "checkpoint: size")
