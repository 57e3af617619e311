"""Run a community of node processes on this machine (the demo, the cluster tests, benchmarks)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from contracts.errors import NodeError, UnavailableError
from contracts.identity import Identity
from registry.client.node_client import NodeClient
from registry.community.config import NodeConfig, load_config


@dataclass
class NodeProcess:
    config_path: Path
    data_dir: Path
    log_path: Path
    config: NodeConfig
    extra_args: tuple[str, ...] = ()
    proc: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return self.config.me.api_url

    def start(self) -> None:
        self._log = open(self.log_path, "ab")
        cmd = [
            sys.executable,
            "-m",
            "registry.cli",
            "start",
            "--config",
            str(self.config_path),
            "--data-dir",
            str(self.data_dir),
            *self.extra_args,
        ]
        self.proc = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
            cmd, stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"}
        )

    def signal(self, sig: int) -> None:
        self.send(sig)
        self.wait()

    def send(self, sig: int) -> None:
        """Send `sig` if the process runs; `wait` for it to end."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait(self) -> None:
        if self.proc is not None:
            self.proc.wait(timeout=15)
        self._close_log()

    def stop(self) -> None:
        self.signal(signal.SIGTERM)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class LocalCommunity:
    """Start, kill, restart and query the nodes of one community, each in its own process.

    `judges=False` starts every node with `--no-judges`: no judge process (none imports torch), for
    communities that never judge a claim; such nodes vote `error` on every claim."""

    def __init__(
        self, config_paths: list[Path], base_dir: Path, extra_args: tuple[str, ...] = (), judges: bool = True
    ) -> None:
        extra_args = extra_args if judges else (*extra_args, "--no-judges")
        base_dir.mkdir(parents=True, exist_ok=True)
        self.nodes = []
        for path in config_paths:
            config = load_config(path)
            self.nodes.append(
                NodeProcess(path, base_dir / config.name, base_dir / f"{config.name}.log", config, extra_args)
            )

    def __enter__(self) -> LocalCommunity:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        for node in self.nodes:
            node.start()

    def stop(self) -> None:
        """SIGTERM every node, then wait for each: they shut down side by side, not one after another."""
        for node in self.nodes:
            node.send(signal.SIGTERM)
        for node in self.nodes:
            node.wait()

    def client(self, i: int) -> NodeClient:
        return NodeClient(self.nodes[i].url)

    def statuses(self, only_running: bool = True) -> list[dict[str, Any] | None]:
        out: list[dict[str, Any] | None] = []
        for node in self.nodes:
            if only_running and not node.running:
                out.append(None)
                continue
            try:
                with NodeClient(node.url, timeout=2.0) as client:
                    out.append(client.status())
            except UnavailableError:
                out.append(None)
        return out

    def wait_for(
        self, condition: Callable[[list[dict[str, Any] | None]], bool], timeout: float = 30.0, what: str = "condition"
    ) -> list[dict[str, Any] | None]:
        """Poll every node's status until `condition(statuses)` holds."""
        deadline = time.monotonic() + timeout
        while True:
            for node in self.nodes:
                if node.proc is not None and node.proc.poll() not in (None, -signal.SIGKILL, -signal.SIGTERM, 0):
                    raise NodeError(f"node {node.config.name} exited with {node.proc.returncode}:\n{node.log_tail()}")
            statuses = self.statuses()
            if condition(statuses):
                return statuses
            if time.monotonic() > deadline:
                tails = "\n".join(f"--- {n.config.name}\n{n.log_tail(8)}" for n in self.nodes)
                raise NodeError(f"timed out after {timeout:g} s waiting for {what}; statuses: {statuses}\n{tails}")
            time.sleep(0.05)

    def wait_ready(
        self, timeout: float = 30.0, verifiers: bool = False, references: bool = True
    ) -> list[dict[str, Any] | None]:
        """Every running node is up and all of them agree on one leader (and, with `verifiers`,
        every node's judges have loaded the schemes, so a claim is judged at once, and, unless
        `references` is False, the references the configs list are recorded by a majority)."""

        def ready(statuses: list[dict[str, Any] | None]) -> bool:
            up = [s for n, s in zip(self.nodes, statuses, strict=True) if n.running]
            if len(up) != sum(n.running for n in self.nodes) or any(s is None for s in up):
                return False
            if verifiers and not all(s is not None and s.get("verifier_ready") for s in up):
                return False
            if verifiers and references and not all(s is not None and s.get("references_ready") for s in up):
                return False
            wanted = max(len(n.config.references) for n in self.nodes)
            if verifiers and references and not all(s is not None and s.get("references", 0) >= wanted for s in up):
                return False
            leaders = {s["leader"] for s in up if s is not None}
            return len(leaders) == 1 and None not in leaders

        what = "a leader agreed by every running node" + (" and every verifier ready" if verifiers else "")
        return self.wait_for(ready, timeout, what)

    def wait_converged(self, size: int | None = None, timeout: float = 30.0) -> list[dict[str, Any] | None]:
        """Every running node reports the same size and root (and `size`, when given)."""

        def converged(statuses: list[dict[str, Any] | None]) -> bool:
            up = [s for n, s in zip(self.nodes, statuses, strict=True) if n.running]
            if not up or any(s is None for s in up):
                return False
            heads = {(s["size"], s["root"]) for s in up if s is not None}
            return len(heads) == 1 and (size is None or next(iter(heads))[0] == size)

        return self.wait_for(
            converged, timeout, f"all nodes at the same head{'' if size is None else f' of size {size}'}"
        )

    def leader_index(self) -> int:
        for i, status in enumerate(self.statuses()):
            if status is not None and status["role"] == "leader":
                return i
        raise NodeError("no node reports itself leader")


def free_ports(n: int) -> list[int]:
    """Distinct free TCP ports on 127.0.0.1 (bound and released together, so they differ)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def write_local_configs(
    base: Path,
    n: int = 3,
    secret: str | None = None,
    community: str = "wmnode.test/local",
    commit_timeout_s: int = 10,
    allow_loopback: bool = True,
    extra: str = "",
    exempt_loopback: bool = True,
) -> list[Path]:
    """Configs for an n-node community on free loopback ports (tests and benchmarks).

    Each node's identity derives from a fresh random `identity_seed` (loopback only), so every
    member's public key can be written into every config before any node starts. `extra` is TOML
    appended to every config (a `[verification]` table, `[[references]]`). With `exempt_loopback`
    the nodes do not rate limit loopback clients and let one address hold 64 connections (one local
    client drives the whole community in tests and benchmarks, 16 writers at once among them); pass
    False to give `extra` a `[limits]` table of its own.
    """
    base.mkdir(parents=True, exist_ok=True)
    ports = free_ports(2 * n)
    seeds = [os.urandom(16).hex() for _ in range(n)]
    keys = [Identity.from_seed(seed).public_hex for seed in seeds]
    members = "".join(
        f'\n[[members]]\nname = "node{i + 1}"\nraft = "127.0.0.1:{ports[i]}"\napi = "127.0.0.1:{ports[n + i]}"\n'
        f'key = "{keys[i]}"\n'
        for i in range(n)
    )
    secret_line = f'secret = "{secret}"\n' if secret else ""
    fetch = f"\n[fetch]\nallow_loopback = {'true' if allow_loopback else 'false'}\n"
    if exempt_loopback:
        fetch += '\n[limits]\nexempt_networks = ["127.0.0.0/8", "::1/128"]\nmax_connections_per_address = 64\n'
    paths = []
    for i in range(n):
        path = base / f"node{i + 1}.toml"
        path.write_text(
            f'community = "{community}"\nname = "node{i + 1}"\nraft = "127.0.0.1:{ports[i]}"\n'
            f'api = "127.0.0.1:{ports[n + i]}"\n{secret_line}commit_timeout_seconds = {commit_timeout_s}\n'
            f'identity_seed = "{seeds[i]}"\n{fetch}{members}\n{extra}'
        )
        paths.append(path)
    return paths
