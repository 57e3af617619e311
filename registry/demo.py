"""`wmnode demo`: the local community of three on loopback, a few signed publishes, their proofs."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from pathlib import Path

from node_config import example_config
from registry.checkpoint import open_note
from registry.cli.node import format_status
from registry.client import NodeClient
from registry.errors import RejectedError, WmnodeError
from registry.identity import Identity, derive_owner_key
from registry.localnet import LocalCommunity
from registry.messages import Publish
from registry.receipt import fetch_receipt


def _demo_publish(owner: Identity, label: str, when: int) -> Publish:
    """A publish for a stand-in artifact: the watermarking schemes will supply the real hashes."""
    nonce = os.urandom(16)
    key = derive_owner_key(owner, nonce)  # DESIGN §4.2: the key is bound to the owner
    return Publish.create(
        owner,
        scheme="mtlsign",
        time=when,
        key_hash=key.key_hash,
        verifier_hash=hashlib.sha256(f"demo verifier {label}".encode()).hexdigest(),
        info_hash=hashlib.sha256(f"demo info {label}".encode()).hexdigest(),
        nonce=nonce.hex(),
    )


def run_demo(base_dir: Path, say: Callable[[str], None], publishes: int = 3) -> None:
    """Start the example community, publish through a follower, show every node's view, stop."""
    community = LocalCommunity([example_config(i) for i in (1, 2, 3)], base_dir)
    say(f"starting the local community (3 nodes on loopback; data and logs in {base_dir})")
    with community:
        statuses = community.wait_ready(timeout=60)
        leader = next(s for s in statuses if s is not None)["leader"]
        follower = next(i for i, s in enumerate(statuses) if s is not None and s["role"] != "leader")
        say(f"community up: leader {leader}; writing through follower {community.nodes[follower].config.name}")
        owner = Identity.generate()
        say(f"owner identity {owner.public_hex[:16]}… (in memory for the demo)")
        with community.client(follower) as client:
            first = None
            for n in range(publishes):
                msg = _demo_publish(owner, f"model-{n}", time.time_ns() // 1_000_000)
                started = time.perf_counter()
                result = client.submit(msg)
                ms = 1000 * (time.perf_counter() - started)
                first = first or msg
                say(f"  publish #{result['index']} key_hash {msg.key_hash[:16]}… committed in {ms:.1f} ms")
            assert first is not None
            again = client.submit(first)
            say(f"  the same publish again: {again['status']} at #{again['index']} (stored once)")
            stale = _demo_publish(owner, "backdated", time.time_ns() // 1_000_000 - 3_600_000)
            try:
                client.submit(stale)
                raise WmnodeError("a publish backdated by an hour was accepted")
            except RejectedError as exc:
                say(f"  a publish backdated by an hour: refused: {exc.diagnostics()}")
            receipt = fetch_receipt(client, 0)
        statuses = community.wait_converged(size=publishes)
        say("status of each node:")
        for status in statuses:
            assert status is not None
            say("  " + format_status(status))
        say(
            f"receipt for entry #0: inclusion proof of {len(receipt['inclusion']['path'])} hashes "
            f"against checkpoint size {receipt['checkpoint']['size']} verifies"
        )
        for node in community.nodes:
            with NodeClient(node.url) as client:
                note = client.checkpoint_note()
                status = client.status()
            parsed = open_note(note, node.config.name, status["node"])
            say(
                f"  {node.config.name} signed note: origin {parsed.origin}, size {parsed.size}, "
                f"root {parsed.root.hex()[:16]}… verifies"
            )
    say("community stopped; every node agreed on the same size and root")
