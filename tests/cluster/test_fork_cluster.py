"""A lying member against `wmnode monitor` and three real node processes (DESIGN §6: no member shows
two trees of one size without a client noticing).

Honest node code never signs two roots for one size, so the attacker here is node1's leaked key: a
small HTTP server in the test process answers as node1's API, proxies everything to the real node1,
but serves a checkpoint of the community's current size with another root, signed with node1's key.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import pytest

from contracts.identity import Identity
from registry.client.localnet import LocalCommunity
from registry.proofs.checkpoint import Checkpoint
from registry.proofs.merkle import MerkleTree, leaf_hash
from tests.helpers import PublishFactory, now_ms

pytestmark = pytest.mark.cluster

ENTRIES = 3


class LyingNode(ThreadingHTTPServer):
    """node1's API as its leaked key can show it: `forged` for the head checkpoint, the rest proxied."""

    daemon_threads = True

    def __init__(self, upstream: str, forged: Checkpoint) -> None:
        super().__init__(("127.0.0.1", 0), _LyingHandler)
        self.upstream, self.forged = upstream, forged

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"


class _LyingHandler(BaseHTTPRequestHandler):
    server: LyingNode

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        url = urlparse(self.path)
        size = parse_qs(url.query).get("size", [None])[0]
        if url.path == "/v1/checkpoint" and size in (None, str(self.server.forged.size)):
            status, data = 200, json.dumps(self.server.forged.to_json()).encode()
        else:
            reply = httpx.get(self.server.upstream + self.path, timeout=10)
            status, data = reply.status_code, reply.content
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def monitor_once(config: Path, state_dir: Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "registry.cli", "monitor", "--once", "--config", str(config)]
    return subprocess.run(  # noqa: S603 - our own interpreter and arguments
        [*cmd, "--state-dir", str(state_dir), "--timeout", "5"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def forged_checkpoint(node1: Identity, size: int) -> Checkpoint:
    """A tree of `size` other entries, signed by node1's key: what a lying member would show one client."""
    tree = MerkleTree()
    for i in range(size):
        tree.append(leaf_hash(f"forged entry {i}".encode()))
    return Checkpoint.create(node1, size, tree.root(size), now_ms())


def test_a_member_signing_two_roots_for_one_size_fails_the_monitor_and_is_named(
    tmp_path: Path, shared_community: LocalCommunity, make_publish: PublishFactory
) -> None:
    community = shared_community
    start = community.wait_converged()[0]  # the shared community's log holds other tests' entries too
    assert start is not None
    with community.client(1) as client:
        for _ in range(ENTRIES):
            assert client.submit(make_publish())["status"] == "appended"
    size = start["size"] + ENTRIES
    status = community.wait_converged(size=size)[0]
    assert status is not None
    node1, node2 = community.nodes[0], community.nodes[1]

    honest = monitor_once(node2.config_path, tmp_path / "honest-state")
    assert honest.returncode == 0, honest.stdout + honest.stderr

    assert node1.config.identity_seed is not None
    forged = forged_checkpoint(Identity.from_seed(node1.config.identity_seed), size)
    assert forged.size == status["size"] and forged.root != status["root"]
    liar = LyingNode(node1.url, forged)
    thread = threading.Thread(target=liar.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        # node2's config, with node1's API (in the members list only) pointing at the liar.
        real_api = f'api = "{node1.config.api}"'
        text = node2.config_path.read_text()
        assert text.count(real_api) == 1
        lied_to = tmp_path / "lied-to.toml"
        lied_to.write_text(text.replace(real_api, f'api = "{liar.address}"'))
        forked = monitor_once(lied_to, tmp_path / "forked-state")
    finally:
        liar.shutdown()
        liar.server_close()

    out = forked.stdout + forked.stderr
    assert forked.returncode == 1, out
    lines = {row[2]: row[3] for row in (line.split() for line in forked.stdout.splitlines()) if len(row) > 3}
    assert lines["node1"] == "fork", out
    assert f"node1 signed size {size} root {forged.root}" in out
    assert "two roots for one size" in out
    error = forked.stderr.strip().splitlines()[-1]
    assert error.startswith("error: node1") and "fork" in error, out
    # The evidence kept names node1 in every fork: its key signed both trees the client saw.
    forks = json.loads((tmp_path / "forked-state" / "checkpoints.json").read_text())["forks"]
    assert forks and all(node1.config.me.key in f["members"] for f in forks)
