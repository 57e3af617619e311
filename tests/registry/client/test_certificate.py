"""Certificates built offline from hand-made log entries: what holds, and what an editor cannot change.

A certificate's stated fields (`decided`, `result`, `standing`, `community`, each entry's
`leaf_hash`) are read by people without the tool, so `verify_certificate` refuses any that
disagree with what it recomputes from the signed entries.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from contracts.encoding import canonical
from contracts.errors import VerificationError
from contracts.identity import Identity, derive_owner_key
from node_config import example_config
from registry.cli import main
from registry.client.certificate import verify_certificate
from registry.community.config import load_config
from registry.log.messages import Claim, Message, Publish, Vote
from registry.proofs.checkpoint import Checkpoint
from registry.proofs.merkle import MerkleTree, leaf_hash

T0 = 1_700_000_000_000
MODEL = hashlib.sha256(b"the suspect").hexdigest()


class _Log:
    """A log of hand-made entries, its Merkle tree, and the members who sign its checkpoints."""

    def __init__(self, members: list[Identity] | None = None) -> None:
        self.members = members or [Identity.generate() for _ in range(3)]
        self.entries: list[dict[str, Any]] = []
        self.tree = MerkleTree()

    @property
    def keys(self) -> list[str]:
        return [m.public_hex for m in self.members]

    def append(self, msg: Message, time: int) -> dict[str, Any]:
        index = len(self.entries)
        leaf = canonical({"index": index, "msg": msg.to_json(), "time": time})
        self.tree.append(leaf_hash(leaf))
        entry = {"index": index, "time": time, "msg": msg.to_json(), "leaf_hash": leaf_hash(leaf).hex()}
        self.entries.append(entry)
        return entry

    def publish(self, owner: Identity, time: int) -> tuple[dict[str, Any], bytes]:
        nonce = os.urandom(16)
        msg = Publish.create(
            owner,
            scheme="mtlsign",
            time=time,
            key_hash=derive_owner_key(owner, nonce).key_hash,
            verifier_hash=hashlib.sha256(b"verifier").hexdigest(),
            info_hash=hashlib.sha256(b"info").hexdigest(),
            nonce=nonce.hex(),
        )
        return self.append(msg, time), nonce

    def claim(self, owner: Identity, publish: dict[str, Any], nonce: bytes, time: int) -> tuple[dict[str, Any], Claim]:
        key = derive_owner_key(owner, nonce)
        msg = Claim.create(
            owner,
            publish=publish["index"],
            model_uri=f"sha256:{MODEL}",
            model_hash=MODEL,
            verifier_uri=f"sha256:{hashlib.sha256(b'verifier').hexdigest()}",
            info_uri=f"sha256:{hashlib.sha256(b'info').hexdigest()}",
            key=key.key,
            key_proof=key.key_proof,
            time=time,
        )
        return self.append(msg, time), msg

    def votes(self, claim: tuple[dict[str, Any], Claim], verdicts: list[str], time: int) -> list[dict[str, Any]]:
        entry, msg = claim
        return [
            self.append(
                Vote.create(
                    member,
                    claim=entry["index"],
                    claim_hash=msg.body_hash(),
                    verdict=verdict,
                    score=900 if verdict == "owner" else 100,
                    threshold=500,
                    reason="test vote",
                    fp_bound="2.30e-09" if verdict == "owner" else "1.00e+00",
                    references=(REFERENCE,),
                ),
                time + i,
            )
            for i, (member, verdict) in enumerate(zip(self.members, verdicts, strict=True))
        ]

    def certificate(self, status: dict[str, Any], community: str = "") -> dict[str, Any]:
        """What `build_certificate` writes, with the proofs and checkpoints a node would serve."""
        entries = [status["publish"], status["claim"], *status["votes"]]
        size = max(e["index"] for e in entries) + 1
        root = self.tree.root(size)
        cert = {
            "certificate": "wmnode ownership certificate",
            "v": 1,
            "community": community,
            "size": size,
            **{k: status[k] for k in ("publish", "claim", "votes", "decided", "result", "standing")},
            "proofs": {
                str(e["index"]): [p.hex() for p in self.tree.inclusion_proof(e["index"], size)] for e in entries
            },
            "checkpoints": [Checkpoint.create(m, size, root, T0 + 10_000).to_json() for m in self.members],
        }
        return copy.deepcopy(cert)


def _standing(claim: dict[str, Any], publish: dict[str, Any], passed: list[int]) -> dict[str, Any]:
    """What `RegistryLog.standing_owner` answers when `claim` on `publish` passed first."""
    return {
        "model_hash": MODEL,
        "owner": claim["msg"]["owner"],
        "claim": claim["index"],
        "publish": publish["index"],
        "publish_time": publish["time"],
        "passed_claims": passed,
        "why": f"claim #{claim['index']} passed and rests on publish #{publish['index']}, the earliest publish",
    }


@pytest.fixture
def log() -> _Log:
    return _Log()


def _owned(log: _Log, community: str = "acme") -> dict[str, Any]:
    owner = Identity.generate()
    publish, nonce = log.publish(owner, T0)
    claim = log.claim(owner, publish, nonce, T0 + 1000)
    votes = log.votes(claim, ["owner"] * 3, T0 + 2000)
    status = {
        "publish": publish,
        "claim": claim[0],
        "votes": votes,
        "decided": "owner",
        "result": "owner",
        "standing": _standing(claim[0], publish, [claim[0]["index"]]),
    }
    return log.certificate(status, community=community)


@pytest.fixture
def owned(log: _Log) -> dict[str, Any]:
    """A claim decided owner by three votes; the claimant stands as the owner."""
    return _owned(log)


@pytest.fixture
def rejected(log: _Log) -> dict[str, Any]:
    """A claim decided not-owner by three votes; nobody stands as the owner."""
    owner = Identity.generate()
    publish, nonce = log.publish(owner, T0)
    claim = log.claim(owner, publish, nonce, T0 + 1000)
    votes = log.votes(claim, ["not-owner"] * 3, T0 + 2000)
    status = {
        "publish": publish,
        "claim": claim[0],
        "votes": votes,
        "decided": "not-owner",
        "result": "not-owner",
        "standing": None,
    }
    return log.certificate(status)


@pytest.fixture
def outranked(log: _Log) -> dict[str, Any]:
    """Two claimants pass on one model; this certificate is the later publisher's: result not-owner."""
    first, second = Identity.generate(), Identity.generate()
    first_publish, first_nonce = log.publish(first, T0)
    second_publish, second_nonce = log.publish(second, T0 + 500)
    first_claim = log.claim(first, first_publish, first_nonce, T0 + 1000)
    log.votes(first_claim, ["owner"] * 3, T0 + 2000)
    second_claim = log.claim(second, second_publish, second_nonce, T0 + 3000)
    votes = log.votes(second_claim, ["owner"] * 3, T0 + 4000)
    status = {
        "publish": second_publish,
        "claim": second_claim[0],
        "votes": votes,
        "decided": "owner",
        "result": "not-owner",
        "standing": _standing(first_claim[0], first_publish, [first_claim[0]["index"], second_claim[0]["index"]]),
    }
    return log.certificate(status, community="acme")


def _refused(cert: dict[str, Any], members: list[str], match: str, community: str | None = None) -> None:
    with pytest.raises(VerificationError, match=match):
        verify_certificate(cert, members, community=community)


# -- honest certificates hold ---------------------------------------------------------------------

#: The hash of a reference model every test vote says it was checked against.
REFERENCE = hashlib.sha256(b"reference model").hexdigest()


def test_an_honest_certificate_holds_and_reports_its_result(log: _Log, owned: dict[str, Any]) -> None:
    summary = verify_certificate(owned, log.keys)
    assert (summary["decided"], summary["result"]) == ("owner", "owner")
    assert summary["tally"] == {"owner": 3} and summary["checkpoint_signers"] == 3
    assert (summary["claim"], summary["publish"], summary["publish_time"]) == (1, 0, T0)
    assert verify_certificate(owned, log.keys, community="acme")["result"] == "owner"
    # Every vote's false-positive bound and reference models travel with it, signed.
    assert [(v["verdict"], v["fp_bound"], v["references"]) for v in summary["votes"]] == [
        ("owner", "2.30e-09", [REFERENCE])
    ] * 3


def test_an_honest_not_owner_certificate_holds(log: _Log, rejected: dict[str, Any]) -> None:
    summary = verify_certificate(rejected, log.keys, community="acme")  # community not stated: not checked
    assert (summary["decided"], summary["result"]) == ("not-owner", "not-owner")


def test_a_later_publisher_passes_but_the_earlier_publish_stands(log: _Log, outranked: dict[str, Any]) -> None:
    summary = verify_certificate(outranked, log.keys)
    assert (summary["decided"], summary["result"]) == ("owner", "not-owner")


# -- the attacker edits what a reader without the tool would believe --------------------------------


def test_decided_and_result_edited_to_not_owner_over_owner_votes_is_refused(log: _Log, owned: dict[str, Any]) -> None:
    _refused(
        {**owned, "decided": "not-owner", "result": "not-owner"},
        log.keys,
        "certificate states decided 'not-owner' but its votes decide 'owner'",
    )


def test_an_edited_decided_is_refused(log: _Log, rejected: dict[str, Any]) -> None:
    _refused(
        {**rejected, "decided": "owner"},
        log.keys,
        "certificate states decided 'owner' but its votes decide 'not-owner'",
    )


def test_result_owner_edited_to_not_owner_without_a_standing_that_justifies_it_is_refused(
    log: _Log, owned: dict[str, Any]
) -> None:
    own = "the standing names this claim's owner"
    _refused(
        {**owned, "result": "not-owner"},
        log.keys,
        f"certificate states result 'not-owner' but its votes decide 'owner' and {own}",
    )
    _refused(
        {**owned, "result": "not-owner", "standing": None},
        log.keys,
        "certificate states result 'not-owner' but its votes decide 'owner' and it names no standing owner",
    )


def test_result_not_owner_edited_to_owner_is_refused(log: _Log, rejected: dict[str, Any]) -> None:
    _refused(
        {**rejected, "result": "owner"}, log.keys, "certificate states result 'owner' but its votes decide 'not-owner'"
    )


def test_result_edited_to_owner_over_an_earlier_standing_owner_is_refused(log: _Log, outranked: dict[str, Any]) -> None:
    _refused(
        {**outranked, "result": "owner"},
        log.keys,
        r"certificate states result 'owner' but its standing names another owner [0-9a-f]{16}…, "
        r"whose publish #0 came first: the result is 'not-owner'",
    )


def test_an_unknown_result_is_refused(log: _Log, owned: dict[str, Any]) -> None:
    _refused({**owned, "result": "mine"}, log.keys, "certificate states result 'mine' but its votes decide 'owner'")


def test_a_standing_naming_another_owner_for_this_claim_is_refused(log: _Log, owned: dict[str, Any]) -> None:
    rival = Identity.generate().public_hex
    standing = {**owned["standing"], "owner": rival, "publish_time": T0 - 1}  # "earlier", to justify not-owner
    _refused(
        {**owned, "result": "not-owner", "standing": standing},
        log.keys,
        f"certificate's standing.owner {rival[:16]}… disagrees with claim #1's owner "
        f"{owned['claim']['msg']['owner'][:16]}…",
    )


def test_a_standing_naming_this_claim_with_another_publish_is_refused(log: _Log, owned: dict[str, Any]) -> None:
    _refused(
        {**owned, "standing": {**owned["standing"], "publish": 7}},
        log.keys,
        "certificate's standing.publish 7 disagrees with claim #1's publish 0",
    )
    _refused(
        {**owned, "standing": {**owned["standing"], "publish_time": T0 - 1}},
        log.keys,
        f"certificate's standing.publish_time {T0 - 1} disagrees with claim #1's publish_time {T0}",
    )


def test_a_standing_with_another_owner_on_this_publish_is_refused(log: _Log, outranked: dict[str, Any]) -> None:
    this_publish = outranked["publish"]["index"]
    standing = {**outranked["standing"], "publish": this_publish, "publish_time": T0 - 1}
    _refused(
        {**outranked, "standing": standing},
        log.keys,
        f"certificate's standing.owner [0-9a-f]{{16}}… disagrees with publish #{this_publish}'s owner",
    )


def test_a_standing_on_another_model_is_refused(log: _Log, outranked: dict[str, Any]) -> None:
    other = hashlib.sha256(b"another model").hexdigest()
    _refused(
        {**outranked, "standing": {**outranked["standing"], "model_hash": other}},
        log.keys,
        f"certificate's standing.model_hash {other[:16]}… disagrees with the claim's model_hash {MODEL[:16]}…",
    )


def test_a_standing_later_than_a_passing_claim_is_refused(log: _Log, outranked: dict[str, Any]) -> None:
    later = {**outranked["standing"], "publish": 99, "publish_time": T0 + 9000}
    _refused(
        {**outranked, "standing": later},
        log.keys,
        "certificate's standing names publish #99 at 1700000009000, after this claim's publish #1 at "
        "1700000000500; this claim passed, so the earliest passing publish cannot be later",
    )


def test_a_standing_naming_a_claim_that_did_not_pass_is_refused(log: _Log, rejected: dict[str, Any]) -> None:
    standing = _standing(rejected["claim"], rejected["publish"], [1])
    _refused(
        {**rejected, "standing": standing},
        log.keys,
        "certificate's standing names claim #1, which its votes decide 'not-owner'; only a passing claim stands",
    )


@pytest.mark.parametrize(
    ("field", "value", "want"),
    [
        ("publish", "0", "a non-negative integer"),
        ("claim", True, "a non-negative integer"),
        ("publish_time", -1, "a non-negative integer"),
        ("owner", 42, "64 lowercase hex digits"),
        ("owner", "ab", "64 lowercase hex digits"),
    ],
)
def test_a_standing_with_fields_of_the_wrong_type_is_refused(
    log: _Log, outranked: dict[str, Any], field: str, value: object, want: str
) -> None:
    _refused(
        {**outranked, "standing": {**outranked["standing"], field: value}},
        log.keys,
        f"certificate's standing.{field} must be {want}, got {value!r}",
    )


def test_a_standing_that_is_not_an_object_is_refused(log: _Log, outranked: dict[str, Any]) -> None:
    _refused({**outranked, "standing": [1, 2]}, log.keys, "certificate's standing must be an object or null, got list")


def test_the_wrong_community_is_refused(log: _Log, owned: dict[str, Any]) -> None:
    _refused(owned, log.keys, "certificate states community 'acme' but the expected community is 'other'", "other")
    _refused(
        {**owned, "community": 7},
        log.keys,
        "certificate states community 7 but the expected community is 'acme'",
        "acme",
    )


def test_an_edited_leaf_hash_is_refused(log: _Log, owned: dict[str, Any]) -> None:
    claim = {**owned["claim"], "leaf_hash": "00" * 32}
    _refused(
        {**owned, "claim": claim},
        log.keys,
        f"certificate states leaf_hash {'00' * 8}… for entry #1 but its entry hashes to "
        f"{owned['claim']['leaf_hash'][:16]}…",
    )


# -- the command line shows the result --------------------------------------------------------------


def _verify_cli(tmp_path: Path, cert: dict[str, Any], keys: list[str]) -> Any:
    path = tmp_path / "claim.certificate.json"
    path.write_text(json.dumps(cert))
    args = ["certificate", "verify", str(path), *(a for k in keys for a in ("--member-key", k))]
    return CliRunner().invoke(main, args)


def test_the_cli_shows_the_result(tmp_path: Path, log: _Log, outranked: dict[str, Any]) -> None:
    shown = _verify_cli(tmp_path, outranked, log.keys)
    assert shown.exit_code == 0, shown.output
    assert "certificate holds" in shown.output and "decided owner" in shown.output
    assert "result not-owner" in shown.output and "publish #0" in shown.output
    assert "false-positive bound 2.30e-09, reference models checked: " + REFERENCE[:12] in shown.output


def test_the_cli_refuses_an_edited_certificate(tmp_path: Path, log: _Log, owned: dict[str, Any]) -> None:
    shown = _verify_cli(tmp_path, {**owned, "decided": "not-owner", "result": "not-owner"}, log.keys)
    assert shown.exit_code == 1
    assert "certificate states decided 'not-owner' but its votes decide 'owner'" in shown.output


def test_the_cli_refuses_a_certificate_of_another_community_than_its_config(tmp_path: Path) -> None:
    configs = [load_config(example_config(n)) for n in (1, 2, 3)]
    log = _Log([Identity.from_seed(c.identity_seed or "") for c in configs])
    assert log.keys == list(configs[0].member_keys)
    path = tmp_path / "claim.certificate.json"
    verify = ["certificate", "verify", str(path), "--config", str(example_config(1))]
    path.write_text(json.dumps(_owned(log, configs[0].community)))
    shown = CliRunner().invoke(main, verify)
    assert shown.exit_code == 0 and "certificate holds" in shown.output, shown.output
    path.write_text(json.dumps(_owned(log, "another.example")))
    shown = CliRunner().invoke(main, verify)
    assert shown.exit_code == 1
    want = f"certificate states community 'another.example' but the expected community is {configs[0].community!r}"
    assert want in shown.output, shown.output
