"""A judge: the child process in which a node verifies claims (DESIGN §6.2), `python -m schemes.judge`.

The node (registry.judges) starts a few of these ahead of time, so torch and the schemes are
imported once and reference models stay loaded; each then serves one job at a time, as one line
of JSON on stdin answered by one line of JSON on stdout (never a pickle: the node reads what a
process that handled a stranger's files wrote). The node watches each judge's memory and wall
clock and kills it past its limits; the judge caps its own CPU time per job with RLIMIT_CPU.

Jobs:

* `judge`: run the publish's scheme on the suspect, then on every reference model that matches it
  (DESIGN §6.1 rule 3), and decide: `owner` only when the suspect passes, no reference passes, the
  threshold meets the community's floor and the false-positive bound (registry.bounds, at the
  larger of the scheme's chance rate and the references' best score) is within the community's
  maximum.
* `build`: train a reference model (schemes.references) and write it as one model artifact.
"""

from __future__ import annotations

import ctypes
import fcntl
import hashlib
import json
import os
import resource
import signal
import sys
import time
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

import schemes  # noqa: F401 - registers every scheme
from contracts.bounds import bound_text, false_positive_bound
from contracts.encoding import is_int
from contracts.errors import MessageError, SchemeError, WmnodeError, ZooError
from contracts.limits import BuildLimits
from contracts.references import ReferenceSpec
from registry.serve.jobs import BuildJob, Built, JudgeJob, JudgeVerdict, read_job
from schemes.data.community import pin
from schemes.models.serving import RemotePredictor
from schemes.models.zoo import ModelCard, model_from_bytes, model_to_bytes, read_weights_bytes, strict_json
from schemes.watermarks.base import Verdict, get_scheme
from schemes.watermarks.controls import control_figures, control_keys, verify_with_controls
from schemes.watermarks.suspect import PixelCodec, pixel_predict, pixel_view, require_shape
from schemes.workflow.references import build_reference, expected_card

_REFERENCES: dict[str, tuple[nn.Module, ModelCard]] = {}
_MAX_CACHED = 16


def _limit_cpu(seconds: int) -> None:
    """This job may use `seconds` more CPU seconds; then the kernel sends SIGXCPU (which kills)."""
    used = resource.getrusage(resource.RUSAGE_SELF)
    spent = int(used.ru_utime + used.ru_stime) + 1
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    soft = spent + seconds
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def _reference(model_hash: str, path: str, max_bytes: int, limits: BuildLimits) -> tuple[nn.Module, ModelCard]:
    cached = _REFERENCES.get(model_hash)
    if cached is None:
        cached = model_from_bytes(Path(path).read_bytes(), max_bytes=max_bytes, what="reference model", limits=limits)
        if len(_REFERENCES) >= _MAX_CACHED:
            _REFERENCES.pop(next(iter(_REFERENCES)))
        _REFERENCES[model_hash] = cached
    return cached


def _per_mille(value: float) -> int:
    return max(0, min(1000, round(1000 * float(value))))


def _codec(values: Any) -> PixelCodec:
    return PixelCodec(values["mean"], values["std"])


def _suspect(job: JudgeJob, info: dict[str, Any], limits: BuildLimits) -> tuple[Any, Any]:
    """The suspect as its own function of raw pixels (schemes.suspect), and its card (None: an API)."""
    policy = job.fetch
    if job.predict_uri is not None:
        deadline = policy.timeout_s if job.predict_deadline_s is None else job.predict_deadline_s
        api = RemotePredictor(job.predict_uri, replace(policy, timeout_s=min(policy.timeout_s, deadline)))
        return pixel_predict(api, _codec(info)), None
    assert job.model_path is not None  # JudgeJob.from_json: exactly one of the two names the suspect
    model, card = model_from_bytes(
        Path(job.model_path).read_bytes(), max_bytes=policy.max_bytes, what="suspect model", limits=limits
    )
    require_shape(model, info["input_shape"])
    return model, card


def judge(job: JudgeJob | Mapping[str, Any]) -> JudgeVerdict:
    """One claim: the suspect, its controls, then the matching references; the vote's fields."""
    job = job if isinstance(job, JudgeJob) else JudgeJob.from_json(job)
    scheme = get_scheme(job.scheme)
    key = bytes.fromhex(job.key)
    for dataset in job.datasets:  # checked against the community's manifest at node start
        pin(dataset.name, dataset.format, Path(dataset.path), dataset.num_classes)
    limits = BuildLimits(job.build.architectures, job.build.max_parameters)
    seed = bytes.fromhex(job.control_seed)
    controls = control_keys(seed, job.controls)
    try:
        info = strict_json(Path(job.info_path).read_bytes(), "info")
        verifier = read_weights_bytes(Path(job.verifier_path).read_bytes(), "verifier artifact")
        suspect, card = _suspect(job, info, limits)
        own = _codec(info) if card is None else PixelCodec(card.mean, card.std)
        with pixel_view(suspect, _codec(info), own) if card is not None else nullcontext(suspect):
            verdict, checks, survey = verify_with_controls(scheme, suspect, key, controls, verifier, info, seed)
    except (SchemeError, ZooError, MessageError) as exc:
        # The claimant's artifacts (or the suspect it named) cannot carry this watermark: the
        # claim proves nothing, which is `not-owner`, not a failure of this node.
        return JudgeVerdict("not-owner", 0, 0, f"refused: {exc.diagnostics()}"[:500], bound_text(1.0))
    checked, best, passing = [], 0.0, []
    for ref in job.references:
        model, ref_card = _reference(ref.model_hash, ref.path, job.fetch.max_bytes, limits)
        try:
            with pixel_view(model, _codec(info), PixelCodec(ref_card.mean, ref_card.std)):
                result = scheme.verify(model, key, verifier, info)
            ref_score, ref_passed = result.score, result.passed
        except WmnodeError:  # a reference this scheme cannot read at all passes nothing
            ref_score, ref_passed = 0.0, False
        checked.append(ref.model_hash)
        best = max(best, ref_score)
        if ref_passed:
            passing.append((ref.model_hash, ref_score))
    return _decide(job, scheme.name, scheme.bound, verdict, checks, survey, checked, best, passing)


def _decide(
    job: JudgeJob,
    name: str,
    kind: str,
    verdict: Verdict,
    controls: list[Verdict],
    survey: Verdict | None,
    checked: list[str],
    best: float,
    passing: list[tuple[str, float]],
) -> JudgeVerdict:
    n = int(verdict.details.get("n", 0))
    chance = float(verdict.details.get("chance_rate", 0.5))
    figures = control_figures(controls, chance, verdict.threshold)
    p = max(chance, best, figures.rate_bound)
    # Union bounds over what the claimant chose among at embed time (function-coupled's candidate)
    # and over the earlier claims of this publish on this model (registry.log: tries).
    choices = int(verdict.details.get("choices", 1)) * job.tries
    # A p-value: the chance that a key-independent model answers at least as the suspect did (and
    # at least the threshold). A reference that reads part of the key (a parent checkpoint whose
    # early stages an MTLSign head also reads: 0.63) raises p, and a suspect far above it still stands.
    at = max(verdict.threshold, verdict.score) if verdict.passed else verdict.threshold
    bound = false_positive_bound(kind, n, at, p) if n > 0 else 1.0
    if survey is not None:  # answers that share one choice: that choice's null, measured (schemes.base)
        bound = max(bound, survey.score)
    bound = min(1.0, choices * bound)
    word = "found" if verdict.passed else "not found"
    reason = f"{name} watermark {word}: score {verdict.score:.3f}, threshold {verdict.threshold:g}"
    verdict_word = "owner" if verdict.passed else "not-owner"
    if verdict.passed and verdict.threshold < job.threshold_floor:
        verdict_word = "not-owner"
        reason += f"; the threshold is below the community's floor {job.threshold_floor:g}"
    elif verdict.passed and figures.near:
        verdict_word = "not-owner"
        reason += (f"; {figures.near} of {figures.count} control keys score {figures.max_score:.3f}, near the "
                   f"threshold (at least {figures.near_score:.3f}): the suspect answers so for any key")  # fmt: skip
    elif verdict.passed and passing:
        verdict_word = "not-owner"
        reason += f"; reference model {passing[0][0][:12]}… passes too (score {passing[0][1]:.3f}): proves nothing"
    elif verdict.passed and bound > job.max_false_positive:
        verdict_word = "not-owner"
        reason += f"; false-positive bound {bound:.2e} is over the community's maximum {job.max_false_positive:g}"
    reason += f"; null p {p:.3f} ({figures.count} controls: best {figures.max_score:.3f}, rate ≤ " + (
        f"{figures.rate_bound:.3f}), " + (f"{len(checked)} reference model(s)" if checked else "no reference model")
    )
    if survey is not None:
        reason += f", shared choice {survey.score:.2e} ({survey.details.get('generic', 0)} generic)"
    if choices > 1:
        reason += f", ×{choices} for the claimant's choices and tries"
    if "reason" in verdict.details:
        reason += f" ({verdict.details['reason']})"
    return JudgeVerdict(
        verdict_word,
        _per_mille(verdict.score),
        _per_mille(verdict.threshold),
        reason,
        bound_text(bound),
        tuple(checked),
        figures.text(),
    )


def build(job: BuildJob | Mapping[str, Any]) -> Built:
    """Train the reference `job` names and write it to `job.out`, through this machine's cache.

    Members of one community on one machine (the local example, the demo, tests) would train the
    same recipe on the same software bit for bit; the cache (keyed by the recipe and the torch
    version, under a file lock) lets the first one train and the others read its file. Members on
    their own machines train each for themselves, which is what makes a majority of equal hashes
    mean something."""
    job = job if isinstance(job, BuildJob) else BuildJob.from_json(job)
    recipe = ReferenceSpec(job.recipe, job.arch, job.dataset, job.input_shape, job.seed, job.epochs)
    fields = {
        k: v for k, v in job.to_json().items() if k in ("recipe", "arch", "dataset", "input_shape", "seed", "epochs")
    }
    spec = json.dumps({**fields, "torch": torch.__version__, "format": 1}, sort_keys=True)  # the cache's key
    cache = _private_dir(
        Path(os.environ.get("WMNODE_REFERENCE_CACHE") or Path.home() / ".cache" / "wmnode" / "references")
    )
    entry = cache / (hashlib.sha256(spec.encode()).hexdigest() + ".safetensors")
    lock_fd = os.open(cache / "LOCK", os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    with os.fdopen(lock_fd, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not entry.is_file() or entry.is_symlink():
            model, card = build_reference(recipe)
            tmp = entry.with_suffix(f".{os.getpid()}.tmp")
            tmp.unlink(missing_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(model_to_bytes(model, card))
            os.replace(tmp, entry)
        fd = os.open(entry, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as handle:
            data = handle.read()
    _, card = model_from_bytes(data, what="cached reference model")
    arch, classes = expected_card(recipe)
    wanted = {"reference": recipe.recipe, "seed": recipe.seed, "epochs": recipe.epochs, "dataset": recipe.dataset}
    if (card.arch, card.num_classes, card.extra) != (arch, classes, wanted):
        raise WmnodeError(f"the cached reference {entry} is not what recipe {recipe.recipe!r} trains; remove it")
    Path(job.out).write_bytes(data)
    return Built(card.arch, card.num_classes, len(data))


def _private_dir(path: Path) -> Path:
    """The cache directory, created 0700; refused when it is a link or another user's."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = path.lstat()
    if path.is_symlink() or info.st_uid != os.getuid() or info.st_mode & 0o022:
        raise WmnodeError(f"the reference cache {path} must be a directory of this user's, writable by nobody else")
    return path


def _die_with_parent() -> None:
    """Linux: a judge whose node is killed (SIGKILL leaves children behind) is killed too."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    parent = os.environ.get("WMNODE_JUDGE_PARENT")
    if parent is not None and os.getppid() != int(parent):  # the node died before prctl took effect
        os._exit(1)


def _serve(stdin: Any, stdout: Any) -> None:
    _die_with_parent()
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a judge killed at its limit leaves no core file
    threads = int(os.environ.get("WMNODE_JUDGE_THREADS", "1"))
    torch.set_num_threads(max(1, threads))
    stdout.write(json.dumps({"ready": True, "pid": os.getpid()}) + "\n")
    stdout.flush()
    for line in stdin:
        started = time.perf_counter()
        try:
            answer = _run(line)
        except WmnodeError as exc:
            answer = {"error": exc.diagnostics()[:500]}
        except Exception as exc:  # noqa: BLE001 - a bad artifact must not kill the judge
            answer = {"error": f"internal error: {type(exc).__name__}: {str(exc)[:300]}"}
        answer["seconds"] = time.perf_counter() - started
        stdout.write(json.dumps(answer) + "\n")
        stdout.flush()


def _run(line: str) -> dict[str, Any]:
    """One job line: its CPU allowance (registry.serve.judges adds it to every job), then the job."""
    try:
        obj = json.loads(line)
    except ValueError as exc:
        raise MessageError(f"a job line is not JSON: {exc}") from None
    seconds = obj.pop("cpu_seconds", 60) if isinstance(obj, dict) else 60
    if not is_int(seconds, low=1):
        raise MessageError(f"cpu_seconds must be a positive integer, got {seconds!r:.40}")
    _limit_cpu(seconds)
    job = read_job(obj)
    return (judge(job) if isinstance(job, JudgeJob) else build(job)).to_json()


if __name__ == "__main__":
    # The protocol owns stdout: anything a library prints goes to stderr instead.
    protocol, sys.stdout = sys.stdout, sys.stderr
    _serve(sys.stdin, protocol)
