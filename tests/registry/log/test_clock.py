"""The log's clock, attacked by a member (DESIGN §6: no member may freeze or rewind the clock,
or speak for another member): one test per rule of `registry.clock`, on the apply path itself."""

from __future__ import annotations

import os

import pytest

from contracts.encoding import canonical
from contracts.identity import Identity, derive_owner_key
from registry.log.clock import (
    CLOCK_NOT_STARTED,
    MAX_STAMP,
    STALE_STAMP,
    STAMP_DOMAIN,
    ClockSettings,
    lower_median,
    seal,
    settings_digest,
)
from registry.log.messages import Publish, Vote
from registry.log.state import APPENDED, BEACON, REJECTED, LogState, Outcome
from tests.helpers import now_ms

MEMBERS = [Identity.from_seed(f"clock-test-member-{i}") for i in range(3)]
A, B, C = MEMBERS
CLOCK = ClockSettings(skew_ms=300_000, bound_ms=30_000, beacon_ms=5_000)


def fresh() -> LogState:
    return LogState(frozenset(m.public_hex for m in MEMBERS), CLOCK)


def started(at: int | None = None) -> LogState:
    state = fresh()
    at = now_ms() if at is None else at
    for member in MEMBERS:
        assert state.apply_envelope(seal(member, None, at)).status == BEACON
    return state


def publish(time: int | None = None) -> Publish:
    owner, nonce = Identity.generate(), os.urandom(16)
    return Publish.create(
        owner,
        scheme="mtlsign",
        time=now_ms() if time is None else time,
        key_hash=derive_owner_key(owner, nonce).key_hash,
        verifier_hash="ab" * 32,
        info_hash="cd" * 32,
        nonce=nonce.hex(),
    )


def put(state: LogState, by: Identity, stamp: int, msg: Publish | Vote | None = None) -> Outcome:
    return state.apply_envelope(seal(by, (msg or publish(min(stamp, MAX_STAMP))).to_json(), stamp))


def test_a_far_future_stamp_is_refused_and_the_clock_moves_on() -> None:
    state, t = started(), now_ms()
    out = put(state, A, 2**53 - 2)  # the attack that froze the clock for good
    assert (out.status, out.code) == (REJECTED, "") and "median time plus the bound" in out.reason
    honest = put(state, B, t + 10)
    assert (honest.status, honest.time) == (APPENDED, t + 10)
    assert put(state, C, t + 20).time == t + 20 and state.last_time == t + 20


def test_a_stamp_just_within_the_bound_passes_and_just_past_it_fails() -> None:
    t = now_ms()
    state = started(t)
    assert put(state, A, t + CLOCK.bound_ms + 1).status == REJECTED
    assert put(state, A, t + CLOCK.bound_ms).status == APPENDED


def test_two_colluding_members_of_five_cannot_move_the_median() -> None:
    five = [Identity.from_seed(f"clock-five-{i}") for i in range(5)]
    state, t = LogState(frozenset(m.public_hex for m in five), CLOCK), now_ms()
    for liar in five[:2]:  # first to stamp: before a majority has, beacons start the clock unbounded
        assert state.apply_envelope(seal(liar, None, t + 10**9)).status == BEACON
    for member in five[2:]:
        assert state.apply_envelope(seal(member, None, t)).status == BEACON
    out = state.apply_envelope(seal(five[0], publish(t + 10**9).to_json(), t + 10**9))
    assert out.status == REJECTED and "median" in out.reason


def test_the_clock_never_runs_back_and_a_stamp_far_behind_is_refused() -> None:
    state, t = started(), now_ms()
    assert put(state, A, t + 1000).status == APPENDED
    behind = put(state, B, t)  # B's clock is a second behind, or its entry lost a race: kept, at the log's time
    assert (behind.status, behind.time) == (APPENDED, t + 1000)
    out = put(state, B, t + 1000 - CLOCK.bound_ms - 1)
    assert (out.status, out.code) == (REJECTED, STALE_STAMP)
    assert state.last_time == t + 1000 and state.latest[B.public_hex] == t  # B's own clock, not clamped


def test_a_member_pushing_at_the_bound_cannot_make_the_clock_run_away() -> None:
    """The attack: stamp at the ceiling again and again, hoping honest stamps follow the log's time
    up (they would, if a node stamped max(its clock, the log's time) and that counted as its clock)."""
    state, t = started(), now_ms()
    for i in range(12):
        ceiling = lower_median(list(state.latest.values())) + CLOCK.bound_ms
        assert put(state, A, ceiling).status == APPENDED
        assert put(state, B, t + i).status == APPENDED  # honest: its own clock
        assert put(state, C, t + i).status == APPENDED
    assert state.last_time <= t + 12 + CLOCK.bound_ms
    assert all(put(state, B, t + 20 + i).status == APPENDED for i in range(3))


def test_no_entry_before_a_majority_of_members_has_stamped() -> None:
    state, t = fresh(), now_ms()
    assert state.apply_envelope(seal(A, None, t)).status == BEACON
    out = put(state, B, t)  # A's beacon and B's own stamp: a majority of three
    assert out.status == APPENDED
    lone = LogState(frozenset(m.public_hex for m in MEMBERS), CLOCK)
    refused = put(lone, A, t)
    assert (refused.status, refused.code) == (REJECTED, CLOCK_NOT_STARTED)


def test_a_beacon_cannot_go_back_on_its_members_own_latest_stamp() -> None:
    state, t = started(), now_ms()
    assert state.apply_envelope(seal(A, None, t + 50)).status == BEACON
    out = state.apply_envelope(seal(A, None, t + 10))
    assert out.status == REJECTED and "goes back" in out.reason


def test_a_beacon_past_the_bound_is_refused_once_the_clock_runs() -> None:
    t = now_ms()
    state = started(t)
    out = state.apply_envelope(seal(A, None, t + CLOCK.bound_ms + 5_000))
    assert out.status == REJECTED and state.latest[A.public_hex] == t


def test_a_publish_dated_far_from_its_stamp_is_refused_with_the_communitys_skew() -> None:
    state, t = started(), now_ms()
    out = put(state, A, t, publish(t - CLOCK.skew_ms - 1000))
    assert out.status == REJECTED and "backdated" in out.reason


def test_a_member_cannot_stamp_as_another_member() -> None:
    state, t = started(), now_ms()
    body = {"msg": publish(t).to_json(), "node": B.public_hex, "stamp": t}
    forged = canonical({**body, "sig": A.sign(STAMP_DOMAIN + canonical(body)).hex()})  # A signs, claims B
    out = state.apply_envelope(forged)
    assert out.status == REJECTED and "does not verify" in out.reason
    stranger = Identity.generate()
    assert "members only" in put(state, stranger, t).reason


def test_a_member_cannot_vote_as_another_member() -> None:
    state, t = started(), now_ms()
    vote = Vote.create(B, claim=0, claim_hash="00" * 32, verdict="owner", score=990, threshold=700, reason="x")
    out = put(state, A, t, vote)  # A's node relays B's signed vote
    assert out.status == REJECTED
    assert state.claims == {} and all(not c.votes for c in state.claims.values())


def test_a_vote_stamped_by_another_member_is_refused_even_on_a_real_claim() -> None:
    from tests.registry.log.test_state import claim as make_claim

    state, t = started(), now_ms()
    owner, nonce = Identity.generate(), os.urandom(16)
    key = derive_owner_key(owner, nonce)
    pub = Publish.create(owner, scheme="mtlsign", time=t, key_hash=key.key_hash, verifier_hash="ab" * 32,
                         info_hash="cd" * 32, nonce=nonce.hex())  # fmt: skip
    assert put(state, A, t, pub).status == APPENDED
    c = make_claim(owner, 0, key.key, key.key_proof)
    assert state.apply_envelope(seal(A, c.to_json(), t + 1)).status == APPENDED
    vote = Vote.create(B, claim=1, claim_hash=c.body_hash(), verdict="owner", score=990, threshold=700, reason="x")
    out = put(state, A, t + 2, vote)
    assert out.status == REJECTED and "members record their own only" in out.reason
    assert put(state, B, t + 2, vote).status == APPENDED


@pytest.mark.parametrize("change", ["members", "clock", "community"])
def test_the_handshake_digest_covers_the_community_settings(change: str) -> None:
    members = [(m.public_hex, f"127.0.0.1:{9000 + i}") for i, m in enumerate(MEMBERS)]
    base = settings_digest("c", members, CLOCK)
    if change == "members":
        other = settings_digest("c", members[:2], CLOCK)
    elif change == "clock":
        other = settings_digest("c", members, ClockSettings(bound_ms=60_000))
    else:
        other = settings_digest("d", members, CLOCK)
    assert other != base and settings_digest("c", list(reversed(members)), CLOCK) == base
