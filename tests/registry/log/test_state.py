"""Claims and votes in the replicated log (one process, three member keys): admission and decision."""

from __future__ import annotations

import hashlib
import os

import pytest

from contracts.errors import MessageError, VerificationError
from contracts.identity import Identity, derive_owner_key
from registry.log.clock import seal
from registry.log.messages import Claim, Publish, Reference, Vote, message_from_json, predict_model_hash
from registry.log.reader import LogReader
from registry.log.state import APPENDED, REJECTED, LogState, Outcome
from tests.helpers import now_ms

SKEW = 300_000
MEMBERS = [Identity.from_seed(f"protocol-test-member-{i}") for i in range(3)]


class StateLog(LogReader):
    """The log's apply rules without Raft: every member can stamp, as each member's node would."""

    def submit_sync(self, data: bytes) -> Outcome:
        return self.state.apply_envelope(data)


@pytest.fixture
def log() -> StateLog:
    state = LogState(frozenset(m.public_hex for m in MEMBERS))
    for member in MEMBERS:  # the members' beacons start the community's clock
        assert state.apply_envelope(seal(member, None, now_ms())).status == "beacon"
    return StateLog(state)


def stamper(msg: Publish | Claim | Vote | Reference) -> Identity:
    """The member whose node receives `msg`: a vote's or reference's own member, else the first."""
    node = getattr(msg, "node", None)
    return next((m for m in MEMBERS if m.public_hex == node), MEMBERS[0])


def submit(log: StateLog, msg: Publish | Claim | Vote | Reference, stamp: int | None = None) -> tuple[str, int, str]:
    stamp = max(now_ms(), log.state.last_time) if stamp is None else stamp
    out = log.submit_sync(seal(stamper(msg), msg.to_json(), stamp))
    return out.status, out.index, out.reason


def publish(log: StateLog, owner: Identity) -> tuple[int, bytes, bytes]:
    nonce = os.urandom(16)
    key = derive_owner_key(owner, nonce)
    msg = Publish.create(
        owner,
        scheme="mtlsign",
        time=now_ms(),
        key_hash=key.key_hash,
        verifier_hash="ab" * 32,
        info_hash="cd" * 32,
        nonce=nonce.hex(),
    )
    status, index, _ = submit(log, msg)
    assert status == APPENDED
    return index, key.key, key.key_proof


def claim(owner: Identity, publish_index: int, key: bytes, proof: bytes, model: str = "ee" * 32) -> Claim:
    return Claim.create(
        owner,
        publish=publish_index,
        model_uri=f"sha256:{model}",
        model_hash=model,
        verifier_uri="sha256:" + "ab" * 32,
        info_uri="https://example.org/info.json",
        key=key,
        key_proof=proof,
        time=now_ms(),
    )


def vote(node: Identity, claim_index: int, verdict: str, log: StateLog | None = None) -> Vote:
    """A vote naming the claim at `claim_index` in `log` by its hash (a dummy hash without a log)."""
    state = log.state.claims.get(claim_index) if log is not None else None
    claim_hash = state.body_hash if state is not None else "00" * 32
    return Vote.create(
        node, claim=claim_index, claim_hash=claim_hash, verdict=verdict, score=990, threshold=700, reason="test"
    )


def test_claim_and_vote_round_trip_through_json_and_check_their_signatures() -> None:
    owner = Identity.generate()
    c = claim(owner, 0, os.urandom(32), os.urandom(64))
    assert message_from_json(c.to_json()) == c
    v = vote(MEMBERS[0], 1, "owner")
    assert message_from_json(v.to_json()) == v and v.signer == MEMBERS[0].public_hex
    forged = {**v.to_json(), "verdict": "not-owner"}
    with pytest.raises(VerificationError, match="signature does not match node"):
        message_from_json(forged)


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("model_uri", "file:///etc/passwd", "must be sha256:<hex>, an http"),
        ("model_uri", "http://user:pw@example.org/m", "user:password@"),
        ("model_uri", "sha256:" + "00" * 32, "names an artifact other than model_hash"),
        ("model_uri", "predict+http://example.org/v1/predict", "SHA-256 of its URI"),
        ("verifier_uri", "predict+https://example.org/v1/predict", "cannot be a predict URI"),
        ("info_uri", "https://" + "a" * 3000, "URI of 1-2048 characters"),
        ("publish", -1, "out of range"),
        ("key", "zz" * 32, "'key' must be 32 bytes"),
    ],
)
def test_claims_with_bad_fields_are_refused_naming_the_field(field: str, value: object, fragment: str) -> None:
    obj = claim(Identity.generate(), 0, os.urandom(32), os.urandom(64)).to_json()
    obj[field] = value
    with pytest.raises(MessageError, match=fragment):
        Claim.from_json(obj)


def test_a_prediction_api_is_named_by_the_hash_of_its_uri() -> None:
    uri = "predict+http://127.0.0.1:9000/v1/predict"
    obj = claim(Identity.generate(), 0, os.urandom(32), os.urandom(64)).to_json()
    obj.update(model_uri=uri, model_hash=predict_model_hash(uri))
    assert Claim.from_json(obj).model_hash == hashlib.sha256(uri.encode()).hexdigest()


@pytest.mark.parametrize(
    ("vote_obj", "fragment"),
    [
        ({"verdict": "maybe"}, "'verdict' must be one of"),
        ({"score": 1001}, "per mille"),
        ({"threshold": True}, "per mille"),
        ({"reason": "line\nbreak"}, "printable"),
        ({"fp_bound": "0.000001"}, "'fp_bound' must be a decimal string like '2.30e-09'"),
        ({"references": "AB" * 32}, "'references' must be comma-separated SHA-256 hex digests"),
        ({"v": 1}, "'v' must be 3 for 'vote'"),
    ],
)
def test_votes_with_bad_fields_are_refused(vote_obj: dict[str, object], fragment: str) -> None:
    obj = {**vote(MEMBERS[0], 1, "owner").to_json(), **vote_obj}
    with pytest.raises(MessageError, match=fragment):
        Vote.from_json(obj)


def test_a_claim_needs_the_claimants_own_publish_and_a_key_that_checks(log: StateLog) -> None:
    owner, other = Identity.generate(), Identity.generate()
    index, key, proof = publish(log, owner)
    other_index, other_key, other_proof = publish(log, other)

    status, _, reason = submit(log, claim(owner, other_index, other_key, other_proof))
    assert status == REJECTED and "belongs to another owner" in reason  # a stolen key does not help
    status, _, reason = submit(log, claim(other, index, key, proof))
    assert status == REJECTED and "belongs to another owner" in reason
    status, _, reason = submit(log, claim(owner, index, os.urandom(32), proof))
    assert status == REJECTED and "does not hash to publish #0's key_hash" in reason
    forged_proof = Identity.generate().sign(b"wmnode/key/v1")
    forged_key = hashlib.sha256(b"wmnode/key/v1" + forged_proof).digest()
    status, _, reason = submit(log, claim(owner, index, forged_key, forged_proof))
    assert status == REJECTED and "does not hash" in reason
    status, _, reason = submit(log, claim(owner, 5, key, proof))
    assert status == REJECTED and "not a publish" in reason
    assert submit(log, claim(owner, index, key, proof))[0] == APPENDED
    assert log.size() == 3


def test_a_forged_key_proof_for_the_published_key_is_refused(log: StateLog) -> None:
    owner = Identity.generate()
    index, key, proof = publish(log, owner)
    bad = bytearray(proof)
    bad[0] ^= 1
    status, _, reason = submit(log, claim(owner, index, key, bytes(bad)))
    assert status == REJECTED and "key_proof is not the owner's signature on the nonce" in reason


def test_a_claim_is_decided_by_a_majority_of_members_and_each_votes_once(log: StateLog) -> None:
    owner = Identity.generate()
    index, key, proof = publish(log, owner)
    _, c, _ = submit(log, claim(owner, index, key, proof))
    assert submit(log, vote(Identity.generate(), c, "owner", log))[2].startswith("votes are taken from members only")
    assert submit(log, vote(MEMBERS[0], index, "owner", log))[2] == f"vote on entry #{index}, which is not a claim"
    assert "names another claim" in submit(log, vote(MEMBERS[0], c, "owner"))[2]  # right index, wrong hash
    assert submit(log, vote(MEMBERS[0], c, "owner", log))[0] == APPENDED
    second = vote(MEMBERS[0], c, "not-owner", log)
    assert "has already voted" in submit(log, second)[2]
    status = log.claim_status(c)
    assert status["decided"] is None and status["majority"] == 2 and len(status["votes"]) == 1
    assert submit(log, vote(MEMBERS[1], c, "not-owner", log))[0] == APPENDED  # a liar: 1 owner, 1 not-owner
    assert log.claim_status(c)["decided"] is None
    _, decisive, _ = submit(log, vote(MEMBERS[2], c, "owner", log))
    status = log.claim_status(c)
    assert (status["decided"], status["decided_at"], status["result"]) == ("owner", decisive, "owner")
    assert [v["msg"]["node"] for v in status["votes"]] == [m.public_hex for m in MEMBERS]


def test_when_two_claimants_pass_on_one_model_the_earlier_publish_wins(log: StateLog) -> None:
    owner, thief = Identity.generate(), Identity.generate()
    owner_publish, owner_key, owner_proof = publish(log, owner)
    thief_publish, thief_key, thief_proof = publish(log, thief)
    model = "77" * 32
    _, thief_claim, _ = submit(log, claim(thief, thief_publish, thief_key, thief_proof, model))
    for member in MEMBERS[:2]:
        submit(log, vote(member, thief_claim, "owner", log))
    assert log.standing_owner(model)["owner"] == thief.public_hex  # until the owner claims
    _, owner_claim, _ = submit(log, claim(owner, owner_publish, owner_key, owner_proof, model))
    for member in MEMBERS[1:]:
        submit(log, vote(member, owner_claim, "owner", log))
    standing = log.standing_owner(model)
    assert standing is not None
    assert (standing["owner"], standing["claim"], standing["publish"]) == (owner.public_hex, owner_claim, owner_publish)
    assert standing["passed_claims"] == [thief_claim, owner_claim]
    assert log.claim_status(thief_claim)["decided"] == "owner"
    assert log.claim_status(thief_claim)["result"] == "not-owner"  # it passed, but published later
    assert log.claim_status(owner_claim)["result"] == "owner"
    assert log.standing_owner("00" * 32) is None


def test_a_vote_records_its_bound_and_references_in_the_log(log: StateLog) -> None:
    owner = Identity.generate()
    index, key, proof = publish(log, owner)
    _, c, _ = submit(log, claim(owner, index, key, proof))
    state = log.state.claims[c]
    cast = Vote.create(
        MEMBERS[0], claim=c, claim_hash=state.body_hash, verdict="owner", score=990, threshold=700, reason="found",
        fp_bound="3.10e-22", references=("aa" * 32, "bb" * 32),
    )  # fmt: skip
    status, at, _ = submit(log, cast)
    assert status == APPENDED
    msg = log.entry(at)["msg"]
    assert (msg["v"], msg["fp_bound"], msg["references"]) == (3, "3.10e-22", "aa" * 32 + "," + "bb" * 32)
    assert log.claim_status(c)["votes"][0]["msg"] == cast.to_json()


# -- reference models (DESIGN §6.1 rule 3) ------------------------------------------------------


def reference(node: Identity, model_hash: str, **overrides: object) -> Reference:
    fields: dict[str, object] = {"arch": "lenet5", "num_classes": 10, "input_shape": "1x28x28", "dataset": "digits"}
    fields.update({"recipe": "plain", "seed": 1, **overrides})
    return Reference.create(node, model_hash=model_hash, **fields)  # type: ignore[arg-type]


def submit_raw(log: StateLog, obj: dict[str, object]) -> tuple[str, int, str]:
    """Submit a message object as it is (apply validates it again), bypassing the API's checks."""
    out = log.submit_sync(seal(MEMBERS[0], obj, max(now_ms(), log.state.last_time)))
    return out.status, out.index, out.reason


def test_references_are_recorded_by_members_only_once_per_slot(log: StateLog) -> None:
    honest = "11" * 32
    status, _, reason = submit(log, reference(Identity.generate(), honest))
    assert status == REJECTED and reason.startswith("references are recorded by members only;")
    first = reference(MEMBERS[0], honest)
    status, at, _ = submit(log, first)
    assert status == APPENDED
    assert submit(log, first)[:2] == ("duplicate", at)  # a retry is stored once
    for again in (reference(MEMBERS[0], "22" * 32), reference(MEMBERS[0], honest, seed=2)):
        status, _, reason = submit(log, again)
        assert status == REJECTED
        assert reason == (
            f"node {MEMBERS[0].public_hex[:16]}… has already recorded a reference for "
            "('lenet5', 10, '1x28x28', 'digits', 'plain')"
        )
    # Another slot (recipe, shape, data set) is another record.
    assert submit(log, reference(MEMBERS[0], "33" * 32, recipe="new-label"))[0] == APPENDED
    assert submit(log, reference(MEMBERS[0], "44" * 32, input_shape="1x32x32"))[0] == APPENDED
    assert log.state.admitted_references() == []  # one member is not a majority


def test_a_reference_counts_once_a_majority_records_the_same_hash(log: StateLog) -> None:
    honest = "11" * 32
    submit(log, reference(MEMBERS[0], honest))
    assert log.state.admitted_references() == []
    submit(log, reference(MEMBERS[1], honest))
    assert log.state.admitted_references() == [
        {"arch": "lenet5", "num_classes": 10, "input_shape": "1x28x28", "dataset": "digits", "recipe": "plain",
         "model_hash": honest, "members": 2},
    ]  # fmt: skip
    submit(log, reference(MEMBERS[2], honest))
    assert [r["members"] for r in log.state.admitted_references()] == [3]


def test_a_lying_member_never_plants_a_reference(log: StateLog) -> None:
    honest, planted = "11" * 32, "66" * 32
    liar = MEMBERS[0]
    assert submit(log, reference(liar, planted))[0] == APPENDED
    # It cannot speak for another member: a reference signed by the liar in member 1's name.
    forged = {**reference(liar, planted).to_json(), "node": MEMBERS[1].public_hex}
    with pytest.raises(VerificationError, match="reference: signature does not match node"):
        message_from_json(forged)
    status, _, reason = submit_raw(log, forged)
    assert status == REJECTED and "signature does not match node" in reason
    # Nor vote twice for its model; the honest majority's model is the one that counts.
    assert submit(log, reference(liar, planted, seed=9))[0] == REJECTED
    submit(log, reference(MEMBERS[1], honest))
    assert log.state.admitted_references() == []  # 1 against 1: nothing yet
    submit(log, reference(MEMBERS[2], honest))
    assert [r["model_hash"] for r in log.state.admitted_references()] == [honest]
    assert log.state.references[("lenet5", 10, "1x28x28", "digits", "plain")][planted] == {liar.public_hex}


def test_a_publish_is_tried_on_a_model_again_only_after_an_error_decision(log: StateLog) -> None:
    """DESIGN §6.1 rule 4: repeated claims on one model pay for each other. The attack: claim the
    same (publish, model) again and again, each claim drawing fresh control keys, until one passes."""
    owner = Identity.generate()
    index, key, proof = publish(log, owner)
    sent = iter(range(1, 100))

    def again(model: str = "ee" * 32) -> Claim:  # a new message each time (another time stamp)
        c = claim(owner, index, key, proof, model)
        return Claim.create(owner, publish=index, model_uri=c.model_uri, model_hash=model, verifier_uri=c.verifier_uri,
                            info_uri=c.info_uri, key=key, key_proof=proof, time=c.time + next(sent))  # fmt: skip

    _, first, _ = submit(log, again())
    status, _, reason = submit(log, again())  # pending: refused
    assert status == REJECTED and f"already claimed on this model (claim #{first}, not yet decided)" in reason
    for member in MEMBERS[:2]:
        submit(log, vote(member, first, "error", log))
    _, second, _ = submit(log, again())  # nothing was decided: one more try
    assert log.state.tries(second) == 2 and log.state.tries(first) == 1
    for member in MEMBERS[:2]:
        submit(log, vote(member, second, "not-owner", log))
    status, _, reason = submit(log, again())
    assert status == REJECTED and f"(claim #{second}, not-owner)" in reason
    assert submit(log, again("dd" * 32))[0] == APPENDED  # another model
