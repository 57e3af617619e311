"""Squatting, as an attacker would try it, against three node processes (DESIGN §6.1, issue: sound
ownership decisions).

The attacker publishes first, before the victim's model exists, with the most generic artifacts
each scheme lets it ship, and later claims the victim's model. Every such claim must be refused
when it arrives or be decided against the attacker, and the victim, who publishes later, must
still be decided `owner` and stand as the model's owner.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import safetensors.torch
import torch

from contracts.errors import RejectedError
from contracts.identity import Identity, derive_owner_key
from registry.cli.ownership import claim_suspect, publish_bundle, suspect_uri, wait_decided
from registry.client.localnet import LocalCommunity, write_local_configs
from registry.client.node_client import NodeClient
from registry.log.messages import Claim, Publish
from schemes.data.community import community_data
from schemes.models.zoo import create_model
from schemes.watermarks.blind import key_targets
from schemes.watermarks.mtlsign import WatermarkHead
from tests.cluster.community import embed_marked

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(2400)]

REFERENCES = '[verification]\nrequire_references = true\n\n[[references]]\nrecipe = "plain"\n\n' \
    '[[references]]\nrecipe = "new-label"\n\n[[references]]\nrecipe = "passport"\n'  # fmt: skip


@pytest.fixture(scope="module")
def community(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCommunity]:
    base = tmp_path_factory.mktemp("squatting")
    os.environ.setdefault("WMNODE_REFERENCE_CACHE", str(tmp_path_factory.getbasetemp() / "reference-cache"))
    configs = write_local_configs(
        base, 3, "squatting-test-secret-0123", community="wmnode.test/squat", extra=REFERENCES
    )
    c = LocalCommunity(configs, base / "run")
    c.start()
    try:
        c.wait_ready(timeout=900, verifiers=True)
        yield c
    finally:
        c.stop()


@dataclass
class Squat:
    """An attacker's publish: the key it revealed nothing of yet, and the artifacts behind the hashes."""

    index: int
    nonce: bytes
    info: bytes
    verifier: bytes


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def squat(
    client: NodeClient,
    attacker: Identity,
    scheme: str,
    info: dict[str, Any],
    verifier: dict[str, Any],
    nonce: bytes | None = None,
) -> Squat:
    nonce = nonce or os.urandom(16)
    info_bytes = json.dumps(info, sort_keys=True).encode()
    verifier_bytes = safetensors.torch.save({k: v.contiguous() for k, v in verifier.items()})
    msg = Publish.create(
        attacker, scheme=scheme, time=now_ms(), key_hash=derive_owner_key(attacker, nonce).key_hash,
        verifier_hash=hashlib.sha256(verifier_bytes).hexdigest(), info_hash=hashlib.sha256(info_bytes).hexdigest(),
        nonce=nonce.hex(),
    )  # fmt: skip
    return Squat(client.submit(msg)["index"], nonce, info_bytes, verifier_bytes)


def claim_with(
    client: NodeClient, attacker: Identity, record: Squat, model_uri: str, model_hash: str
) -> dict[str, Any]:
    """The attacker's claim on the victim's model: refused at arrival, or its decided status."""
    owner_key = derive_owner_key(attacker, record.nonce)
    msg = Claim.create(
        attacker, publish=record.index, model_uri=model_uri, model_hash=model_hash,
        verifier_uri=client.put_artifact(record.verifier), info_uri=client.put_artifact(record.info),
        key=owner_key.key, key_proof=owner_key.key_proof, time=now_ms(),
    )  # fmt: skip
    try:
        index = client.submit(msg)["index"]
    except RejectedError as exc:
        return {"refused": exc.diagnostics()}
    return wait_decided(client, index, 300)


def _digits() -> Any:
    return community_data("digits", (1, 28, 28))


def _generic_infos(attacker_keys: dict[str, bytes]) -> dict[str, list[tuple[str, dict[str, Any], dict[str, Any]]]]:
    """Per scheme, the artifacts an attacker ships: (what, info, verifier), the last the strongest allowed."""
    data = _digits()
    mean, std, shape = list(data.mean), list(data.std), [1, 28, 28]
    ones = data.x_test[data.y_test == 1][:100]
    lenet = create_model("lenet5", num_classes=10, input_shape=(1, 28, 28))
    head = WatermarkHead(lenet_head_inputs(lenet), 256, 4)
    passport_model = create_model("lenet5-passport", num_classes=10, input_shape=(1, 28, 28))
    from schemes.models._passport_layer import passport_shapes

    layers = {p: list(s) for p, s in passport_shapes(passport_model, data.x_test[:1]).items()}
    blind_key = attacker_keys["blind"]
    targets = key_targets(blind_key, 100, 10)
    # Images of the target class itself: any model answers them with the target.
    natural = torch.stack([data.x_train[(data.y_train == int(t)).nonzero()[i % 50, 0]] for i, t in enumerate(targets)])
    new_label_valid = {"scheme": "new-label", "dataset": "digits", "delta": 10, "beta": 0.3, "n": 100,
                       "threshold": 0.25, "input_shape": shape, "mean": mean, "std": std}  # fmt: skip
    fc = {"scheme": "function-coupled", "version": 2, "mode": "invisible", "r": 0.5, "n_train": 200, "n_verify": 90,
          "threshold": 0.9, "candidate": 0, "num_classes": 10, "input_shape": shape, "mean": mean, "std": std,
          "dataset": "digits", "split_seed": 0, "test_fraction": 0.2, "dataset_sha256": fc_digest(data)}  # fmt: skip
    blind = {"scheme": "blind", "dataset": "digits", "min_ssim": 0.9, "n": 100, "threshold": 0.8, "num_classes": 10,
             "input_shape": shape, "mean": mean, "std": std, "alpha": 3.0, "beta": 5.0, "gamma": 0.1, "delta": 1.0,
             "epochs": 1, "logo_sha256": "", "logo_source": "text", "encoder": "residual-cnn-32",
             "discriminator": "mlp-64-32"}  # fmt: skip
    logo = torch.zeros(28, 28, dtype=torch.uint8)
    from schemes.data._imaging import logo_sha256

    blind["logo_sha256"] = logo_sha256(logo)
    passport = {"scheme": "passport", "version": "V3", "passport_type": "T1", "layers": layers, "delta": 0.1,
                "noise_draws": 1, "noise_sigmas": 3.0, "noise_floor": 1.0, "dataset": "digits", "n_eval": 300,
                "input_shape": shape, "mean": mean, "std": std, "num_classes": 10}  # fmt: skip
    low_bar = {"expected_acc": torch.tensor([0.15]), "noise_levels": torch.tensor([0.5]),
               "noise_mean": torch.tensor([0.1]), "noise_std": torch.tensor([0.05])}  # fmt: skip
    mtl = {"scheme": "mtlsign", "n": 600, "gamma": 0.7, "taps": list(lenet.wm_taps), "pool": 4, "hidden": 256,
           "input_shape": shape, "mean": mean, "std": std}  # fmt: skip
    head_state = {k: v.detach() for k, v in head.state_dict().items()}
    return {
        "new-label": [
            ("the original attack: Δ an existing class, shipped images of a 1",
             {**new_label_valid, "delta": 1}, {"x_verify": ones}),
            ("a threshold of 0.01", {**new_label_valid, "threshold": 0.01}, {}),
            ("valid info, the key's own samples", new_label_valid, {}),
        ],
        "function-coupled": [
            ("shipped triggers: images of the target class", fc, {"triggers": ones[:90]}),
            ("valid info, triggers from the key", fc, {}),
        ],
        "blind": [
            ("key samples that are natural images of each target class", blind,
             {"key_samples": natural, "logo": logo}),
        ],
        "passport": [
            ("T2 passports (shipped images)", {**passport, "passport_type": "T2"}, low_bar),
            ("T1 passports with an expected accuracy of 0.15 (a bar a paralysed model meets)", passport, low_bar),
        ],
        "mtlsign": [
            ("N = 600 at a 256x256 input (the 169-byte info)", {**mtl, "input_shape": [1, 256, 256]}, head_state),
            ("pool 8 (a head that reads the taps at full resolution)", {**mtl, "pool": 8}, head_state),
            ("a head of its own on valid info", mtl, head_state),
        ],
    }  # fmt: skip


def lenet_head_inputs(model: torch.nn.Module) -> int:
    from mtlsign.head import head_input_size

    return head_input_size(model, tuple(model.wm_taps), (1, 28, 28), 4)


def fc_digest(data: Any) -> str:
    from schemes.watermarks.function_coupled import dataset_digest

    return dataset_digest(data)


SCHEMES = ("new-label", "function-coupled", "blind", "passport", "mtlsign")


def test_early_squatters_lose_to_the_victim_for_every_scheme(community: LocalCommunity, tmp_path: Path) -> None:
    attacker, victim = Identity.generate(), Identity.generate()
    results: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    with community.client(0) as client:
        # 1. The attacker publishes first, for every scheme, before any victim model exists.
        records: dict[str, list[tuple[str, Squat]]] = {s: [] for s in SCHEMES}
        keys = {s: b"" for s in SCHEMES}
        nonce_for_blind = os.urandom(16)
        keys["blind"] = derive_owner_key(attacker, nonce_for_blind).key
        for scheme, variants in _generic_infos(keys).items():
            for what, info, verifier in variants:
                # The blind samples were drawn for that key's targets; the other keys are fresh.
                nonce = nonce_for_blind if scheme == "blind" else None
                record = squat(client, attacker, scheme, info, verifier, nonce)
                records[scheme].append((what, record))
        # 2. Each victim watermarks a model of its own later and publishes it.
        bundles = {}
        for scheme in SCHEMES:
            bundle = tmp_path / scheme
            embed_marked(victim, scheme, bundle)
            publish_bundle(client, victim, bundle)
            bundles[scheme] = bundle
        # 3. The attacker claims every victim's model with every early record.
        for scheme in SCHEMES:
            uri, digest = suspect_uri(client, str(bundles[scheme]))
            for what, record in records[scheme]:
                results.setdefault(scheme, []).append((what, claim_with(client, attacker, record, uri, digest)))
        # 4. The victims claim their own models: decided owner, and they stand as the owners.
        for scheme in SCHEMES:
            status = claim_suspect(client, victim, bundles[scheme], str(bundles[scheme]), timeout_s=300)
            assert (status["decided"], status["result"]) == ("owner", "owner"), (scheme, status["votes"])
            for vote in status["votes"]:
                msg = vote["msg"]
                assert float(msg["fp_bound"]) <= 1e-6 and msg["references"], (scheme, msg)
            standing = client.owner(status["claim"]["msg"]["model_hash"])
            assert standing["owner"] == victim.public_hex, (scheme, standing)
    for scheme, outcomes in results.items():
        for what, outcome in outcomes:
            won = outcome.get("result") == "owner" or outcome.get("decided") == "owner"
            assert not won, (scheme, what, outcome)
            print(f"{scheme}: {what}: " + (outcome.get("refused") or f"decided {outcome['decided']}: "
                  + "; ".join(v["msg"]["reason"][:160] for v in outcome["votes"])))  # fmt: skip
