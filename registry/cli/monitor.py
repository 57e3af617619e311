"""`wmnode monitor`: watch every member of a community for forks (registry.monitor does the checks)."""

from __future__ import annotations

import time
from pathlib import Path

import click

from contracts.errors import VerificationError
from registry.cli._common import config_option, fmt_ms, open_monitor, short, state_dir_option
from registry.client.monitor import Community, ForkError, Observation, fork_summary
from registry.community.config import load_config
from registry.log.clock import now_ms


def format_observation(observation: Observation) -> str:
    checkpoint = observation.checkpoint
    head = "-" if checkpoint is None else f"size {checkpoint.size} root {short(checkpoint.root, 16)}"
    return f"{observation.peer.name:<8} {observation.status:<11} {head}  {observation.detail}"


@click.command()
@config_option(required=True)
@click.option(
    "--interval",
    type=click.FloatRange(0.1, 86400),
    default=30,
    show_default=True,
    help="Seconds between rounds.",
)
@click.option("--once", is_flag=True, help="One round; exit 0 when every member that answered is consistent.")
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(0.1, 600),
    default=10,
    show_default=True,
    help="Seconds to wait for one member's answer.",
)
@state_dir_option
def monitor(config: Path, interval: float, once: bool, timeout_s: float, state_dir: Path | None) -> None:
    """Poll every member's signed checkpoint and check them against the member keys, each other and
    what this client saw before; print one line per member per round.

    Exits 1 on a fork (two roots for one size, or a tree that does not extend an earlier one) or a
    checkpoint that the member did not sign, naming the member(s); unreachable members are reported
    and skipped.
    """
    community = Community.from_config(load_config(config))
    with open_monitor(community, state_dir, timeout_s) as watcher:
        while True:
            started = time.monotonic()
            observations = watcher.round()
            stamp = fmt_ms(now_ms())
            for observation in observations:
                click.echo(f"{stamp} {format_observation(observation)}")
            problem = fork_summary(observations)
            if problem is not None:
                forked = any(o.status == "fork" for o in observations)
                raise (ForkError(problem) if forked else VerificationError(problem))
            if once:
                return
            time.sleep(max(0.0, interval - (time.monotonic() - started)))


COMMANDS = [monitor]
