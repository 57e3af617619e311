"""Data sets a community's claims may draw on: the embedded digits every node holds, and data sets a
community pins by the SHA-256 of a manifest of their files."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from contracts.errors import ConfigError

#: Data sets every node holds without a path: scikit-learn's bundled digits, split by the community
#: as `load_dataset("digits", seed=COMMUNITY_SPLIT_SEED, test_fraction=COMMUNITY_TEST_FRACTION)`.
EMBEDDED_DATASETS = {"digits": 10}
COMMUNITY_SPLIT_SEED = 0
COMMUNITY_TEST_FRACTION = 0.2


PINNED_FORMATS = ("mnist", "fashion-mnist", "cifar10", "cifar100", "npz", "folder")
#: A pinned data set's name (and any data set name an info may give).
DATASET_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,39}")
_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class PinnedDataset:
    """A data set every member keeps a copy of (`[[datasets]]`), pinned by a manifest of its files.

    The manifest is the SHA-256 of the lines "<sha256 of the file>  <path relative to `path`>\n" of
    every regular file, sorted by path (a file alone: its own name). Files, not decoded tensors,
    are pinned: a float tensor's bits may change across torch versions and devices."""

    name: str
    format: str
    path: Path
    manifest_sha256: str
    num_classes: int

    def job(self) -> dict[str, Any]:
        return {"name": self.name, "format": self.format, "path": str(self.path), "num_classes": self.num_classes}


def manifest_digest(path: Path) -> str:
    """The manifest SHA-256 of a file or of every regular file under a directory (symlinks refused)."""
    if path.is_symlink():
        raise ConfigError(f"{path}: a pinned data set may not be a symbolic link")
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file() or p.is_symlink())
    if not files:
        raise ConfigError(f"{path}: no files to pin")
    lines = []
    for file in files:
        if file.is_symlink():
            raise ConfigError(f"{file}: a pinned data set may not hold symbolic links")
        digest = hashlib.sha256()
        with file.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
        name = file.name if file == path else file.relative_to(path).as_posix()
        lines.append(f"{digest.hexdigest()}  {name}\n")
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def check_pinned(dataset: PinnedDataset) -> None:
    """Refuse a node whose copy of a pinned data set is not the community's."""
    try:
        got = manifest_digest(dataset.path)
    except OSError as exc:
        raise ConfigError(f"data set {dataset.name!r}: cannot read {dataset.path}: {exc.strerror}") from exc
    if got != dataset.manifest_sha256:
        raise ConfigError(
            f"data set {dataset.name!r}: the files at {dataset.path} have manifest {got}, not the community's "
            f"{dataset.manifest_sha256}: this node would rebuild other verification inputs than its peers"
        )


_DATASET_KEYS = {"name": str, "format": str, "path": str, "manifest_sha256": str, "num_classes": int}


def parse_datasets(items: object, where: str, base: Path) -> tuple[PinnedDataset, ...]:
    """The `[[datasets]]` tables of a node config (paths relative to the config's folder)."""
    if not isinstance(items, list):
        raise ConfigError(f"{where} must be a list of tables ([[datasets]])")
    out: list[PinnedDataset] = []
    for i, table in enumerate(items):
        at = f"{where}[{i}]"
        if not isinstance(table, dict) or set(table) != set(_DATASET_KEYS):
            raise ConfigError(f"{at} must be a table with exactly {', '.join(sorted(_DATASET_KEYS))}")
        for name, want in _DATASET_KEYS.items():
            if isinstance(table[name], bool) or not isinstance(table[name], want):
                raise ConfigError(f"{at}.{name} must be a {want.__name__}")
        if not DATASET_NAME_RE.fullmatch(table["name"]) or table["name"] in EMBEDDED_DATASETS:
            raise ConfigError(f"{at}.name must be a short lowercase name other than {sorted(EMBEDDED_DATASETS)}")
        if table["format"] not in PINNED_FORMATS:
            raise ConfigError(f"{at}.format must be one of {', '.join(PINNED_FORMATS)}")
        if not _HEX64.fullmatch(table["manifest_sha256"]) or not 2 <= table["num_classes"] <= 100_000:
            raise ConfigError(f"{at}: manifest_sha256 must be 64 lowercase hex digits, num_classes 2-100000")
        if any(d.name == table["name"] for d in out):
            raise ConfigError(f"{at}.name {table['name']!r} is pinned twice")
        out.append(PinnedDataset(table["name"], table["format"], base / table["path"], table["manifest_sha256"],
                                 table["num_classes"]))  # fmt: skip
    return tuple(out)
