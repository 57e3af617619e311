"""`wmnode claim`, `owner`, `certificate verify`: ownership proofs by the community's vote."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from node_config import load_config
from registry.certificate import build_certificate, verify_certificate
from registry.cli._common import echo_json, fmt_ms, json_option, load_identity, node_option, short
from registry.client import NodeClient
from registry.errors import ConfigError, VerificationError, WmnodeError
from registry.ownership import claim_suspect

#: Exit codes of `wmnode claim`.
EXIT_OWNER, EXIT_NOT_OWNER, EXIT_UNDECIDED = 0, 1, 2


def member_names(status: dict[str, Any]) -> dict[str, str]:
    return {m["key"]: m["name"] for m in status["members"] if m.get("key")}


def format_vote(vote: dict[str, Any], names: dict[str, str]) -> str:
    msg = vote["msg"]
    who = names.get(msg["node"], short(msg["node"], 16))
    score = f"score {msg['score']}‰ / {msg['threshold']}‰, bound {msg.get('fp_bound', '?')}"
    return f"  vote #{vote['index']} {who:<8} {msg['verdict']:<9} {score}: {msg['reason']}"


@click.command()
@node_option
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
    2 when it cannot decide (or the claim is refused).
    """
    try:
        code = _claim(**options)
    except WmnodeError as exc:
        click.echo(f"error: {exc.diagnostics()}", err=True)
        code = EXIT_UNDECIDED
    sys.exit(code)


def _claim(
    node: str,
    identity_path: Path,
    bundle_dir: Path,
    suspect: str,
    certificate_path: Path | None,
    timeout_s: float,
    as_json: bool,
) -> int:
    identity = load_identity(identity_path)
    with NodeClient(node) as client:
        node_status = client.status()
        names = member_names(node_status)
        say = (lambda _: None) if as_json else click.echo
        status = claim_suspect(
            client,
            identity,
            bundle_dir,
            suspect,
            timeout_s=timeout_s,
            on_vote=lambda vote: say(format_vote(vote, names)),
        )
    index = status["claim"]["index"]
    result = status["result"]
    certificate = None
    if status["decided"] is not None:
        urls = [m["api"] if "://" in m["api"] else f"http://{m['api']}" for m in node_status["members"]]
        certificate = build_certificate(status, urls, node_status["community"])
        certificate_path = certificate_path or Path(f"claim-{index}.certificate.json")
        certificate_path.write_text(json.dumps(certificate, indent=2, sort_keys=True) + "\n")
    code = {"owner": EXIT_OWNER, "not-owner": EXIT_NOT_OWNER}.get(result or "", EXIT_UNDECIDED)
    if as_json:
        echo_json({**status, "certificate": str(certificate_path) if certificate else None, "exit": code})
        return code
    seconds = status["seconds_to_decision"]
    if status["decided"] is None:
        click.echo(
            f"claim #{index}: undecided after {seconds:.1f} s ({len(status['votes'])} of {status['members']} votes)"
        )
        return code
    click.echo(f"claim #{index}: decided {status['decided']} by a majority of {status['majority']} in {seconds:.2f} s")
    standing = status["standing"]
    if status["decided"] == "owner" and result != "owner" and standing is not None:
        click.echo(
            f"but the model's standing owner is {short(standing['owner'], 16)}: publish #{standing['publish']} "
            f"({fmt_ms(standing['publish_time'])}) came before yours (#{status['publish']['index']})"
        )
    click.echo(f"result: {result}; certificate written to {certificate_path}")
    return code


@click.command()
@node_option
@click.option("--model", "model_hash", required=True, help="SHA-256 of the model file (the claims' model_hash).")
@json_option
def owner(node: str, model_hash: str, as_json: bool) -> None:
    """Show the standing owner of a model and why (the earliest publish among passing claims)."""
    with NodeClient(node) as client:
        standing = client.owner(model_hash)
    if as_json:
        echo_json(standing)
        return
    click.echo(f"owner {standing['owner']}")
    click.echo(f"  {standing['why']}; published {fmt_ms(standing['publish_time'])}")


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
@json_option
def certificate_verify(path: Path, config_path: Path | None, member_keys: tuple[str, ...], as_json: bool) -> None:
    """Check a certificate offline against the members' public keys; exit 0 when it holds.

    With --config, a certificate that names another community is refused too.
    """
    keys, community = list(member_keys), None
    if config_path is not None:
        config = load_config(config_path)
        keys, community = keys + list(config.member_keys), config.community
    if not keys:
        raise ConfigError("give the members' public keys: --config COMMUNITY.toml or --member-key HEX (repeated)")
    try:
        cert = json.loads(path.read_bytes()[: 16 * 2**20])
    except ValueError as exc:
        raise VerificationError(f"{path} is not JSON: {exc}") from exc
    if not isinstance(cert, dict):
        raise VerificationError(f"{path} is not a certificate")
    summary = verify_certificate(cert, keys, community)
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
