"""`wmnode publish`: sign a publish message from a bundle (or a prepared record) and wait for commit.

"The model may be released now" is said only when a majority of the members of the community in
--config have each signed a checkpoint that includes the entry (registry.receipt.confirm_receipt);
one node's receipt proves only that this node, or whoever answers at its URL, signed it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from contracts.bundle import RECEIPT_FILE
from contracts.errors import MessageError
from contracts.identity import Identity
from registry.cli._common import (
    config_option,
    echo_json,
    fmt_ms,
    json_option,
    load_community,
    load_identity,
    node_option,
    node_url,
    open_monitor,
    state_dir_option,
)
from registry.cli.ownership import BundleFiles, publish_bundle
from registry.client.monitor import Community
from registry.client.node_client import NodeClient
from registry.client.receipt import Receipt, confirm_receipt, fetch_receipt
from registry.log.answers import Submitted
from registry.log.clock import now_ms
from registry.log.messages import Publish

_RECORD_FIELDS = {"scheme", "key_hash", "verifier_hash", "info_hash", "nonce"}


def read_record(path: Path) -> dict[str, Any]:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise MessageError(f"cannot read record {path}: {exc}") from exc
    if not isinstance(record, dict) or set(record) != _RECORD_FIELDS:
        raise MessageError(f"record {path} must have exactly the fields {', '.join(sorted(_RECORD_FIELDS))}")
    return record


def bundle_expectation(identity: Identity, bundle_dir: Path) -> dict[str, object]:
    """What the entry of this bundle's publish must say: its type, owner and key hash."""
    key, _ = BundleFiles.read(bundle_dir).owner_key(identity)
    return {"type": Publish.TYPE, "owner": identity.public_hex, "key_hash": hashlib.sha256(key).hexdigest()}


def _submit(
    client: NodeClient, identity: Identity, bundle_dir: Path | None, record_path: Path | None
) -> tuple[Receipt, str, dict[str, object]]:
    """(receipt, status, what its entry must say) from one node, checked only for its own signature."""
    if bundle_dir is not None:
        receipt = publish_bundle(client, identity, bundle_dir, save_receipt=False)
        return replace(receipt, status=None), receipt.status or "", bundle_expectation(identity, bundle_dir)
    assert record_path is not None
    msg = Publish.create(identity, time=now_ms(), **read_record(record_path))
    result = client.submit(msg)
    return fetch_receipt(client, result.index), result.status, msg.to_json()


@click.command()
@node_option
@config_option()
@state_dir_option
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
@click.option(
    "--confirm-timeout",
    "confirm_timeout_s",
    type=click.FloatRange(0.1, 3600),
    default=30,
    show_default=True,
    help="Seconds to wait for a majority of the config's members to confirm the entry.",
)
@json_option
def publish(
    node: str,
    config: Path | None,
    state_dir: Path | None,
    identity_path: Path,
    bundle_dir: Path | None,
    record_path: Path | None,
    receipt_path: Path | None,
    confirm_timeout_s: float,
    as_json: bool,
) -> None:
    """Sign a publish message now and wait until the community commits it (before releasing the model).

    With --config, a majority of the community's members must each sign a checkpoint that includes
    the entry; otherwise nothing is saved and the command fails.
    """
    if (bundle_dir is None) == (record_path is None):
        raise click.UsageError("give --bundle (or, for a prepared record, --record), not both")
    identity = load_identity(identity_path)
    community = load_community(config)
    node = node_url(node, community)
    with NodeClient(node) as client:
        receipt, status, expect = _submit(client, identity, bundle_dir, record_path)
    if community is not None:
        with open_monitor(community, state_dir, timeout=min(10.0, max(1.0, confirm_timeout_s))) as monitor:
            receipt = confirm_receipt(monitor, receipt, node, expect, confirm_timeout_s)
    entry = receipt.entry
    result = Submitted(entry.index, entry.time, entry.leaf().hex(), status)
    if bundle_dir is not None:  # the bundle's receipt says whether the publish was new; a --receipt file does not
        text = json.dumps(replace(receipt, status=status).to_json(), indent=2, sort_keys=True) + "\n"
        (bundle_dir / RECEIPT_FILE).write_text(text)
    if receipt_path is not None:
        receipt_path.write_text(json.dumps(receipt.to_json(), indent=2, sort_keys=True))
    confirmers = (
        [] if community is None else [community.name_of(c.checkpoint.node) for c in receipt.confirmations or ()]
    )
    if as_json:
        echo_json({**result.to_json(), "receipt": receipt.to_json(),
                   "confirmed_by": confirmers if community is not None else None})  # fmt: skip
        return
    _say(result, receipt, community, confirmers, bundle_dir)


def _say(
    result: Submitted,
    receipt: Receipt,
    community: Community | None,
    confirmers: list[str],
    bundle_dir: Path | None,
) -> None:
    """The human summary; "may be released" only after a majority of a community's members confirmed."""
    click.echo(f"{result.status}: entry #{result.index} at {fmt_ms(result.time)}, leaf {result.leaf_hash}")
    click.echo(f"included in checkpoint size {receipt.checkpoint.size} root {receipt.checkpoint.root}")
    if community is not None:
        click.echo(
            f"confirmed by {', '.join(confirmers)}: {len(confirmers)} of {len(community.members)} members of "
            f"{community.name!r} (a majority is {community.majority})"
        )
    if bundle_dir is None:
        return
    if community is None:
        click.echo(
            f"receipt saved in {bundle_dir / RECEIPT_FILE}; unconfirmed: without --config no member of a "
            "community was asked, so check it against one before releasing the model"
        )
        return
    click.echo(f"receipt saved in {bundle_dir / RECEIPT_FILE}; the model may be released now")


COMMANDS = [publish]
