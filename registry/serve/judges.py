"""Pre-started judge processes with limits (DESIGN §6.2): a claim's work is bounded and judged apart.

Each `Judge` is one child process (`python -m schemes.judge`) started when the node starts, so
torch and the schemes are imported before the first claim and reference models stay cached. A
job is one JSON line in and one JSON line out; the node never unpickles what a judge says. While
a job runs the node watches the child:

* memory: its resident set size (/proc/PID/statm), polled every few milliseconds; an address-space
  limit would break torch's allocator, so RSS is the measure;
* CPU time: the child sets RLIMIT_CPU to its usage plus the job's allowance, and dies of SIGXCPU;
* wall clock: a job past its deadline (a slow prediction API, say) is killed.

A judge killed for any of these is replaced at once by a fresh process; the job's answer is an
error naming the limit, which the node records as an `error` vote.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import subprocess
import sys
import threading
import time
from typing import IO, Any

from contracts.limits import JobLimits

logger = logging.getLogger(__name__)

_POLL_S = 0.005
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
#: How long a fresh judge may take to import torch and the schemes.
START_TIMEOUT_S = 120.0


class JudgeLimitError(Exception):
    """A job ran past one of its judge's limits (the judge was killed and replaced)."""


def rss_bytes(pid: int) -> int:
    """Resident set size of `pid`, 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/statm") as handle:
            return int(handle.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


class Judge:
    """One judge process; `run` serves one job at a time (callers hold it exclusively)."""

    def __init__(self, name: str, threads: int = 1, command: tuple[str, ...] = ()) -> None:
        #: The child's command line; tests substitute a stand-in that misbehaves on purpose.
        self.command = command or (sys.executable, "-m", "registry.judge.process")
        self.name, self.threads = name, threads
        self.proc: subprocess.Popen[str] | None = None
        self._lines: queue.Queue[str | None] = queue.Queue()
        self.ready = threading.Event()
        self.jobs = 0

    def start(self) -> None:
        env = {**os.environ, "WMNODE_JUDGE_THREADS": str(self.threads), "PYTHONUNBUFFERED": "1",
               "WMNODE_JUDGE_PARENT": str(os.getpid())}  # fmt: skip
        self.ready.clear()
        self._lines = queue.Queue()
        self.proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            list(self.command),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert self.proc.stdout is not None
        threading.Thread(target=self._read, args=(self.proc.stdout, self._lines), daemon=True).start()

    @staticmethod
    def _read(stream: IO[str], lines: queue.Queue[str | None]) -> None:
        for line in stream:
            lines.put(line)
        lines.put(None)

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> bool:
        if self.ready.is_set():
            return True
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            return False
        try:
            ready = line is not None and json.loads(line).get("ready") is True
        except (ValueError, AttributeError):
            ready = False
        if ready:
            self.ready.set()
        return ready

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc is not None else -1

    def run(self, job: dict[str, Any], limits: JobLimits) -> dict[str, Any]:
        """Send `job`, wait for its answer within `limits`; JudgeLimitError (and a fresh judge) past them."""
        if not self.wait_ready():
            self.restart()
            raise JudgeLimitError(f"judge {self.name} did not start within {START_TIMEOUT_S:g} s")
        assert self.proc is not None and self.proc.stdin is not None
        self.jobs += 1
        try:
            self.proc.stdin.write(json.dumps({**job, "cpu_seconds": limits.cpu_seconds}) + "\n")
            self.proc.stdin.flush()
        except OSError:
            self.restart()
            raise JudgeLimitError(f"judge {self.name} had died; it was restarted") from None
        deadline, peak = time.monotonic() + limits.wall_seconds, 0
        while True:
            try:
                line = self._lines.get(timeout=_POLL_S)
            except queue.Empty:
                line = ""
            if line is None:
                code = self.proc.wait()
                self.restart()
                what = "its CPU time limit" if code in (-24, 152) else f"an exit ({code})"
                raise JudgeLimitError(f"the judge was stopped by {what} ({limits.cpu_seconds} CPU s allowed)")
            if line:
                try:
                    answer: dict[str, Any] = json.loads(line)
                    if not isinstance(answer, dict):
                        raise ValueError("not an object")
                except ValueError:
                    # Out of step with the protocol: its next line could answer another job.
                    self.restart()
                    raise JudgeLimitError("the judge wrote something that is not an answer; it was restarted") from None
                answer["peak_rss"] = peak
                return answer
            peak = max(peak, rss_bytes(self.proc.pid))
            if peak > limits.memory_bytes:
                self.restart()
                raise JudgeLimitError(
                    f"the judge went over its memory limit ({peak >> 20} MiB of {limits.memory_bytes >> 20} MiB)"
                )
            if time.monotonic() > deadline:
                self.restart()
                raise JudgeLimitError(f"the judge went over its wall-clock limit of {limits.wall_seconds:g} s")

    def restart(self) -> None:
        self.stop()
        self.start()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        if self.proc is not None:
            for stream in (self.proc.stdin, self.proc.stdout):
                if stream is not None:
                    try:
                        stream.close()
                    except OSError:
                        pass
        self.proc = None
