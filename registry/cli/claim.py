"""`wmnode claim`, `owner`, `certificate verify`: ownership proofs by the community's vote."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import click

from contracts.encoding import is_hex
from contracts.errors import ConfigError, VerificationError, WmnodeError
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
    short,
    state_dir_option,
)
from registry.cli.ownership import ClaimOutcome, claim_suspect, model_name
from registry.client.certificate import Certificate, build_certificate, verify_certificate
from registry.client.monitor import Community, Monitor, Peer
from registry.client.node_client import NodeClient
from registry.community.config import load_config
from registry.log.answers import ClaimStatus, Entry
from registry.log.messages import Vote
from registry.proofs.checkpoint import Checkpoint

#: Exit codes of `wmnode claim`.
EXIT_OWNER, EXIT_NOT_OWNER, EXIT_UNDECIDED = 0, 1, 2


def member_names(status: dict[str, Any]) -> dict[str, str]:
    return {m["key"]: m["name"] for m in status["members"] if m.get("key")}


def format_vote(vote: Entry, names: dict[str, str]) -> str:
    msg = vote.msg
    if not isinstance(msg, Vote):
        return f"  entry #{vote.index} is a {msg.TYPE}, not a vote"
    who = names.get(msg.node, short(msg.node, 16))
    score = f"score {msg.score}‰ / {msg.threshold}‰, bound {msg.fp_bound}"
    return f"  vote #{vote.index} {who:<8} {msg.verdict:<9} {score}: {msg.reason}"


@click.command()
@node_option
@config_option()
@state_dir_option
@click.option(
    "--identity", "identity_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True
)
@click.option(
    "--bundle",
    "bundle_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    required=True,
    help="The owner's bundle (published before).",
)
@click.option(
    "--suspect",
    required=True,
    help="A model file or directory, an http(s) URL of a model file, or the URL of a prediction API.",
)
@click.option(
    "--certificate",
    "certificate_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Where to write the certificate (default: claim-INDEX.certificate.json here).",
)
@click.option("--timeout", "timeout_s", type=click.FloatRange(1, 3600), default=180, show_default=True)
@json_option
def claim(**options: Any) -> None:
    """Reveal the key against a suspect and let every node verify and vote.

    Exits 0 when the community decides you own the suspect, 1 when it decides you do not, and
    2 when it cannot decide (or the claim is refused). With --config, the certificate must hold
    against the members' keys (a majority signed its checkpoints) before the decision is reported.
    """
    try:
        code = _claim(**options)
    except WmnodeError as exc:
        click.echo(f"error: {exc.diagnostics()}", err=True)
        code = EXIT_UNDECIDED
    sys.exit(code)


def _claim(
    node: str,
    config: Path | None,
    state_dir: Path | None,
    identity_path: Path,
    bundle_dir: Path,
    suspect: str,
    certificate_path: Path | None,
    timeout_s: float,
    as_json: bool,
) -> int:
    identity = load_identity(identity_path)
    community = load_community(config)
    with NodeClient(node_url(node, community)) as client:
        node_status = client.status()
        names = member_names(node_status) if community is None else {p.key: p.name for p in community.members}
        say = (lambda _: None) if as_json else click.echo
        outcome = claim_suspect(
            client,
            identity,
            bundle_dir,
            suspect,
            timeout_s=timeout_s,
            on_vote=lambda vote: say(format_vote(vote, names)),
        )
    code = {"owner": EXIT_OWNER, "not-owner": EXIT_NOT_OWNER}.get(outcome.result or "", EXIT_UNDECIDED)
    certificate_path = _write_certificate(outcome, node_status, community, state_dir, certificate_path)
    if as_json:
        echo_json(
            {**outcome.to_json(), "certificate": str(certificate_path) if certificate_path else None, "exit": code}
        )
        return code
    _say_outcome(outcome, certificate_path)
    return code


def _write_certificate(
    status: ClaimStatus,
    node_status: dict[str, Any],
    community: Community | None,
    state_dir: Path | None,
    path: Path | None,
) -> Path | None:
    """Where the certificate of a decided claim was written (None: undecided, nothing to certify)."""
    if status.decided is None:
        return None
    certificate = _certificate(status, node_status, community, state_dir)
    path = path or Path(f"claim-{status.claim.index}.certificate.json")
    path.write_text(json.dumps(certificate.to_json(), indent=2, sort_keys=True) + "\n")
    return path


def _say_outcome(status: ClaimOutcome, certificate_path: Path | None) -> None:
    seconds, index = status.seconds_to_decision, status.claim.index
    if status.decided is None:
        click.echo(f"claim #{index}: undecided after {seconds:.1f} s ({len(status.votes)} of {status.members} votes)")
        return
    click.echo(f"claim #{index}: decided {status.decided} by a majority of {status.majority} in {seconds:.2f} s")
    standing = status.standing
    if status.decided == "owner" and status.result != "owner" and standing is not None:
        click.echo(
            f"but the model's standing owner is {short(standing.owner, 16)}: publish #{standing.publish} "
            f"({fmt_ms(standing.publish_time)}) came before yours (#{status.publish.index})"
        )
    click.echo(f"result: {status.result}; certificate written to {certificate_path}")


def _certificate(
    status: ClaimStatus, node_status: dict[str, Any], community: Community | None, state_dir: Path | None
) -> Certificate:
    """Gather the certificate of a decided claim; with a community, check it before anyone sees it.

    Without one the members are whoever the node lists (its word); with one, they are the config's,
    the certificate must verify against their keys, and its checkpoints join this client's memory.
    """
    if community is None:
        urls = [m["api"] if "://" in m["api"] else f"http://{m['api']}" for m in node_status["members"]]
        return build_certificate(status, urls, node_status["community"])
    certificate = build_certificate(status, [p.url for p in community.members], community.name)
    verify_certificate(certificate, list(community.keys), community.name)
    with open_monitor(community, state_dir) as monitor:
        monitor.accept(_member_checkpoints(monitor, certificate.checkpoints))
    return certificate


def _member_checkpoints(monitor: Monitor, checkpoints: Iterable[Checkpoint]) -> list[tuple[Peer, Checkpoint]]:
    return [(monitor.community.signer(checkpoint, "the certificate"), checkpoint) for checkpoint in checkpoints]


@click.command()
@node_option
@click.option(
    "--model",
    "model",
    required=True,
    help="A local model (file or directory), or the SHA-256 of a model artifact or of its function identity.",
)
@json_option
def owner(node: str, model: str, as_json: bool) -> None:
    """Show the standing owner of a model and why (the earliest publish among passing claims).

    A model is named by what defines its function (registry.modelid): any copy of it, re-carded in
    its input size, free fields or label names, has the same standing owner."""
    name = model if is_hex(model, 32) else model_name(model)
    with NodeClient(node) as client:
        standing = client.owner(name)
    if as_json:
        echo_json(standing.to_json())
        return
    click.echo(f"owner {standing.owner}")
    click.echo(f"  {standing.why}; published {fmt_ms(standing.publish_time)}")


@click.group()
def certificate() -> None:
    """Ownership certificates."""


@certificate.command("verify")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="A community config: the members' public keys are taken from it.",
)
@click.option("--member-key", "member_keys", multiple=True, help="A member's public key (hex); repeat per member.")
@state_dir_option
@json_option
def certificate_verify(
    path: Path, config_path: Path | None, member_keys: tuple[str, ...], state_dir: Path | None, as_json: bool
) -> None:
    """Check a certificate offline against the members' public keys; exit 0 when it holds.

    With --config, a certificate that names another community is refused too, and so is one whose
    checkpoints give a size another root than the checkpoints this client kept (a fork).
    """
    keys, community, members = list(member_keys), None, None
    if config_path is not None:
        config = load_config(config_path)
        keys, community = keys + list(config.member_keys), config.community
        members = Community.from_config(config)
    if not keys:
        raise ConfigError("give the members' public keys: --config COMMUNITY.toml or --member-key HEX (repeated)")
    try:
        cert = json.loads(path.read_bytes()[: 16 * 2**20])
    except ValueError as exc:
        raise VerificationError(f"{path} is not JSON: {exc}") from exc
    if not isinstance(cert, dict):
        raise VerificationError(f"{path} is not a certificate")
    summary = verify_certificate(cert, keys, community)
    if members is not None:
        signed = [c for c in Certificate.from_json(cert).checkpoints if c.node in members.keys]  # verified above
        with open_monitor(members, state_dir) as monitor:  # offline: compares with the kept checkpoints only
            for _, checkpoint in _member_checkpoints(monitor, signed):
                monitor.check_kept(checkpoint)
    if as_json:
        echo_json(summary)
        return
    click.echo(
        f"certificate holds: claim #{summary['claim']} on model {short(summary['model_hash'], 16)} decided "
        f"{summary['decided']} ({summary['tally']}), result {summary['result']}, owner {short(summary['owner'], 16)}, "
        f"publish #{summary['publish']} at {fmt_ms(summary['publish_time'])}; checkpoint signed by "
        f"{summary['checkpoint_signers']} of {len(set(keys))} members"
    )
    for vote in summary["votes"]:
        refs = ", ".join(short(r, 12) for r in vote["references"]) or "none"
        click.echo(
            f"  vote #{vote['index']} by {short(vote['node'], 16)}: {vote['verdict']}, false-positive bound "
            f"{vote['fp_bound']}, reference models checked: {refs}"
        )
    standing = summary["standing"]
    if summary["result"] != summary["decided"] and standing is not None:
        click.echo(
            f"when it was written, the model's standing owner was {short(standing['owner'], 16)}: publish "
            f"#{standing['publish']} ({fmt_ms(standing['publish_time'])}) came before this claim's"
        )
    click.echo(
        "it proves the community's vote on this claim; who stands as the model's owner when several "
        "claimants pass (the earliest publish) is answered by `wmnode owner --model HASH`"
    )


COMMANDS = [claim, owner, certificate]
