"""Publish latency and throughput through the node API, beside raw pysyncobj, in one run.

Starts a 3-node wmnode community and, next to it, 3 bare pysyncobj processes with the same Raft
settings, then prints p50/p99 of sequential publishes (via a follower and via the leader), the
committed throughput with 16 concurrent clients, and the same figures for raw appends of the same
size, with the ratios API/raw. Run: python benchmarks/publish_latency.py [--sequential 100]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from contracts.identity import Identity, derive_owner_key
from registry.client.localnet import LocalCommunity, free_ports, write_local_configs
from registry.log.messages import Publish

SECRET = "benchmark-secret-0123456789"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def make_messages(n: int) -> list[bytes]:
    owner = Identity.generate()
    out = []
    for _ in range(n):
        nonce = os.urandom(16)
        msg = Publish.create(
            owner,
            scheme="mtlsign",
            time=time.time_ns() // 1_000_000,
            key_hash=derive_owner_key(owner, nonce).key_hash,
            verifier_hash="ab" * 32,
            info_hash="cd" * 32,
            nonce=nonce.hex(),
        )
        out.append(msg.canonical_bytes())
    return out


def api_sequential(url: str, bodies: list[bytes]) -> list[float]:
    lat = []
    with httpx.Client(base_url=url, timeout=30) as client:
        for body in bodies:
            t = time.perf_counter()
            r = client.post("/v1/entries", content=body)
            lat.append(time.perf_counter() - t)
            if r.status_code != 201:
                raise RuntimeError(f"publish failed: {r.status_code} {r.text}")
    return lat


async def _post_loop(host: str, port: int, bodies: list[bytes]) -> None:
    """One keep-alive HTTP/1.1 connection posting bodies back to back (a lean load generator, like
    wrk: httpx would spend more CPU per request than the node it measures, on a 2-core machine)."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while bodies:
            body = bodies.pop()
            writer.write(
                b"POST /v1/entries HTTP/1.1\r\nhost: %s\r\ncontent-type: application/json\r\n"
                b"content-length: %d\r\n\r\n%s" % (host.encode(), len(body), body)
            )
            status = (await reader.readline()).split(b" ", 2)[1]
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            answer = await reader.readexactly(length)
            if status != b"201":
                raise RuntimeError(f"publish failed: {status.decode()} {answer[:200]!r}")
    finally:
        writer.close()


async def _api_concurrent(url: str, bodies: list[bytes], clients: int) -> float:
    host, port = httpx.URL(url).host, httpx.URL(url).port or 80
    queue = list(bodies)
    t = time.perf_counter()
    await asyncio.gather(*(_post_loop(host, port, queue) for _ in range(clients)))
    return time.perf_counter() - t


class RawCommunity:
    """Three bare pysyncobj 0.3.17 processes (stock Fernet cipher, stock pipelining)."""

    def __init__(self, log_dir: Path) -> None:
        ports = free_ports(3)
        addrs = [f"127.0.0.1:{p}" for p in ports]
        script = Path(__file__).with_name("_raw_node.py")
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        self.logs = [log_dir / f"raw{i}.log" for i in range(3)]
        self.procs = []
        for a, log in zip(addrs, self.logs, strict=True):
            with open(log, "w") as err:
                self.procs.append(
                    subprocess.Popen(
                        [sys.executable, str(script), a, SECRET, *[b for b in addrs if b != a]],
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        stderr=err,
                        text=True,
                        env=env,
                    )
                )

    def truncations(self) -> int:
        """How often a raw follower truncated entries it had already applied (pysyncobj logs it)."""
        return sum(log.read_text().count("truncating already-applied") for log in self.logs)

    def ask(self, i: int, line: str) -> Any:
        proc = self.procs[i]
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(line + "\n")
        proc.stdin.flush()
        return json.loads(proc.stdout.readline())

    def roles(self) -> tuple[int, int]:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            answers = [self.ask(i, "role") for i in range(3)]
            leaders = {a["leader"] for a in answers}
            if len(leaders) == 1 and all(a["ready"] for a in answers):
                leader = next(i for i, a in enumerate(answers) if a["self"] == a["leader"])
                return leader, next(i for i in range(3) if i != leader)
            time.sleep(0.1)
        raise RuntimeError("raw pysyncobj community elected no leader")

    def close(self) -> None:
        for p in self.procs:
            assert p.stdin is not None
            p.stdin.write("quit\n")
            p.stdin.flush()
        for p in self.procs:
            p.wait(timeout=15)


def row(name: str, api: float, raw: float, unit: str) -> str:
    return f"{name:<44} {api:>10.2f} {raw:>10.2f} {unit:<9} {api / raw:>7.2f}"


def api_run(args: argparse.Namespace, bodies: list[bytes]) -> dict[str, Any]:
    """One run through a fresh 3-node wmnode community: sequential via a follower and via the
    leader, then concurrent via the follower."""
    with tempfile.TemporaryDirectory() as tmp:
        community = LocalCommunity(write_local_configs(Path(tmp), 3, SECRET), Path(tmp) / "run")
        with community:
            # Steady state: every node's judges have loaded torch (their start-up would otherwise
            # compete for the CPUs with the measurement).
            community.wait_ready(timeout=180, verifiers=True)
            leader = community.leader_index()
            follower = next(i for i in range(3) if i != leader)
            f_url, l_url = community.nodes[follower].url, community.nodes[leader].url
            api_sequential(f_url, bodies[:20])  # warm-up: connections, code paths, the clock started
            rest = bodies[20:]
            via_f = api_sequential(f_url, rest[: args.sequential])
            via_l = api_sequential(l_url, rest[args.sequential : 2 * args.sequential])
            conc = rest[2 * args.sequential :]
            secs = asyncio.run(_api_concurrent(f_url, conc, args.clients))
            community.wait_converged(size=len(bodies), timeout=60)
    return {"via_f": via_f, "via_l": via_l, "tput": len(conc) / secs, "conc": len(conc), "secs": secs}


def raw_run(args: argparse.Namespace, size: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        raw = RawCommunity(Path(tmp))
        try:
            r_leader, r_follower = raw.roles()
            raw.ask(r_follower, f"seq 20 {size}")
            raw_f = raw.ask(r_follower, f"seq {args.sequential} {size}")
            raw_l = raw.ask(r_leader, f"seq {args.sequential} {size}")
            burst = raw.ask(r_follower, f"burst {args.concurrent} {size} {args.clients}")
            burst_all = raw.ask(r_follower, f"burst {args.concurrent} {size} {args.concurrent}")
        finally:
            raw.close()
        truncations = raw.truncations()
    return {"via_f": raw_f, "via_l": raw_l, "tput": burst["ok"] / burst["seconds"], "burst_all": burst_all,
            "truncations": truncations}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequential", type=int, default=100, help="sequential publishes per path")
    parser.add_argument("--concurrent", type=int, default=3000, help="publishes in the concurrent run")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--runs", type=int, default=3, help="interleaved API/raw runs; ratios are their median")
    args = parser.parse_args()

    n = 2 * args.sequential + args.concurrent + 20
    size = len(make_messages(1)[0])
    print(
        f"message size {size} bytes; {os.cpu_count()} CPUs; Python {sys.version.split()[0]}; "
        f"raw = bare pysyncobj with the same Raft settings and its own (Fernet) cipher; {args.runs} interleaved runs"
    )
    ms = 1000.0
    ratios: dict[str, list[float]] = {"p50 via follower": [], "p50 via leader": [], "throughput": []}
    for run in range(args.runs):
        api = api_run(args, make_messages(n))
        raw = raw_run(args, size)
        print(f"\nrun {run + 1} of {args.runs}")
        print(f"{'':<44} {'wmnode API':>10} {'raw':>10} {'unit':<9} {'API/raw':>7}")
        for path, name in (("via_f", "follower"), ("via_l", "leader")):
            a, r = api[path], raw[path]
            print(row(f"publish via {name}, p50", ms * statistics.median(a), ms * statistics.median(r), "ms"))
            print(row(f"publish via {name}, p99", ms * pct(a, 0.99), ms * pct(r, 0.99), "ms"))
            ratios[f"p50 via {name}"].append(statistics.median(a) / statistics.median(r))
        print(row(f"committed/s via follower, {args.clients} in flight", api["tput"], raw["tput"], "per s"))
        ratios["throughput"].append(api["tput"] / raw["tput"])
        burst_all = raw["burst_all"]
        print(
            f"raw pysyncobj with every append in flight at once: {burst_all['ok'] / burst_all['seconds']:.0f} "
            f"appends/s ({burst_all['failed']} failed); raw followers truncated already-applied entries "
            f"{raw['truncations']} times (wmnode's nodes never rewind nextIndex)"
        )
    print(f"\nmedian of {args.runs} runs, API/raw: " + ", ".join(
        f"{name} {statistics.median(values):.2f}x" for name, values in ratios.items()))  # fmt: skip


if __name__ == "__main__":
    main()
