"""Judge processes and their limits (registry.judges, DESIGN §6.2), with stand-in children that misbehave.

A stand-in speaks the judges' JSON-lines protocol (`{"ready": true}` first, then one answer line per
job) and does what each job's `op` asks: answer, eat memory, spin the CPU under RLIMIT_CPU (as
registry/judge/process.py's `_limit_cpu` does), sleep, die. Limits are small, so each case takes a second or two.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from contracts.fetch import FetchPolicy
from contracts.limits import JobLimits
from registry.serve.jobs import JudgeJob
from registry.serve.judges import Judge, JudgeLimitError, rss_bytes

STAND_IN = r"""
import json, os, resource, sys, time

resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # SIGXCPU dumps core by default: not here
print(json.dumps({"ready": True, "pid": os.getpid()}), flush=True)
held = []
for line in sys.stdin:
    job = json.loads(line)
    op = job["op"]
    if op == "eat":  # touch every page, so the memory is resident
        held.append(b"\x01" * (job["mib"] << 20))
        time.sleep(30)
    elif op == "spin":  # schemes/judge.py _limit_cpu: this job may use cpu_seconds more CPU seconds
        used = resource.getrusage(resource.RUSAGE_SELF)
        _, hard = resource.getrlimit(resource.RLIMIT_CPU)
        resource.setrlimit(resource.RLIMIT_CPU, (int(used.ru_utime + used.ru_stime) + 1 + job["cpu_seconds"], hard))
        while True:
            pass
    elif op == "sleep":
        time.sleep(job["seconds"])
    elif op == "die":
        os._exit(job["code"])
    elif op == "noise":  # a line that is not the protocol's, then the answer
        print("warning: something a library printed", flush=True)
    print(json.dumps({"op": op, "job": job, "pid": os.getpid(),
                      "threads": os.environ.get("WMNODE_JUDGE_THREADS")}), flush=True)
"""

ROOMY = JobLimits(memory_bytes=512 << 20, cpu_seconds=30, wall_seconds=20.0)


@pytest.fixture
def judge() -> Iterator[Judge]:
    judge = Judge("stand-in", threads=3, command=(sys.executable, "-c", STAND_IN))
    judge.start()
    assert judge.wait_ready(timeout=30)
    try:
        yield judge
    finally:
        judge.stop()


def serves(judge: Judge, **job: Any) -> dict[str, Any]:
    """A job the stand-in answers within roomy limits, from a live process."""
    answer = judge.run({"op": "echo", **job}, ROOMY)
    assert answer["pid"] == judge.pid and answer["op"] == "echo"
    return answer


def test_a_judge_answers_one_line_per_job_with_its_limits_and_threads(judge: Judge) -> None:
    first = serves(judge, n=1)
    again = serves(judge, n=2)
    assert (first["job"]["n"], again["job"]["n"]) == (1, 2)
    assert first["job"]["cpu_seconds"] == ROOMY.cpu_seconds  # the child sets its own RLIMIT_CPU from it
    assert first["threads"] == "3"
    assert judge.jobs == 2
    # While a job runs the node samples the child's resident memory, and reports the peak it saw.
    slow = judge.run({"op": "sleep", "seconds": 0.2}, ROOMY)
    assert 1 << 20 < slow["peak_rss"] < ROOMY.memory_bytes


def test_a_job_past_the_memory_limit_is_killed_and_the_judge_restarts(judge: Judge) -> None:
    before = judge.pid
    started = time.monotonic()
    with pytest.raises(JudgeLimitError, match=r"^the judge went over its memory limit \(\d+ MiB of 64 MiB\)$"):
        judge.run({"op": "eat", "mib": 256}, JobLimits(64 << 20, 30, 20.0))
    assert time.monotonic() - started < 10  # killed when it crossed the limit, not at the wall clock
    assert judge.pid != before and rss_bytes(before) == 0  # the old child is gone, a fresh one serves
    serves(judge)


def test_a_job_that_spins_is_killed_by_its_cpu_limit(judge: Judge) -> None:
    before = judge.pid
    with pytest.raises(JudgeLimitError, match=r"^the judge was stopped by its CPU time limit \(1 CPU s allowed\)$"):
        judge.run({"op": "spin"}, JobLimits(512 << 20, 1, 20.0))
    assert judge.pid != before
    serves(judge)


def test_a_job_past_the_wall_clock_is_killed_and_the_judge_restarts(judge: Judge) -> None:
    before = judge.pid
    started = time.monotonic()
    with pytest.raises(JudgeLimitError, match=r"^the judge went over its wall-clock limit of 0\.5 s$"):
        judge.run({"op": "sleep", "seconds": 30}, JobLimits(512 << 20, 30, 0.5))
    assert 0.5 <= time.monotonic() - started < 10
    assert judge.pid != before
    serves(judge)


def test_a_judge_that_dies_during_a_job_is_restarted(judge: Judge) -> None:
    before = judge.pid
    with pytest.raises(JudgeLimitError, match=r"^the judge was stopped by an exit \(3\) \(30 CPU s allowed\)$"):
        judge.run({"op": "die", "code": 3}, ROOMY)
    assert judge.pid != before
    serves(judge)


def test_a_judge_killed_between_jobs_is_restarted_on_the_next(judge: Judge) -> None:
    serves(judge)
    dead = judge.pid
    os.kill(dead, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while rss_bytes(dead) and time.monotonic() < deadline:  # until the kernel has let it go
        time.sleep(0.01)
    with pytest.raises(JudgeLimitError, match=r"had died; it was restarted|stopped by an exit \(-9\)"):
        judge.run({"op": "echo"}, ROOMY)
    assert judge.pid != dead
    serves(judge)


def test_a_child_that_never_says_ready_is_not_used() -> None:
    judge = Judge("mute", command=(sys.executable, "-c", "import time; print('{\"ready\": false}', flush=True)"))
    judge.start()
    try:
        assert judge.wait_ready(timeout=10) is False
        assert not judge.ready.is_set()
    finally:
        judge.stop()


def test_a_stray_line_on_the_protocol_is_an_error_and_never_the_next_jobs_answer(judge: Judge) -> None:
    with pytest.raises(JudgeLimitError):
        judge.run({"op": "noise", "n": 1}, ROOMY)
    assert serves(judge, n=2)["job"]["n"] == 2


def test_the_real_judge_answers_a_bad_job_with_an_error_and_keeps_serving() -> None:
    """schemes.judge itself: a job it cannot do is an answer (an error), never a dead judge."""
    judge = Judge("real", threads=1)
    judge.start()
    # A ready judge holds torch and the zoo: 529-530 MiB measured, over ROOMY's 512 MiB for fakes.
    roomy = replace(ROOMY, memory_bytes=2 << 30)
    try:
        assert judge.wait_ready()
        pid = judge.pid
        job = JudgeJob(
            scheme="no-such-scheme", key="00" * 32, info_path="/nonexistent/info.json",
            verifier_path="/nonexistent/verifier", model_path="/nonexistent/suspect", predict_uri=None,
            fetch=FetchPolicy(), references=(), threshold_floor=0.0, max_false_positive=1e-6, controls=8,
            control_seed="00" * 32,
        )  # fmt: skip
        answer = judge.run(job.to_json(), roomy)
        assert "no-such-scheme" in answer["error"] and answer["seconds"] >= 0
        answer = judge.run({"op": "judge"}, roomy)  # a job line the node never writes: refused, named
        assert answer["error"].startswith("judge job: missing field(s) ['scheme', 'key'"), answer
        assert judge.pid == pid
    finally:
        judge.stop()
