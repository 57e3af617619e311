"""`wmnode publish`: sign and record a publish message (a prepared record, for now)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from registry.cli._common import echo_json, fmt_ms, json_option, load_identity, node_option
from registry.client import NodeClient
from registry.errors import MessageError
from registry.messages import Publish
from registry.receipt import fetch_receipt

_RECORD_FIELDS = {"scheme", "key_hash", "verifier_hash", "info_hash", "nonce"}


def read_record(path: Path) -> dict[str, Any]:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise MessageError(f"cannot read record {path}: {exc}") from exc
    if not isinstance(record, dict) or set(record) != _RECORD_FIELDS:
        raise MessageError(f"record {path} must have exactly the fields {', '.join(sorted(_RECORD_FIELDS))}")
    return record


@click.command()
@node_option
@click.option(
    "--identity",
    "identity_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="The owner's key file (wmnode keygen).",
)
@click.option(
    "--record",
    "record_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="JSON with scheme, key_hash, verifier_hash, info_hash and nonce.",
)
@click.option(
    "--receipt",
    "receipt_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the receipt (entry, signed checkpoint, inclusion proof) here.",
)
@json_option
def publish(node: str, identity_path: Path, record_path: Path, receipt_path: Path | None, as_json: bool) -> None:
    """Sign a publish message now and wait until the community commits it."""
    identity = load_identity(identity_path)
    msg = Publish.create(identity, time=time.time_ns() // 1_000_000, **read_record(record_path))
    with NodeClient(node) as client:
        result = client.submit(msg)
        receipt = fetch_receipt(client, result["index"])
    if receipt_path is not None:
        receipt_path.write_text(json.dumps(receipt, indent=2, sort_keys=True))
    if as_json:
        echo_json({**result, "receipt": receipt})
        return
    click.echo(f"{result['status']}: entry #{result['index']} at {fmt_ms(result['time'])}, leaf {result['leaf_hash']}")
    click.echo(f"included in checkpoint size {receipt['checkpoint']['size']} root {receipt['checkpoint']['root']}")


COMMANDS = [publish]
