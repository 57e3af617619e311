"""`wmnode demo`: walk the whole story on this machine."""

from __future__ import annotations

import tempfile
from pathlib import Path

import click

from registry.cli.story import run_demo


@click.command()
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Keep node data and logs here (default: a temporary directory, removed afterwards).",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("wmnode-demo"),
    show_default=True,
    help="Bundles, identities and the owner's certificate.",
)
def demo(data_dir: Path | None, out_dir: Path) -> None:
    """Start a local 3-node community; an owner publishes, a thief launders, the community votes."""
    if data_dir is not None:
        run_demo(data_dir, out_dir, click.echo)
        return
    with tempfile.TemporaryDirectory(prefix="wmnode-demo-") as tmp:
        run_demo(Path(tmp), out_dir, click.echo)


COMMANDS = [demo]
