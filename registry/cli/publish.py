"""`wmnode publish`: sign a publish message from a bundle (or a prepared record) and wait for commit."""

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
from registry.ownership import publish_bundle
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
    "--bundle",
    "bundle_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="The bundle `wmnode embed` wrote; its receipt is saved in it.",
)
@click.option(
    "--record",
    "record_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Instead of a bundle: JSON with scheme, key_hash, verifier_hash, info_hash and nonce.",
)
@click.option(
    "--receipt",
    "receipt_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the receipt (entry, signed checkpoint, inclusion proof) here.",
)
@json_option
def publish(
    node: str,
    identity_path: Path,
    bundle_dir: Path | None,
    record_path: Path | None,
    receipt_path: Path | None,
    as_json: bool,
) -> None:
    """Sign a publish message now and wait until the community commits it (before releasing the model)."""
    if (bundle_dir is None) == (record_path is None):
        raise click.UsageError("give --bundle (or, for a prepared record, --record), not both")
    identity = load_identity(identity_path)
    with NodeClient(node) as client:
        if bundle_dir is not None:
            receipt = publish_bundle(client, identity, bundle_dir)
            entry = receipt["entry"]
            result = {k: entry[k] for k in ("index", "time", "leaf_hash")} | {"status": receipt.pop("status")}
        else:
            assert record_path is not None
            msg = Publish.create(identity, time=time.time_ns() // 1_000_000, **read_record(record_path))
            result = client.submit(msg)
            receipt = fetch_receipt(client, result["index"])
    if receipt_path is not None:
        receipt_path.write_text(json.dumps(receipt, indent=2, sort_keys=True))
    if as_json:
        echo_json({**result, "receipt": receipt})
        return
    click.echo(f"{result['status']}: entry #{result['index']} at {fmt_ms(result['time'])}, leaf {result['leaf_hash']}")
    click.echo(f"included in checkpoint size {receipt['checkpoint']['size']} root {receipt['checkpoint']['root']}")
    if bundle_dir is not None:
        click.echo(f"receipt saved in {bundle_dir / 'receipt.json'}; the model may be released now")


COMMANDS = [publish]
