"""The log's clock: signed stamps, time beacons, and the rules that keep one member from freezing
or rewinding time (DESIGN §6: a member must never be able to freeze or rewind the log's clock).

Every log entry travels in an *envelope* that the member that received it stamps and signs:
``{"msg", "node", "stamp", "sig"}`` with ``sig`` = Ed25519(node, STAMP_DOMAIN ‖ canonical of the
other three). A *beacon* is an envelope with ``msg = null``: idle members append one every
`beacon_ms`, so that every member's latest stamp stays recent.

Apply keeps, per member, the latest stamp it signed: its wall clock, never clamped, so that no
one can ratchet another member's clock forward. With ``median`` the lower median of those latest
stamps (a member that never stamped counts as 0), and the candidate's own stamp counted as its
member's latest:

* an **entry** is admitted only if ``last_time − bound_ms ≤ stamp ≤ median + bound_ms``, and its
  time in the log is ``max(stamp, last_time)``: the clock never runs backwards, a minority
  cannot move the median, so a stamp of 2^53 from one member is refused, and a member whose clock
  is a little behind (or whose entry lost a race to the leader) is not refused for it. A member
  can push the log's time at most `bound_ms` past the honest members' clocks, and no further,
  because honest stamps (the median) are never clamped up to the log's time.
* a **beacon** is admitted if it does not go back on its member's own latest stamp and, once a
  majority of members has stamped, if ``stamp ≤ median + bound_ms``. Before that the beacons
  are what starts the clock; no entry is admitted until a majority of members has stamped
  (a fresh community answers its first publish within one beacon period).

The skew a publish's own time may have from its stamp, the bound and the beacon period are
community settings: they are hashed into the Raft handshake (`settings_digest`), so members
with other rules never connect, and no envelope carries them.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from contracts.encoding import MAX_SAFE_INT, canonical, is_hex, is_int
from contracts.errors import MessageError, RejectedError, VerificationError
from contracts.identity import Identity, verify_signature

STAMP_DOMAIN = b"wmnode/stamp/v1\n"
_ENVELOPE_KEYS = {"msg", "node", "sig", "stamp"}
#: Stamps are milliseconds since the epoch, within I-JSON's integer range.
MAX_STAMP = MAX_SAFE_INT
_SETTINGS_DOMAIN = "wmnode/community-settings/v2"


def now_ms() -> int:
    """This machine's wall clock in Unix milliseconds, the unit of every stamp and message time."""
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class ClockSettings:
    """The community's time rules, in milliseconds (config: `max_skew_seconds`, `[time]`)."""

    skew_ms: int = 300_000
    bound_ms: int = 30_000
    beacon_ms: int = 5_000

    def __post_init__(self) -> None:
        if not 0 < self.beacon_ms < self.bound_ms or self.skew_ms <= 0:
            raise ValueError(
                "max_skew_seconds, stamp_bound_seconds and beacon_seconds must be positive, "
                "with beacon_seconds < stamp_bound_seconds"
            )


def settings_digest(community: str, members: Iterable[tuple[str, str]], clock: ClockSettings) -> bytes:
    """What every member must agree on before Raft connects: the community's name, its members
    (key, Raft address) and its clock rules."""
    body = {
        "domain": _SETTINGS_DOMAIN,
        "community": community,
        "members": sorted([key, addr] for key, addr in members),
        "clock": [clock.skew_ms, clock.bound_ms, clock.beacon_ms],
    }
    return hashlib.sha256(canonical(body)).digest()


def seal(identity: Identity, msg: dict[str, Any] | None, stamp: int) -> bytes:
    """The canonical envelope bytes: `msg` (a message's JSON, or None for a beacon) stamped and
    signed by `identity`."""
    body = {"msg": msg, "node": identity.public_hex, "stamp": stamp}
    sig = identity.sign(STAMP_DOMAIN + canonical(body))
    return canonical({**body, "sig": sig.hex()})


@dataclass(frozen=True)
class Envelope:
    msg: dict[str, Any] | None
    node: str
    stamp: int
    sig: str


def open_envelope(env: Any, members: frozenset[str], verify: bool = True) -> Envelope:
    """Check an envelope's shape, that a member stamped it, and (unless this node sealed these very
    bytes itself) its signature."""
    if not isinstance(env, dict) or set(env) != _ENVELOPE_KEYS:
        raise MessageError("malformed envelope")
    msg, node, stamp, sig = env["msg"], env["node"], env["stamp"], env["sig"]
    if not (msg is None or isinstance(msg, dict)):
        raise MessageError("malformed envelope message")
    if not is_int(stamp, 0, MAX_STAMP):
        raise MessageError("malformed envelope stamp")
    if not is_hex(node, 32) or not is_hex(sig, 64):
        raise MessageError("malformed envelope signer")
    if node not in members:
        raise RejectedError(f"entries are stamped by members only; {node[:16]}… is not one")
    if verify:
        try:
            verify_signature(
                node, bytes.fromhex(sig), STAMP_DOMAIN + canonical({"msg": msg, "node": node, "stamp": stamp})
            )
        except VerificationError as exc:
            raise RejectedError(f"the stamp of {node[:16]}… does not verify") from exc
    return Envelope(msg, node, stamp, sig)


def lower_median(values: list[int]) -> int:
    ordered = sorted(values)
    return ordered[(len(ordered) - 1) // 2]


def stamp_ceiling(latest: dict[str, int], members: frozenset[str], node: str, stamp: int, bound_ms: int) -> int:
    """The newest stamp the community admits from `node` now: the median of every member's
    latest stamp (with `stamp` as `node`'s) plus the bound."""
    values = [max(latest.get(m, 0), stamp) if m == node else latest.get(m, 0) for m in members]
    return lower_median(values) + bound_ms


#: Codes of stamp refusals on which the sealing node may re-stamp and submit again.
STALE_STAMP, CLOCK_NOT_STARTED = "stale-stamp", "clock-not-started"


class StampError(RejectedError):
    """A stamp the clock rules refuse; `code` (if any) tells the sealing node to re-stamp."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


def check_entry_stamp(
    latest: dict[str, int], members: frozenset[str], last_time: int, node: str, stamp: int, clock: ClockSettings
) -> None:
    if stamp < last_time - clock.bound_ms:
        raise StampError(
            f"stamp {stamp} is more than {clock.bound_ms} ms before the log's last time {last_time}: "
            "this member's clock is behind the community's",
            STALE_STAMP,
        )
    started = sum(1 for m in members if latest.get(m, 0) > 0 or m == node)
    if started < len(members) // 2 + 1:
        raise StampError(
            "the community's clock has not started: fewer than a majority of members have stamped a "
            "beacon yet; retry in a few seconds",
            CLOCK_NOT_STARTED,
        )
    ceiling = stamp_ceiling(latest, members, node, stamp, clock.bound_ms)
    if stamp > ceiling:
        raise StampError(
            f"stamp {stamp} is {stamp - ceiling} ms past the members' median time plus the bound "
            f"({clock.bound_ms} ms): refused, so one member cannot move the clock forward"
        )


def check_beacon_stamp(
    latest: dict[str, int], members: frozenset[str], node: str, stamp: int, clock: ClockSettings
) -> None:
    if stamp < latest.get(node, 0):
        raise RejectedError(f"beacon {stamp} goes back on {node[:16]}…'s own latest stamp {latest[node]}")
    started = sum(1 for m in members if latest.get(m, 0) > 0)
    if started >= len(members) // 2 + 1 and stamp > stamp_ceiling(latest, members, node, stamp, clock.bound_ms):
        raise RejectedError(f"beacon {stamp} is past the members' median time plus the bound")
