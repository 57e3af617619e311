"""`wmnode start`, `wmnode status`, `wmnode log`: run a node and look at a community."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from registry.cli._common import echo_json, fmt_ms, json_option, node_option, short
from registry.client.node_client import NodeClient
from registry.community.config import load_config
from registry.serve.logjson import use_json_logs
from registry.serve.node import data_dir_for, node_identity, run_node


@click.command()
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="Node config (TOML), e.g. node_config/local/node1.toml.",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Journal, dumps and the node key. Default: the config's data_dir, else ./wmnode-data/NAME.",
)
@click.option("--dev", is_flag=True, help="Allow a loopback-only node without a community secret.")
@click.option("--log-json", is_flag=True, help="Log one JSON object per line (time, level, logger, message, fields).")
@click.option(
    "--no-judges",
    is_flag=True,
    help="Start no judge processes (tests, nodes that only serve the log): every route is served, "
    "/v1/status reports verifier_ready false, and the node votes error on every claim.",
)
def start(config_path: Path, data_dir: Path | None, dev: bool, log_json: bool, no_judges: bool) -> None:
    """Join a community and serve the node's API until interrupted."""
    config = load_config(config_path).with_data_dir(data_dir)
    if log_json:
        use_json_logs(secrets=(config.secret, config.identity_seed))
    run_node(config, dev=dev, log_json=log_json, judges=not no_judges)


@click.command("node-key")
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="Node config (TOML).",
)
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None)
def node_key(config_path: Path, data_dir: Path | None) -> None:
    """Print this node's public key (creating its key file on first use), for every member's config."""
    config = load_config(config_path).with_data_dir(data_dir)
    directory = data_dir_for(config)
    if config.identity_seed is None:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    click.echo(node_identity(config, directory).public_hex)


def format_status(s: dict[str, Any]) -> str:
    members = ", ".join(m["name"] for m in s["members"])
    return (
        f"{s['name']:<8} {s['role']:<9} leader={s['leader'] or '-':<8} term={s['term']} "
        f"commit={s['commit_index']} size={s['size']} root={short(s['root'], 16)} "
        f"node={short(s['node'], 16)} members=[{members}]"
    )


@click.command()
@node_option
@json_option
def status(node: str, as_json: bool) -> None:
    """Show a node's role, leader, term and log head."""
    with NodeClient(node) as client:
        result = client.status()
    echo_json(result) if as_json else click.echo(format_status(result))


def format_entry(e: dict[str, Any]) -> str:
    msg = e["msg"]
    if msg["type"] == "publish":
        what = f"scheme={msg['scheme']} key_hash={short(msg['key_hash'])} owner={short(msg['owner'])}"
    elif msg["type"] == "claim":
        what = f"on publish #{msg['publish']} model={short(msg['model_hash'])} owner={short(msg['owner'])}"
    else:
        what = f"on claim #{msg['claim']} {msg['verdict']} ({msg['score']}‰) node={short(msg['node'])}"
    return f"#{e['index']:<5} {fmt_ms(e['time'])} {msg['type']:<8} {what} leaf={short(e['leaf_hash'])}"


@click.command(name="log")
@node_option
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 1000), help="How many recent entries.")
@json_option
def log_(node: str, limit: int, as_json: bool) -> None:
    """List the most recent entries of the log."""
    with NodeClient(node) as client:
        result = client.entries(limit=limit)
    if as_json:
        echo_json(result)
        return
    click.echo(f"{result['size']} entries; the last {len(result['entries'])}:")
    for entry in result["entries"]:
        click.echo(format_entry(entry))


COMMANDS = [start, node_key, status, log_]
