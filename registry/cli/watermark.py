"""`wmnode embed`, `wmnode verify`, `wmnode schemes`, `wmnode mtlsign samples`: watermarking without a registry.

Every scheme goes through the same two commands: the scheme is looked up by name in the scheme
registry (`schemes.base`), and its options come from its `Config` (`--option NAME=VALUE`).

The ML stack is imported inside the commands, so `wmnode` stays light for the node commands.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import click

from registry.cli._common import echo_json, json_option, load_identity, parse_options, progress_bar


@click.command()
@click.option("--scheme", default="mtlsign", show_default=True, help="Scheme name (`wmnode schemes` lists them).")
@click.option(
    "--arch",
    default=None,
    help="Model zoo name (lenet5, resnet18, vgg16, alexnet) to train from scratch [default: lenet5]; "
    "the passport scheme uses its passport variant.",
)
@click.option(
    "--model",
    "model_path",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="Watermark your own trained model by fine-tuning: an artifact or Hub-layout directory "
    "(config.json + model.safetensors) or a .safetensors file carrying its card.",
)
@click.option(
    "--dataset",
    default="digits",
    show_default=True,
    help="digits, mnist, fashion-mnist, cifar10, cifar100, npz, folder (train/ and val/ in ImageFolder layout).",
)
@click.option(
    "--data-path", type=click.Path(exists=True, path_type=Path), default=None, help="Local copy of the data set."
)
@click.option(
    "--identity", "identity_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True
)
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Bundle directory to write."
)
@click.option(
    "--n", "n", type=click.IntRange(2, 100_000), default=None, help="Key samples N (the scheme's 'n' option)."
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--option", "-o", "options", multiple=True, metavar="NAME=VALUE", help="Any option of the scheme's Config."
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="The community's config: --dataset may then name a data set it pins ([[datasets]]), checked "
    "against its manifest, so its members can rebuild the verification inputs.",
)
@click.option(
    "--nproc",
    type=click.IntRange(1, 1024),
    default=1,
    show_default=True,
    help="Processes to embed with, data-parallel: starts `torchrun --standalone --nproc-per-node N` on this "
    "command (one per GPU, or gloo processes on the CPU). For many machines run torchrun yourself (README).",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Continue the unfinished embedding whose checkpoints are in --out (one is saved after every epoch).",
)
@json_option
def embed(
    scheme: str,
    arch: str | None,
    model_path: Path | None,
    dataset: str,
    data_path: Path | None,
    identity_path: Path,
    out: Path,
    n: int | None,
    seed: int,
    options: tuple[str, ...],
    config_path: Path | None,
    nproc: int,
    resume: bool,
    as_json: bool,
) -> None:
    """Train a model on the data set and embed the watermark, or fine-tune your own model (--model)
    to embed it; write the owner's bundle."""
    from registry.community.config import load_config
    from schemes.workflow.pipeline import embed_to_bundle

    pinned = () if config_path is None else load_config(config_path).verification.datasets
    if arch is not None and model_path is not None:
        raise click.UsageError("--arch builds a model from scratch; --model watermarks yours: give one of them")
    if nproc > 1 and "LOCAL_RANK" not in os.environ:  # start torchrun on this very command, and wait for it
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
                   "-m", "registry.cli", *_without_nproc(sys.argv[1:])]  # fmt: skip
        sys.exit(subprocess.call(command))  # noqa: S603  # this command's own arguments
    from schemes.training.loops import batch_progress

    progress = progress_bar("embedding")
    with batch_progress(progress.batch):
        report = embed_to_bundle(
            load_identity(identity_path),
            arch or "lenet5",
            dataset,
            out,
            scheme=scheme,
            data_path=data_path,
            overrides=parse_options(options, n, seed),
            progress=progress,
            model_path=model_path,
            pinned=pinned,
            resume=resume,
            notice=lambda text: click.echo(text, err=True),
        )
    if int(os.environ.get("RANK", "0")) != 0:
        return  # rank 0 reports (and wrote the bundle)
    _report_embedding(report, out, model_path is not None, as_json)


def _report_embedding(report: dict[str, Any], out: Path, given: bool, as_json: bool) -> None:
    """Print what embed made, warning first when the watermark did not take."""
    if report["wm_score"] < report["threshold"]:
        click.echo(
            f"warning: the watermark did not take: score {report['wm_score']:.4f} under its threshold "
            f"{report['threshold']}, so a claim on this model would be lost; embed again (a fresh nonce) or with "
            "more epochs (-o ...) before publishing",
            err=True,
        )
    if as_json:
        echo_json(report)
        return
    clean = "given model" if given else "clean"
    click.echo(
        f"wrote {out}: accuracy {report['accuracy']:.4f} ({clean} {report['clean_accuracy']:.4f}), "
        f"watermark {report['wm_score']:.4f} (threshold {report['threshold']}), {report['seconds']:.0f} s"
    )


def _without_nproc(args: list[str]) -> list[str]:
    """This command's arguments less --nproc, and --n as `-o n=N`: torchrun's parser would read either
    as an abbreviation of one of its own options (--nproc-per-node, --nnodes)."""
    out: list[str] = []
    pending: str | None = None
    for arg in args:
        if pending is not None:
            if pending == "--n":
                out += ["--option", f"n={arg}"]
            pending = None
        elif arg in ("--nproc", "--n"):
            pending = arg
        elif arg.startswith("--n="):
            out += ["--option", f"n={arg[4:]}"]
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return out


@click.command()
@click.option("--bundle", "bundle_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True)
@click.option(
    "--suspect",
    type=click.Path(exists=True, path_type=Path),
    required=True,
    help="The suspect model: a directory with model.safetensors + model.json, or the .safetensors file.",
)
@json_option
def verify(bundle_dir: Path, suspect: Path, as_json: bool) -> None:
    """Run the bundle's scheme on a suspect model: exit 0 when the watermark is found, 1 when not."""
    from schemes.workflow.pipeline import verify_suspect

    verdict = verify_suspect(bundle_dir, suspect)
    if as_json:
        echo_json({"passed": verdict.passed, "score": verdict.score, "threshold": verdict.threshold, **verdict.details})
    else:
        word = "FOUND" if verdict.passed else "not found"
        click.echo(f"watermark {word}: score {verdict.score:.4f}, threshold {verdict.threshold}")
    sys.exit(0 if verdict.passed else 1)


@click.command("schemes")
@json_option
def list_schemes_command(as_json: bool) -> None:
    """List the watermarking schemes, one line each."""
    import dataclasses

    from schemes import list_schemes

    found = list_schemes()
    if as_json:
        echo_json(
            [
                {
                    "name": s.name,
                    "summary": s.summary,
                    "paper": s.paper,
                    "black_box": s.black_box,
                    "options": sorted(f.name for f in dataclasses.fields(s.config)),
                }
                for s in found
            ]
        )
        return
    width = max(len(s.name) for s in found)
    for s in found:
        box = "black-box" if s.black_box else "white-box"
        click.echo(f"{s.name:<{width}}  {box}  {s.summary}")


@click.group()
def mtlsign() -> None:
    """MTLSign tools."""


@mtlsign.command()
@click.option("--bundle", "bundle_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True)
@click.option("--n", "n", type=click.IntRange(1, 10_000), default=16, show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--scale", type=click.IntRange(1, 32), default=4, show_default=True, help="Whole-pixel upscaling.")
def samples(bundle_dir: Path, n: int, out: Path, scale: int) -> None:
    """Write the first key samples (QR codes) as PNG files with their integers and label bits."""
    from schemes.workflow.pipeline import write_samples

    listing = write_samples(bundle_dir, n, out, scale)
    click.echo(f"wrote {len(listing)} samples and samples.json to {out}")


COMMANDS = [embed, verify, list_schemes_command, mtlsign]
