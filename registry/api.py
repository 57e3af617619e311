"""The node's HTTP API (FastAPI). Every node answers reads; writes go through Raft from any node."""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from pysyncobj import FAIL_REASON
from starlette.types import ASGIApp, Receive, Scope, Send

from registry.asgi import read_body, send_json
from registry.checkpoint import Checkpoint, checkpoint_body, sign_note
from registry.encoding import MAX_MESSAGE_BYTES, is_hex, parse_json
from registry.errors import (
    MessageError,
    NotFoundError,
    PayloadTooLargeError,
    RejectedError,
    UnavailableError,
    WmnodeError,
)
from registry.fetch import ArtifactStore, FetchPolicy, pin_url
from registry.identity import Identity
from registry.infos import (
    DEFAULT_POLICY,
    VerificationPolicy,
    card_from_artifact,
    check_against_card,
    check_verifier,
    parse_info,
    safetensors_header,
    tensor_names,
)
from registry.log import REJECTED, Outcome, RegistryLog, envelope
from registry.messages import ARTIFACT, Claim, Message, message_from_json, uri_kind

logger = logging.getLogger(__name__)

#: pysyncobj failures after which a resubmission is safe (apply de-duplicates) and may succeed.
_TRANSIENT = {
    FAIL_REASON.QUEUE_FULL,
    FAIL_REASON.MISSING_LEADER,
    FAIL_REASON.DISCARDED,
    FAIL_REASON.NOT_LEADER,
    FAIL_REASON.LEADER_CHANGED,
    FAIL_REASON.UNKNOWN_OUTCOME,
}
_RETRY_PAUSE_S = 0.05


@dataclass(frozen=True)
class NodeInfo:
    """What the API needs to know about the node it runs in."""

    name: str
    community: str
    members: tuple[dict[str, str], ...]
    raft_to_name: dict[str, str]
    max_skew_ms: int
    commit_timeout_s: float
    fetch: FetchPolicy = FetchPolicy()
    verification: VerificationPolicy = DEFAULT_POLICY


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def error_payload(exc: WmnodeError) -> dict[str, str]:
    return {"error": type(exc).__name__, "detail": exc.diagnostics()}


class _PublishFastPath:
    """Serve `POST /v1/entries`, the hot path, as plain ASGI in front of FastAPI's routing and
    middleware (which cost more CPU per request than the whole commit on a small machine)."""

    def __init__(self, app: ASGIApp, publish: Callable[[bytes], Awaitable[tuple[int, dict[str, Any]]]]) -> None:
        self.app, self.publish = app, publish

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/v1/entries" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        try:
            status, payload = await self.publish(await read_body(scope, receive, MAX_MESSAGE_BYTES))
        except WmnodeError as exc:
            status, payload = exc.http_status, error_payload(exc)
        await send_json(send, status, payload)


def _resolve(future: asyncio.Future[tuple[Outcome | None, int]], result: tuple[Outcome | None, int]) -> None:
    if not future.done():  # the request may have timed out meanwhile
        future.set_result(result)


async def _commit(log: RegistryLog, msg: Message, data: bytes, timeout: float) -> Outcome:
    """Submit until committed; resubmitting is safe because apply de-duplicates."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        future: asyncio.Future[tuple[Outcome | None, int]] = loop.create_future()

        def _done(res: Outcome | None, err: int, fut: asyncio.Future[tuple[Outcome | None, int]] = future) -> None:
            loop.call_soon_threadsafe(_resolve, fut, (res, err))

        log.submit(data, _done, validated=msg)
        remaining = deadline - loop.time()
        try:
            res, err = await asyncio.wait_for(future, max(remaining, 0.001))
        except TimeoutError:
            raise UnavailableError(
                f"not committed within {timeout:g} s: is a majority of the community up? The message may "
                "still commit later; submitting it again is safe (a duplicate answers with its index)"
            ) from None
        if err == FAIL_REASON.SUCCESS and res is not None:
            return res
        if err not in _TRANSIENT or loop.time() + _RETRY_PAUSE_S >= deadline:
            raise UnavailableError(f"commit failed (pysyncobj reason {err}); retry later")
        await asyncio.sleep(_RETRY_PAUSE_S)


async def publish(
    log: RegistryLog, info: NodeInfo, body: bytes, store: ArtifactStore | None = None
) -> tuple[int, dict[str, Any]]:
    """Validate a signed message, commit it (or find it already stored); status and answer."""
    msg = message_from_json(parse_json(body))
    existing, code = log.lookup(msg), 200
    if existing is None:
        stamp = now_ms()
        log.state.admit(msg, stamp, info.max_skew_ms)
        if isinstance(msg, Claim):
            await asyncio.to_thread(check_claim_urls, msg, info.fetch)
            if store is not None:
                await asyncio.to_thread(check_claim_info, log, msg, store, info.verification)
        existing = await _commit(log, msg, envelope(msg, stamp, info.max_skew_ms), info.commit_timeout_s)
        if existing.status == REJECTED:
            raise RejectedError(existing.reason)
        code = 201 if existing.status == "appended" else 200
    return code, {
        "index": existing.index,
        "time": existing.time,
        "leaf_hash": existing.leaf_hash,
        "status": existing.status,
    }


def check_claim_urls(claim: Claim, policy: FetchPolicy) -> None:
    """Refuse, before it commits, a claim whose URLs this node would not fetch (DESIGN §4.5).

    Every node checks again when it fetches; this only spares the community a claim that
    cannot be verified (a suspect in a private range, say) and tells the claimant why at once.
    """
    for name in ("model_uri", "verifier_uri", "info_uri"):
        uri = getattr(claim, name)
        if uri_kind(uri) != ARTIFACT:
            pin_url(uri.removeprefix("predict+"), policy)


#: DESIGN §4.1: info is a small JSON object.
MAX_INFO_BYTES = 64 * 1024


def check_claim_info(log: RegistryLog, claim: Claim, store: ArtifactStore, policy: VerificationPolicy) -> None:
    """Refuse, before it commits, a claim whose info is out of the community's bounds (DESIGN §6.1
    rule 2, §6.2) or does not fit the suspect's card: no judge is ever started for it.

    The info must already be in this node's store (`wmnode claim` uploads it first); so must a
    suspect model named by artifact, whose card is read from its safetensors header (no torch).
    """
    if uri_kind(claim.info_uri) != ARTIFACT:
        raise RejectedError("info_uri must name an artifact in the nodes' store (upload the info first)")
    digest = claim.info_uri.removeprefix("sha256:")
    if not store.has(digest):
        raise RejectedError(f"the info {claim.info_uri[:23]}… is not in this node's store; upload it first")
    if store.path(digest).stat().st_size > MAX_INFO_BYTES:
        raise RejectedError(f"the info is over {MAX_INFO_BYTES} bytes")
    with log.state.lock:
        publish = log.state.publishes.get(claim.publish)
    scheme = publish["scheme"] if publish is not None else ""
    typed = parse_info(scheme, parse_json(store.path(digest).read_bytes(), limit=MAX_INFO_BYTES, floats=True), policy)
    if uri_kind(claim.verifier_uri) == ARTIFACT and store.has(claim.verifier_uri[7:]):
        check_verifier(typed, tensor_names(safetensors_header(store.path(claim.verifier_uri[7:]))))
    if uri_kind(claim.model_uri) == ARTIFACT:
        if not store.has(claim.model_hash):
            raise RejectedError(f"the suspect {claim.model_uri[:23]}… is not in this node's store; upload it first")
        check_against_card(typed, card_from_artifact(safetensors_header(store.path(claim.model_hash))))


async def _upload(request: Request, store: ArtifactStore, digest: str) -> tuple[int, dict[str, Any]]:
    """Spool the body to a temporary file (size-limited), then store it if it hashes to `digest`."""
    store.path(digest)  # a malformed name is refused before anything is read
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > store.max_bytes:
        raise PayloadTooLargeError(f"artifact is {length} bytes, over this node's limit of {store.max_bytes}")
    with tempfile.TemporaryFile() as spool:
        total = 0
        async for chunk in request.stream():
            total += len(chunk)
            if total > store.max_bytes:
                raise PayloadTooLargeError(f"artifact is over this node's limit of {store.max_bytes} bytes")
            spool.write(chunk)
        spool.seek(0)
        created = await asyncio.to_thread(store.put, digest, iter(lambda: spool.read(1 << 16), b""))
    return (201 if created else 200), {"artifact": f"sha256:{digest}", "size": total, "stored": created}


def create_app(
    log: RegistryLog,
    identity: Identity,
    info: NodeInfo,
    store: ArtifactStore,
    verifier_ready: Callable[[], bool] = lambda: False,
    references_ready: Callable[[], bool] = lambda: True,
) -> ASGIApp:
    app = FastAPI(title="wmnode registry node", version="1", docs_url=None, redoc_url=None)

    @app.exception_handler(WmnodeError)
    async def _wmnode_error(request: Request, exc: WmnodeError) -> JSONResponse:
        return JSONResponse(error_payload(exc), status_code=exc.http_status)

    @app.exception_handler(RequestValidationError)
    async def _bad_params(request: Request, exc: RequestValidationError) -> JSONResponse:
        where = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        return JSONResponse({"error": "MessageError", "detail": where}, status_code=400)

    @app.get("/v1/entries/{index}")
    def get_entry(index: int) -> dict[str, Any]:
        return log.entry(index)

    @app.get("/v1/entries")
    def list_entries(start: int | None = None, limit: int = 20) -> dict[str, Any]:
        if not 1 <= limit <= 1000:
            raise MessageError("limit must be 1-1000")
        size = log.size()
        first = max(size - limit, 0) if start is None else start
        if first < 0:
            raise MessageError("start must be non-negative")
        return {"size": size, "entries": [log.entry(i) for i in range(first, min(first + limit, size))]}

    @app.get("/v1/status")
    def status() -> dict[str, Any]:
        raft = log.raft_status()
        size, root = log.head()
        leader = raft.get("leader")
        state = {0: "follower", 1: "candidate", 2: "leader"}.get(raft.get("state", -1), "unknown")
        return {
            "node": identity.public_hex,
            "name": info.name,
            "community": info.community,
            "role": state,
            "leader": info.raft_to_name.get(str(leader)) if leader is not None else None,
            "term": raft.get("raft_term"),
            "commit_index": raft.get("commit_idx"),
            "last_applied": raft.get("last_applied"),
            "has_quorum": bool(raft.get("has_quorum")),
            "size": size,
            "root": root.hex(),
            "members": list(info.members),
            "verifier_ready": verifier_ready(),
            "references_ready": references_ready(),
            "references": len(log.state.admitted_references()),
        }

    @app.get("/v1/references")
    def references() -> dict[str, Any]:
        return {"references": log.state.admitted_references()}

    @app.get("/v1/checkpoint")
    def checkpoint(size: int | None = None) -> dict[str, Any]:
        head, root = log.head()
        if size is not None:
            if not 0 <= size <= head:
                raise NotFoundError(f"size must be 0-{head}, the log's size")
            head, root = size, log.root(size)
        return asdict(Checkpoint.create(identity, head, root, now_ms()))

    @app.get("/v1/publishes/{key_hash}")
    def publish_by_key(key_hash: str) -> dict[str, Any]:
        index = log.state.by_key_hash.get(key_hash)
        if index is None:
            raise NotFoundError(f"no publish with key_hash {key_hash[:64]}")
        return log.entry(index)

    @app.get("/v1/claims/{index}")
    def claim(index: int) -> dict[str, Any]:
        return log.claim_status(index)

    @app.get("/v1/owner")
    def owner(model_hash: str) -> dict[str, Any]:
        if not is_hex(model_hash, 32):
            raise MessageError("model_hash must be 64 lowercase hex digits")
        standing = log.standing_owner(model_hash)
        if standing is None:
            raise NotFoundError(f"no claim has passed on model {model_hash[:16]}… yet")
        return standing

    @app.put("/v1/artifacts/{digest}")
    async def put_artifact(digest: str, request: Request) -> JSONResponse:
        status, payload = await _upload(request, store, digest)
        return JSONResponse(payload, status_code=status)

    @app.get("/v1/artifacts/{digest}")
    def get_artifact(digest: str) -> StreamingResponse:
        if not store.has(digest):
            raise NotFoundError(f"no artifact sha256:{digest[:64]}")
        size = store.path(digest).stat().st_size
        return StreamingResponse(
            store.iter_file(digest),
            media_type="application/octet-stream",
            headers={"content-length": str(size)},
        )

    @app.get("/checkpoint", response_class=PlainTextResponse)
    def checkpoint_note() -> PlainTextResponse:
        size, root = log.head()
        note = sign_note(checkpoint_body(info.community, size, root), info.name, identity)
        return PlainTextResponse(note, media_type="text/plain; charset=utf-8")

    @app.get("/v1/proof/inclusion")
    def inclusion(index: int, size: int | None = None) -> dict[str, Any]:
        return log.inclusion(index, log.size() if size is None else size)

    @app.get("/v1/proof/consistency")
    def consistency(first: int, second: int | None = None) -> dict[str, Any]:
        return log.consistency(first, log.size() if second is None else second)

    @app.get("/v1/root")
    def root(size: int) -> dict[str, Any]:
        if size < 0:
            raise NotFoundError("size must be non-negative")
        return {"size": size, "root": log.root(size).hex()}

    return _PublishFastPath(app, lambda body: publish(log, info, body, store))
