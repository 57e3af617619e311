"""The `wmnode` command line: a thin click layer over the library (one file per command group)."""

from __future__ import annotations

import logging
import sys

import click

from contracts.errors import WmnodeError
from registry.cli import claim, demo, keys, model, monitor, node, publish, reference, watermark


class _Group(click.Group):
    """Print a `WmnodeError`'s diagnostics once and exit 1; let everything else surface."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except WmnodeError as exc:
            click.echo(f"error: {exc.diagnostics()}", err=True)
            sys.exit(1)


@click.group(cls=_Group, context_settings={"auto_envvar_prefix": "WMNODE", "help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log debug output.")
def main(verbose: bool) -> None:
    """wmnode: a decentralized, Raft-replicated ownership registry for watermarked models."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("httpx").setLevel(logging.DEBUG if verbose else logging.WARNING)


for module in (demo, keys, node, publish, claim, reference, watermark, model, monitor):
    for command in module.COMMANDS:
        main.add_command(command)
