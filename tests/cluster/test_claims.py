"""Ownership claims end to end: three node processes fetch, verify, vote and decide (DESIGN §4.4)."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

from contracts.errors import MessageError, RejectedError, VerificationError, WmnodeError
from contracts.fetch import FetchPolicy
from contracts.identity import Identity
from registry.cli.ownership import BundleFiles, claim_suspect, publish_bundle, wait_decided
from registry.client.certificate import build_certificate, verify_certificate
from registry.client.localnet import LocalCommunity
from registry.client.node_client import NodeClient
from registry.community.config import load_config
from registry.log.messages import Claim, Vote
from registry.log.replicated import RegistryLog
from registry.log.state import APPENDED, REJECTED
from schemes.models.serving import PATH, RemotePredictor, encode_batch
from schemes.models.zoo import load_model, model_to_bytes, save_model
from schemes.workflow.pipeline import attack_model, embed_to_bundle
from tests.cluster.community import embed_marked, start_community, write_configs

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(1200)]


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("claims")


@pytest.fixture(scope="module")
def community(base: Path) -> Iterator[LocalCommunity]:
    c = start_community(base / "community")
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def owner() -> Identity:
    return Identity.generate()


@pytest.fixture(scope="module")
def owner_bundle(base: Path, owner: Identity, community: LocalCommunity) -> Path:
    """A quick MTLSign embedding on LeNet-5/digits, published before it is released."""
    bundle = base / "owner"
    embed_marked(owner, "mtlsign", bundle)
    with community.client(0) as client:
        publish_bundle(client, owner, bundle)
    return bundle


@pytest.fixture(scope="module")
def finetuned(base: Path, owner_bundle: Path) -> Path:
    out = base / "finetuned"
    attack_model(owner_bundle, "finetune", out, epochs=2, seed=3)
    return out


def copy_of(model_dir: Path, name: str) -> Path:
    """`model_dir` re-carded with a free field: another artifact of the same model (registry.modelid).
    A publish is tried on one artifact once (registry.log), so each test claims a copy of its own; the
    judges count the earlier decided claims on the same function in the bound."""
    out = model_dir.parent / f"{model_dir.name}-{name}"
    if not out.exists():
        model, card = load_model(model_dir)
        save_model(model, dataclasses.replace(card, extra={**card.extra, "copy": name}), out)
    return out


def seeds(community: LocalCommunity) -> list[Identity]:
    """The member identities (test configs derive them from a seed in the config)."""
    return [Identity.from_seed(load_config(n.config_path).identity_seed or "") for n in community.nodes]


def ensure_all_running(community: LocalCommunity) -> None:
    for node in community.nodes:
        if not node.running:
            node.start()
    community.wait_ready(timeout=60)


def test_the_owners_claim_on_a_fine_tuned_copy_is_decided_owner_with_a_checkable_certificate(
    community: LocalCommunity, owner: Identity, owner_bundle: Path, finetuned: Path
) -> None:
    with community.client(1) as client:  # any node takes a claim
        status = claim_suspect(client, owner, owner_bundle, str(copy_of(finetuned, "cert")), timeout_s=120)
    assert (status["decided"], status["result"]) == ("owner", "owner"), status["votes"]
    verdicts = {v["msg"]["node"]: v["msg"]["verdict"] for v in status["votes"]}
    assert len(verdicts) >= 2 and set(verdicts.values()) == {"owner"}
    assert all(v["msg"]["score"] >= v["msg"]["threshold"] for v in status["votes"])

    cert = build_certificate(status, [n.url for n in community.nodes])
    members = [m.public_hex for m in seeds(community)]
    summary = verify_certificate(cert, members)
    assert summary["decided"] == "owner" and summary["checkpoint_signers"] == 3
    tampered = {**cert, "votes": [{**v, "msg": {**v["msg"], "verdict": "not-owner"}} for v in cert["votes"]]}
    with pytest.raises(VerificationError):
        verify_certificate(tampered, members)
    with pytest.raises(VerificationError, match="a majority is 2"):
        verify_certificate(cert, [Identity.generate().public_hex for _ in range(3)])  # not this community's keys


def test_with_one_node_stopped_during_a_claim_the_other_two_decide(
    community: LocalCommunity, owner: Identity, owner_bundle: Path, finetuned: Path
) -> None:
    try:
        with community.client(0) as client:
            msg = _claim_msg(client, owner, owner_bundle, *_uploaded(client, copy_of(finetuned, "stopped")))
            index = client.submit(msg)["index"]
            community.nodes[2].kill()  # the claim is committed; node3 dies before it can have voted much
            status = wait_decided(client, index, 120)
        assert status["decided"] == "owner" and len(status["votes"]) >= 2
        live = {s["node"] for s in community.statuses() if s is not None}
        assert {v["msg"]["node"] for v in status["votes"]} >= live - {None}
    finally:
        ensure_all_running(community)


def _uploaded(client: NodeClient, model_dir: Path) -> tuple[str, str]:
    uri = client.put_artifact(model_to_bytes(*load_model(model_dir)))
    return uri, uri.removeprefix("sha256:")


def test_a_restarted_node_votes_once_on_the_claims_it_missed(
    community: LocalCommunity, owner: Identity, owner_bundle: Path, finetuned: Path
) -> None:
    community.nodes[2].kill()
    try:
        community.wait_ready(timeout=60)
        with community.client(0) as client:
            status = claim_suspect(client, owner, owner_bundle, str(copy_of(finetuned, "restart")), timeout_s=120)
            index = status["claim"]["index"]
            community.nodes[2].start()
            community.wait_ready(timeout=60)
            deadline = time.monotonic() + 120
            while len(client.claim(index)["votes"]) < 3:
                assert time.monotonic() < deadline, "the restarted node never voted"
                time.sleep(0.1)
            community.nodes[2].stop()  # and once more: it must not vote again after this restart
            community.nodes[2].start()
            community.wait_ready(timeout=60)
            time.sleep(2)
            votes = client.claim(index)["votes"]
        assert len(votes) == 3 and len({v["msg"]["node"] for v in votes}) == 3
    finally:
        ensure_all_running(community)


def test_a_member_that_votes_against_the_truth_does_not_change_the_outcome(
    community: LocalCommunity, owner: Identity, owner_bundle: Path, finetuned: Path
) -> None:
    """Member 3 turns liar: its process stops and the test runs member 3's log in this process, on
    its own key and data dir, and casts a false vote through it (a vote reaches the log only
    through its own member's node, which stamps it)."""
    liar = seeds(community)[2]
    node3 = community.nodes[2]
    node3.stop()
    config = node3.config
    liar_log = RegistryLog(
        str(config.raft),
        {str(p.raft): p.key for p in config.peers if p.key},
        node3.data_dir,
        config.secret,
        community=config.community,
        identity=liar,
        clock=config.clock,
    )
    try:
        community.wait_ready(timeout=60)
        with community.client(0) as client:
            deadline = time.monotonic() + 60  # the liar is connected and caught up before the claim
            while liar_log.sync._getLeader() is None or liar_log.size() < client.status()["size"]:
                assert time.monotonic() < deadline, "member 3's log never caught up"
                time.sleep(0.05)
            msg = _claim_msg(client, owner, owner_bundle, *_uploaded(client, copy_of(finetuned, "liar")))
            index = client.submit(msg)["index"]
            lie = Vote.create(
                liar, claim=index, claim_hash=msg.body_hash(), verdict="not-owner", score=0, threshold=700, reason="lie"
            )
            assert liar_log.commit_sync(lie).status == APPENDED
            status = wait_decided(client, index, 120)
        assert status["decided"] == "owner"
        assert [v["msg"]["verdict"] for v in status["votes"]] == ["not-owner", "owner", "owner"]
        again = Vote.create(liar, claim=index, claim_hash=msg.body_hash(), verdict="owner", score=0, threshold=0,
                            reason="x")  # fmt: skip
        out = liar_log.commit_sync(again)
        assert out.status == REJECTED and "already voted" in out.reason
        with pytest.raises(RejectedError, match="only through that member's own node"):
            with community.client(0) as client:  # an honest node relays no one else's vote
                client.submit(again)
        with pytest.raises(RejectedError, match="only through that member's own node"):
            with community.client(0) as client:
                outsider = Identity.generate()
                client.submit(Vote.create(outsider, claim=index, claim_hash=msg.body_hash(), verdict="owner",
                                          score=0, threshold=0, reason="x"))  # fmt: skip
    finally:
        liar_log.close()
        ensure_all_running(community)


def _claim_msg(client: NodeClient, owner: Identity, bundle_dir: Path, model_uri: str, model_hash: str) -> Claim:
    bundle = BundleFiles.read(bundle_dir)
    key, proof = bundle.owner_key(owner)
    return Claim.create(
        owner,
        publish=client.publish_by_key(hashlib.sha256(key).hexdigest())["index"],
        model_uri=model_uri,
        model_hash=model_hash,
        verifier_uri=client.put_artifact(bundle.verifier),
        info_uri=client.put_artifact(bundle.info),
        key=key,
        key_proof=proof,
        time=time.time_ns() // 1_000_000,
    )


def test_bad_claims_are_refused_before_anyone_votes(
    community: LocalCommunity, owner: Identity, owner_bundle: Path, finetuned: Path
) -> None:
    data = model_to_bytes(*load_model(copy_of(finetuned, "bad")))
    digest = hashlib.sha256(data).hexdigest()
    with community.client(0) as client:
        size = client.status()["size"]
        with pytest.raises(WmnodeError, match="hash mismatch"):  # a tampered upload never lands
            client._request("PUT", f"/v1/artifacts/{digest}", content=data[:-1] + b"\x00")
        good = _claim_msg(client, owner, owner_bundle, f"sha256:{digest}", digest)

        forged = good.to_json()
        forged["key_proof"] = Identity.generate().sign(b"wmnode/key/v1").hex()
        forged_msg = Claim.create(
            owner,
            **{k: forged[k] for k in ("publish", "model_uri", "model_hash", "verifier_uri", "info_uri", "time")},
            key=bytes.fromhex(forged["key"]),
            key_proof=bytes.fromhex(forged["key_proof"]),
        )
        with pytest.raises(VerificationError, match="key_proof is not the owner's signature"):
            client.submit(forged_msg)

        stranger = Identity.generate()
        theft = Claim.create(
            stranger,
            **{k: getattr(good, k) for k in ("publish", "model_uri", "model_hash", "verifier_uri", "info_uri", "time")},
            key=bytes.fromhex(good.key),
            key_proof=bytes.fromhex(good.key_proof),
        )
        with pytest.raises(RejectedError, match="belongs to another owner"):
            client.submit(theft)

        private = "http://10.0.0.7/model.safetensors"
        with pytest.raises(WmnodeError, match="private range"):
            client.submit(_claim_msg(client, owner, owner_bundle, private, digest))
        with pytest.raises(MessageError, match="must be sha256:<hex>, an http"):
            client.post_raw(_with(good, model_uri="file:///etc/passwd"))
        assert client.status()["size"] == size  # nothing appended


def _with(claim: Claim, **changes: Any) -> bytes:
    return json.dumps({**claim.to_json(), **changes}).encode()


class _FileServer:
    """Serve one byte string over http on loopback (the 'URL of a model file' suspect)."""

    def __init__(self, body: bytes) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                self.send_response(200)
                self.send_header("content-length", str(len(outer.body)))
                self.end_headers()
                self.wfile.write(outer.body)

            def log_message(self, *args: object) -> None:
                pass

        self.body = body
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/model.safetensors"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_a_model_url_whose_bytes_changed_is_voted_an_error(
    community: LocalCommunity, owner: Identity, owner_bundle: Path, finetuned: Path
) -> None:
    data = model_to_bytes(*load_model(copy_of(finetuned, "url")))
    server = _FileServer(data[:-4] + b"\x00\x00\x00\x00")  # swapped after the claimant hashed it
    try:
        with community.client(0) as client:
            msg = _claim_msg(client, owner, owner_bundle, server.url, hashlib.sha256(data).hexdigest())
            status = wait_decided(client, client.submit(msg)["index"], 120)
            assert status["decided"] == "error"
            assert all("hash mismatch" in v["msg"]["reason"] for v in status["votes"])
            # An `error` decision leaves the pair open: the same claim on the right bytes is judged.
            server.body = data
            honest = claim_suspect(client, owner, owner_bundle, server.url, timeout_s=120)
        assert honest["decided"] == "owner", honest["votes"]  # fetched by http(s), hash-checked, verified
    finally:
        server.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("scheme", ["new-label", "function-coupled", "blind"])
def test_a_black_box_claim_against_serve_model_is_decided_owner(
    base: Path, community: LocalCommunity, scheme: str
) -> None:
    owner = Identity.generate()
    bundle = base / f"bb-{scheme}"
    embed_marked(owner, scheme, bundle)
    with _serve_model(bundle) as url:
        with community.client(0) as client:
            publish_bundle(client, owner, bundle)
            status = claim_suspect(client, owner, bundle, url, timeout_s=180)
    assert status["claim"]["msg"]["model_uri"] == "predict+" + url  # the CLI asked the URL what it is
    reasons = [v["msg"]["reason"] for v in status["votes"]]
    assert status["decided"] == "owner", reasons
    if scheme == "function-coupled":  # five triples per key: the survey states their shared choices
        assert all("shared choice" in r for r in reasons), reasons
    assert all(v["msg"]["controls"].startswith("8:") for v in status["votes"])


@contextlib.contextmanager
def _serve_model(model: Path) -> Iterator[str]:
    """`wmnode serve-model MODEL` in its own process; yields its prediction URL once it answers."""
    port = _free_port()
    proc = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
        [sys.executable, "-m", "registry.cli", "serve-model", str(model), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}{PATH}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(url).raise_for_status()
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline and proc.poll() is None, "serve-model did not start"
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def test_a_community_that_does_not_allow_loopback_refuses_a_loopback_suspect(
    base: Path, owner: Identity, owner_bundle: Path
) -> None:
    configs = write_configs(base / "strict", n=1)
    configs[0].write_text(configs[0].read_text().replace("allow_loopback = true", "allow_loopback = false"))
    strict = LocalCommunity(configs, base / "strict" / "run")
    strict.start()
    try:
        strict.wait_ready(timeout=60)
        with strict.client(0) as client:
            publish_bundle(client, owner, owner_bundle, save_receipt=False)
            msg = _claim_msg(client, owner, owner_bundle, "http://127.0.0.1:9/model.safetensors", "00" * 32)
            with pytest.raises(WmnodeError, match="loopback address"):
                client.submit(msg)
            assert client.status()["size"] == 1  # the publish only
    finally:
        strict.stop()


def _wmnode(*args: str, state_dir: Path | None = None) -> Any:
    from click.testing import CliRunner

    from registry.cli import main

    env = None if state_dir is None else {"WMNODE_STATE_DIR": str(state_dir)}
    return CliRunner().invoke(main, list(args), catch_exceptions=False, env=env)


def test_the_command_line_publishes_claims_certifies_and_names_the_owner(
    base: Path, community: LocalCommunity, owner: Identity, owner_bundle: Path, finetuned: Path
) -> None:
    from contracts.identity import write_identity

    key_file = base / "cli-owner.key"
    if not key_file.exists():
        write_identity(owner, key_file)
    node = community.nodes[0].url
    # The members' keys come from a community config; the checkpoints the client sees are kept here.
    config, state = str(community.nodes[1].config_path), base / "cli-state"
    again = _wmnode(
        "publish", "--node", node, "--config", config, "--identity", str(key_file), "--bundle", str(owner_bundle),
        state_dir=state,
    )  # fmt: skip
    assert again.exit_code == 1 and "already published" in again.output

    weak = base / "cli-weak"  # a one-epoch embedding: published fine, but its watermark is nowhere
    embed_to_bundle(
        owner, "lenet5", "digits", weak, scheme="mtlsign",
        overrides={"n": 600, "clean_epochs": 1, "embed_epochs": 1, "da_attacks": 0, "lambda_da": 0.0},
    )  # fmt: skip
    published = _wmnode(
        "publish", "--node", node, "--config", config, "--identity", str(key_file), "--bundle", str(weak),
        state_dir=state,
    )  # fmt: skip
    assert published.exit_code == 0 and (weak / "receipt.json").is_file(), published.output
    assert "the model may be released now" in published.output and "a majority is 2" in published.output

    cert = base / "cli.certificate.json"
    won = _wmnode(
        "claim", "--node", node, "--config", config, "--identity", str(key_file), "--bundle", str(owner_bundle),
        "--suspect", str(finetuned), "--certificate", str(cert), state_dir=state,
    )  # fmt: skip
    assert won.exit_code == 0, won.output
    assert "result: owner" in won.output and won.output.count(" owner ") >= 2  # every vote is printed
    checked = _wmnode("certificate", "verify", str(cert), "--config", config, state_dir=state)
    assert checked.exit_code == 0 and "certificate holds" in checked.output, checked.output
    stranger = _wmnode("certificate", "verify", str(cert), "--member-key", Identity.generate().public_hex)
    assert stranger.exit_code == 1 and "a majority is 1" in stranger.output

    model_hash = json.loads(cert.read_text())["claim"]["msg"]["model_hash"]
    standing = _wmnode("owner", "--node", node, "--model", model_hash, "--json")
    assert standing.exit_code == 0 and json.loads(standing.output)["owner"] == owner.public_hex
    # A copy re-carded by a thief (a free field, another input size), never claimed: the same model.
    stolen = copy_of(finetuned, "never-claimed")
    model, card = load_model(stolen)
    save_model(model, dataclasses.replace(card, input_shape=(1, 29, 29)), base / "stolen-29")
    for path in (stolen, base / "stolen-29"):
        named = _wmnode("owner", "--node", node, "--model", str(path), "--json")
        assert named.exit_code == 0 and json.loads(named.output)["owner"] == owner.public_hex, named.output

    lost = _wmnode(
        "claim", "--node", node, "--config", config, "--identity", str(key_file), "--bundle", str(weak),
        "--suspect", str(finetuned), "--certificate", str(base / "lost.json"), state_dir=state,
    )  # fmt: skip
    assert lost.exit_code == 1 and "result: not-owner" in lost.output, lost.output

    refused = _wmnode(
        "claim", "--node", node, "--config", config, "--identity", str(key_file), "--bundle", str(weak),
        "--suspect", "predict+http://10.0.0.7/v1/predict",  # said to be an API: the claimant does not probe it
        state_dir=state,
    )  # fmt: skip
    assert refused.exit_code == 2 and "private range" in refused.output


def test_attack_and_serve_model_commands(base: Path, owner_bundle: Path) -> None:
    pruned = base / "cli-pruned"
    out = _wmnode("attack", str(owner_bundle), "--kind", "prune", "--amount", "0.5", "--out", str(pruned), "--json")
    assert out.exit_code == 0, out.output
    report = json.loads(out.output)
    assert (pruned / "model.safetensors").is_file() and 0 <= report["accuracy"] <= 1
    model, _ = load_model(pruned)
    weights = [p for n, p in model.named_parameters() if n.endswith("weight")]
    zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
    assert zeros >= 0.45

    with _serve_model(pruned) as url:
        described = httpx.get(url).json()
        assert described["kind"] == "wmnode-predict" and described["input_shape"] == [1, 28, 28]
        assert described["inputs"] == "pixels"
        x = torch.rand(5, 1, 28, 28)  # raw pixels: the service normalises them by its card
        labels = RemotePredictor("predict+" + url, FetchPolicy(allow_loopback=True))(x)
        _, card = load_model(pruned)
        mean, std = torch.tensor(card.mean).view(1, -1, 1, 1), torch.tensor(card.std).view(1, -1, 1, 1)
        assert torch.equal(labels, model((x - mean) / std).argmax(dim=1))
        bad = httpx.post(url, json={**encode_batch(x), "shape": [5, 3, 28, 28]})
        assert bad.status_code == 400 and "shape must be" in bad.json()["detail"]
        outside = httpx.post(url, json=encode_batch(x * 4 - 2))  # normalised inputs, not pixels
        assert outside.status_code == 400 and "pixels in [0, 1]" in outside.json()["detail"]
