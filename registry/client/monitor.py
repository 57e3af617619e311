"""Clients that check whom they talk to: member-signed checkpoints, consistency proofs, a memory.

DESIGN §6: a member must never be able to "show two different trees of one size without a client
noticing". A node's word alone proves nothing (any process can serve our API and sign with its own
key), so a client here trusts a checkpoint only when it is signed by the member of the community
config whose API it asked, and it remembers what each member signed in a small local state file
(`checkpoints.json`, keyed by community and member key). Every new checkpoint must agree with what
was kept before: one size has one root, and a larger tree extends a smaller one (RFC 6962 §2.1.2
consistency proof, asked of the member that signed the larger). Members seen in one round are
cross-checked the same way. A disagreement is a fork, reported with the members, sizes and roots,
and kept as evidence in the state file.

`wmnode monitor` runs `Monitor.round` in a loop; `wmnode publish` and `wmnode claim` use the same
checks before they tell the user anything.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from contracts.errors import (
    ConfigError,
    MessageError,
    NotFoundError,
    UnavailableError,
    VerificationError,
    WmnodeError,
)
from registry.client.node_client import NodeClient
from registry.log.clock import now_ms
from registry.proofs.checkpoint import Checkpoint
from registry.proofs.merkle import EMPTY_ROOT, verify_consistency

if TYPE_CHECKING:
    from registry.community.config import NodeConfig

logger = logging.getLogger(__name__)

#: Where the state file lives unless --state-dir says otherwise.
STATE_DIR_ENV = "WMNODE_STATE_DIR"
STATE_FILE = "checkpoints.json"
STATE_VERSION = 1
#: Checkpoints kept per member (the largest sizes); the largest is the anchor of the next check.
MAX_KEPT = 64
#: Fork records kept as evidence; the newest win.
MAX_FORKS = 32
#: A state file larger than this is not ours.
MAX_STATE_BYTES = 16 * 2**20

#: Observation statuses: `fork` and `invalid` fail a round; `unreachable` and `stale` (a member
#: behind a tree it signed before, which it cannot prove it extends) do not.
OK, STALE, UNREACHABLE, INVALID, FORK = "ok", "stale", "unreachable", "invalid", "fork"


class ForkError(VerificationError):
    """Two member-signed checkpoints that no single append-only log can explain."""

    def __init__(self, message: str, members: Iterable[str] = (), evidence: Iterable[Checkpoint] = ()) -> None:
        super().__init__(message)
        #: The public keys of the members whose checkpoints disagree.
        self.members = tuple(dict.fromkeys(members))
        self.evidence = list(evidence)


@dataclass(frozen=True)
class Peer:
    """A member as the community config names it: its API URL and the key its checkpoints carry."""

    name: str
    url: str
    key: str


@dataclass(frozen=True)
class Community:
    """The members a client trusts, from a community config (never from a node's own status)."""

    name: str
    members: tuple[Peer, ...]
    #: The API of the member the config belongs to: the default node to talk to.
    home_url: str

    @classmethod
    def from_config(cls, config: NodeConfig) -> Community:
        keys = config.member_keys  # a member without a key cannot be checked: ConfigError names it
        peers = tuple(Peer(m.name, m.api_url, key) for m, key in zip(config.members, keys, strict=True))
        return cls(config.community, peers, config.me.api_url)

    @property
    def majority(self) -> int:
        return len(self.members) // 2 + 1

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(p.key for p in self.members)

    def by_key(self, key: str) -> Peer | None:
        return next((p for p in self.members if p.key == key), None)

    def name_of(self, key: str) -> str:
        peer = self.by_key(key)
        return peer.name if peer is not None else f"non-member {key}"

    def signer(self, checkpoint: Checkpoint, source: str, expected: Peer | None = None) -> Peer:
        """The member that signed `checkpoint` (the one asked, when `expected`); checks the signature.

        Refuses, naming the key, a checkpoint signed by a key the config does not list: that is
        what a fake API or a stranger's proxy serves.
        """
        peer = self.by_key(checkpoint.node)
        if peer is None:
            names = ", ".join(p.name for p in self.members)
            raise VerificationError(
                f"checkpoint from {source} is signed by {checkpoint.node}, which is not a member of community "
                f"{self.name!r} (members: {names})"
            )
        if expected is not None and peer != expected:
            raise VerificationError(
                f"checkpoint from {expected.name} ({source}) is signed by {peer.name}'s key {checkpoint.node}, "
                f"not by {expected.name}'s key {expected.key}"
            )
        checkpoint.verify(peer.key)
        if checkpoint.size == 0 and checkpoint.root != EMPTY_ROOT.hex():
            raise VerificationError(f"checkpoint from {source} states size 0 with a root other than the empty tree's")
        return peer


def default_state_dir() -> Path:
    env = os.environ.get(STATE_DIR_ENV)
    return Path(env) if env else Path.home() / ".config" / "wmnode"


@dataclass
class CheckpointState:
    """The checkpoints this client has seen, per community and member key, and forks it found."""

    path: Path
    kept: dict[str, dict[str, dict[int, Checkpoint]]] = field(default_factory=dict)
    forks: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> CheckpointState:
        """Read the state file (none yet: empty). A damaged one is an error, never silently reset:
        forgetting what was seen is exactly what a forking member would want."""
        try:
            with path.open("rb") as f:
                data = f.read(MAX_STATE_BYTES + 1)
        except FileNotFoundError:
            return cls(path)
        except OSError as exc:
            raise ConfigError(f"cannot read the checkpoint state {path}: {exc}") from exc
        try:
            if len(data) > MAX_STATE_BYTES:
                raise ValueError(f"over {MAX_STATE_BYTES} bytes")
            return cls(path, *_parse_state(json.loads(data)))
        except (ValueError, TypeError, KeyError, WmnodeError) as exc:
            raise ConfigError(
                f"{path} is not a wmnode checkpoint state ({exc}); move it aside to start afresh"
            ) from exc

    def of(self, community: str, key: str) -> list[Checkpoint]:
        """What `key` signed, smallest size first."""
        return sorted(self.kept.get(community, {}).get(key, {}).values(), key=lambda c: c.size)

    def at_size(self, community: str, size: int) -> list[Checkpoint]:
        """Every kept checkpoint of this size, whoever signed it."""
        return [m[size] for m in self.kept.get(community, {}).values() if size in m]

    def largest(self, community: str, key: str | None = None) -> Checkpoint | None:
        members = self.kept.get(community, {})
        pool = [c for k, m in members.items() if key in (None, k) for c in m.values()]
        return max(pool, key=lambda c: c.size, default=None)

    def keep(self, community: str, checkpoint: Checkpoint) -> None:
        sizes = self.kept.setdefault(community, {}).setdefault(checkpoint.node, {})
        sizes.setdefault(checkpoint.size, checkpoint)  # the first one seen of a size stays
        for size in sorted(sizes)[:-MAX_KEPT]:
            del sizes[size]

    def record_fork(self, community: str, error: ForkError) -> None:
        record = {
            "community": community,
            "detail": error.diagnostics(),
            "members": list(error.members),
            "checkpoints": [c.to_json() for c in error.evidence],
        }
        if not any(_fork_key(f) == _fork_key(record) for f in self.forks):
            self.forks = [*self.forks, {**record, "seen_ms": now_ms()}][-MAX_FORKS:]

    def save(self) -> None:
        """Write atomically (a temporary file renamed over the old one), private to the user."""
        body = {
            "v": STATE_VERSION,
            "communities": {
                name: {key: [c.to_json() for c in sorted(m.values(), key=lambda c: c.size)] for key, m in ms.items()}
                for name, ms in self.kept.items()
            },
            "forks": self.forks,
        }
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(body, f, indent=1, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o600)  # O_CREAT's mode is masked by the umask and ignored for an old file
            os.replace(tmp, self.path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


def _fork_key(record: dict[str, Any]) -> tuple[object, ...]:
    """A fork is the same fork when the same members showed the same trees (times aside)."""
    trees = sorted((c.get("node"), c.get("size"), c.get("root")) for c in record.get("checkpoints", []))
    return record.get("community"), tuple(sorted(record.get("members", []))), tuple(trees)


def _parse_state(obj: object) -> tuple[dict[str, dict[str, dict[int, Checkpoint]]], list[dict[str, Any]]]:
    if not isinstance(obj, dict) or obj.get("v") != STATE_VERSION or set(obj) != {"v", "communities", "forks"}:
        raise ValueError(f"expected version {STATE_VERSION} with communities and forks")
    kept: dict[str, dict[str, dict[int, Checkpoint]]] = {}
    for name, members in obj["communities"].items():
        for key, checkpoints in members.items():
            parsed = [Checkpoint.from_json(c) for c in checkpoints]
            if any(c.node != key for c in parsed):
                raise ValueError(f"a checkpoint under {key[:16]}… is signed by another key")
            kept.setdefault(name, {})[key] = {c.size: c for c in parsed}
    forks = obj["forks"]
    if not isinstance(forks, list) or not all(isinstance(f, dict) for f in forks):
        raise ValueError("forks must be a list of objects")
    return kept, forks


@dataclass(frozen=True)
class Observation:
    """What one member showed in one round, and what the checks made of it."""

    peer: Peer
    status: str
    checkpoint: Checkpoint | None
    detail: str


class Monitor:
    """Fetch, check and remember the members' checkpoints of one community."""

    def __init__(
        self,
        community: Community,
        state: CheckpointState,
        timeout: float = 10.0,
        connect: Callable[[str, float], NodeClient] = NodeClient,
    ) -> None:
        self.community = community
        self.state = state
        self._timeout = timeout
        self._connect = connect
        self._clients: dict[str, NodeClient] = {}

    def __enter__(self) -> Monitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()

    def client(self, peer: Peer) -> NodeClient:
        if peer.url not in self._clients:
            self._clients[peer.url] = self._connect(peer.url, self._timeout)
        return self._clients[peer.url]

    def fetch(self, peer: Peer, size: int | None = None) -> Checkpoint:
        """The member's signed checkpoint (of its head, or of `size`), refused unless it signed it."""
        checkpoint = self.client(peer).signed_checkpoint(size)
        self.community.signer(checkpoint, peer.url, expected=peer)
        return checkpoint

    def check_history(self, peer: Peer, checkpoint: Checkpoint) -> tuple[str, str]:
        """Check a member's new checkpoint against every kept one: (OK or STALE, what was checked).

        One size has one root, whoever signed it; a tree larger than the member's own largest
        kept checkpoint, or the community's, must extend it (the member proves it). A tree smaller
        than one the member signed before is STALE (lagging, or rewound) unless it proves the step.
        """
        name = self.community.name
        self.check_kept(checkpoint)
        notes: list[str] = []
        anchors = {c.size: c for c in (self.state.largest(name, peer.key), self.state.largest(name)) if c is not None}
        for anchor in sorted(anchors.values(), key=lambda c: c.size):
            if anchor.size < checkpoint.size:
                self.prove(peer, anchor, checkpoint)
                notes.append(f"extends size {anchor.size} seen before")
            elif anchor.size > checkpoint.size and anchor.node == peer.key:
                try:
                    self.prove(peer, checkpoint, anchor)
                except NotFoundError:
                    return STALE, f"behind size {anchor.size}, which it signed before"
                notes.append(f"behind size {anchor.size} it signed before, consistent")
        return OK, "; ".join(notes) or ("same as seen before" if anchors else "first seen")

    def check_kept(self, checkpoint: Checkpoint) -> None:
        """Offline: one size has one root, against every checkpoint kept of that size."""
        for other in self.state.at_size(self.community.name, checkpoint.size):
            if other.root != checkpoint.root:
                raise self._fork(other, checkpoint, "two roots for one size (one was kept from before)")

    def accept(self, pairs: Iterable[tuple[Peer, Checkpoint]]) -> None:
        """Check member-signed checkpoints against the kept ones and each other, then keep them.

        Forks are recorded as evidence and the first is raised. A checkpoint whose history could
        not be proven (a stale member, one that did not answer for a proof) is not kept, so the
        next check starts from what was proven.
        """
        pairs = list(pairs)
        forks: list[ForkError] = []
        proven: list[Checkpoint] = []
        for peer, checkpoint in pairs:
            try:
                status, detail = self.check_history(peer, checkpoint)
                if status == OK:
                    proven.append(checkpoint)
                else:
                    logger.warning("%s: not kept: %s", peer.name, detail)
            except ForkError as exc:
                forks.append(exc)
            except WmnodeError as exc:
                logger.warning("%s: not kept: %s", peer.name, exc.diagnostics())
        more, unproven = self.cross_check(pairs)
        forks += more
        for peer, why in unproven:
            logger.warning("%s: not kept: %s", peer.name, why)
        for fork in forks:
            self.state.record_fork(self.community.name, fork)
        if not forks:
            unkept = {peer.key for peer, _ in unproven}
            for checkpoint in proven:
                if checkpoint.node not in unkept:
                    self.state.keep(self.community.name, checkpoint)
        self.state.save()
        if forks:
            raise forks[0]

    def prove(self, peer: Peer, older: Checkpoint, newer: Checkpoint) -> None:
        """RFC 6962 §2.1.2: `newer` extends `older`, by a consistency proof asked of `peer`.

        A proof that does not verify, or that is malformed, is a fork: no log has both trees, and
        a member that signed `newer` can always prove it extends a smaller tree of its log. A
        member that cannot be reached, or has no such size, raises the client's error instead.
        """
        if older.size == newer.size:
            if older.root != newer.root:
                raise self._fork(older, newer, "two roots for one size")
            return
        if older.size == 0:
            return  # the empty tree is a prefix of every tree
        try:
            path = self.client(peer).consistency_path(older.size, newer.size)
            verify_consistency(older.size, newer.size, bytes.fromhex(older.root), bytes.fromhex(newer.root), path)
        except (VerificationError, MessageError) as exc:
            raise self._fork(older, newer, f"{peer.name}'s consistency proof fails: {exc}") from exc

    def cross_check(self, seen: Iterable[tuple[Peer, Checkpoint]]) -> tuple[list[ForkError], list[tuple[Peer, str]]]:
        """Checkpoints seen together: one root per size, and every smaller tree a prefix of the
        largest, proved by the member that signed the largest. Returns the forks, and the members
        that did not answer for a proof (with why): not a fork, but nothing is proven either."""
        pairs = list(seen)
        forks: list[ForkError] = []
        unproven: list[tuple[Peer, str]] = []
        by_size: dict[int, Checkpoint] = {}
        for _, checkpoint in pairs:
            first = by_size.setdefault(checkpoint.size, checkpoint)
            if first.root != checkpoint.root:
                forks.append(self._fork(first, checkpoint, "two roots for one size"))
        if not pairs:
            return forks, unproven
        top_peer, top = max(pairs, key=lambda pair: pair[1].size)
        for size, checkpoint in sorted(by_size.items()):
            if size >= top.size:
                continue
            try:
                self.prove(top_peer, checkpoint, top)
            except ForkError as exc:
                forks.append(exc)
            except WmnodeError as exc:
                unproven.append((top_peer, f"did not prove size {size} → {top.size}: {exc.diagnostics()}"))
        return forks, unproven

    def round(self) -> list[Observation]:
        """Ask every member once; check signatures, history and each other; keep what holds."""
        observations: dict[Peer, Observation] = {}
        seen: dict[Peer, Checkpoint] = {}
        for peer in self.community.members:
            observations[peer] = self._observe(peer)
            checkpoint = observations[peer].checkpoint
            if observations[peer].status in (OK, STALE) and checkpoint is not None:
                seen[peer] = checkpoint
        forks, unproven = self.cross_check(seen.items())
        for peer, why in unproven:  # it signed the largest tree and will not show that it extends the others
            observations[peer] = Observation(peer, INVALID, seen.get(peer), why)
        for fork in forks:
            self.state.record_fork(self.community.name, fork)
            for key in fork.members:
                forked = self.community.by_key(key)
                if forked is not None:
                    before = observations[forked]
                    detail = fork.diagnostics() if before.status != FORK else f"{before.detail}; {fork.diagnostics()}"
                    observations[forked] = Observation(forked, FORK, seen.get(forked), detail)
        for observation in observations.values():
            if observation.status == OK and observation.checkpoint is not None:
                self.state.keep(self.community.name, observation.checkpoint)
        self.state.save()
        return [observations[p] for p in self.community.members]

    def _observe(self, peer: Peer) -> Observation:
        try:
            checkpoint = self.fetch(peer)
        except VerificationError as exc:
            return Observation(peer, INVALID, None, exc.diagnostics())
        except WmnodeError as exc:
            return Observation(peer, UNREACHABLE, None, exc.diagnostics())
        try:
            status, detail = self.check_history(peer, checkpoint)
            return Observation(peer, status, checkpoint, detail)
        except ForkError as exc:
            self.state.record_fork(self.community.name, exc)
            return Observation(peer, FORK, checkpoint, exc.diagnostics())
        except VerificationError as exc:
            return Observation(peer, INVALID, checkpoint, exc.diagnostics())
        except UnavailableError as exc:
            return Observation(peer, UNREACHABLE, checkpoint, f"could not check its history: {exc.diagnostics()}")
        except WmnodeError as exc:  # it answered, but not with a proof of the tree it signed
            return Observation(peer, INVALID, checkpoint, f"did not prove its history: {exc.diagnostics()}")

    def _fork(self, a: Checkpoint, b: Checkpoint, why: str) -> ForkError:
        name = self.community.name_of
        return ForkError(
            f"fork in community {self.community.name!r}: {name(a.node)} signed size {a.size} root {a.root} and "
            f"{name(b.node)} signed size {b.size} root {b.root}: {why}",
            (a.node, b.node),
            [a, b],
        )


def fork_summary(observations: list[Observation]) -> str | None:
    """One message naming the members a round found forked or invalid; None when there are none.
    A fork two members share is told once, after both their names."""
    named: dict[tuple[str, str], list[str]] = {}
    for o in observations:
        if o.status in (FORK, INVALID):
            named.setdefault((o.status, o.detail), []).append(o.peer.name)
    if not named:
        return None
    return "; ".join(f"{', '.join(names)} {status}: {detail}" for (status, detail), names in named.items())
