"""HTTP client for a node's API (httpx), translating errors into the wmnode error tree.

Every byte a node sends is untrusted: answers are read up to a limit, must be JSON of the expected
shape, and hashes in proofs must be 32 bytes of lowercase hex; anything else is a `MessageError`
naming the node and the path.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx

from contracts.encoding import MAX_MESSAGE_BYTES, is_hex
from contracts.errors import MessageError, PayloadTooLargeError, UnavailableError, VerificationError, error_class
from registry.log.answers import ClaimStatus, Entry, Standing, Submitted
from registry.log.messages import Message, Publish
from registry.proofs.checkpoint import Checkpoint

#: The most a node may send as one JSON answer (a claim's status with every vote fits many times).
MAX_JSON_BYTES = 16 * 2**20
#: Checkpoints and proofs are small: a proof of a tree of 2^63 leaves has at most 63 hashes.
MAX_PROOF_BYTES = 64 * 1024
MAX_PROOF_HASHES = 64
#: Artifacts are checked against their hash; this only bounds the memory a liar can take.
MAX_ARTIFACT_BYTES = 2**30

_T = TypeVar("_T")


@dataclass(frozen=True)
class Reply:
    """A node's answer, read whole but never beyond its limit."""

    status_code: int
    content: bytes
    url: str

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        try:
            return json.loads(self.content)
        except ValueError as exc:
            raise MessageError(f"node answer from {self.url} is not JSON: {exc}") from exc


class NodeClient:
    """A thin, typed wrapper over one node's API. Use as a context manager or call `close()`."""

    def __init__(self, url: str, timeout: float = 15.0, transport: httpx.BaseTransport | None = None) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, timeout=timeout, transport=transport)

    def __enter__(self) -> NodeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, path: str, *, limit: int = MAX_JSON_BYTES, **kwargs: Any) -> Reply:
        where = f"{self.url}{path}"
        try:
            with self._http.stream(method, path, **kwargs) as response:
                body = bytearray()
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > limit:
                        raise PayloadTooLargeError(f"node {where} sent more than {limit} bytes")
                reply = Reply(response.status_code, bytes(body), where)
        except httpx.HTTPError as exc:
            raise UnavailableError(f"cannot reach node {self.url}: {exc}") from exc
        if reply.status_code >= 400:
            name, detail = "", reply.text[:2000]
            try:
                body_json = json.loads(reply.content)
            except ValueError:
                body_json = None
            if isinstance(body_json, dict):
                name, detail = str(body_json.get("error", ""))[:100], str(body_json.get("detail", detail))[:2000]
            raise error_class(name)(f"{detail} (HTTP {reply.status_code} from {where})")
        return reply

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._request(method, path, **kwargs).json()

    def _object(self, path: str, **kwargs: Any) -> dict[str, Any]:
        obj = self._json("GET", path, **kwargs)
        if not isinstance(obj, dict):
            raise MessageError(f"node {self.url}{path} answered {type(obj).__name__}, not an object")
        return obj

    def _answer(self, parse: Callable[[object, str], _T], obj: object, path: str) -> _T:
        """A node's JSON answer parsed into its type; a malformed one is a `MessageError` naming the node."""
        try:
            return parse(obj, "answer")
        except MessageError as exc:
            raise MessageError(f"node {self.url}{path} sent a malformed answer: {exc.diagnostics()}") from None

    def submit(self, msg: Message) -> Submitted:
        """POST a signed message; where it is in the log (index, time, leaf_hash) and whether it is new."""
        return self._answer(Submitted.from_json, self.post_raw(msg.canonical_bytes()), "/v1/entries")

    def post_raw(self, body: bytes) -> Any:
        return self._json("POST", "/v1/entries", content=body, headers={"content-type": "application/json"})

    def status(self) -> dict[str, Any]:
        return self._object("/v1/status")

    def entry(self, index: int) -> Entry:
        path = f"/v1/entries/{index}"
        entry = self._answer(Entry.from_json, self._object(path), path)
        if entry.index != index:
            raise MessageError(f"node {self.url}{path} answered with entry #{entry.index}")
        return entry

    def entries(self, start: int | None = None, limit: int = 20) -> dict[str, Any]:
        params: dict[str, int] = {"limit": limit}
        if start is not None:
            params["start"] = start
        # Each entry is a message of at most MAX_MESSAGE_BYTES, which JSON escaping may grow sixfold.
        return self._object("/v1/entries", params=params, limit=MAX_JSON_BYTES + limit * 6 * MAX_MESSAGE_BYTES)

    def checkpoint(self, size: int | None = None) -> dict[str, Any]:
        """The node's signed checkpoint as JSON, checked for shape (not for who signed it)."""
        return self.signed_checkpoint(size).to_json()

    def signed_checkpoint(self, size: int | None = None) -> Checkpoint:
        params = {} if size is None else {"size": size}
        checkpoint = Checkpoint.from_json(self._json("GET", "/v1/checkpoint", params=params, limit=MAX_PROOF_BYTES))
        if size is not None and checkpoint.size != size:
            raise MessageError(f"node {self.url} answered a checkpoint of size {checkpoint.size} for size {size}")
        return checkpoint

    def publish_by_key(self, key_hash: str) -> Entry:
        """The entry of the publish of the key that hashes to `key_hash`."""
        path = f"/v1/publishes/{key_hash}"
        entry = self._answer(Entry.from_json, self._object(path), path)
        if not isinstance(entry.msg, Publish) or entry.msg.key_hash != key_hash:
            raise MessageError(f"node {self.url}{path} answered with an entry that is not that key's publish")
        return entry

    def claim(self, index: int) -> ClaimStatus:
        """A claim with its publish, votes, decision and the standing owner of its model."""
        path = f"/v1/claims/{index}"
        status = self._answer(ClaimStatus.from_json, self._object(path), path)
        if status.claim.index != index:
            raise MessageError(f"node {self.url}{path} answered with claim #{status.claim.index}")
        return status

    def owner(self, model_hash: str) -> Standing:
        """The standing owner of a model (its artifact hash or its function identity)."""
        return self._answer(
            Standing.from_json, self._object("/v1/owner", params={"model_hash": model_hash}), "/v1/owner"
        )

    def references(self) -> dict[str, Any]:
        """The reference models a majority of the members recorded."""
        return self._object("/v1/references")

    def put_artifact(self, data: bytes) -> str:
        """Upload bytes to the node's artifact store; returns their `sha256:<hex>` URI."""
        digest = hashlib.sha256(data).hexdigest()
        self._request(
            "PUT", f"/v1/artifacts/{digest}", content=data, headers={"content-type": "application/octet-stream"}
        )
        return f"sha256:{digest}"

    def get_artifact(self, digest: str) -> bytes:
        data = self._request("GET", f"/v1/artifacts/{digest}", limit=MAX_ARTIFACT_BYTES).content
        if hashlib.sha256(data).hexdigest() != digest:
            raise VerificationError(f"node {self.url} sent bytes that do not hash to {digest[:16]}…")
        return data

    def checkpoint_note(self) -> str:
        return self._request("GET", "/checkpoint").text

    def inclusion(self, index: int, size: int) -> dict[str, Any]:
        """RFC 6962 audit path of leaf `index` in the tree of `size` (`path` checked for shape)."""
        obj = self._object("/v1/proof/inclusion", params={"index": index, "size": size}, limit=MAX_PROOF_BYTES)
        self._path(obj, "inclusion")
        return obj

    def inclusion_path(self, index: int, size: int) -> list[bytes]:
        return self._path(self.inclusion(index, size), "inclusion")

    def consistency(self, first: int, second: int) -> dict[str, Any]:
        """RFC 6962 consistency proof from the tree of `first` leaves to that of `second`."""
        obj = self._object("/v1/proof/consistency", params={"first": first, "second": second}, limit=MAX_PROOF_BYTES)
        self._path(obj, "consistency")
        return obj

    def consistency_path(self, first: int, second: int) -> list[bytes]:
        return self._path(self.consistency(first, second), "consistency")

    def _path(self, obj: dict[str, Any], what: str) -> list[bytes]:
        path = obj.get("path")
        if not isinstance(path, list) or len(path) > MAX_PROOF_HASHES or not all(is_hex(p, 32) for p in path):
            raise MessageError(
                f"node {self.url} sent a malformed {what} proof: 'path' must be a list of at most "
                f"{MAX_PROOF_HASHES} hashes, each 64 lowercase hex digits"
            )
        return [bytes.fromhex(p) for p in path]
