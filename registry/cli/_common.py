"""Helpers shared by the command modules: identities, JSON output, time formatting."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
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


def progress_bar(label: str) -> Callable[[int, int, str], None]:
    """A tqdm bar on stderr (when it is a terminal) fed by the schemes' progress callbacks."""
    from tqdm import tqdm

    bar = tqdm(total=0, desc=label, unit="epoch", leave=False, file=sys.stderr, disable=not sys.stderr.isatty())

    def progress(step: int, total: int, message: str) -> None:
        bar.total = total
        bar.n = step
        bar.set_postfix_str(message)
        bar.refresh()

    return progress


def parse_options(options: tuple[str, ...], n: int | None, seed: int) -> dict[str, str | int]:
    """`-o NAME=VALUE` options (plus --n and --seed) for `schemes.make_config`."""
    parsed: dict[str, str | int] = {"seed": seed}
    if n is not None:
        parsed["n"] = n
    for option in options:
        name, sep, value = option.partition("=")
        if not sep or not name.strip():
            raise click.BadParameter(f"{option!r} is not NAME=VALUE", param_hint="--option")
        parsed[name.strip().replace("-", "_")] = value.strip()
    return parsed
