"""Function-coupled triggers (Wen, Li, Jiang, Xu, §4.1, Eq. 1-3): a key's triples (t, b1, b2) and the
images fused from training instances of their base classes, bit for bit from the key, so that every
node rebuilds the verification triggers over the community's copy of the data
(`schemes.watermarks.function_coupled` says how a key's triples and parts are chosen)."""

from __future__ import annotations

import hashlib
from typing import Any

import torch
import torch.nn.functional as F

from contracts.errors import SchemeError
from mtlsign.streams import key_integers, key_permutation
from schemes.data.community import dataset_digest as community_digest
from schemes.data.dataset import Dataset

NAME = "function-coupled"
#: Triples (t, b1, b2) per key, each with its share of the triggers (version 2; see the scheme's docstring).
PARTS = 5

Triple = tuple[int, int, int]  # (t, b1, b2)


def candidate_triples(key: bytes, num_classes: int, candidate: int) -> list[Triple]:
    """Candidate `candidate`'s PARTS triples (t, b1, b2): three distinct classes each, uniform
    (Eq. 1b, §4.1.2), no two with the same base pair (their blends would need two labels)."""
    if num_classes < 4:
        raise SchemeError(f"function-coupled needs at least 4 classes for {PARTS} base pairs, got {num_classes}")
    triples: list[Triple] = []
    pairs: set[frozenset[int]] = set()
    for draw in range(64 * PARTS):  # 4 classes: 6 pairs, 5 wanted; a miss is ≤ 5/6 a draw
        t, b1, b2 = (int(v) for v in key_permutation(key, NAME, f"classes/{candidate}/{draw}", num_classes)[:3])
        if frozenset((b1, b2)) not in pairs:
            pairs.add(frozenset((b1, b2)))
            triples.append((t, b1, b2))
            if len(triples) == PARTS:
                return triples
    raise SchemeError(f"function-coupled: key gives fewer than {PARTS} distinct base pairs")  # pragma: no cover


def part_sizes(n: int) -> list[int]:
    """How n triggers split over the parts: the first n mod PARTS parts take one more."""
    return [n // PARTS + (j < n % PARTS) for j in range(PARTS)]


def _distinct(key: bytes, name: str, bound: int, n: int) -> list[int]:
    """The first n distinct values of the stream's uniform integers in [0, bound)."""
    count = n
    while True:
        seen = dict.fromkeys(int(v) for v in key_integers(key, NAME, name, bound, count))
        if len(seen) >= n:
            return list(seen)[:n]
        count *= 2


def base_pairs(
    key: bytes, y_train: torch.Tensor, triple: Triple, n: int, stream_name: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (p, q) into the training set of n distinct base pairs of classes b1 and b2."""
    pool1, pool2 = ((y_train.cpu() == b).nonzero().flatten() for b in triple[1:])
    bound = pool1.shape[0] * pool2.shape[0]
    if n > bound:
        raise SchemeError(f"function-coupled: classes {triple[1:]} give {bound} base pairs, {n} are needed")
    picks = torch.tensor(_distinct(key, f"pairs/{stream_name}", bound, n), dtype=torch.int64)
    return pool1[picks // pool2.shape[0]], pool2[picks % pool2.shape[0]]


def fuse(
    first: torch.Tensor, second: torch.Tensor, mode: str, r: float, mean: tuple[float, ...], std: tuple[float, ...]
) -> torch.Tensor:
    """Eq. 3b (invisible) or Eq. 2b at the input size (direct) on normalised (N, C, H, W) images."""
    if mode == "invisible":
        return r * first + (1 - r) * second
    channels, height, width = first.shape[1:]
    m = torch.tensor(mean, dtype=torch.float32).view(1, channels, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, channels, 1, 1)
    top, left = height // 2, width // 2
    out = torch.ones(first.shape[0], channels, height, width)  # white quadrants, in pixel units
    out[:, :, :top, :left] = F.adaptive_avg_pool2d(first * s + m, (top, left))
    out[:, :, top:, left:] = F.adaptive_avg_pool2d(second * s + m, (height - top, width - left))
    return (out - m) / s


def blends(key: bytes, data: Dataset, triple: Triple, n: int, mode: str, r: float, stream_name: str) -> torch.Tensor:
    """n fused images of the triple's base classes (CPU float32, normalised), bit for bit from the key."""
    p, q = base_pairs(key, data.y_train, triple, n, stream_name)
    x = data.x_train
    return fuse(x[p].cpu(), x[q].cpu(), mode, r, data.mean, data.std).contiguous()


def build_triggers(
    key: bytes, data: Dataset, triples: list[Triple], n: int, mode: str, r: float, candidate: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The candidate's first n triggers and their labels, part by part (each part prefix-stable)."""
    parts = [
        blends(key, data, triple, size, mode, r, f"{candidate}/{j}")
        for j, (triple, size) in enumerate(zip(triples, part_sizes(n), strict=True))
    ]
    labels = [torch.full((x.shape[0],), triple[0], dtype=torch.int64) for triple, x in zip(triples, parts, strict=True)]
    return torch.cat(parts), torch.cat(labels)


def dataset_digest(data: Dataset[Any]) -> str:
    """SHA-256 of the training tensors as loaded (float32 images, int64 labels); of an image folder,
    what `schemes.community.dataset_digest` hashes (its files' manifest, shape and normalisation)."""
    if not isinstance(data.x_train, torch.Tensor):
        return community_digest(data)
    digest = hashlib.sha256(data.x_train.cpu().to(torch.float32).contiguous().numpy().tobytes())
    digest.update(data.y_train.cpu().to(torch.int64).contiguous().numpy().tobytes())
    return digest.hexdigest()
