"""Null calibration: how often a random key (no search) passes each scheme's verify on models it was never embedded in.

A squatter holds a real bundle of a scheme (its own info and verifier artifact, embedded under its
own key) and tries random 32-byte keys, drawn from a NumPy generator seeded by `--seed` (no search,
no key chosen for the suspect), against models none of those keys was embedded in:

* LeNet-5 on the embedded digits data (`--keys` keys each): a clean one (the `plain` reference
  recipe; for a scheme with extra outputs also a clean one with them, trained on the task alone),
  one watermarked by another owner's key with the same scheme, the squatter's own watermarked model,
  and one watermarked by another scheme;
* one open architecture (`--open-keys` keys each): timm's ResNet-18 at 3×32×32 from random init,
  trained on digits (the owner's clean model) and the squatter's own model, which is that clean
  model watermarked by fine-tuning (`wmnode embed --model`), for the schemes in `--open-schemes`.

Every embedding uses the scheme's `quick` config (`Scheme.quick`). A row counts the keys that pass,
the ones the scheme refuses (a `WmnodeError`: a suspect that cannot hold the watermark, which a
judge votes `not-owner`), the largest score beside the threshold, and the largest false-positive
bound a verdict of the row states (what its vote would say had the key passed), computed as
`schemes.judge._decide` does from the verdict alone (no reference models, no control keys):
`false_positive_bound(scheme.bound, n, threshold, p)` with n and p (the chance rate) from the
verdict's details, p 0.5 where it names none, the bound 1 where it names no n, times the
verdict's `choices` where it names them. A white-box scheme that cannot read a model at all
(passport on a model without passport layers) returns a failed verdict: counted as a fail, and the
notes under the table say how many and why.

The work runs on `--workers` single-threaded processes (2: one a core of a 2-core machine).

Run: .venv/bin/python benchmarks/null_calibration.py [--keys 1000] [--open-keys 200] [--seed 0]
     [--open-schemes function-coupled,new-label] [--open-epochs 3] [--workers 2] [--threads 1]
"""

from __future__ import annotations

import argparse
import collections
import multiprocessing
import os
import resource
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import nn

from contracts.bounds import false_positive_bound
from contracts.datasets import COMMUNITY_SPLIT_SEED, COMMUNITY_TEST_FRACTION
from contracts.errors import WmnodeError
from contracts.identity import Identity
from contracts.references import ReferenceSpec
from mtlsign.verify import Verdict
from schemes import list_schemes
from schemes.data.dataset import Dataset
from schemes.data.datasets import load_dataset
from schemes.models.zoo import ModelCard, load_model, save_model
from schemes.training.loops import accuracy, train_classifier
from schemes.watermarks.base import Scheme, get_scheme
from schemes.workflow.bundle import Bundle, load_bundle
from schemes.workflow.pipeline import embed_to_bundle
from schemes.workflow.references import build_reference

LENET, DATASET, LENET_SHAPE = "lenet5", "digits", (1, 28, 28)
OPEN_ARCH, OPEN_SHAPE = "timm:resnet18", (3, 32, 32)
#: The schemes embedded on the open architecture by default, and why the others are not: a
#: ResNet-18 epoch over digits took about 25 s on one core here, and each default scheme's quick
#: embedding (by fine-tuning the owner's model) and its 400 verifications take a few minutes.
OPEN_SCHEMES = ("function-coupled", "new-label")
OPEN_LEFT_OUT = {
    "blind": "its quick embedding trains ResNet-18 24 epochs beside an encoder and a discriminator "
    "(over 10 minutes on one core)",
    "mtlsign": "its quick embedding trains ResNet-18 40 epochs with domain adaptation (over 15 minutes on "
    "one core), and each key queries 600 QR codes",
    "passport": "each key's verify runs 14 passes over 300 samples (the key's passports, 4 noise levels "
    "× 2 draws, 5 fakes), about a training epoch's compute: over an hour for 200 keys on ResNet-18",
}
#: Whose LeNet-5 each scheme is tried on as "another scheme": one of the same output width where
#: there is one (new label's Δ exists in no other scheme: its row shows the refusal).
OTHER_SCHEME = {
    "blind": "function-coupled",
    "function-coupled": "blind",
    "mtlsign": "blind",
    "new-label": "function-coupled",
    "passport": "mtlsign",
}
_CLEAN_EPOCHS = 10

#: Where progress lines go (main passes print).
Say = Callable[[str], None]


@dataclass(frozen=True)
class Row:
    """One scheme's verify, under random keys, on one suspect."""

    scheme: str
    model: str
    keys: int
    passed: int
    refused: int
    max_score: float | None
    threshold: float | None
    max_bound: float | None
    seconds: float
    notes: tuple[str, ...]


@dataclass(frozen=True)
class Suspect:
    """A model the keys are tried on: its label in the table and its file (a bundle or model directory)."""

    label: str
    path: Path


#: One unit of work for a worker process: a progress line (an embedding, a training) or a row.
Job = Callable[[], "Row | str"]

# --------------------------------------------------------------------------------------------
# What a worker process does


def stated_bound(scheme: Scheme, verdict: Verdict) -> float:
    """The false-positive bound a vote on `verdict` states, as the judge's `_decide` computes it
    from the verdict alone: no reference models or control keys (p is the verdict's own chance
    rate), one try, times the choices the claimant had (function-coupled's candidates)."""
    n = int(verdict.details.get("n", 0))
    p = float(verdict.details.get("chance_rate", 0.5))
    bound = false_positive_bound(scheme.bound, n, verdict.threshold, p) if n > 0 else 1.0
    return min(1.0, int(verdict.details.get("choices", 1)) * bound)


def calibrate(scheme: Scheme, squatter: Bundle, label: str, model: nn.Module, keys: Sequence[bytes]) -> Row:
    """The squatter's info and verifier, each random key in turn, on `model`."""
    started = time.perf_counter()
    verdicts: list[Verdict] = []
    notes: collections.Counter[str] = collections.Counter()
    for key in keys:
        try:
            verdict = scheme.verify(model, key, squatter.verifier, squatter.info)
        except WmnodeError as exc:
            notes[f"refused: {exc.diagnostics()[:110]}"] += 1
            continue
        verdicts.append(verdict)
        if "reason" in verdict.details:
            notes[f"failed, unreadable: {str(verdict.details['reason'])[:100]}"] += 1
    return Row(
        scheme=scheme.name,
        model=label,
        keys=len(keys),
        passed=sum(v.passed for v in verdicts),
        refused=len(keys) - len(verdicts),
        max_score=max((v.score for v in verdicts), default=None),
        threshold=max((v.threshold for v in verdicts), default=None),
        max_bound=max((stated_bound(scheme, v) for v in verdicts), default=None),
        seconds=time.perf_counter() - started,
        notes=tuple(f"{count} × {text}" for text, count in sorted(notes.items())),
    )


def verify_row(scheme: str, squatter: Path, suspect: Suspect, keys: tuple[bytes, ...]) -> Row:
    """`calibrate` with the squatter's bundle and the suspect read from their directories."""
    model, _ = load_model(suspect.path)
    return calibrate(get_scheme(scheme), load_bundle(squatter), suspect.label, model.eval(), keys)


def embed(scheme: str, role: str, out: Path, nonce: bytes, seed: int, model_path: Path | None = None) -> str:
    """`scheme` with its quick config into a fresh LeNet-5 (or, with `model_path`, into that model
    by fine-tuning) through the CLI's own library call, as `role`; a line on whether it took."""
    began = time.perf_counter()
    r = embed_to_bundle(Identity.from_seed(f"wmnode/benchmarks/null_calibration/{role}/{seed}"), LENET, DATASET,
                        out, scheme=scheme, overrides=dict(get_scheme(scheme).quick), nonce=nonce,
                        model_path=model_path)  # fmt: skip
    return (f"embedded {out.name}: wm_score {r['wm_score']:.3f} (threshold {r['threshold']:.3f}), "
            f"accuracy {r['accuracy']:.3f}, {time.perf_counter() - began:.0f} s")  # fmt: skip


def community_digits(shape: tuple[int, int, int]) -> Dataset:
    """Digits at `shape`, split as the community splits it (every embedding's data)."""
    return load_dataset(DATASET, input_shape=shape, seed=COMMUNITY_SPLIT_SEED, test_fraction=COMMUNITY_TEST_FRACTION)


def clean_lenet(out: Path, seed: int, extra_classes: int) -> str:
    """A clean LeNet-5, saved to `out`: the `plain` reference recipe, or, with extra outputs, the
    same training of a LeNet-5 with those outputs (never a label for them)."""
    data = community_digits(LENET_SHAPE)
    if extra_classes == 0:
        model, card = build_reference(ReferenceSpec("plain", LENET, DATASET, LENET_SHAPE, seed, _CLEAN_EPOCHS))
    else:
        card = ModelCard(LENET, data.num_classes + extra_classes, LENET_SHAPE, data.mean, data.std)
        torch.manual_seed(seed)
        model = card.build()
        train_classifier(model, data.x_train, data.y_train, epochs=_CLEAN_EPOCHS, lr=1e-3, batch_size=64,
                         generator=torch.Generator().manual_seed(seed))  # fmt: skip
    save_model(model.eval(), card, out)
    return f"trained {out.name}: accuracy {accuracy(model, data.x_test, data.y_test):.3f}"


def open_owner_model(out: Path, seed: int, epochs: int) -> str:
    """The owner's open model, saved to `out` in the Hub layout: ResNet-18 built from its card with
    random init, trained on digits at 3×32×32."""
    began = time.perf_counter()
    data = community_digits(OPEN_SHAPE)
    card = ModelCard(OPEN_ARCH, data.num_classes, OPEN_SHAPE, data.mean, data.std, classifier="fc")
    torch.manual_seed(seed)
    model = card.build()
    train_classifier(model, data.x_train, data.y_train, epochs=epochs, lr=1e-3, batch_size=64,
                     generator=torch.Generator().manual_seed(seed))  # fmt: skip
    save_model(model.eval(), card, out)
    return (f"trained the owner's {OPEN_ARCH}: accuracy {accuracy(model, data.x_test, data.y_test):.3f}, "
            f"{time.perf_counter() - began:.0f} s")  # fmt: skip


def _init_worker(threads: int) -> None:
    # One thread a worker, a worker a core: two torch threads on a loaded 2-core machine made each
    # verify ten times slower (their spin-waits), where two single-threaded workers share it well.
    torch.set_num_threads(threads)


# --------------------------------------------------------------------------------------------
# The plan: embeddings and clean models first, then rows (the open embeddings beside the LeNet-5 rows)


def other_scheme(name: str) -> str:
    """The scheme whose LeNet-5 `name` is tried on as another scheme's model."""
    return OTHER_SCHEME.get(name) or next(s.name for s in list_schemes() if s.name != name)


def random_keys(rng: np.random.Generator, count: int) -> tuple[bytes, ...]:
    """`count` random 32-byte watermark keys, in the order they are tried."""
    return tuple(rng.bytes(32) for _ in range(count))


def lenet_suspects(name: str, work: Path) -> list[Suspect]:
    """The LeNet-5 models `name`'s random keys are tried on."""
    extra, other = get_scheme(name).extra_classes, other_scheme(name)
    cleans = [Suspect("lenet5 clean", work / "lenet5-clean")]
    if extra:
        cleans.append(Suspect(f"lenet5 clean, +{extra} output(s) untrained", work / f"lenet5-clean-{extra}"))
    return [
        *cleans,
        Suspect("lenet5 same scheme, other key", work / f"lenet5-{name}-victim"),
        Suspect("lenet5 squatter's own", work / f"lenet5-{name}-squatter"),
        Suspect(f"lenet5 {other}", work / f"lenet5-{other}-squatter"),
    ]


def plan(names: list[str], open_names: list[str], work: Path, args: argparse.Namespace) -> list[list[Job]]:
    """The jobs, in phases whose jobs run in parallel; every random draw is made here, in order."""
    rng, seed = np.random.default_rng(args.seed), args.seed
    owner = work / "resnet18-owner"
    first: list[Job] = [partial(open_owner_model, owner, seed, args.open_epochs)] if open_names else []
    needed = sorted({*names, *(other_scheme(n) for n in names)})
    first += [partial(embed, n, "squatter", work / f"lenet5-{n}-squatter", rng.bytes(16), seed) for n in needed]
    first += [partial(embed, n, "victim", work / f"lenet5-{n}-victim", rng.bytes(16), seed) for n in names]
    extras = sorted({get_scheme(n).extra_classes for n in names} - {0})
    first += [partial(clean_lenet, work / ("lenet5-clean" + f"-{e}" * bool(e)), seed, e) for e in [0, *extras]]
    keys, open_keys = random_keys(rng, args.keys), random_keys(rng, args.open_keys)
    second: list[Job] = [
        partial(embed, n, "squatter", work / f"resnet18-{n}-squatter", rng.bytes(16), seed, owner) for n in open_names
    ]
    second += [partial(verify_row, n, work / f"lenet5-{n}-squatter", s, keys) for n in names
               for s in lenet_suspects(n, work)]  # fmt: skip
    third: list[Job] = [
        partial(verify_row, n, work / f"resnet18-{n}-squatter", s, open_keys)
        for n in open_names
        for s in (
            Suspect("resnet18 clean (owner's)", owner),
            Suspect("resnet18 squatter's own", work / f"resnet18-{n}-squatter"),
        )
    ]
    return [first, second, third]


def run(phases: Sequence[Sequence[Job]], workers: int, threads: int, say: Say) -> list[Row]:
    """Each phase's jobs on `workers` processes; progress said in submission order, the rows returned."""
    rows: list[Row] = []
    context = multiprocessing.get_context("spawn")  # torch is not fork-safe once its threads started
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=(threads,)) as pool:
        for phase in phases:
            for future in [pool.submit(job) for job in phase]:
                result = future.result()
                if isinstance(result, Row):
                    rows.append(result)
                say(_progress(result) if isinstance(result, Row) else result)
    return rows


def format_table(rows: Sequence[Row]) -> str:
    """The table, then the footnotes (refusals and unreadable suspects, by reason)."""
    head = ("scheme", "model", "keys", "passed", "refused", "max score", "threshold", "max stated bound", "s")
    body = [
        (r.scheme, r.model, str(r.keys), str(r.passed), str(r.refused), _num(r.max_score, ".3f"),
         _num(r.threshold, ".3f"), _num(r.max_bound, ".2e"), f"{r.seconds:.0f}")
        for r in rows
    ]  # fmt: skip
    widths = [max(len(line[i]) for line in [head, *body]) for i in range(len(head))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip() for line in [head, *body]]
    notes = [f"  [{r.scheme} / {r.model}] {note}" for r in rows for note in r.notes]
    return "\n".join([*lines, *(["notes:", *notes] if notes else [])])


def _num(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def _progress(row: Row) -> str:
    return (f"{row.scheme} / {row.model}: {row.passed} of {row.keys} passed, {row.refused} refused, "
            f"max score {_num(row.max_score, '.3f')}, {row.seconds:.0f} s")  # fmt: skip


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--keys", type=int, default=1000, help="random keys per LeNet-5 suspect")
    parser.add_argument("--open-keys", type=int, default=200, help="random keys per open-architecture suspect")
    parser.add_argument("--seed", type=int, default=0, help="seeds the keys, the embeddings' nonces, the clean models")
    parser.add_argument("--schemes", default=",".join(s.name for s in list_schemes()))
    parser.add_argument("--open-schemes", default=",".join(OPEN_SCHEMES), help="'' for none")
    parser.add_argument("--open-epochs", type=int, default=3, help="training epochs of the owner's ResNet-18")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2, one a core)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in each worker")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> list[Row]:
    args = _parse(argv)
    started = time.perf_counter()
    names = [get_scheme(n).name for n in args.schemes.split(",") if n]
    wanted = {get_scheme(n).name for n in args.open_schemes.split(",") if n}
    open_names = [n for n in names if n in wanted] if args.open_keys > 0 else []
    say: Say = lambda line: print(line, flush=True)  # noqa: E731
    say(f"seed {args.seed}; {args.keys} keys per LeNet-5 suspect, {args.open_keys} per {OPEN_ARCH} suspect; "
        f"{args.workers} workers × {args.threads} torch thread(s); load average {os.getloadavg()[0]:.1f} "
        f"on {os.cpu_count()} CPUs")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="null-calibration-") as tmp:
        rows = run(plan(names, open_names, Path(tmp), args), args.workers, args.threads, say)
    say(format_table(rows))
    for name in (n for n in names if n not in open_names):
        say(f"{OPEN_ARCH}: {name} not run: " + OPEN_LEFT_OUT.get(name, "not in --open-schemes"))
    used = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    cpu = sum(u.ru_utime + u.ru_stime for u in used)
    say(f"total wall time {time.perf_counter() - started:.0f} s (CPU {cpu:.0f} s in all processes; "
        f"load average at the end {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")  # fmt: skip
    return rows


if __name__ == "__main__":
    main()
