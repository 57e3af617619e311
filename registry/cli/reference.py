"""`wmnode reference`: the community's reference models (null models, DESIGN §6.1 rule 3)."""

from __future__ import annotations

from pathlib import Path

import click

from contracts.errors import RejectedError
from contracts.references import CHECKPOINT
from registry.cli._common import echo_json, json_option, node_option, short
from registry.client.node_client import NodeClient
from registry.community.config import load_config
from registry.log.messages import Reference


@click.group()
def reference() -> None:
    """Reference models: trained by every member, counted once a majority recorded one hash."""


@reference.command("list")
@node_option
@json_option
def list_references(node: str, as_json: bool) -> None:
    """The reference models a majority of the members recorded."""
    with NodeClient(node) as client:
        refs = client.references()["references"]
    if as_json:
        echo_json(refs)
        return
    if not refs:
        click.echo("no reference model is recorded by a majority of the members yet")
    for ref in refs:
        click.echo(
            f"{ref['recipe']:<10} {ref['arch']:<16} {ref['num_classes']:>4} classes {ref['input_shape']:<10} "
            f"{ref['dataset']:<8} {short(ref['model_hash'], 16)} (recorded by {ref['members']})"
        )


@reference.command("build")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True)
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None)
def build(config_path: Path, data_dir: Path | None) -> None:
    """Train this node's configured references (`[[references]]`) and record them through its API.

    A running node also does this by itself at start; use the command after adding entries."""
    from registry.serve.node import data_dir_for, node_identity
    from schemes.models.zoo import model_to_bytes
    from schemes.workflow.references import build_reference

    config = load_config(config_path).with_data_dir(data_dir)
    identity = node_identity(config, data_dir_for(config))
    with NodeClient(config.me.api_url, timeout=60) as client:
        for spec in config.references:
            click.echo(f"training {spec.recipe} {spec.arch} on {spec.dataset} ({spec.epochs} epochs, seed {spec.seed})")
            model, card = build_reference(spec)
            digest = client.put_artifact(model_to_bytes(model, card)).removeprefix("sha256:")
            msg = Reference.create(
                identity, arch=card.arch, num_classes=card.num_classes, input_shape=spec.shape_text,
                dataset=spec.dataset, recipe=spec.recipe, seed=spec.seed, model_hash=digest,
            )  # fmt: skip
            try:
                entry = client.submit(msg)
                click.echo(f"  recorded {short(digest, 16)} as entry #{entry.index}")
            except RejectedError as exc:
                click.echo(f"  not recorded: {exc.diagnostics()}")


@reference.command("add")
@click.argument("model", type=click.Path(exists=True, path_type=Path))
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True)
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None)
def add(model: Path, config_path: Path, data_dir: Path | None) -> None:
    """Record a public checkpoint (a model file or a Hub-layout directory) as a reference model.

    It counts once a majority of the members recorded the same hash: every member runs this with
    its own config on the same file. A claim on a suspect of its architecture is then judged on it
    too (DESIGN §6.1 rule 3), for MTLSign and passport whatever its head, for black-box schemes when
    its classes are the suspect's; MTLSign is judged on an open architecture once one is admitted."""
    from registry.serve.node import data_dir_for, node_identity
    from schemes.models.zoo import load_model, model_to_bytes

    config = load_config(config_path).with_data_dir(data_dir)
    identity = node_identity(config, data_dir_for(config))
    module, card = load_model(model)
    with NodeClient(config.me.api_url, timeout=60) as client:
        digest = client.put_artifact(model_to_bytes(module, card)).removeprefix("sha256:")
        msg = Reference.create(
            identity, arch=card.arch, num_classes=card.num_classes, input_shape="x".join(map(str, card.input_shape)),
            dataset=digest, recipe=CHECKPOINT, seed=0, model_hash=digest,
        )  # fmt: skip
        try:
            entry = client.submit(msg)
        except RejectedError as exc:
            raise click.ClickException(f"not recorded: {exc.diagnostics()}") from None
    click.echo(f"recorded {card.arch} checkpoint {short(digest, 16)} as entry #{entry.index}")


COMMANDS = [reference]
