"""`wmnode monitor` and `publish --config` against three real node processes (DESIGN §6: no member
shows two trees of one size without a client noticing)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from contracts.identity import Identity, derive_owner_key, write_identity
from registry.cli import main
from registry.client.localnet import LocalCommunity
from registry.client.receipt import verify_receipt

pytestmark = pytest.mark.cluster


def wmnode(state_dir: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), env={"WMNODE_STATE_DIR": str(state_dir)})
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, result.output


def member_lines(out: str) -> dict[str, str]:
    """The monitor's `DATE TIME NAME STATUS ...` lines by member name."""
    rows = [line.split() for line in out.splitlines()]
    return {row[2]: row[3] for row in rows if len(row) > 3 and row[2].startswith("node")}


def test_monitor_and_a_confirmed_publish_on_a_real_community(tmp_path: Path, community: LocalCommunity) -> None:
    state, config = tmp_path / "state", str(community.nodes[0].config_path)
    code, out = wmnode(state, "monitor", "--once", "--config", config)
    assert code == 0, out
    assert member_lines(out) == {"node1": "ok", "node2": "ok", "node3": "ok"}

    owner = Identity.generate()
    write_identity(owner, tmp_path / "owner.key")
    nonce = os.urandom(16)
    record = {
        "scheme": "mtlsign",
        "key_hash": derive_owner_key(owner, nonce).key_hash,
        "verifier_hash": hashlib.sha256(b"verifier").hexdigest(),
        "info_hash": hashlib.sha256(b"info").hexdigest(),
        "nonce": nonce.hex(),
    }
    (tmp_path / "record.json").write_text(json.dumps(record))
    code, out = wmnode(
        state, "publish", "--config", config, "--identity", str(tmp_path / "owner.key"),
        "--record", str(tmp_path / "record.json"), "--receipt", str(tmp_path / "receipt.json"),
    )  # fmt: skip
    assert code == 0, out
    assert "of 3 members of 'wmnode.test/cluster' (a majority is 2)" in out
    receipt = json.loads((tmp_path / "receipt.json").read_text())
    verify_receipt(receipt, members=[n.config.me.key or "" for n in community.nodes])
    assert len(receipt["confirmations"]) == 2

    community.nodes[2].stop()
    code, out = wmnode(state, "monitor", "--once", "--config", config)
    assert code == 0, out  # a stopped member is reported, not a fork
    lines = member_lines(out)
    assert lines["node1"] == "ok" and lines["node3"] == "unreachable"
    assert "extends size" in out or "same as seen before" in out
