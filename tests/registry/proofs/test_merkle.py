"""Tests for registry/merkle.py: RFC 6962 / RFC 9162 Merkle trees, proofs and verifiers.

Three layers:

1. Known-answer vectors from the RFC 6962 reference test suites (see the comment above `LEAF_INPUTS`).
2. An independent reference implementation written directly from RFC 6962 §2.1's recursive
   definitions (MTH, PATH, PROOF/SUBPROOF), compared byte for byte with `MerkleTree` for every size up
   to `REF_MAX_SIZE` and every index / size pair, plus a `hypothesis` property test on random leaves.
3. Negative tests: each corrupted proof raises `VerificationError` with a specific message; each
   out-of-range proof request raises `NotFoundError`.
"""

from __future__ import annotations

import hashlib
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.errors import NotFoundError, VerificationError
from registry.proofs.merkle import (
    EMPTY_ROOT,
    MerkleTree,
    leaf_hash,
    node_hash,
    verify_consistency,
    verify_inclusion,
)

# ---------------------------------------------------------------------------------------------------
# 1. RFC 6962 reference test vectors.
#
# Source: transparency-dev/merkle (the successor of google/trillian's and
# google/certificate-transparency-go's `merkle` packages):
#   - testonly/constants.go:        LeafInputs(), NodeHashes(), RootHashes()
#   - proof/verify_test.go:         inclusionProofs (leaf numbers there are 1-based; converted to
#                                   0-based indices below), consistencyProofs, roots
#   - testonly/reference_test.go:   TestRefInclusionProof, TestRefConsistencyProof
# The same leaves, roots and proofs appear in the C++ suite google/certificate-transparency
# src/merkletree/MerkleTreeTest.cc. Only the hex constants are copied here.
# ---------------------------------------------------------------------------------------------------

LEAF_INPUTS = [
    bytes.fromhex(h)
    for h in [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
]

#: NodeHashes()[level][i]: the hash of the i-th complete aligned subtree of 2^level leaves.
NODE_HASHES = [
    [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
        "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
        "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
        "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
    ],
    [
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
    ],
    [
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
    [
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ],
]

#: RootHashes()[size] for size 0..8.
ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]

#: (0-based leaf index, tree size, audit path leaf-to-root).
INCLUSION_VECTORS = [
    (0, 1, []),
    (0, 2, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"]),
    (1, 2, ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"]),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        1,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
]

#: (first size, second size, consistency proof).
CONSISTENCY_VECTORS = [
    (1, 1, []),
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        7,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
]

# Arbitrary 32-byte hash used by the reference suites as "some other hash".
SOME_HASH = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")


def _hexes(items: list[str]) -> list[bytes]:
    return [bytes.fromhex(h) for h in items]


def _root(size: int) -> bytes:
    return bytes.fromhex(ROOTS[size])


def _vector_tree() -> MerkleTree:
    tree = MerkleTree()
    for data in LEAF_INPUTS:
        tree.append(leaf_hash(data))
    return tree


def _flip(b: bytes, pos: int = 0, bit: int = 0x08) -> bytes:
    return b[:pos] + bytes([b[pos] ^ bit]) + b[pos + 1 :]


# -- hashing primitives ------------------------------------------------------------------------------


def test_empty_root_is_sha256_of_nothing():
    assert EMPTY_ROOT == _root(0)


@pytest.mark.parametrize("i", range(8))
def test_leaf_hash_matches_vector(i):
    assert leaf_hash(LEAF_INPUTS[i]) == bytes.fromhex(NODE_HASHES[0][i])


@pytest.mark.parametrize("level,i", [(lv, i) for lv in range(1, len(NODE_HASHES)) for i in range(len(NODE_HASHES[lv]))])
def test_node_hash_matches_vector(level, i):
    left, right = (bytes.fromhex(h) for h in NODE_HASHES[level - 1][2 * i : 2 * i + 2])
    assert node_hash(left, right) == bytes.fromhex(NODE_HASHES[level][i])


def test_leaf_and_node_hashes_are_domain_separated():
    a, b = b"\x11" * 32, b"\x22" * 32
    assert leaf_hash(a + b) != node_hash(a, b)
    assert node_hash(a, b) != node_hash(b, a)


# -- vector roots ------------------------------------------------------------------------------------


def test_empty_tree_root():
    tree = MerkleTree()
    assert len(tree) == 0
    assert tree.root() == EMPTY_ROOT
    assert tree.root(0) == EMPTY_ROOT


def test_incremental_roots_match_vectors():
    tree = MerkleTree()
    for size, data in enumerate(LEAF_INPUTS, start=1):
        assert tree.append(leaf_hash(data)) == size - 1
        assert len(tree) == size
        assert tree.root() == _root(size)


@pytest.mark.parametrize("size", range(9))
def test_historic_roots_match_vectors(size):
    assert _vector_tree().root(size) == _root(size)


def test_size_8_root_is_the_well_known_value():
    assert _vector_tree().root().hex() == "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"


def test_leaf_returns_appended_hash():
    tree = _vector_tree()
    for i, data in enumerate(LEAF_INPUTS):
        assert tree.leaf(i) == leaf_hash(data)


# -- vector proofs -----------------------------------------------------------------------------------


@pytest.mark.parametrize("index,size,path", INCLUSION_VECTORS)
def test_inclusion_proof_matches_vector(index, size, path):
    assert _vector_tree().inclusion_proof(index, size) == _hexes(path)


@pytest.mark.parametrize("index,size,path", INCLUSION_VECTORS)
def test_inclusion_vector_verifies(index, size, path):
    verify_inclusion(leaf_hash(LEAF_INPUTS[index]), index, size, _hexes(path), _root(size))


@pytest.mark.parametrize("first,second,path", CONSISTENCY_VECTORS)
def test_consistency_proof_matches_vector(first, second, path):
    assert _vector_tree().consistency_proof(first, second) == _hexes(path)


@pytest.mark.parametrize("first,second,path", CONSISTENCY_VECTORS)
def test_consistency_vector_verifies(first, second, path):
    verify_consistency(first, second, _root(first), _root(second), _hexes(path))


# ---------------------------------------------------------------------------------------------------
# 2. Independent reference implementation, straight from RFC 6962 §2.1.
#    D is a tuple of leaf *inputs*; hashing is done here with hashlib, not with registry.merkle.
# ---------------------------------------------------------------------------------------------------


def _ref_leaf(d: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + d).digest()


def _ref_children(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _ref_k(n: int) -> int:
    """The largest power of two smaller than n (n > 1)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_mth(d: tuple[bytes, ...]) -> bytes:
    """MTH(D[n])."""
    n = len(d)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return _ref_leaf(d[0])
    k = _ref_k(n)
    return _ref_children(ref_mth(d[:k]), ref_mth(d[k:]))


def ref_path(m: int, d: tuple[bytes, ...]) -> list[bytes]:
    """PATH(m, D[n]), for 0 <= m < n."""
    n = len(d)
    if n == 1:
        return []
    k = _ref_k(n)
    if m < k:
        return ref_path(m, d[:k]) + [ref_mth(d[k:])]
    return ref_path(m - k, d[k:]) + [ref_mth(d[:k])]


def ref_subproof(m: int, d: tuple[bytes, ...], b: bool) -> list[bytes]:
    """SUBPROOF(m, D[n], b), for 0 < m <= n."""
    n = len(d)
    if m == n:
        return [] if b else [ref_mth(d)]
    k = _ref_k(n)
    if m <= k:
        return ref_subproof(m, d[:k], b) + [ref_mth(d[k:])]
    return ref_subproof(m - k, d[k:], False) + [ref_mth(d[:k])]


def ref_proof(m: int, d: tuple[bytes, ...]) -> list[bytes]:
    """PROOF(m, D[n]) = SUBPROOF(m, D[n], true)."""
    return ref_subproof(m, d, True)


REF_MAX_SIZE = 70
REF_DATA = tuple(f"leaf-{i}".encode() for i in range(REF_MAX_SIZE))


@pytest.fixture(scope="module")
def big_tree() -> MerkleTree:
    tree = MerkleTree()
    for data in REF_DATA:
        tree.append(_ref_leaf(data))
    return tree


@pytest.fixture(scope="module")
def ref_roots() -> list[bytes]:
    return [ref_mth(REF_DATA[:n]) for n in range(REF_MAX_SIZE + 1)]


def test_reference_reproduces_vectors():
    """Sanity check of the reference itself against the published vectors."""
    d = tuple(LEAF_INPUTS)
    assert [ref_mth(d[:n]).hex() for n in range(9)] == ROOTS
    for index, size, path in INCLUSION_VECTORS:
        assert ref_path(index, d[:size]) == _hexes(path)
    for first, second, path in CONSISTENCY_VECTORS:
        assert ref_proof(first, d[:second]) == _hexes(path)


def test_incremental_roots_match_reference(ref_roots):
    tree = MerkleTree()
    assert tree.root() == ref_roots[0]
    for n, data in enumerate(REF_DATA, start=1):
        tree.append(_ref_leaf(data))
        assert tree.root() == ref_roots[n]


@pytest.mark.parametrize("size", range(REF_MAX_SIZE + 1))
def test_historic_root_matches_reference(big_tree, ref_roots, size):
    assert big_tree.root(size) == ref_roots[size]


@pytest.mark.parametrize("size", range(1, REF_MAX_SIZE + 1))
def test_inclusion_proofs_match_reference(big_tree, ref_roots, size):
    d = REF_DATA[:size]
    for index in range(size):
        path = big_tree.inclusion_proof(index, size)
        assert path == ref_path(index, d), (index, size)
        verify_inclusion(_ref_leaf(d[index]), index, size, path, ref_roots[size])


@pytest.mark.parametrize("second", range(1, REF_MAX_SIZE + 1))
def test_consistency_proofs_match_reference(big_tree, ref_roots, second):
    d = REF_DATA[:second]
    for first in range(1, second + 1):
        path = big_tree.consistency_proof(first, second)
        assert path == ref_proof(first, d), (first, second)
        verify_consistency(first, second, ref_roots[first], ref_roots[second], path)


@pytest.mark.parametrize("size", [1, 2, 3, 7, 8, 9, 33])
def test_proofs_do_not_depend_on_current_tree_length(big_tree, size):
    """A tree holding exactly `size` leaves gives the same proofs as a longer tree asked at `size`."""
    small = MerkleTree()
    for data in REF_DATA[:size]:
        small.append(_ref_leaf(data))
    assert small.root() == big_tree.root(size)
    for i in range(size):
        assert small.inclusion_proof(i, size) == big_tree.inclusion_proof(i, size)
    for first in range(1, size + 1):
        assert small.consistency_proof(first, size) == big_tree.consistency_proof(first, size)


_LEAVES = st.lists(st.binary(max_size=48), min_size=1, max_size=40)


@settings(max_examples=150, deadline=None, database=None)
@given(leaves=_LEAVES, data=st.data())
def test_random_trees_match_reference(leaves, data):
    d = tuple(leaves)
    tree = MerkleTree()
    for leaf in d:
        tree.append(_ref_leaf(leaf))
    size = data.draw(st.integers(1, len(d)), label="size")
    index = data.draw(st.integers(0, size - 1), label="index")
    first = data.draw(st.integers(1, size), label="first")
    root, first_root = ref_mth(d[:size]), ref_mth(d[:first])

    assert tree.root() == ref_mth(d)
    assert tree.root(size) == root

    path = tree.inclusion_proof(index, size)
    assert path == ref_path(index, d[:size])
    verify_inclusion(_ref_leaf(d[index]), index, size, path, root)

    proof = tree.consistency_proof(first, size)
    assert proof == ref_proof(first, d[:size])
    verify_consistency(first, size, first_root, root, proof)


# ---------------------------------------------------------------------------------------------------
# 3. Negative tests.
# ---------------------------------------------------------------------------------------------------

# The (5, 8) inclusion vector and the (6, 8) consistency vector are used as the "good" proofs.
INC_INDEX, INC_SIZE = 5, 8
INC_PATH = _hexes(INCLUSION_VECTORS[-1][2])
INC_LEAF = leaf_hash(LEAF_INPUTS[INC_INDEX])
CONS_FIRST, CONS_SECOND = 6, 8
CONS_PATH = _hexes(CONSISTENCY_VECTORS[2][2])


def test_good_vectors_used_by_negative_tests_verify():
    verify_inclusion(INC_LEAF, INC_INDEX, INC_SIZE, INC_PATH, _root(INC_SIZE))
    verify_consistency(CONS_FIRST, CONS_SECOND, _root(CONS_FIRST), _root(CONS_SECOND), CONS_PATH)


# -- verify_inclusion --------------------------------------------------------------------------------


def test_inclusion_tampered_leaf():
    with pytest.raises(VerificationError, match="computed root does not match"):
        verify_inclusion(_flip(INC_LEAF), INC_INDEX, INC_SIZE, INC_PATH, _root(INC_SIZE))


def test_inclusion_wrong_leaf():
    with pytest.raises(VerificationError, match="computed root does not match"):
        verify_inclusion(leaf_hash(LEAF_INPUTS[4]), INC_INDEX, INC_SIZE, INC_PATH, _root(INC_SIZE))


@pytest.mark.parametrize("pos", range(len(INC_PATH)))
def test_inclusion_tampered_path_element(pos):
    path = list(INC_PATH)
    path[pos] = _flip(path[pos], pos=31, bit=0x01)
    with pytest.raises(VerificationError, match="computed root does not match"):
        verify_inclusion(INC_LEAF, INC_INDEX, INC_SIZE, path, _root(INC_SIZE))


def test_inclusion_truncated_path():
    with pytest.raises(VerificationError, match="path is shorter than the tree is deep"):
        verify_inclusion(INC_LEAF, INC_INDEX, INC_SIZE, INC_PATH[:-1], _root(INC_SIZE))


def test_inclusion_empty_path_for_multi_leaf_tree():
    with pytest.raises(VerificationError, match="path is shorter than the tree is deep"):
        verify_inclusion(INC_LEAF, INC_INDEX, INC_SIZE, [], _root(INC_SIZE))


@pytest.mark.parametrize("extra", [b"", SOME_HASH, bytes.fromhex(ROOTS[8])], ids=["empty", "some", "root"])
def test_inclusion_extended_path(extra):
    with pytest.raises(VerificationError, match="path is longer than the tree is deep"):
        verify_inclusion(INC_LEAF, INC_INDEX, INC_SIZE, INC_PATH + [extra], _root(INC_SIZE))


@pytest.mark.parametrize("extra", [b"", SOME_HASH, bytes.fromhex(ROOTS[8])], ids=["empty", "some", "root"])
def test_inclusion_prepended_path_element(extra):
    with pytest.raises(VerificationError, match="path is longer than the tree is deep"):
        verify_inclusion(INC_LEAF, INC_INDEX, INC_SIZE, [extra] + INC_PATH, _root(INC_SIZE))


def test_inclusion_inserted_path_element():
    path = [INC_PATH[0], SOME_HASH] + INC_PATH[1:]
    with pytest.raises(VerificationError, match="path is longer than the tree is deep"):
        verify_inclusion(INC_LEAF, INC_INDEX, INC_SIZE, path, _root(INC_SIZE))


def test_inclusion_single_leaf_tree_rejects_nonempty_path():
    leaf = leaf_hash(b"data")
    with pytest.raises(VerificationError, match="path is longer than the tree is deep"):
        verify_inclusion(leaf, 0, 1, [SOME_HASH], leaf)


def test_inclusion_single_leaf_tree_root_is_leaf():
    leaf = leaf_hash(b"data")
    verify_inclusion(leaf, 0, 1, [], leaf)
    with pytest.raises(VerificationError, match="computed root does not match"):
        verify_inclusion(leaf, 0, 1, [], SOME_HASH)


@pytest.mark.parametrize("index", [INC_INDEX - 1, INC_INDEX + 1, INC_INDEX ^ 2])
def test_inclusion_wrong_index(index):
    with pytest.raises(VerificationError, match="computed root does not match"):
        verify_inclusion(INC_LEAF, index, INC_SIZE, INC_PATH, _root(INC_SIZE))


# A wrong size is only detectable when it changes the proof's shape. RFC 9162's algorithm (and
# transparency-dev's decompInclProof) sees index 5 in sizes 7 and 8 identically, so size 7 is not
# probed here; the tree size is authenticated by the signed checkpoint, not by the path.
@pytest.mark.parametrize("size", [9, 12, INC_SIZE * 2])
def test_inclusion_wrong_size_larger(size):
    with pytest.raises(VerificationError, match="path is shorter than the tree is deep"):
        verify_inclusion(INC_LEAF, INC_INDEX, size, INC_PATH, _root(INC_SIZE))


def test_inclusion_wrong_size_smaller():
    with pytest.raises(VerificationError, match="path is longer than the tree is deep"):
        verify_inclusion(INC_LEAF, INC_INDEX, 6, INC_PATH, _root(INC_SIZE))


@pytest.mark.parametrize("index,size", [(0, 0), (1, 0), (2, 1), (8, 8), (9, 8), (-1, 8)])
def test_inclusion_index_not_below_size(index, size):
    with pytest.raises(VerificationError, match=rf"index {index} is not below size {size}"):
        verify_inclusion(INC_LEAF, index, size, INC_PATH, _root(INC_SIZE))


@pytest.mark.parametrize("size", [INC_SIZE // 2, INC_INDEX])
def test_inclusion_size_halved_puts_index_out_of_range(size):
    with pytest.raises(VerificationError, match="is not below size"):
        verify_inclusion(INC_LEAF, INC_INDEX, size, INC_PATH, _root(INC_SIZE))


@pytest.mark.parametrize(
    "root", [EMPTY_ROOT, SOME_HASH, bytes.fromhex(ROOTS[7]), b""], ids=["empty-tree", "some", "size-7", "blank"]
)
def test_inclusion_wrong_root(root):
    with pytest.raises(VerificationError, match="computed root does not match"):
        verify_inclusion(INC_LEAF, INC_INDEX, INC_SIZE, INC_PATH, root)


# -- verify_consistency ------------------------------------------------------------------------------


def test_consistency_first_greater_than_second():
    with pytest.raises(VerificationError, match=re.escape("sizes 8 → 6 are not increasing")):
        verify_consistency(8, 6, _root(8), _root(6), CONS_PATH)


@pytest.mark.parametrize("second", [0, 1, 8])
def test_consistency_first_zero(second):
    with pytest.raises(VerificationError, match=re.escape(f"sizes 0 → {second} are not increasing")):
        verify_consistency(0, second, EMPTY_ROOT, _root(second), [])


def test_consistency_negative_first():
    with pytest.raises(VerificationError, match="are not increasing"):
        verify_consistency(-1, 8, EMPTY_ROOT, _root(8), CONS_PATH)


def test_consistency_equal_sizes_empty_path_same_root_ok():
    verify_consistency(5, 5, _root(5), _root(5), [])


def test_consistency_equal_sizes_nonempty_path():
    with pytest.raises(VerificationError, match="must be empty for equal sizes"):
        verify_consistency(1, 1, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT])


def test_consistency_equal_sizes_different_roots():
    with pytest.raises(VerificationError, match="equal sizes with different roots"):
        verify_consistency(8, 8, _root(7), _root(8), [])


def test_consistency_empty_path():
    with pytest.raises(VerificationError, match="consistency proof: empty path"):
        verify_consistency(CONS_FIRST, CONS_SECOND, _root(CONS_FIRST), _root(CONS_SECOND), [])


def test_consistency_empty_path_power_of_two_first():
    # For a power-of-two first size the first root is prepended, so the path is "too short".
    with pytest.raises(VerificationError, match="path is too short"):
        verify_consistency(4, 8, _root(4), _root(8), [])


def test_consistency_truncated_path():
    with pytest.raises(VerificationError, match="path is too short"):
        verify_consistency(CONS_FIRST, CONS_SECOND, _root(CONS_FIRST), _root(CONS_SECOND), CONS_PATH[:-1])


@pytest.mark.parametrize(
    "extra", [b"", SOME_HASH, bytes.fromhex(ROOTS[6]), bytes.fromhex(ROOTS[8])], ids=["empty", "some", "r1", "r2"]
)
def test_consistency_extended_path(extra):
    with pytest.raises(VerificationError, match="path is too long"):
        verify_consistency(CONS_FIRST, CONS_SECOND, _root(CONS_FIRST), _root(CONS_SECOND), CONS_PATH + [extra])


@pytest.mark.parametrize(
    "extra",
    [b"", SOME_HASH, bytes.fromhex(ROOTS[6]), bytes.fromhex(ROOTS[8]), CONS_PATH[0]],
    ids=["empty", "some", "r1", "r2", "p0"],
)
def test_consistency_prepended_path_element(extra):
    with pytest.raises(VerificationError, match="path is too long"):
        verify_consistency(CONS_FIRST, CONS_SECOND, _root(CONS_FIRST), _root(CONS_SECOND), [extra] + CONS_PATH)


@pytest.mark.parametrize(
    "pos,message",
    [(0, "first root does not match"), (1, "second root does not match"), (2, "first root does not match")],
)
def test_consistency_tampered_path_element(pos, message):
    path = list(CONS_PATH)
    path[pos] = _flip(path[pos], bit=0x10)
    with pytest.raises(VerificationError, match=message):
        verify_consistency(CONS_FIRST, CONS_SECOND, _root(CONS_FIRST), _root(CONS_SECOND), path)


def test_consistency_wrong_first_root():
    with pytest.raises(VerificationError, match="first root does not match"):
        verify_consistency(CONS_FIRST, CONS_SECOND, SOME_HASH, _root(CONS_SECOND), CONS_PATH)


def test_consistency_wrong_second_root():
    with pytest.raises(VerificationError, match="second root does not match"):
        verify_consistency(CONS_FIRST, CONS_SECOND, _root(CONS_FIRST), SOME_HASH, CONS_PATH)


def test_consistency_swapped_roots():
    with pytest.raises(VerificationError, match="first root does not match"):
        verify_consistency(CONS_FIRST, CONS_SECOND, _root(CONS_SECOND), _root(CONS_FIRST), CONS_PATH)


def test_consistency_power_of_two_first_wrong_first_root():
    # (1, 8): the first root is prepended to the path, so a wrong first root is caught too.
    path = _hexes(CONSISTENCY_VECTORS[1][2])
    with pytest.raises(VerificationError, match="root does not match"):
        verify_consistency(1, 8, SOME_HASH, _root(8), path)


@pytest.mark.parametrize("first", [CONS_FIRST - 1, CONS_FIRST + 1, CONS_FIRST ^ 2])
def test_consistency_wrong_first_size(first):
    with pytest.raises(VerificationError, match="consistency proof: "):
        verify_consistency(first, CONS_SECOND, _root(CONS_FIRST), _root(CONS_SECOND), CONS_PATH)


# As for inclusion, second sizes 7 and 8 give the (6, ·) proof the same shape, so 7 is not probed.
@pytest.mark.parametrize("second", [9, 12, CONS_SECOND * 2])
def test_consistency_wrong_second_size_larger(second):
    with pytest.raises(VerificationError, match="path is too short"):
        verify_consistency(CONS_FIRST, second, _root(CONS_FIRST), _root(CONS_SECOND), CONS_PATH)


def test_consistency_wrong_second_size_equal_to_first():
    with pytest.raises(VerificationError, match="must be empty for equal sizes"):
        verify_consistency(CONS_FIRST, CONS_FIRST, _root(CONS_FIRST), _root(CONS_SECOND), CONS_PATH)


def test_consistency_second_size_halved_is_not_increasing():
    with pytest.raises(VerificationError, match=re.escape("sizes 6 → 4 are not increasing")):
        verify_consistency(CONS_FIRST, CONS_SECOND // 2, _root(CONS_FIRST), _root(CONS_SECOND), CONS_PATH)


# -- corruption sweep over many sizes (the reference suites' probes, applied to every proof) ---------

SWEEP_MAX = 24
SWEEP_DATA = REF_DATA[:SWEEP_MAX]


def _inclusion_probes(index, size, path, root, leaf):
    """Corruptions of a good inclusion proof, modelled on transparency-dev's corruptInclusionProof."""
    yield "index-1", (leaf, index - 1, size, path, root)
    yield "index+1", (leaf, index + 1, size, path, root)
    yield "index^2", (leaf, index ^ 2, size, path, root)
    yield "size*2", (leaf, index, size * 2, path, root)
    yield "size//2", (leaf, index, size // 2, path, root)
    yield "wrong leaf", (b"WrongLeaf", index, size, path, root)
    yield "empty root", (leaf, index, size, path, EMPTY_ROOT)
    yield "some root", (leaf, index, size, path, SOME_HASH)
    yield "trailing garbage", (leaf, index, size, path + [b""], root)
    yield "trailing root", (leaf, index, size, path + [root], root)
    yield "preceding garbage", (leaf, index, size, [b""] + path, root)
    yield "preceding root", (leaf, index, size, [root] + path, root)
    for i in range(len(path)):
        yield f"flip path[{i}]", (leaf, index, size, path[:i] + [_flip(path[i])] + path[i + 1 :], root)
    if path:
        yield "removed last", (leaf, index, size, path[:-1], root)
    if len(path) > 1:
        yield "inserted", (leaf, index, size, [path[0], SOME_HASH] + path[1:], root)


def _consistency_probes(first, second, path, r1, r2):
    """Corruptions of a good consistency proof, modelled on transparency-dev's corruptConsistencyProof."""
    yield "first-1", (first - 1, second, r1, r2, path)
    yield "first+1", (first + 1, second, r1, r2, path)
    yield "first^2", (first ^ 2, second, r1, r2, path)
    yield "second*2", (first, second * 2, r1, r2, path)
    yield "second//2", (first, second // 2, r1, r2, path)
    yield "wrong r1", (first, second, b"WrongRoot", r2, path)
    yield "wrong r2", (first, second, r1, b"WrongRoot", path)
    yield "swapped", (first, second, r2, r1, path)
    yield "empty proof", (first, second, r1, r2, [])
    yield "trailing garbage", (first, second, r1, r2, path + [b""])
    yield "trailing r1", (first, second, r1, r2, path + [r1])
    yield "trailing r2", (first, second, r1, r2, path + [r2])
    yield "preceding garbage", (first, second, r1, r2, [b""] + path)
    yield "preceding r1", (first, second, r1, r2, [r1] + path)
    yield "preceding r2", (first, second, r1, r2, [r2] + path)
    yield "preceding p0", (first, second, r1, r2, [path[0]] + path)
    yield "truncated", (first, second, r1, r2, path[:-1])
    for i in range(len(path)):
        yield f"flip path[{i}]", (first, second, r1, r2, path[:i] + [_flip(path[i], bit=0x10)] + path[i + 1 :])


def _rejected(verify, args) -> bool:
    try:
        verify(*args)
    except VerificationError:
        return True
    return False


@pytest.mark.parametrize("size", range(1, SWEEP_MAX + 1))
def test_every_corrupted_inclusion_proof_is_rejected(big_tree, size):
    root = big_tree.root(size)
    accepted = []
    for index in range(size):
        path = big_tree.inclusion_proof(index, size)
        leaf = big_tree.leaf(index)
        for desc, args in _inclusion_probes(index, size, path, root, leaf):
            if not _rejected(verify_inclusion, args):
                accepted.append((index, desc))
    assert accepted == []


@pytest.mark.parametrize("second", range(2, SWEEP_MAX + 1))
def test_every_corrupted_consistency_proof_is_rejected(big_tree, second):
    r2 = big_tree.root(second)
    accepted = []
    for first in range(1, second):
        path = big_tree.consistency_proof(first, second)
        r1 = big_tree.root(first)
        for desc, args in _consistency_probes(first, second, path, r1, r2):
            if not _rejected(verify_consistency, args):
                accepted.append((first, desc))
    assert accepted == []


def test_verification_error_messages_name_the_proof_kind():
    with pytest.raises(VerificationError, match=r"^inclusion proof: "):
        verify_inclusion(INC_LEAF, INC_INDEX, INC_SIZE, [], _root(INC_SIZE))
    with pytest.raises(VerificationError, match=r"^consistency proof: "):
        verify_consistency(CONS_FIRST, CONS_SECOND, _root(CONS_FIRST), _root(CONS_SECOND), [])


# -- out-of-range proof requests raise NotFoundError -------------------------------------------------


@pytest.mark.parametrize("size", [9, 100, -1])
def test_root_beyond_tree_size(size):
    with pytest.raises(NotFoundError, match=rf"tree size {size} is beyond the current size 8"):
        _vector_tree().root(size)


def test_root_of_empty_tree_beyond_size():
    with pytest.raises(NotFoundError, match="tree size 1 is beyond the current size 0"):
        MerkleTree().root(1)


@pytest.mark.parametrize("index,size", [(8, 8), (3, 3), (0, 0), (-1, 8), (5, 4)])
def test_inclusion_proof_index_out_of_range(index, size):
    with pytest.raises(NotFoundError, match=rf"index {index} is not in a tree of size {size}"):
        _vector_tree().inclusion_proof(index, size)


@pytest.mark.parametrize("size", [9, -1])
def test_inclusion_proof_size_beyond_tree(size):
    with pytest.raises(NotFoundError, match=rf"tree size {size} is beyond the current size 8"):
        _vector_tree().inclusion_proof(0, size)


def test_inclusion_proof_on_empty_tree():
    with pytest.raises(NotFoundError, match="index 0 is not in a tree of size 0"):
        MerkleTree().inclusion_proof(0, 0)


@pytest.mark.parametrize("first,second", [(6, 3), (8, 7), (0, 3), (0, 0), (-1, 8)])
def test_consistency_proof_bad_size_pair(first, second):
    with pytest.raises(NotFoundError, match=rf"no consistency proof from size {first} to size {second}"):
        _vector_tree().consistency_proof(first, second)


@pytest.mark.parametrize("first,second", [(1, 9), (9, 9), (9, 10)])
def test_consistency_proof_second_beyond_tree(first, second):
    with pytest.raises(NotFoundError, match=rf"tree size {second} is beyond the current size 8"):
        _vector_tree().consistency_proof(first, second)
