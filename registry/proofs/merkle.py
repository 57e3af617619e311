"""RFC 6962 / RFC 9162 Merkle tree: an append-only tree with inclusion and consistency proofs.

The tree keeps every complete, aligned subtree hash (level k holds the hashes of the aligned
2^k-leaf subtrees), so appending is O(1) amortised and every root, inclusion proof and
consistency proof for any earlier size costs O(log n) hash look-ups plus O(log n) hashes for the
right edge. Callers serialise appends against reads.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from contracts.encoding import canonical
from contracts.errors import NotFoundError, VerificationError

#: RFC 6962 §2.1: MTH({}) = SHA-256().
EMPTY_ROOT = hashlib.sha256(b"").digest()


def entry_bytes(index: int, msg: Mapping[str, Any], time: int) -> bytes:
    """The leaf input of log entry `index`: the RFC 8785 canonical JSON of its index, its message
    (as JSON) and the log's time for it. The log appends these bytes; receipts and certificates
    rebuild them to check an inclusion proof."""
    return canonical({"index": index, "msg": msg, "time": time})


def leaf_hash(data: bytes) -> bytes:
    """RFC 6962 §2.1: leaf prefix 0x00."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 6962 §2.1: interior node prefix 0x01."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly smaller than n (n ≥ 2), RFC 6962 §2.1's k."""
    return 1 << ((n - 1).bit_length() - 1)


class MerkleTree:
    """Append-only Merkle tree over leaf hashes."""

    def __init__(self) -> None:
        self.levels: list[list[bytes]] = [[]]

    def __len__(self) -> int:
        return len(self.levels[0])

    def append(self, leaf: bytes) -> int:
        """Append a leaf *hash*; return its index."""
        index = len(self.levels[0])
        self.levels[0].append(leaf)
        level, i, node = 0, index, leaf
        while i & 1:
            node = node_hash(self.levels[level][i - 1], node)
            level, i = level + 1, i >> 1
            if level == len(self.levels):
                self.levels.append([])
            self.levels[level].append(node)
        return index

    def leaf(self, index: int) -> bytes:
        if not 0 <= index < len(self):
            raise NotFoundError(f"no leaf {index} in a tree of size {len(self)}")
        return self.levels[0][index]

    def _subtree(self, start: int, end: int) -> bytes:
        """MTH(D[start:end]) where `start` is aligned as RFC 6962's recursion aligns it."""
        n = end - start
        if n & (n - 1) == 0 and start % n == 0:
            return self.levels[n.bit_length() - 1][start // n]
        k = _split(n)
        return node_hash(self._subtree(start, start + k), self._subtree(start + k, end))

    def _check_size(self, size: int) -> None:
        if not 0 <= size <= len(self):
            raise NotFoundError(f"tree size {size} is beyond the current size {len(self)}")

    def root(self, size: int | None = None) -> bytes:
        size = len(self) if size is None else size
        self._check_size(size)
        return EMPTY_ROOT if size == 0 else self._subtree(0, size)

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """RFC 6962 §2.1.1 PATH(m, D[n]), leaf to root."""
        self._check_size(size)
        if not 0 <= index < size:
            raise NotFoundError(f"index {index} is not in a tree of size {size}")
        path: list[bytes] = []
        start, end, m = 0, size, index
        while end - start > 1:
            k = _split(end - start)
            if m < k:
                path.append(self._subtree(start + k, end))
                end = start + k
            else:
                path.append(self._subtree(start, start + k))
                start, m = start + k, m - k
        path.reverse()
        return path

    def consistency_proof(self, first: int, second: int) -> list[bytes]:
        """RFC 6962 §2.1.2 PROOF(m, D[n]) = SUBPROOF(m, D[n], true)."""
        self._check_size(second)
        if not 0 < first <= second:
            raise NotFoundError(f"no consistency proof from size {first} to size {second}")
        path: list[bytes] = []
        start, end, m, complete = 0, second, first, True
        while m != end - start:
            k = _split(end - start)
            if m <= k:
                path.append(self._subtree(start + k, end))
                end = start + k
            else:
                path.append(self._subtree(start, start + k))
                start, m, complete = start + k, m - k, False
        if not complete:
            path.append(self._subtree(start, end))
        path.reverse()
        return path


def verify_inclusion(leaf: bytes, index: int, size: int, path: Sequence[bytes], root: bytes) -> None:
    """RFC 9162 §2.1.3.2: recompute the root from a leaf hash and its audit path."""
    if not 0 <= index < size:
        raise VerificationError(f"inclusion proof: index {index} is not below size {size}")
    fn, sn, node = index, size - 1, leaf
    for sibling in path:
        if sn == 0:
            raise VerificationError("inclusion proof: path is longer than the tree is deep")
        if fn & 1 or fn == sn:
            node = node_hash(sibling, node)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn, sn = fn >> 1, sn >> 1
        else:
            node = node_hash(node, sibling)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise VerificationError("inclusion proof: path is shorter than the tree is deep")
    if node != root:
        raise VerificationError("inclusion proof: computed root does not match")


def verify_consistency(first: int, second: int, first_root: bytes, second_root: bytes, path: Sequence[bytes]) -> None:
    """RFC 9162 §2.1.4.2: check that the tree of size `second` extends the tree of size `first`."""
    if not 0 < first <= second:
        raise VerificationError(f"consistency proof: sizes {first} → {second} are not increasing")
    if first == second:
        if path:
            raise VerificationError("consistency proof: must be empty for equal sizes")
        if first_root != second_root:
            raise VerificationError("consistency proof: equal sizes with different roots")
        return
    proof = list(path)
    if first & (first - 1) == 0:  # a power of two: the first root is itself the first node
        proof.insert(0, first_root)
    if not proof:
        raise VerificationError("consistency proof: empty path")
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = proof[0]
    for node in proof[1:]:
        if sn == 0:
            raise VerificationError("consistency proof: path is too long")
        if fn & 1 or fn == sn:
            fr, sr = node_hash(node, fr), node_hash(node, sr)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, node)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise VerificationError("consistency proof: path is too short")
    if fr != first_root:
        raise VerificationError("consistency proof: first root does not match")
    if sr != second_root:
        raise VerificationError("consistency proof: second root does not match")
