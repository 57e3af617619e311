"""Helpers shared by the command modules: identities, communities, JSON output, time formatting."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from contracts.identity import Identity, read_identity
from registry.client.monitor import STATE_DIR_ENV, STATE_FILE, CheckpointState, Community, Monitor, default_state_dir
from registry.community.config import load_config

node_option = click.option(
    "--node", "node", default="http://127.0.0.1:8101", show_default=True, help="API URL of any node of the community."
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON object for scripts.")
state_dir_option = click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar=STATE_DIR_ENV,
    default=None,
    help=f"Where the checkpoints this client has seen are kept ({STATE_FILE}). [default: ~/.config/wmnode]",
)


def config_option(required: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """`--config`: the community whose members' keys every checkpoint must be signed by (also from
    WMNODE_<COMMAND>_CONFIG, click's automatic environment variable)."""
    return click.option(
        "--config",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        required=required,
        show_envvar=True,
        help="A community config (TOML, e.g. node_config/local/node1.toml): checkpoints are accepted only "
        "when its members signed them, and a majority must confirm.",
    )


def load_community(config_path: Path | None) -> Community | None:
    """The community a config names, or None (with a warning that nothing was checked against one)."""
    if config_path is None:
        click.echo(
            "warning: no --config: checkpoints were not checked against a community's member keys, so this "
            "answer is only as good as the node's word (pass --config COMMUNITY.toml)",
            err=True,
        )
        return None
    return Community.from_config(load_config(config_path))


def node_url(node: str, community: Community | None) -> str:
    """--node as given; when left at its default and a config is given, the config's own member."""
    ctx = click.get_current_context()
    if community is not None and ctx.get_parameter_source("node") is click.core.ParameterSource.DEFAULT:
        return community.home_url
    return node


def open_monitor(community: Community, state_dir: Path | None, timeout: float = 10.0) -> Monitor:
    """A monitor over the community with this client's checkpoint state."""
    return Monitor(community, CheckpointState.load((state_dir or default_state_dir()) / STATE_FILE), timeout)


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


class ProgressBar:
    """Progress of a long job on stderr: a tqdm bar of epochs when stderr is a terminal, with the
    batch and images/s of the loop running; otherwise a line at most every `every` seconds, for logs."""

    def __init__(self, label: str, every: float = 10.0) -> None:
        from tqdm import tqdm

        self.label, self.every, self.last = label, every, 0.0
        self.tty = sys.stderr.isatty()
        self.bar = tqdm(total=0, desc=label, unit="epoch", leave=False, file=sys.stderr, disable=not self.tty)
        self.epoch, self.epochs, self.message = 0, 0, ""

    def __call__(self, step: int, total: int, message: str) -> None:
        """The schemes' callback: an epoch (or stage) finished."""
        self.epoch, self.epochs, self.message = step, total, message
        self.bar.total, self.bar.n = total, step
        self.bar.set_postfix_str(message)
        self.bar.refresh()

    def batch(self, number: int, total: int, per_second: float) -> None:
        """A batch finished (schemes.training.batch_progress)."""
        text = f"batch {number}/{total}, {per_second:,.0f} images/s"
        if self.tty:
            self.bar.set_postfix_str(f"{self.message} {text}".strip(), refresh=False)
            now = time.monotonic()
            if now - self.last > 0.2:
                self.bar.refresh()
                self.last = now
            return
        now = time.monotonic()
        if now - self.last >= self.every and os.environ.get("RANK", "0") == "0":
            self.last = now
            click.echo(f"{self.label}: epoch {self.epoch + 1}/{self.epochs or '?'}, {text}", err=True)


def progress_bar(label: str) -> ProgressBar:
    """A progress bar fed by the schemes' callbacks (`ProgressBar`)."""
    return ProgressBar(label)


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
