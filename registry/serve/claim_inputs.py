"""What a claim's judgement reads, gathered before a judge runs: the claim's files (store paths, or
fetched URLs spooled to temp files), the revealed key's check, and the admitted references that are
null models for its suspect."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

from contracts.errors import VerificationError
from contracts.fetch import ArtifactStore, Fetcher
from contracts.identity import verify_owner_key
from contracts.infos import Info, base_arch
from contracts.references import CHECKPOINT
from registry.log.messages import (
    Claim,
    Publish,
    uri_kind,
)


class ClaimFiles:
    """Paths of what a judge reads: store files as they are, fetched URLs spooled to temp files."""

    def __init__(self, store: ArtifactStore, fetcher: Fetcher, spool: Path) -> None:
        self.store, self.fetcher, self.spool = store, fetcher, spool
        self.temps: list[Path] = []

    def get(self, uri: str, digest: str, limit: int, what: str) -> Path:
        if uri_kind(uri) == "artifact":
            self.fetcher.fetch(uri, digest, limit, what)  # into the store (from a peer if need be)
            return self.store.path(digest)
        data = self.fetcher.fetch(uri, digest, limit, what)
        self.spool.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=self.spool, prefix="fetched-")
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        self.temps.append(Path(name))
        return Path(name)

    def clean(self) -> None:
        for path in self.temps:
            path.unlink(missing_ok=True)


def check_key(claim: Claim, publish: Publish) -> None:
    """The revealed key is the published one (its hash), and bound to the claimant (DESIGN §4.2)."""
    key, proof = bytes.fromhex(claim.key), bytes.fromhex(claim.key_proof)
    if hashlib.sha256(key).hexdigest() != publish.key_hash:
        raise VerificationError("the revealed key does not hash to the publish's key_hash")
    verify_owner_key(claim.owner, bytes.fromhex(publish.nonce), key, proof)


def reference_matches(ref: dict[str, Any], info: Info, card: dict[str, Any] | None) -> bool:
    """Whether the admitted reference `ref` is a null model for a claim of `info` on `card`."""
    if ref["recipe"] == CHECKPOINT:
        if not info.BLACK_BOX:
            return card is not None and base_arch(ref["arch"]) == base_arch(card.get("arch"))
        classes = card.get("num_classes") if card is not None else info.classes
        return bool(ref["num_classes"] == classes)
    dataset = getattr(info, "dataset", None)
    if ref["input_shape"] != "x".join(map(str, info.input_shape)) or dataset not in (None, ref["dataset"]):
        return False
    return card is None or (ref["arch"], ref["num_classes"]) == (card.get("arch"), card.get("num_classes"))
