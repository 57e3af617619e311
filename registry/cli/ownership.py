"""The owner's side of the protocol: publish a bundle, claim a suspect, wait for the community.

`publish_bundle` signs `<Publish: time ‖ hash(key) ‖ hash(verifier) ‖ hash(info)>` from a bundle
(MTLSign §3.3) and returns a checked receipt. `claim_suspect` uploads what the nodes cannot reach
(the verifier artifact, the info, a local suspect model) to a node's artifact store, reveals the
key with its key_proof, waits until a majority has voted, and returns the claim's status.

The verifier artifact and the info are uploaded at claim time, not at publish: until the owner
claims, nothing but their hashes is public.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from contracts.bundle import INFO_FILE, KEY_FILE, MAX_INFO_BYTES, RECEIPT_FILE, VERIFIER_FILE, KeyRecord
from contracts.encoding import is_number, parse_json
from contracts.errors import IdentityError, MessageError, UnavailableError
from contracts.fetch import FetchPolicy, http_get
from contracts.identity import Identity, derive_owner_key
from contracts.modelid import model_identity_of
from registry.client.node_client import NodeClient
from registry.client.receipt import Receipt, fetch_receipt
from registry.log.answers import ClaimStatus, Entry
from registry.log.clock import now_ms
from registry.log.messages import Claim, Publish, predict_model_hash

#: The claimant's own machine fetches what it names, anywhere; only the nodes are guarded.
_CLIENT_POLICY = FetchPolicy(allow_loopback=True, allow_private=True, max_bytes=512 * 2**20, timeout_s=60.0)


@dataclass(frozen=True)
class BundleFiles:
    """What publish and claim need from a bundle directory (schemes.bundle writes it)."""

    directory: Path
    nonce: bytes
    owner: str
    key_proof: bytes
    scheme: str
    verifier: bytes
    info: bytes

    @classmethod
    def read(cls, directory: Path) -> BundleFiles:
        try:
            key_obj = parse_json((directory / KEY_FILE).read_bytes()[:MAX_INFO_BYTES], what=KEY_FILE)
            info_bytes = (directory / INFO_FILE).read_bytes()
            info = parse_json(info_bytes[:MAX_INFO_BYTES], floats=True, what=INFO_FILE)
            verifier = (directory / VERIFIER_FILE).read_bytes()
        except (OSError, MessageError) as exc:
            raise MessageError(f"{directory} is not a readable bundle (wmnode embed writes one): {exc}") from exc
        if not isinstance(info, dict) or not isinstance(info.get("scheme"), str):
            raise MessageError(f"{directory}: info.json must be a JSON object with a scheme")
        key = KeyRecord.from_json(key_obj, f"{directory}/{KEY_FILE}")
        nonce, proof = bytes.fromhex(key.nonce), bytes.fromhex(key.key_proof)
        return cls(directory, nonce, key.owner, proof, info["scheme"], verifier, info_bytes)

    def owner_key(self, identity: Identity) -> tuple[bytes, bytes]:
        """(key, key_proof) re-derived from the identity: refuses a bundle made by someone else."""
        derived = derive_owner_key(identity, self.nonce)
        if identity.public_hex != self.owner or derived.key_proof != self.key_proof:
            raise IdentityError(f"{self.directory} was embedded by another identity ({self.owner[:16]}…)")
        return derived.key, derived.key_proof


@dataclass(frozen=True, eq=False)
class ClaimOutcome(ClaimStatus):
    """A claim's status when `claim_suspect` stopped waiting (decided, every member voted, or out of
    time), with the seconds from its submit to then; its JSON is the status's and `seconds_to_decision`."""

    seconds_to_decision: float = 0.0

    @classmethod
    def of(cls, status: ClaimStatus, seconds: float) -> ClaimOutcome:
        return cls(**{f.name: getattr(status, f.name) for f in fields(ClaimStatus)}, seconds_to_decision=seconds)

    @classmethod
    def from_json(cls, obj: object, where: str = "claim outcome") -> ClaimOutcome:
        if not isinstance(obj, dict) or not is_number(obj.get("seconds_to_decision"), low=0):
            raise MessageError(f"{where} is a claim status with seconds_to_decision, a non-negative number")
        rest = {k: v for k, v in obj.items() if k != "seconds_to_decision"}
        return cls.of(ClaimStatus.from_json(rest, where), float(obj["seconds_to_decision"]))

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "seconds_to_decision": self.seconds_to_decision}


def publish_bundle(client: NodeClient, identity: Identity, bundle_dir: Path, *, save_receipt: bool = True) -> Receipt:
    """Sign and submit the bundle's publish; write (into the bundle) and return a checked receipt."""
    bundle = BundleFiles.read(bundle_dir)
    key, _ = bundle.owner_key(identity)
    msg = Publish.create(
        identity,
        scheme=bundle.scheme,
        time=now_ms(),
        key_hash=hashlib.sha256(key).hexdigest(),
        verifier_hash=hashlib.sha256(bundle.verifier).hexdigest(),
        info_hash=hashlib.sha256(bundle.info).hexdigest(),
        nonce=bundle.nonce.hex(),
    )
    result = client.submit(msg)
    receipt = replace(fetch_receipt(client, result.index), status=result.status)
    if save_receipt:
        (bundle_dir / RECEIPT_FILE).write_text(json.dumps(receipt.to_json(), indent=2, sort_keys=True) + "\n")
    return receipt


def model_name(suspect: str) -> str:
    """The function identity (contracts.modelid) of a local model file or directory."""
    from schemes.models.zoo import load_model, model_to_bytes  # here: `wmnode start` never imports torch

    path = Path(suspect)
    if not path.exists():
        raise MessageError(f"model {suspect!r} is neither a local model nor a SHA-256 hex digest")
    return model_identity_of(model_to_bytes(*load_model(path)))


def suspect_uri(client: NodeClient, suspect: str) -> tuple[str, str]:
    """(model_uri, model_hash) for a local model file or directory, a model URL or a prediction API.

    A local model is uploaded to the node's store as one file with its card inside, serialised
    canonically (schemes.zoo.model_to_bytes), so the same weights always get the same hash. An http(s)
    URL is asked what it is: a prediction API says so at GET (schemes.serving); anything else is
    taken as a model file, downloaded here once to learn its hash.
    """
    if suspect.startswith("predict+"):
        return suspect, predict_model_hash(suspect)
    if suspect.startswith(("http://", "https://")):
        body = http_get(suspect, _CLIENT_POLICY)
        try:
            described = json.loads(body) if len(body) < MAX_INFO_BYTES else None
        except ValueError:
            described = None
        if isinstance(described, dict) and described.get("kind") == "wmnode-predict":
            uri = "predict+" + suspect
            return uri, predict_model_hash(uri)
        return suspect, hashlib.sha256(body).hexdigest()
    from schemes.models.zoo import load_model, model_to_bytes

    path = Path(suspect)
    if not path.exists():
        raise MessageError(f"suspect {suspect!r} is neither a local model nor an http(s) URL")
    data = model_to_bytes(*load_model(path))
    uri = client.put_artifact(data)
    return uri, uri.removeprefix("sha256:")


def find_publish(client: NodeClient, key: bytes) -> int:
    """The index of the publish of `key` in this community's log (asked of the node, not a file)."""
    return client.publish_by_key(hashlib.sha256(key).hexdigest()).index


def claim_suspect(
    client: NodeClient,
    identity: Identity,
    bundle_dir: Path,
    suspect: str,
    *,
    timeout_s: float = 120.0,
    on_vote: Callable[[Entry], None] | None = None,
) -> ClaimOutcome:
    """Submit a claim on `suspect` and wait until it is decided; the claim's status, and how long it took."""
    bundle = BundleFiles.read(bundle_dir)
    key, proof = bundle.owner_key(identity)
    publish_index = find_publish(client, key)
    model_uri, model_hash = suspect_uri(client, suspect)
    verifier_uri = client.put_artifact(bundle.verifier)
    info_uri = client.put_artifact(bundle.info)
    msg = Claim.create(
        identity,
        publish=publish_index,
        model_uri=model_uri,
        model_hash=model_hash,
        verifier_uri=verifier_uri,
        info_uri=info_uri,
        key=key,
        key_proof=proof,
        time=now_ms(),
    )
    started = time.perf_counter()
    submitted = client.submit(msg)
    status = wait_decided(client, submitted.index, timeout_s, on_vote)
    return ClaimOutcome.of(status, time.perf_counter() - started)


def wait_decided(
    client: NodeClient,
    index: int,
    timeout_s: float,
    on_vote: Callable[[Entry], None] | None = None,
) -> ClaimStatus:
    """Poll the claim until a verdict has a majority (or every member has voted, or time is up)."""
    deadline, seen = time.monotonic() + timeout_s, 0
    while True:
        try:
            status = client.claim(index)
        except UnavailableError:
            status = None  # the node we asked is restarting; keep asking
        if status is not None:
            for vote in status.votes[seen:]:
                if on_vote is not None:
                    on_vote(vote)
            seen = len(status.votes)
            if status.decided is not None or seen >= status.members:
                return status
        if time.monotonic() > deadline:
            if status is None:
                raise UnavailableError(f"claim #{index}: the node did not answer within {timeout_s:g} s")
            return status
        time.sleep(0.05)
