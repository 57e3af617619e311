"""A bare pysyncobj node with the same Raft settings as wmnode, driven over stdin for the benchmark.

Commands (one per line): `role`, `seq N SIZE` (N synchronous appends, latency each),
`burst N SIZE WINDOW` (N callback appends with at most WINDOW outstanding), `quit`.
Answers are one JSON line each.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time

from pysyncobj import SyncObj, SyncObjConf, replicated

from registry.log.raft_node import RaftSettings


class RawLog(SyncObj):  # type: ignore[misc]
    def __init__(self, me: str, peers: list[str], password: str) -> None:
        s = RaftSettings()
        conf = SyncObjConf(
            password=password,
            appendEntriesUseBatch=s.use_batch,
            autoTickPeriod=s.tick_s,
            connectionRetryTime=s.connection_retry_s,
            commandsWaitLeader=True,
        )
        super().__init__(me, peers, conf=conf)
        self.entries: list[bytes] = []

    @replicated  # type: ignore[misc]
    def append(self, data: bytes) -> int:
        self.entries.append(data)
        return len(self.entries)


def seq(log: RawLog, n: int, size: int) -> list[float]:
    out = []
    for _ in range(n):
        payload = os.urandom(size)
        t = time.perf_counter()
        log.append(payload, sync=True, timeout=10)
        out.append(time.perf_counter() - t)
    return out


def burst(log: RawLog, n: int, size: int, window: int) -> dict[str, float]:
    slots = threading.Semaphore(window)
    done = threading.Event()
    count = [0, 0]
    lock = threading.Lock()

    def cb(res: object, err: int) -> None:
        with lock:
            count[0 if err == 0 else 1] += 1
            if sum(count) == n:
                done.set()
        slots.release()

    payloads = [os.urandom(size) for _ in range(n)]
    t = time.perf_counter()
    for p in payloads:
        slots.acquire()
        log.append(p, callback=cb)
    done.wait(60)
    return {"seconds": time.perf_counter() - t, "ok": count[0], "failed": count[1]}


def main() -> None:
    me, password, *peers = sys.argv[1:]
    log = RawLog(me, peers, password)
    for line in sys.stdin:
        cmd, *args = line.split()
        if cmd == "role":
            status = log.getStatus()
            answer: object = {"leader": str(status["leader"]), "self": me, "ready": status["leader"] is not None}
        elif cmd == "seq":
            answer = seq(log, int(args[0]), int(args[1]))
        elif cmd == "burst":
            answer = burst(log, int(args[0]), int(args[1]), int(args[2]))
        else:
            break
        print(json.dumps(answer), flush=True)
    log.destroy_synchronous()


if __name__ == "__main__":
    main()
