"""Helpers shared by the command modules: identities, JSON output, time formatting."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from registry.identity import Identity, read_identity

node_option = click.option(
    "--node", "node", default="http://127.0.0.1:8101", show_default=True, help="API URL of any node of the community."
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON object for scripts.")


def load_identity(path: Path) -> Identity:
    """Read a key file; for an encrypted one take WMNODE_PASSPHRASE or prompt."""
    data = path.read_bytes() if path.is_file() else b""
    encrypted = b"ENCRYPTED PRIVATE KEY" in data
    passphrase = None
    if encrypted:
        env = os.environ.get("WMNODE_PASSPHRASE")
        passphrase = (env if env is not None else click.prompt(f"Passphrase for {path}", hide_input=True)).encode()
    return read_identity(path, passphrase)


def echo_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, sort_keys=True))


def fmt_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


def short(value: str | None, n: int = 12) -> str:
    return "-" if value is None else value[:n] + ("…" if len(value) > n else "")
