"""`wmnode demo`: the whole story on one machine, on the digits data that ships with scikit-learn.

A community of three nodes starts on loopback. An owner trains LeNet-5, embeds MTLSign and publishes
before releasing the model. A thief steals it, fine-tunes and prunes it, overwrites it with a
watermark of its own and publishes later. The owner claims the thief's copy and wins by majority;
the thief's claim on the same copy passes verification but loses on the timestamps; a claim with a
wrong key is refused. The owner's certificate is checked offline at the end.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from node_config import example_config, load_config
from registry.certificate import build_certificate, verify_certificate
from registry.cli.claim import format_vote, member_names
from registry.errors import WmnodeError
from registry.identity import Identity
from registry.localnet import LocalCommunity
from registry.messages import Claim
from registry.ownership import claim_suspect, publish_bundle

#: MTLSign for the demo: a shorter budget than the paper-scale default, the same mechanics.
OWNER_OPTIONS = {"n": 300, "clean_epochs": 12, "embed_epochs": 16, "da_attacks": 2, "da_epochs": 5}
THIEF_OPTIONS = {"n": 300, "embed_epochs": 8, "da_attacks": 1, "da_epochs": 3, "lambda_da": 0.0}


def run_demo(base_dir: Path, out_dir: Path, say: Callable[[str], None]) -> Path:
    """Run the story; returns the path of the owner's certificate."""
    from schemes.workflow import attack_model, embed_to_bundle

    started = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    configs = [example_config(i) for i in (1, 2, 3)]
    community = LocalCommunity(configs, base_dir)
    say(f"1. starting the local community: 3 nodes on loopback (data and logs in {base_dir})")
    with community:
        statuses = community.wait_ready(timeout=120, verifiers=True)
        say(f"   leader {next(s for s in statuses if s is not None)['leader']}; every node runs a verifier")
        client = community.client(0)
        names = member_names(client.status())

        owner, thief = Identity.generate(), Identity.generate()  # in memory: the demo keeps no key files
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
        say(
            f"   its watermark is there too (decided {rival['decided']}), but the earlier publish wins: "
            f"#{standing['publish']} by the owner before #{rival['publish']['index']} by the thief"
        )

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
            time=time.time_ns() // 1_000_000,
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


def _require(status: dict[str, Any], result: str, what: str) -> None:
    if status["result"] != result:
        votes = "; ".join(v["msg"]["reason"] for v in status["votes"])
        raise WmnodeError(f"{what} came out {status['result']!r}, expected {result!r} (votes: {votes})")
