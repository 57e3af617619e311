"""`wmnode demo`: the whole story on one machine, on the digits data that ships with scikit-learn.

A community of three nodes starts on loopback and trains its reference models. A squatter
publishes generic watermark records before any model exists. An owner trains LeNet-5, embeds
MTLSign and publishes before releasing the model. The squatter's claims on the released model
fail: one is refused on arrival, the other is judged and loses. A thief steals the model,
fine-tunes and prunes it, overwrites it with a watermark of its own and publishes later. The owner
claims the thief's copy and wins by majority; the thief's claim on the same copy passes verification
but loses on the timestamps; a claim with a wrong key is refused. The owner's certificate is checked offline at the end.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from contracts.errors import RejectedError, WmnodeError
from contracts.identity import Identity, derive_owner_key
from node_config import example_config
from registry.cli.claim import format_vote, member_names
from registry.cli.ownership import claim_suspect, publish_bundle, suspect_uri, wait_decided
from registry.client.certificate import build_certificate, verify_certificate
from registry.client.localnet import LocalCommunity
from registry.client.node_client import NodeClient
from registry.community.config import load_config
from registry.log.answers import ClaimStatus, Entry
from registry.log.clock import now_ms
from registry.log.messages import Claim, Publish

#: MTLSign for the demo: a shorter budget than the paper-scale default, the same mechanics.
OWNER_OPTIONS = {"n": 600, "clean_epochs": 8, "embed_epochs": 40, "da_attacks": 1, "da_epochs": 3}
THIEF_OPTIONS = {"n": 600, "clean_epochs": 2, "embed_epochs": 30, "da_attacks": 1, "da_epochs": 3, "lambda_da": 0.0}


@dataclass(frozen=True)
class _Stage:
    """What every step of the story uses: a client of node 1, the members' names, where files go,
    and where the story is told."""

    client: NodeClient
    names: dict[str, str]
    out_dir: Path
    say: Callable[[str], None]

    def on_vote(self, vote: Entry) -> None:
        self.say(format_vote(vote, self.names))


def run_demo(base_dir: Path, out_dir: Path, say: Callable[[str], None]) -> Path:
    """Run the story; returns the path of the owner's certificate."""
    started = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    configs = [example_config(i) for i in (1, 2, 3)]
    community = LocalCommunity(configs, base_dir)
    say(f"1. starting the local community: 3 nodes on loopback (data and logs in {base_dir})")
    with community:
        statuses = community.wait_ready(timeout=120, verifiers=True, references=False)
        say(f"   leader {next(s for s in statuses if s is not None)['leader']}; every node runs judges and trains "
            "its reference models meanwhile")  # fmt: skip
        with community.client(0) as client:
            stage = _Stage(client, member_names(client.status()), out_dir, say)
            owner, thief, squatter = Identity.generate(), Identity.generate(), Identity.generate()
            say(f"1b. a squatter ({squatter.public_hex[:12]}…) publishes two generic records before any model exists")
            squats = [_squat(client, squatter, *record) for record in _squatter_records()]
            owner_bundle = _owner_publishes(stage, owner)
            community.wait_ready(timeout=600, verifiers=True)
            refs = client.references()["references"]
            say(f"   reference models recorded by a majority: {', '.join(r['recipe'] + ' ' + r['arch'] for r in refs)}")
            _squatter_claims(stage, squatter, squats, owner_bundle)
            thief_bundle, thief_publish = _thief_launders(stage, thief, owner_bundle)
            disputed = str(thief_bundle / "model.safetensors")
            status = _owner_claims(stage, owner, owner_bundle, disputed)
            urls = [node.url for node in community.nodes]
            cert_path = _write_certificate(stage, status, urls, load_config(configs[0]).community)
            _thief_claims(stage, thief, thief_bundle, disputed)
            _replay_the_owners_key(stage, thief, thief_publish, status.claim_msg)
    members = list(load_config(configs[0]).member_keys)
    summary = verify_certificate(json.loads(cert_path.read_text()), members)
    say(
        f"7. the certificate checks offline against the members' keys: decided {summary['decided']} "
        f"{summary['tally']}, checkpoint signed by {summary['checkpoint_signers']} of 3 members"
    )
    say(f"done in {time.perf_counter() - started:.0f} s; the owner's certificate: {cert_path}")
    return cert_path


def _owner_publishes(stage: _Stage, owner: Identity) -> Path:
    """Step 2: the owner trains, embeds and publishes before releasing; the owner's bundle."""
    from schemes.workflow.pipeline import embed_to_bundle

    say = stage.say
    say(f"2. the owner ({owner.public_hex[:12]}…) trains LeNet-5 on digits and embeds MTLSign")
    bundle = stage.out_dir / "owner-bundle"
    report = embed_to_bundle(owner, "lenet5", "digits", bundle, scheme="mtlsign", overrides=OWNER_OPTIONS)
    say(
        f"   accuracy {report['accuracy']:.4f} (clean {report['clean_accuracy']:.4f}), watermark "
        f"{report['wm_score']:.3f} >= gamma {report['threshold']} ({report['seconds']:.0f} s)"
    )
    receipt = publish_bundle(stage.client, owner, bundle)
    say(
        f"   published before release: entry #{receipt.entry.index}, leaf "
        f"{receipt.entry.leaf().hex()[:16]}…, in checkpoint size {receipt.checkpoint.size}"
    )
    return bundle


def _squatter_claims(stage: _Stage, squatter: Identity, squats: list[tuple[str, _Squat]], owner_bundle: Path) -> None:
    """Step 2b: the squatter's early records claim the released model, and lose."""
    stage.say("2b. the squatter claims the released model with its early records")
    uri, digest = suspect_uri(stage.client, str(owner_bundle))
    for what, record in squats:
        outcome = _claim_squat(stage.client, squatter, record, uri, digest)
        if isinstance(outcome, str):
            stage.say(f"   {what}: {outcome}")
            continue
        if outcome.result == "owner":
            raise WmnodeError(f"the squatter won with {what}: {outcome.to_json()}")
        stage.say(f"   {what}: decided {outcome.decided}: {_first_reason(outcome)[:150]}")


def _thief_launders(stage: _Stage, thief: Identity, owner_bundle: Path) -> tuple[Path, int]:
    """Step 3: the thief fine-tunes, prunes and overwrites the model, then publishes; its bundle and
    the index of its publish."""
    from schemes.workflow.pipeline import attack_model

    say, out_dir = stage.say, stage.out_dir
    say(f"3. a thief ({thief.public_hex[:12]}…) steals the released model and launders it")
    tuned = attack_model(owner_bundle, "finetune", out_dir / "stolen-finetuned", epochs=3, seed=7)
    say(f"   fine-tuned 3 epochs: accuracy {tuned['accuracy_before']:.4f} -> {tuned['accuracy']:.4f}")
    pruned = attack_model(out_dir / "stolen-finetuned", "prune", out_dir / "stolen-pruned", amount=0.3)
    say(f"   pruned 30 % of the weights: accuracy {pruned['accuracy']:.4f}")
    bundle = out_dir / "thief-bundle"
    over = attack_model(out_dir / "stolen-pruned", "overwrite", bundle, identity=thief, seed=11,
                        overrides=THIEF_OPTIONS)  # fmt: skip
    say(f"   overwrote it with its own MTLSign watermark: accuracy {over['accuracy']:.4f}")
    receipt = publish_bundle(stage.client, thief, bundle)
    say(f"   the thief publishes too, later: entry #{receipt.entry.index}")
    return bundle, receipt.entry.index


def _owner_claims(stage: _Stage, owner: Identity, owner_bundle: Path, disputed: str) -> ClaimStatus:
    """Step 4: the owner claims the thief's copy and wins by majority."""
    stage.say("4. the owner claims the thief's model: every node fetches it, rebuilds D_WM from the key, votes")
    status = claim_suspect(stage.client, owner, owner_bundle, disputed, timeout_s=120, on_vote=stage.on_vote)
    _require(status, "owner", "the owner's claim")
    stage.say(
        f"   decided {status.decided} by a majority of {status.majority} "
        f"in {status.seconds_to_decision:.2f} s from submit"
    )
    return status


def _write_certificate(stage: _Stage, status: ClaimStatus, urls: list[str], community: str) -> Path:
    certificate = build_certificate(status, urls, community)
    path = stage.out_dir / f"claim-{status.claim.index}.certificate.json"
    path.write_text(json.dumps(certificate.to_json(), indent=2, sort_keys=True) + "\n")
    return path


def _thief_claims(stage: _Stage, thief: Identity, thief_bundle: Path, disputed: str) -> None:
    """Step 5: the thief's watermark is there too, but the earlier publish wins."""
    stage.say("5. the thief claims the same model with its own key")
    rival = claim_suspect(stage.client, thief, thief_bundle, disputed, timeout_s=120, on_vote=stage.on_vote)
    standing = rival.standing
    _require(rival, "not-owner", "the thief's claim")
    if rival.decided == "owner" and standing is not None:
        stage.say(
            f"   its watermark is there too (decided owner), but the earlier publish wins: "
            f"#{standing.publish} by the owner before #{rival.publish.index} by the thief"
        )
    else:
        stage.say(f"   decided {rival.decided}: {_first_reason(rival)[:150]}")


def _replay_the_owners_key(stage: _Stage, thief: Identity, thief_publish: int, owners: Claim) -> None:
    """Step 6: the thief replays the key the owner revealed in its claim, on its own publish: refused."""
    stage.say("6. a claim with a wrong key")
    wrong = Claim.create(
        thief, publish=thief_publish, model_uri=owners.model_uri, model_hash=owners.model_hash,
        verifier_uri=owners.verifier_uri, info_uri=owners.info_uri, key=bytes.fromhex(owners.key),
        key_proof=bytes.fromhex(owners.key_proof), time=now_ms(),
    )  # fmt: skip
    try:
        stage.client.submit(wrong)
    except WmnodeError as exc:
        stage.say(f"   the thief replays the owner's revealed key: refused: {exc.diagnostics()}")
        return
    raise WmnodeError("a claim with another owner's key was accepted")


def _first_reason(status: ClaimStatus) -> str:
    votes = status.vote_msgs
    return votes[0].reason if votes else "no vote"


def _squatter_records() -> list[tuple[str, str, dict[str, Any], bytes]]:
    """Generic records a squatter can publish before any model exists (DESIGN §6.1): new label with
    an existing class as Δ and shipped images of a "1", and MTLSign with a watermark head of its own."""
    import safetensors.torch

    from mtlsign.head import WatermarkHead, head_input_size
    from schemes.data.community import community_data
    from schemes.models.zoo import create_model

    data = community_data("digits", (1, 28, 28))
    common = {"input_shape": [1, 28, 28], "mean": list(data.mean), "std": list(data.std)}
    ones = safetensors.torch.save({"x_verify": data.x_test[data.y_test == 1][:100].contiguous()})
    lenet = create_model("lenet5", num_classes=10, input_shape=(1, 28, 28))
    taps = tuple(lenet.wm_taps)  # type: ignore[arg-type]
    head = WatermarkHead(head_input_size(lenet, taps, (1, 28, 28), 4), 256, 4)
    head_bytes = safetensors.torch.save({k: v.detach().contiguous() for k, v in head.state_dict().items()})
    return [
        ("new label, Δ = class 1, images of a 1", "new-label",
         {"scheme": "new-label", "dataset": "digits", "delta": 1, "beta": 0.3, "n": 100, "threshold": 0.25, **common},
         ones),
        ("MTLSign, a head of its own", "mtlsign",
         {"scheme": "mtlsign", "n": 600, "gamma": 0.7, "taps": list(taps), "pool": 4, "hidden": 256, **common},
         head_bytes),
    ]  # fmt: skip


@dataclass(frozen=True)
class _Squat:
    """A squatter's publish: its index, and what a claim on it needs."""

    index: int
    nonce: bytes
    info: bytes
    verifier: bytes


def _squat(
    client: NodeClient, squatter: Identity, what: str, scheme: str, info: dict[str, Any], verifier: bytes
) -> tuple[str, _Squat]:
    nonce, info_bytes = os.urandom(16), json.dumps(info, sort_keys=True).encode()
    msg = Publish.create(
        squatter, scheme=scheme, time=now_ms(), key_hash=derive_owner_key(squatter, nonce).key_hash,
        verifier_hash=hashlib.sha256(verifier).hexdigest(), info_hash=hashlib.sha256(info_bytes).hexdigest(),
        nonce=nonce.hex(),
    )  # fmt: skip
    return what, _Squat(client.submit(msg).index, nonce, info_bytes, verifier)


def _claim_squat(client: NodeClient, squatter: Identity, record: _Squat, uri: str, digest: str) -> ClaimStatus | str:
    """The squatter's claim on the released model: its decided status, or why it was refused on arrival."""
    key = derive_owner_key(squatter, record.nonce)
    msg = Claim.create(
        squatter, publish=record.index, model_uri=uri, model_hash=digest,
        verifier_uri=client.put_artifact(record.verifier), info_uri=client.put_artifact(record.info),
        key=key.key, key_proof=key.key_proof, time=now_ms(),
    )  # fmt: skip
    try:
        index = client.submit(msg).index
    except RejectedError as exc:
        return f"refused on arrival: {exc.diagnostics()}"
    return wait_decided(client, index, 120)


def _require(status: ClaimStatus, result: str, what: str) -> None:
    if status.result != result:
        votes = "; ".join(v.reason for v in status.vote_msgs)
        raise WmnodeError(f"{what} came out {status.result!r}, expected {result!r} (votes: {votes})")
