"""`wmnode keygen`: create an Ed25519 identity file."""

from __future__ import annotations

from pathlib import Path

import click

from contracts.identity import Identity, write_identity


@click.command()
@click.option(
    "--out", "out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Key file to create (0600)."
)
@click.option("--passphrase", is_flag=True, help="Prompt for a passphrase to encrypt the key file.")
def keygen(out: Path, passphrase: bool) -> None:
    """Create a new identity; prints its public key."""
    secret = click.prompt("Passphrase", hide_input=True, confirmation_prompt=True).encode() if passphrase else None
    identity = Identity.generate()
    write_identity(identity, out, secret)
    click.echo(f"wrote {out} (mode 600)\npublic key: {identity.public_hex}")


COMMANDS = [keygen]
