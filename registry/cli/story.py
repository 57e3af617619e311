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
from pathlib import Path
from typing import Any

from contracts.errors import RejectedError, WmnodeError
from contracts.identity import Identity, derive_owner_key
from node_config import example_config
from registry.cli.claim import format_vote, member_names
from registry.cli.ownership import claim_suspect, publish_bundle, suspect_uri, wait_decided
from registry.client.certificate import build_certificate, verify_certificate
from registry.client.localnet import LocalCommunity
from registry.community.config import load_config
from registry.log.clock import now_ms
from registry.log.messages import Claim, Publish

#: MTLSign for the demo: a shorter budget than the paper-scale default, the same mechanics.
OWNER_OPTIONS = {"n": 600, "clean_epochs": 8, "embed_epochs": 40, "da_attacks": 1, "da_epochs": 3}
THIEF_OPTIONS = {"n": 600, "clean_epochs": 2, "embed_epochs": 30, "da_attacks": 1, "da_epochs": 3, "lambda_da": 0.0}


def run_demo(base_dir: Path, out_dir: Path, say: Callable[[str], None]) -> Path:
    """Run the story; returns the path of the owner's certificate."""
    from schemes.workflow.pipeline import attack_model, embed_to_bundle

    started = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    configs = [example_config(i) for i in (1, 2, 3)]
    community = LocalCommunity(configs, base_dir)
    say(f"1. starting the local community: 3 nodes on loopback (data and logs in {base_dir})")
    with community:
        statuses = community.wait_ready(timeout=120, verifiers=True, references=False)
        say(f"   leader {next(s for s in statuses if s is not None)['leader']}; every node runs judges and trains "
            "its reference models meanwhile")  # fmt: skip
        client = community.client(0)
        names = member_names(client.status())

        owner, thief, squatter = Identity.generate(), Identity.generate(), Identity.generate()
        say(f"1b. a squatter ({squatter.public_hex[:12]}…) publishes two generic records before any model exists")
        squats = [_squat(client, squatter, *record) for record in _squatter_records()]

        say(f"2. the owner ({owner.public_hex[:12]}…) trains LeNet-5 on digits and embeds MTLSign")
        owner_bundle = out_dir / "owner-bundle"
        report = embed_to_bundle(owner, "lenet5", "digits", owner_bundle, scheme="mtlsign", overrides=OWNER_OPTIONS)
        say(
            f"   accuracy {report['accuracy']:.4f} (clean {report['clean_accuracy']:.4f}), watermark "
            f"{report['wm_score']:.3f} >= gamma {report['threshold']} ({report['seconds']:.0f} s)"
        )
        receipt = publish_bundle(client, owner, owner_bundle)
        say(
            f"   published before release: entry #{receipt['entry']['index']}, leaf "
            f"{receipt['entry']['leaf_hash'][:16]}…, in checkpoint size {receipt['checkpoint']['size']}"
        )

        community.wait_ready(timeout=600, verifiers=True)
        refs = client.references()["references"]
        say(f"   reference models recorded by a majority: {', '.join(r['recipe'] + ' ' + r['arch'] for r in refs)}")
        say("2b. the squatter claims the released model with its early records")
        uri, digest = suspect_uri(client, str(owner_bundle))
        for what, record in squats:
            outcome = _claim_squat(client, squatter, record, uri, digest)
            if outcome.get("result") == "owner":
                raise WmnodeError(f"the squatter won with {what}: {outcome}")
            say(f"   {what}: " + (outcome.get("refused") or f"decided {outcome['decided']}: "
                + outcome["votes"][0]["msg"]["reason"][:150]))  # fmt: skip

        say(f"3. a thief ({thief.public_hex[:12]}…) steals the released model and launders it")
        tuned = attack_model(owner_bundle, "finetune", out_dir / "stolen-finetuned", epochs=3, seed=7)
        say(f"   fine-tuned 3 epochs: accuracy {tuned['accuracy_before']:.4f} -> {tuned['accuracy']:.4f}")
        pruned = attack_model(out_dir / "stolen-finetuned", "prune", out_dir / "stolen-pruned", amount=0.3)
        say(f"   pruned 30 % of the weights: accuracy {pruned['accuracy']:.4f}")
        thief_bundle = out_dir / "thief-bundle"
        over = attack_model(
            out_dir / "stolen-pruned",
            "overwrite",
            thief_bundle,
            identity=thief,
            seed=11,
            overrides=THIEF_OPTIONS,
        )
        say(f"   overwrote it with its own MTLSign watermark: accuracy {over['accuracy']:.4f}")
        thief_receipt = publish_bundle(client, thief, thief_bundle)
        say(f"   the thief publishes too, later: entry #{thief_receipt['entry']['index']}")
        disputed = str(thief_bundle / "model.safetensors")

        say("4. the owner claims the thief's model: every node fetches it, rebuilds D_WM from the key, votes")
        status = claim_suspect(
            client, owner, owner_bundle, disputed, timeout_s=120, on_vote=lambda v: say(format_vote(v, names))
        )
        _require(status, "owner", "the owner's claim")
        say(
            f"   decided {status['decided']} by a majority of {status['majority']} "
            f"in {status['seconds_to_decision']:.2f} s from submit"
        )
        urls = [node.url for node in community.nodes]
        certificate = build_certificate(status, urls, load_config(configs[0]).community)
        cert_path = out_dir / f"claim-{status['claim']['index']}.certificate.json"
        cert_path.write_text(json.dumps(certificate, indent=2, sort_keys=True) + "\n")

        say("5. the thief claims the same model with its own key")
        rival = claim_suspect(
            client, thief, thief_bundle, disputed, timeout_s=120, on_vote=lambda v: say(format_vote(v, names))
        )
        standing = rival["standing"]
        _require(rival, "not-owner", "the thief's claim")
        if rival["decided"] == "owner" and standing is not None:
            say(
                f"   its watermark is there too (decided owner), but the earlier publish wins: "
                f"#{standing['publish']} by the owner before #{rival['publish']['index']} by the thief"
            )
        else:
            say(f"   decided {rival['decided']}: {rival['votes'][0]['msg']['reason'][:150]}")

        say("6. a claim with a wrong key")
        wrong = Claim.create(
            thief,
            publish=thief_receipt["entry"]["index"],
            model_uri=status["claim"]["msg"]["model_uri"],
            model_hash=status["claim"]["msg"]["model_hash"],
            verifier_uri=status["claim"]["msg"]["verifier_uri"],
            info_uri=status["claim"]["msg"]["info_uri"],
            key=bytes.fromhex(status["claim"]["msg"]["key"]),  # the owner's key, revealed in its claim
            key_proof=bytes.fromhex(status["claim"]["msg"]["key_proof"]),
            time=now_ms(),
        )
        try:
            client.submit(wrong)
            raise WmnodeError("a claim with another owner's key was accepted")
        except WmnodeError as exc:
            if "accepted" in str(exc):
                raise
            say(f"   the thief replays the owner's revealed key: refused: {exc.diagnostics()}")
        client.close()

    members = list(load_config(configs[0]).member_keys)
    summary = verify_certificate(json.loads(cert_path.read_text()), members)
    say(
        f"7. the certificate checks offline against the members' keys: decided {summary['decided']} "
        f"{summary['tally']}, checkpoint signed by {summary['checkpoint_signers']} of 3 members"
    )
    say(f"done in {time.perf_counter() - started:.0f} s; the owner's certificate: {cert_path}")
    return cert_path


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


def _squat(
    client: Any, squatter: Identity, what: str, scheme: str, info: dict[str, Any], verifier: bytes
) -> tuple[str, dict[str, Any]]:
    nonce, info_bytes = os.urandom(16), json.dumps(info, sort_keys=True).encode()
    msg = Publish.create(
        squatter, scheme=scheme, time=now_ms(), key_hash=derive_owner_key(squatter, nonce).key_hash,
        verifier_hash=hashlib.sha256(verifier).hexdigest(), info_hash=hashlib.sha256(info_bytes).hexdigest(),
        nonce=nonce.hex(),
    )  # fmt: skip
    index = client.submit(msg)["index"]
    return what, {"index": index, "nonce": nonce, "info": info_bytes, "verifier": verifier}


def _claim_squat(client: Any, squatter: Identity, record: dict[str, Any], uri: str, digest: str) -> dict[str, Any]:
    key = derive_owner_key(squatter, record["nonce"])
    msg = Claim.create(
        squatter, publish=record["index"], model_uri=uri, model_hash=digest,
        verifier_uri=client.put_artifact(record["verifier"]), info_uri=client.put_artifact(record["info"]),
        key=key.key, key_proof=key.key_proof, time=now_ms(),
    )  # fmt: skip
    try:
        index = client.submit(msg)["index"]
    except RejectedError as exc:
        return {"refused": f"refused on arrival: {exc.diagnostics()}"}
    return dict(wait_decided(client, index, 120))


def _require(status: dict[str, Any], result: str, what: str) -> None:
    if status["result"] != result:
        votes = "; ".join(v["msg"]["reason"] for v in status["votes"])
        raise WmnodeError(f"{what} came out {status['result']!r}, expected {result!r} (votes: {votes})")
