"""`wmnode demo`: walk the whole story on this machine."""

from __future__ import annotations

import tempfile
from pathlib import Path

import click

from registry.demo import run_demo


@click.command()
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Keep node data and logs here (default: a temporary directory, removed afterwards).",
)
def demo(data_dir: Path | None) -> None:
    """Start the local 3-node community, publish signed records, show each node's status."""
    if data_dir is not None:
        run_demo(data_dir, click.echo)
        return
    with tempfile.TemporaryDirectory(prefix="wmnode-demo-") as tmp:
        run_demo(Path(tmp), click.echo)


COMMANDS = [demo]
