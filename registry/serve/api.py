"""The node's HTTP API (FastAPI). Every node answers reads; writes go through Raft from any node."""

from __future__ import annotations

import asyncio
import json
import logging
import tempfile
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from pysyncobj import FAIL_REASON
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from contracts.asgi import client_key, read_body, send_json
from contracts.encoding import MAX_MESSAGE_BYTES, is_hex, parse_json
from contracts.errors import (
    MessageError,
    NotFoundError,
    PayloadTooLargeError,
    RateLimitedError,
    RejectedError,
    UnavailableError,
    VerificationError,
    WmnodeError,
)
from contracts.fetch import ArtifactStore, FetchPolicy, pin_url
from contracts.identity import Identity
from contracts.policy import VerificationPolicy
from registry.log.answers import Submitted
from registry.log.clock import CLOCK_NOT_STARTED, STALE_STAMP, now_ms
from registry.log.messages import ARTIFACT, MESSAGE_TYPES, Claim, Message, message_from_json, uri_kind
from registry.log.replicated import RegistryLog
from registry.log.state import REJECTED, Outcome
from registry.proofs.checkpoint import Checkpoint, checkpoint_body, sign_note
from registry.serve import schemas
from registry.serve.admission import (
    check_published_artifacts,
    check_suspect,
    check_verifier_file,
    info_bytes,
    read_info,
)
from registry.serve.info import NodeInfo
from registry.serve.metering import ADDRESS, CLAIM, IDENTITY, PUBLISH, UPLOAD, Metering, RateLimiter, StoreMeter
from registry.serve.metrics import CONTENT_TYPE, NodeMetrics
from registry.serve.openapi import OCTETS, openapi_document, refusals
from registry.serve.read_meter import ReadGate, read_cost

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


def error_payload(exc: WmnodeError) -> dict[str, str]:
    return {"error": type(exc).__name__, "detail": exc.diagnostics()}


def error_headers(exc: WmnodeError) -> dict[str, str]:
    """RFC 9110 §10.2.3: a 429 says, in whole seconds, when to try again."""
    return {"retry-after": str(exc.retry_after_s)} if isinstance(exc, RateLimitedError) else {}


def _peek(body: bytes) -> tuple[str, str | None]:
    """A message's type and `owner` as its body states them: unchecked, to pick the buckets to
    charge before the signature is verified (publish() validates everything)."""
    try:
        obj = json.loads(body)  # not the strict parser: publish() runs that, and refuses what it refuses
    except (ValueError, RecursionError):  # 64 KiB of "[" nests deeper than Python recurses
        return "", None
    if not isinstance(obj, dict):
        return "", None
    kind, owner = obj.get("type"), obj.get("owner")
    return (kind if isinstance(kind, str) and kind in MESSAGE_TYPES else ""), (
        owner if isinstance(owner, str) and is_hex(owner, 32) else None
    )


def _signed(body: bytes) -> bool:
    try:
        message_from_json(parse_json(body))
    except WmnodeError:
        return False
    return True


class _PublishFastPath:
    """Serve `POST /v1/entries`, the hot path, as plain ASGI in front of FastAPI's routing and
    middleware (which cost more CPU per request than the whole commit on a small machine).

    With `rates`, a publish or claim first pays a token of its client address's bucket, then, once
    it names an owner, one of that identity's; the identity's token comes back when the message
    turns out not to be signed by that owner, so nobody can spend someone else's tokens.
    """

    def __init__(
        self,
        app: ASGIApp,
        publish: Callable[[bytes], Awaitable[tuple[int, Submitted]]],
        metrics: NodeMetrics,
        rates: RateLimiter | None = None,
    ) -> None:
        self.app, self.publish, self.metrics, self.rates = app, publish, metrics, rates

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/v1/entries" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        headers: dict[str, str] = {}
        try:
            body = await read_body(scope, receive, MAX_MESSAGE_BYTES)
            kind, owner = _peek(body)
            status, answer = await self._metered(scope, body, kind, owner)
            if answer.status == "appended":
                self.metrics.commits.labels(kind).inc()
            payload = answer.to_json()
        except WmnodeError as exc:
            status, payload, headers = exc.http_status, error_payload(exc), error_headers(exc)
            self.metrics.reject(exc)
        await send_json(send, status, payload, headers)

    async def _metered(self, scope: Scope, body: bytes, kind: str, owner: str | None) -> tuple[int, Submitted]:
        client = scope.get("client")
        host = client[0] if client else None
        if self.rates is None or self.rates.limits.is_exempt(host):
            return await self.publish(body)
        bucket = CLAIM if kind == CLAIM else PUBLISH
        self.rates.take(bucket, ADDRESS, client_key(host))
        if owner is None or kind not in (PUBLISH, CLAIM):
            return await self.publish(body)
        self.rates.take(bucket, IDENTITY, owner)
        try:
            return await self.publish(body)
        except (MessageError, VerificationError):
            if not _signed(body):
                self.rates.refund(bucket, IDENTITY, owner)
            raise


def _resolve(future: asyncio.Future[tuple[Outcome | None, int]], result: tuple[Outcome | None, int]) -> None:
    if not future.done():  # the request may have timed out meanwhile
        future.set_result(result)


async def _commit(log: RegistryLog, msg: Message, timeout: float) -> Outcome:
    """Stamp, seal and submit until committed. Resubmitting is safe because apply de-duplicates;
    each attempt is stamped afresh, so an entry that lost a race to a later stamp (or arrived
    before the community's clock started) is re-stamped rather than refused."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        future: asyncio.Future[tuple[Outcome | None, int]] = loop.create_future()

        def _done(res: Outcome | None, err: int, fut: asyncio.Future[tuple[Outcome | None, int]] = future) -> None:
            loop.call_soon_threadsafe(_resolve, fut, (res, err))

        log.submit(log.seal(msg), _done)
        remaining = deadline - loop.time()
        try:
            res, err = await asyncio.wait_for(future, max(remaining, 0.001))
        except TimeoutError:
            raise UnavailableError(
                f"not committed within {timeout:g} s: is a majority of the community up? The message may "
                "still commit later; submitting it again is safe (a duplicate answers with its index)"
            ) from None
        restamp = res is not None and res.code in (STALE_STAMP, CLOCK_NOT_STARTED)
        if err == FAIL_REASON.SUCCESS and res is not None and not restamp:
            return res
        if (err not in _TRANSIENT and not restamp) or loop.time() + _RETRY_PAUSE_S >= deadline:
            if res is not None and restamp:
                raise UnavailableError(f"not committed: {res.reason}")
            raise UnavailableError(f"commit failed (pysyncobj reason {err}); retry later")
        await asyncio.sleep(_RETRY_PAUSE_S)


async def publish(
    log: RegistryLog, info: NodeInfo, body: bytes, store: ArtifactStore | None = None
) -> tuple[int, Submitted]:
    """Validate a signed message, commit it (or find it already stored); status and answer."""
    msg = message_from_json(parse_json(body))
    existing, code = log.lookup(msg), 200
    if existing is None:
        log.precheck(msg)
        if isinstance(msg, Claim):
            await asyncio.to_thread(check_claim_urls, msg, info.fetch)
            if store is not None:
                await asyncio.to_thread(check_claim_info, log, msg, store, info.verification)
        existing = await _commit(log, msg, info.commit_timeout_s)
        if existing.status == REJECTED:
            raise RejectedError(existing.reason)
        code = 201 if existing.status == "appended" else 200
    return code, Submitted(existing.index, existing.time, existing.leaf_hash, existing.status)


def check_claim_urls(claim: Claim, policy: FetchPolicy) -> None:
    """Refuse, before it commits, a claim whose URLs this node would not fetch (DESIGN §4.5).

    Every node checks again when it fetches; this only spares the community a claim that
    cannot be verified (a suspect in a private range, say) and tells the claimant why at once.
    """
    for name in ("model_uri", "verifier_uri", "info_uri"):
        uri = getattr(claim, name)
        if uri_kind(uri) != ARTIFACT:
            pin_url(uri.removeprefix("predict+"), policy)


def check_claim_info(log: RegistryLog, claim: Claim, store: ArtifactStore, policy: VerificationPolicy) -> None:
    """Refuse, before it commits, a claim whose info is out of the community's bounds (DESIGN §6.1
    rule 2, §6.2) or does not fit the suspect's card: no judge is ever started for it. The rules
    are registry.serve.admission's, which every node's verifier applies again.

    The info must already be in this node's store (`wmnode claim` uploads it first); so must a
    suspect model named by artifact, whose card is read from its safetensors header (no torch).
    """
    if uri_kind(claim.info_uri) != ARTIFACT:
        raise RejectedError("info_uri must name an artifact in the nodes' store (upload the info first)")
    digest = claim.info_uri.removeprefix("sha256:")
    if not store.has(digest):
        raise RejectedError(f"the info {claim.info_uri[:23]}… is not in this node's store; upload it first")
    data = info_bytes(store.path(digest))
    with log.state.lock:
        publish = log.state.publishes.get(claim.publish)
    if publish is None:
        raise RejectedError(f"claim: entry {claim.publish} is not a publish")
    check_published_artifacts(claim, publish["info_hash"], publish["verifier_hash"])
    typed = read_info(publish["scheme"], data, policy)
    verifier = claim.verifier_uri.removeprefix("sha256:")
    if uri_kind(claim.verifier_uri) == ARTIFACT and store.has(verifier):
        check_verifier_file(typed, store.path(verifier))
    if uri_kind(claim.model_uri) == ARTIFACT:
        if not store.has(claim.model_hash):
            raise RejectedError(f"the suspect {claim.model_uri[:23]}… is not in this node's store; upload it first")
        check_suspect(typed, store.path(claim.model_hash), policy, log.state.checkpoint_archs())


async def _upload(
    request: Request, store: ArtifactStore, digest: str, meter: StoreMeter | None = None, source: str = ""
) -> tuple[int, dict[str, Any]]:
    """Spool the body to a temporary file (size-limited), then store it if it hashes to `digest`.

    With `meter`, the upload holds room in the store's quota for the bytes it has sent so far (so
    the spools of uploads in flight stay within it too) and is refused as soon as they would not
    fit; its declared length is only checked against the room there is.
    """
    store.path(digest)  # a malformed name is refused before anything is read
    length = request.headers.get("content-length", "")
    declared = int(length) if length.isdigit() else 0
    if declared > store.max_bytes:
        raise PayloadTooLargeError(f"artifact is {length} bytes, over this node's limit of {store.max_bytes}")
    with tempfile.TemporaryFile() as spool:
        total = 0
        with meter.reserve(digest, source, declared) if meter is not None else _no_reservation() as need:
            try:
                async for chunk in request.stream():
                    total += len(chunk)
                    if total > store.max_bytes:
                        raise PayloadTooLargeError(f"artifact is over this node's limit of {store.max_bytes} bytes")
                    need(total)
                    spool.write(chunk)
            except ClientDisconnect:  # gone, or dropped by the body deadline (registry.asgi.ConnectionGuard)
                raise MessageError("the client went away before sending the whole artifact") from None
        spool.seek(0)
        created = await asyncio.to_thread(store.put, digest, iter(lambda: spool.read(1 << 16), b""), source)
    return (201 if created else 200), {"artifact": f"sha256:{digest}", "size": total, "stored": created}


@contextmanager
def _no_reservation() -> Iterator[Callable[[int], None]]:
    yield lambda total: None


def create_app(
    log: RegistryLog,
    identity: Identity,
    info: NodeInfo,
    store: ArtifactStore,
    verifier_ready: Callable[[], bool] = lambda: False,
    references_ready: Callable[[], bool] = lambda: True,
    metering: Metering | None = None,
    metrics: NodeMetrics | None = None,
) -> ASGIApp:
    """The node's API. Without `metering` (tests of other things) writes are not rate limited and
    the store has no quota; `/metrics` is always served, from `metrics` or the metering's."""
    metrics = metrics or (metering.metrics if metering is not None else NodeMetrics())
    metrics.watch(metrics.log_entries, log.size)
    metrics.watch(metrics.store_bytes, lambda: store.bytes)
    app = FastAPI(title="wmnode registry node", version="1", docs_url=None, redoc_url=None)
    _answer_errors(app)
    _log_routes(app, log)
    _claim_routes(app, log)
    _proof_routes(app, log, identity, info)
    _node_routes(app, log, identity, info, verifier_ready, references_ready, metrics)
    _artifact_routes(app, store, metering, metrics)
    app.openapi = lambda: openapi_document(app)  # type: ignore[method-assign]

    async def submit(body: bytes) -> tuple[int, Submitted]:
        return await publish(log, info, body, store)

    if metering is None:
        return _PublishFastPath(app, submit, metrics)
    gated = ReadGate(app, metering.rates, read_cost(log, store, len(info.members)))
    return _PublishFastPath(gated, submit, metrics, metering.rates)


def _json(answer: Mapping[str, Any], status: int = 200) -> JSONResponse:
    """An answer as the node has always encoded it (the response models document it; FastAPI does
    not re-encode a response a route returns)."""
    return JSONResponse(answer if isinstance(answer, dict) else dict(answer), status_code=status)


def _answer_errors(app: FastAPI) -> None:
    """The error tree to HTTP in one table (WmnodeError.http_status); a parameter that does not parse
    is a MessageError (400), as everything malformed is."""

    @app.exception_handler(WmnodeError)
    async def _wmnode_error(request: Request, exc: WmnodeError) -> JSONResponse:
        return JSONResponse(error_payload(exc), status_code=exc.http_status, headers=error_headers(exc))

    @app.exception_handler(RequestValidationError)
    async def _bad_params(request: Request, exc: RequestValidationError) -> JSONResponse:
        where = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        return JSONResponse({"error": "MessageError", "detail": where}, status_code=400)


def _log_routes(app: FastAPI, log: RegistryLog) -> None:
    """The log's entries: one, a run of them, a publish by its key hash."""

    @app.get("/v1/entries/{index}", response_model=schemas.Entry, responses=refusals(400, 404))
    def get_entry(index: int) -> JSONResponse:
        return _json(log.entry(index))

    @app.get("/v1/entries", response_model=schemas.EntryPage, responses=refusals(400))
    def list_entries(start: int | None = None, limit: int = 20) -> JSONResponse:
        if not 1 <= limit <= 1000:
            raise MessageError("limit must be 1-1000")
        size = log.size()
        first = max(size - limit, 0) if start is None else start
        if first < 0:
            raise MessageError("start must be non-negative")
        return _json({"size": size, "entries": [log.entry(i) for i in range(first, min(first + limit, size))]})

    @app.get("/v1/publishes/{key_hash}", response_model=schemas.Entry, responses=refusals(404))
    def publish_by_key(key_hash: str) -> JSONResponse:
        index = log.state.by_key_hash.get(key_hash)
        if index is None:
            raise NotFoundError(f"no publish with key_hash {key_hash[:64]}")
        return _json(log.entry(index))


def _claim_routes(app: FastAPI, log: RegistryLog) -> None:
    """Claims and decisions: a claim's status, a model's standing owner, the admitted references."""

    @app.get("/v1/claims/{index}", response_model=schemas.ClaimStatus, responses=refusals(400, 404))
    def claim(index: int) -> JSONResponse:
        return _json(log.claim_status(index))

    @app.get("/v1/owner", response_model=schemas.Standing, responses=refusals(400, 404))
    def owner(model_hash: str) -> JSONResponse:
        if not is_hex(model_hash, 32):
            raise MessageError("model_hash must be 64 lowercase hex digits")
        standing = log.standing_owner(model_hash)
        if standing is None:
            raise NotFoundError(f"no claim has passed on model {model_hash[:16]}… yet")
        return _json(standing)

    @app.get("/v1/references", response_model=schemas.References, responses=refusals())
    def references() -> JSONResponse:
        return _json({"references": log.state.admitted_references()})


def _proof_routes(app: FastAPI, log: RegistryLog, identity: Identity, info: NodeInfo) -> None:
    """Signed checkpoints (ours and the C2SP signed note) and RFC 6962 proofs against them."""

    @app.get("/v1/checkpoint", response_model=schemas.Checkpoint, responses=refusals(400, 404))
    def checkpoint(size: int | None = None) -> JSONResponse:
        head, root = log.head()
        if size is not None:
            if not 0 <= size <= head:
                raise NotFoundError(f"size must be 0-{head}, the log's size")
            head, root = size, log.root(size)
        return _json(Checkpoint.create(identity, head, root, now_ms()).to_json())

    @app.get("/checkpoint", response_class=PlainTextResponse, responses=refusals())
    def checkpoint_note() -> PlainTextResponse:
        size, root = log.head()
        note = sign_note(checkpoint_body(info.community, size, root), info.name, identity)
        return PlainTextResponse(note, media_type="text/plain; charset=utf-8")

    @app.get("/v1/proof/inclusion", response_model=schemas.Inclusion, responses=refusals(400, 404))
    def inclusion(index: int, size: int | None = None) -> JSONResponse:
        return _json(log.inclusion(index, log.size() if size is None else size))

    @app.get("/v1/proof/consistency", response_model=schemas.Consistency, responses=refusals(400, 404))
    def consistency(first: int, second: int | None = None) -> JSONResponse:
        return _json(log.consistency(first, log.size() if second is None else second))

    @app.get("/v1/root", response_model=schemas.Root, responses=refusals(400, 404))
    def root(size: int) -> JSONResponse:
        if size < 0:
            raise NotFoundError("size must be non-negative")
        return _json({"size": size, "root": log.root(size).hex()})


def _node_routes(
    app: FastAPI,
    log: RegistryLog,
    identity: Identity,
    info: NodeInfo,
    verifier_ready: Callable[[], bool],
    references_ready: Callable[[], bool],
    metrics: NodeMetrics,
) -> None:
    """This node itself: its status and its Prometheus metrics."""

    @app.get("/v1/status", response_model=schemas.NodeStatus, responses=refusals())
    def status() -> JSONResponse:
        raft = log.raft_status()
        size, root = log.head()
        leader = raft.get("leader")
        return _json({
            "node": identity.public_hex,
            "name": info.name,
            "community": info.community,
            "role": {0: "follower", 1: "candidate", 2: "leader"}.get(raft.get("state", -1), "unknown"),
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
        })  # fmt: skip

    @app.get("/metrics", response_class=PlainTextResponse, responses=refusals())
    def metrics_text() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)


def _artifact_routes(app: FastAPI, store: ArtifactStore, metering: Metering | None, metrics: NodeMetrics) -> None:
    """The content-addressed artifact store (DESIGN §4.5): upload by SHA-256, download by SHA-256."""

    @app.put("/v1/artifacts/{digest}", status_code=201, response_model=schemas.Uploaded,
             responses={200: {"model": schemas.Uploaded, "description": "stored already"},
                        **refusals(400, 404, 413, 507)},
             openapi_extra={"requestBody": {"required": True, **OCTETS}})  # fmt: skip
    async def put_artifact(digest: str, request: Request) -> JSONResponse:
        host = request.client.host if request.client else None
        try:
            if metering is not None and not metering.limits.is_exempt(host):
                metering.rates.take(UPLOAD, ADDRESS, client_key(host))
            meter = metering.store if metering is not None else None
            status, payload = await _upload(request, store, digest, meter, client_key(host))
        except WmnodeError as exc:
            metrics.reject(exc)
            raise
        return JSONResponse(payload, status_code=status)

    @app.get("/v1/artifacts/{digest}", response_class=Response,
             responses={200: {"description": "the artifact's bytes", **OCTETS}, **refusals(404)})  # fmt: skip
    def get_artifact(digest: str) -> StreamingResponse:
        if not store.has(digest):
            raise NotFoundError(f"no artifact sha256:{digest[:64]}")
        size = store.path(digest).stat().st_size
        return StreamingResponse(
            store.iter_file(digest),
            media_type="application/octet-stream",
            headers={"content-length": str(size)},
        )
