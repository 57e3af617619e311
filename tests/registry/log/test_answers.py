"""The typed answers and the judge's jobs: each encodes to exactly the JSON written before it existed,
parses back to itself, refuses what is malformed (naming it), and fits the node's OpenAPI schema."""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from contracts.errors import MessageError, VerificationError, WmnodeError
from contracts.fetch import FetchPolicy
from registry.cli.ownership import ClaimOutcome
from registry.client.certificate import Certificate, verify_certificate
from registry.client.receipt import Confirmation, InclusionProof, Receipt, verify_receipt
from registry.log.answers import ClaimStatus, Entry, Standing, Submitted
from registry.log.messages import Claim, Publish, Vote
from registry.proofs.checkpoint import Checkpoint
from registry.serve import schemas
from registry.serve.jobs import (
    BuildJob,
    BuildPolicy,
    Built,
    DatasetFile,
    JudgeJob,
    JudgeVerdict,
    ReferenceFile,
    policy_from_json,
    policy_to_json,
    read_job,
)
from tests.registry.client.test_certificate import MODEL, T0, _Log, _owned, _standing

COMPAT = Path(__file__).resolve().parents[2] / "fixtures" / "compat"


def _compat(name: str) -> Any:
    return json.loads((COMPAT / name).read_text())


def _status(log: _Log) -> dict[str, Any]:
    """A claim status as `GET /v1/claims/{i}` answers it: a claim decided owner by three votes."""
    cert = _owned(log)
    standing = {k: v for k, v in _standing(cert["claim"], cert["publish"], [1]).items() if k != "model_hash"}
    return {
        "claim": cert["claim"], "publish": cert["publish"], "votes": cert["votes"], "members": 3, "majority": 2,
        "decided": "owner", "decided_at": cert["votes"][1]["index"], "result": "owner",
        "standing": {"model_id": MODEL, **standing},
    }  # fmt: skip


# -- round trips: the JSON written before the types existed, byte for byte ------------------------


@pytest.mark.parametrize("index", range(25))
def test_every_served_entry_round_trips(index: int) -> None:
    served = _compat("entries.json")[index]
    entry = Entry.from_json(served)
    assert entry.to_json() == served and Entry.from_json(entry.to_json()).to_json() == served
    assert list(entry.to_json()) == ["index", "time", "msg", "leaf_hash"]  # the order a node sends
    assert list(entry.to_json()["msg"]) == sorted(served["msg"])  # the message as its leaf holds it
    assert entry.leaf().hex() == served["leaf_hash"]


def test_an_old_certificate_round_trips_and_verifies_typed() -> None:
    old = _compat("certificate.json")
    cert = Certificate.from_json(old)
    assert cert.to_json() == old and Certificate.from_json(cert.to_json()).to_json() == old
    assert json.dumps(cert.to_json(), indent=2, sort_keys=True) + "\n" == (COMPAT / "certificate.json").read_text()
    members = [c.node for c in cert.checkpoints]
    assert verify_certificate(cert, members) == verify_certificate(old, members)
    assert cert.standing is not None and cert.standing.model_id is not None and cert.standing.model_hash is None


@pytest.mark.parametrize("name", ["receipt-11.json", "bundle/receipt.json"])
def test_old_receipts_round_trip(name: str) -> None:
    old = _compat(name)
    receipt = Receipt.from_json(old)
    assert receipt.to_json() == old and Receipt.from_json(receipt.to_json()).to_json() == old
    verify_receipt(receipt, members=[receipt.checkpoint.node])
    assert receipt.status == old.get("status")


def test_a_confirmed_receipt_round_trips() -> None:
    old = _compat("receipt-11.json")
    checkpoint = Checkpoint.from_json(old["checkpoint"])
    proof = InclusionProof(old["entry"]["index"], checkpoint.size, tuple(old["inclusion"]["path"]))
    confirmed = replace(Receipt.from_json(old), confirmations=(Confirmation(checkpoint, proof),))
    obj = confirmed.to_json()
    assert obj["confirmations"] == [{"checkpoint": old["checkpoint"], "inclusion": proof.to_json()}]
    assert list(proof.to_json()) == ["index", "size", "path"]
    assert Receipt.from_json(obj).to_json() == obj
    verify_receipt(obj)


def test_a_claim_status_and_its_standing_round_trip() -> None:
    obj = _status(_Log())
    status = ClaimStatus.from_json(obj)
    assert status.to_json() == obj and list(status.to_json()) == list(obj)
    assert status.standing is not None and status.standing.to_json() == obj["standing"]
    assert list(status.standing.to_json()) == list(obj["standing"])  # model_id first, as the log writes it
    assert [v.verdict for v in status.vote_msgs] == ["owner"] * 3 and status.claim_msg.model_hash == MODEL
    outcome = ClaimOutcome.of(status, 1.5)
    assert outcome.to_json() == {**obj, "seconds_to_decision": 1.5} and outcome.votes == status.votes
    assert ClaimOutcome.from_json(outcome.to_json()).to_json() == outcome.to_json()


def test_a_standing_of_either_era_round_trips() -> None:
    log = _Log()
    cert = _owned(log)
    before = _standing(cert["claim"], cert["publish"], [1])  # named by model_hash (before function identities)
    now = {"model_id": MODEL, **{k: v for k, v in before.items() if k != "model_hash"}}
    for obj in (before, now):
        assert Standing.from_json(obj).to_json() == obj


def test_a_submit_answer_round_trips() -> None:
    obj = {"index": 3, "time": T0, "leaf_hash": "ab" * 32, "status": "appended"}
    assert Submitted.from_json(obj).to_json() == obj and list(Submitted.from_json(obj).to_json()) == list(obj)


def _job(**changes: Any) -> dict[str, Any]:
    job = {
        "op": "judge", "scheme": "mtlsign", "key": "01" * 32, "info_path": "/s/info", "verifier_path": "/s/ver",
        "model_path": "/s/model", "predict_uri": None, "fetch": policy_to_json(FetchPolicy(allow_hosts=("a.example",))),
        "references": [{"model_hash": "cd" * 32, "path": "/s/ref"}], "threshold_floor": 0.5,
        "max_false_positive": 1e-6, "controls": 8, "control_seed": "ef" * 32,
        "datasets": [{"name": "digits", "format": "sklearn", "path": "/d", "num_classes": 10}],
        "build": {"architectures": ["lenet5", "timm:*"], "max_parameters": 1000}, "tries": 2,
        "predict_deadline_s": 2.0,
    }  # fmt: skip
    return {**job, **changes}


def test_the_judges_messages_round_trip() -> None:
    job = JudgeJob.from_json(_job())
    assert job.to_json() == _job() and read_job(job.to_json()) == job.to_json()
    assert job.fetch == FetchPolicy(allow_hosts=("a.example",)) and job.references == (
        ReferenceFile("cd" * 32, "/s/ref"),
    )
    assert job.datasets == (DatasetFile("digits", "sklearn", "/d", 10),)
    assert job.build == BuildPolicy(("lenet5", "timm:*"), 1000)
    assert policy_from_json(policy_to_json(FetchPolicy())) == FetchPolicy()
    build = {"op": "build", "recipe": "plain", "arch": "lenet5", "dataset": "digits", "input_shape": [1, 28, 28],
             "seed": 1, "epochs": 3, "out": "/w/ref.safetensors"}  # fmt: skip
    assert BuildJob.from_json(build).to_json() == build and isinstance(read_job(build), BuildJob)
    verdict = {"verdict": "owner", "score": 900, "threshold": 500, "reason": "found", "fp_bound": "2.30e-09",
               "references": ["cd" * 32], "controls": "8:120:0:1.40e-02"}  # fmt: skip
    assert JudgeVerdict.from_json({**verdict, "seconds": 1.0, "peak_rss": 5}).to_json() == verdict
    built = {"num_classes": 10, "arch": "lenet5", "bytes": 123}
    assert Built.from_json({**built, "seconds": 0.5}).to_json() == built


def test_a_job_written_before_the_types_still_reads() -> None:
    """Jobs the tests of the schemes hand `judge` directly: no op, no build, no tries."""
    old = {k: v for k, v in _job().items() if k not in ("op", "build", "tries", "predict_deadline_s")}
    job = JudgeJob.from_json(old)
    assert (job.build, job.tries, job.predict_deadline_s) == (BuildPolicy(), 1, None)


# -- an answer reads as its JSON ----------------------------------------------------------------


def test_an_answer_reads_as_the_json_it_encodes() -> None:
    served = _compat("entries.json")[3]
    entry = Entry.from_json(served)
    assert entry == served and dict(entry) == served and entry["msg"] == served["msg"] and "leaf_hash" in entry
    assert entry.get("nothing") is None and entry == Entry.from_json(copy.deepcopy(served))
    entry["msg"]["time"] = 0  # a copy: the answer itself cannot be changed through its JSON
    assert entry == served


# -- what is malformed is refused, and named ---------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        ({"index": True}, MessageError, r"entry.index must be a non-negative integer, got True"),
        ({"time": -1}, MessageError, r"entry.time must be a non-negative integer, got -1"),
        ({"leaf_hash": "AB" * 32}, MessageError, r"entry.leaf_hash must be 64 lowercase hex digits"),
        ({"leaf_hash": None}, MessageError, r"entry.leaf_hash must be 64 lowercase hex digits"),
        ({"colour": "blue"}, MessageError, r"unknown field\(s\) \['colour'\]"),
        ({"msg": {"type": "note"}}, MessageError, r"entry.msg: unknown message type 'note'"),
    ],
)
def test_a_malformed_entry_is_refused(change: dict[str, Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        Entry.from_json({**_compat("entries.json")[0], **change})


def test_an_entry_whose_message_is_not_its_signers_is_refused() -> None:
    served = copy.deepcopy(_compat("entries.json")[11])
    served["msg"]["time"] += 1
    with pytest.raises(VerificationError, match="signature does not match"):
        Entry.from_json(served)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"decided": "mine"}, r"decided must be one of None, owner, not-owner, error"),
        ({"decided_at": None}, r"decided, decided_at and result are set together"),
        ({"result": "error"}, r"result 'error' cannot follow from the decision 'owner'"),
        ({"majority": 4}, r"a majority of 4 among 3 members"),
        ({"votes": "none"}, r"votes must be a list of entries"),
        ({"standing": {"owner": "ab"}}, r"claim status.standing: missing field\(s\)"),
    ],
)
def test_a_malformed_claim_status_is_refused(change: dict[str, Any], match: str) -> None:
    with pytest.raises(MessageError, match=match):
        ClaimStatus.from_json({**_status(_Log()), **change})


def test_a_claim_status_must_hold_its_own_claim_publish_and_votes() -> None:
    obj = _status(_Log())
    with pytest.raises(MessageError, match="its claim and publish are not a claim and a publish"):
        ClaimStatus.from_json({**obj, "claim": obj["publish"]})
    with pytest.raises(MessageError, match="every vote must be a vote on claim #1"):
        ClaimStatus.from_json({**obj, "votes": [obj["publish"]]})


def test_a_standing_names_its_model_once() -> None:
    now = _status(_Log())["standing"]
    with pytest.raises(MessageError, match="exactly one of model_id, model_hash"):
        Standing.from_json({**now, "model_hash": MODEL})
    with pytest.raises(MessageError, match=r"standing.passed_claims must be a list of non-negative integers"):
        Standing.from_json({**now, "passed_claims": [1, False]})


@pytest.mark.parametrize(
    ("obj", "match"),
    [
        ({"index": 1, "time": 2, "leaf_hash": "ab" * 32, "status": "rejected"}, "status must be one of appended"),
        ({"index": 1, "time": 2, "leaf_hash": "ab" * 32}, r"missing field\(s\) \['status'\]"),
        ([1, 2], "must be a JSON object, got list"),
    ],
)
def test_a_malformed_submit_answer_is_refused(obj: object, match: str) -> None:
    with pytest.raises(MessageError, match=match):
        Submitted.from_json(obj)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"predict_uri": "predict+https://api.example/p"}, "exactly one of model_path and predict_uri"),
        ({"model_path": None, "predict_uri": "https://api.example/p"}, "must be a prediction API"),
        ({"controls": True}, "controls must be 0-1000 control keys"),
        ({"fetch": {**policy_to_json(FetchPolicy()), "allow_private": 1}}, r"fetch.allow_private must be true or"),
        ({"references": [{"model_hash": "x", "path": "/r"}]}, r"references.model_hash must be 64 lowercase hex"),
        ({"max_false_positive": float("nan")}, r"max_false_positive must be a number in \[0, 1\]"),
        ({"op": "build"}, "op must be 'judge'"),
        ({"cpu_seconds": 60}, r"unknown field\(s\) \['cpu_seconds'\]"),
    ],
)
def test_a_malformed_job_is_refused(change: dict[str, Any], match: str) -> None:
    with pytest.raises(MessageError, match=match):
        JudgeJob.from_json(_job(**change))


def test_a_judges_answer_is_checked_before_it_becomes_a_vote() -> None:
    with pytest.raises(WmnodeError, match="^the judge ran out of patience$"):
        JudgeVerdict.from_json({"error": "the judge ran out of patience"})
    good = {"verdict": "owner", "score": 900, "threshold": 500, "reason": "r", "fp_bound": "1.00e+00",
            "references": [], "controls": ""}  # fmt: skip
    bad_fields = [
        ({"verdict": "mine"}, "verdict must be one of"),
        ({"score": 1001}, "per mille"),
        ({"fp_bound": "0.5"}, "fp_bound must be a decimal string"),
        ({"references": ["x"]}, "SHA-256"),
    ]
    for bad, match in bad_fields:
        with pytest.raises(MessageError, match=match):
            JudgeVerdict.from_json({**good, **bad})
    with pytest.raises(MessageError, match=r"a job's op must be 'judge' or 'build', got 'noise'"):
        read_job({"op": "noise"})


def test_a_malformed_certificate_is_refused_as_a_verification_failure() -> None:
    log = _Log()
    cert = _owned(log)
    for bad, match in [
        ({"v": 2}, "unsupported certificate version 2"),
        ({"certificate": "a poem"}, "not a wmnode ownership certificate"),
        ({"proofs": {"01": []}}, "proofs are named by entry index, not '01'"),
        ({"claim": cert["publish"]}, "the certificate's publish and claim are not a publish and a claim"),
        ({"checkpoints": "all of them"}, "checkpoints must be a list"),
    ]:
        with pytest.raises(VerificationError, match=f"^malformed certificate: .*{match}"):
            verify_certificate({**cert, **bad}, log.keys)
    with pytest.raises(MessageError, match=r"certificate: missing field\(s\) \['community'\]"):
        Certificate.from_json({k: v for k, v in cert.items() if k != "community"})


def test_a_malformed_receipt_is_refused_as_a_verification_failure() -> None:
    old = _compat("receipt-11.json")
    with pytest.raises(VerificationError, match=r"^malformed receipt: receipt.inclusion.path must be a list"):
        verify_receipt({**old, "inclusion": {**old["inclusion"], "path": ["zz"]}})
    with pytest.raises(VerificationError, match=r"^malformed receipt: receipt.confirmations must be a list"):
        verify_receipt({**old, "confirmations": {}})
    with pytest.raises(VerificationError, match=r"^malformed receipt: receipt.inclusion: leaf #11 is not in"):
        verify_receipt({**old, "inclusion": {**old["inclusion"], "size": 5}})


# -- the answers fit the schemas the node publishes ----------------------------------------------


def test_the_typed_answers_fit_the_openapi_schemas() -> None:
    """The response models document exactly what the typed answers encode (no drift either way)."""
    status = _status(_Log())
    served = _compat("entries.json")
    for obj, model in [
        (status, schemas.ClaimStatus),
        (status["standing"], schemas.Standing),
        (served[0], schemas.Entry),
        ({"size": 25, "entries": served}, schemas.EntryPage),
        (_compat("checkpoint.json"), schemas.Checkpoint),
        ({"index": 1, "time": 2, "leaf_hash": "ab" * 32, "status": "duplicate"}, schemas.Submitted),
    ]:
        assert model.model_validate(obj).model_dump(mode="json") == obj
    for entry in served:  # every message type the log holds, through the discriminated union
        assert schemas.SignedMessage.model_validate(entry["msg"]).model_dump(mode="json") == entry["msg"]


def test_the_message_schemas_have_the_messages_fields() -> None:
    for cls in (Publish, Claim, Vote):
        name = f"{cls.__name__}Message"
        model = next(m for m in schemas.SignedMessage.model_json_schema()["$defs"] if m == name)
        fields = schemas.SignedMessage.model_json_schema()["$defs"][model]["required"]
        assert set(fields) == {"type", "v", *(f.name for f in dataclasses.fields(cls))}, name
