"""`wmnode serve-model` (a prediction API for black-box claims) and `wmnode attack` (the thief)."""

from __future__ import annotations

from pathlib import Path

import click

from registry.cli._common import echo_json, json_option, load_identity, parse_options, progress_bar

model_path = click.argument("model", type=click.Path(exists=True, path_type=Path))


@click.command("serve-model")
@model_path
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", type=click.IntRange(1, 65535), default=8200, show_default=True)
def serve_model(model: Path, host: str, port: int) -> None:
    """Serve MODEL's labels over HTTP (JSON in, labels out) at /v1/predict, until interrupted."""
    import uvicorn

    from schemes.models.serving import PATH, prediction_app
    from schemes.models.zoo import load_model

    module, card = load_model(model)
    click.echo(f"serving {card.arch} ({card.num_classes} classes) at http://{host}:{port}{PATH}", err=True)
    uvicorn.run(prediction_app(module, card), host=host, port=port, log_level="warning", lifespan="off")


@click.command()
@model_path
@click.option("--kind", type=click.Choice(["finetune", "prune", "overwrite"]), required=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Directory to write.")
@click.option("--dataset", default="digits", show_default=True, help="The thief's data (finetune, overwrite).")
@click.option("--data-path", type=click.Path(exists=True, path_type=Path), default=None)
@click.option("--epochs", type=click.IntRange(1, 1000), default=5, show_default=True, help="finetune epochs.")
@click.option("--lr", type=click.FloatRange(0, 1, min_open=True), default=5e-4, show_default=True)
@click.option("--amount", type=click.FloatRange(0, 1, max_open=True), default=0.3, show_default=True, help="prune.")
@click.option("--seed", type=int, default=1, show_default=True)
@click.option(
    "--identity",
    "identity_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="overwrite: the thief's identity; OUT becomes the thief's own bundle.",
)
@click.option("--scheme", default="mtlsign", show_default=True, help="overwrite: the thief's scheme.")
@click.option("--option", "-o", "options", multiple=True, metavar="NAME=VALUE", help="overwrite: scheme options.")
@json_option
def attack(
    model: Path,
    kind: str,
    out: Path,
    dataset: str,
    data_path: Path | None,
    epochs: int,
    lr: float,
    amount: float,
    seed: int,
    identity_path: Path | None,
    scheme: str,
    options: tuple[str, ...],
    as_json: bool,
) -> None:
    """What a thief does to a stolen MODEL: fine-tune it, prune it, or embed a watermark of its own."""
    from schemes.workflow.pipeline import attack_model

    if kind == "overwrite" and identity_path is None:
        raise click.UsageError("--kind overwrite needs the thief's --identity")
    report = attack_model(
        model,
        kind,
        out,
        dataset=dataset,
        data_path=data_path,
        epochs=epochs,
        lr=lr,
        amount=amount,
        seed=seed,
        identity=load_identity(identity_path) if identity_path is not None else None,
        scheme=scheme,
        overrides=parse_options(options, None, seed),
        progress=progress_bar(kind),
    )
    if as_json:
        echo_json(report)
        return
    click.echo(
        f"{kind}: accuracy {report['accuracy_before']:.4f} -> {report['accuracy']:.4f}; wrote {out} "
        f"({report['seconds']:.0f} s)"
    )


COMMANDS = [serve_model, attack]
