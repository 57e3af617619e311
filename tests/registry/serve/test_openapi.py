"""`/openapi.json` describes every answer of the node, and the node keeps to it.

schemathesis reads the node's own document and sends every operation generated requests, valid and
invalid, plus requests that reach real data (a one-node community with a publish, a claim decided
`owner`, a reference and an artifact), with the checks of `schemathesis run --checks
not_a_server_error,status_code_conformance,response_schema_conformance`.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error, response_schema_conformance, status_code_conformance

from contracts.fetch import ArtifactStore
from contracts.identity import Identity, derive_owner_key
from registry.log.answers import ClaimStatus, Entry, Standing, Submitted
from registry.log.messages import Claim, Message, Publish, Reference, Vote
from registry.log.replicated import RegistryLog
from registry.serve.api import create_app
from registry.serve.info import NodeInfo
from tests.contracts.artifacts import artifact_with_card
from tests.helpers import free_ports, now_ms
from tests.registry.serve.test_api import MTLSIGN_INFO, SUSPECT_CARD, json_bytes

CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]
#: Generated requests per operation and generation mode (valid, invalid): the run stays a few seconds.
EXAMPLES = 12


@dataclass(frozen=True)
class Seeded:
    """A serving node, and what its log and store hold."""

    url: str
    log: RegistryLog
    publish: Entry
    claim: int
    model_hash: str
    artifact: str


def _post(client: httpx.Client, msg: Message) -> Submitted:
    response = client.post("/v1/entries", content=msg.canonical_bytes())
    assert response.status_code in (200, 201), response.text
    return Submitted.from_json(response.json())


def _upload(client: httpx.Client, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    assert client.put(f"/v1/artifacts/{digest}", content=data).status_code in (200, 201)
    return digest


def _seed(client: httpx.Client, identity: Identity) -> tuple[Entry, int, str, str]:
    """A publish, a claim on it decided `owner` by the node's own vote, and a reference."""
    owner = Identity.generate()
    info, model = _upload(client, json_bytes(MTLSIGN_INFO)), _upload(client, artifact_with_card(SUSPECT_CARD))
    key = derive_owner_key(owner, nonce := b"\x07" * 16)
    publish = Publish.create(owner, scheme="mtlsign", time=now_ms(), key_hash=key.key_hash, verifier_hash="ab" * 32,
                             info_hash=info, nonce=nonce.hex())  # fmt: skip
    at = _post(client, publish).index
    claim = Claim.create(owner, publish=at, model_uri=f"sha256:{model}", model_hash=model,
                         verifier_uri=f"sha256:{'ab' * 32}", info_uri=f"sha256:{info}", key=key.key,
                         key_proof=key.key_proof, time=now_ms())  # fmt: skip
    index = _post(client, claim).index
    _post(client, Vote.create(identity, claim=index, claim_hash=claim.body_hash(), verdict="owner", score=900,
                              threshold=500, reason="seeded", fp_bound="2.30e-09", model_id=model))  # fmt: skip
    _post(client, Reference.create(identity, arch="lenet5", num_classes=10, input_shape="1x28x28", dataset="digits",
                                   recipe="plain", seed=1, model_hash="9a" * 32))  # fmt: skip
    return Entry.from_json(client.get(f"/v1/entries/{at}").json()), index, model, info


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    port, api_port = free_ports(2)
    identity = Identity.generate()
    data_dir = tmp_path_factory.mktemp("openapi")
    log = RegistryLog(f"127.0.0.1:{port}", {}, data_dir, "a-test-secret-0123456789", identity=identity)
    info = NodeInfo(
        name="solo",
        community="wmnode.test/openapi",
        members=(
            {"name": "solo", "raft": f"127.0.0.1:{port}", "api": f"127.0.0.1:{api_port}", "key": identity.public_hex},
        ),  # fmt: skip
        raft_to_name={f"127.0.0.1:{port}": "solo"},
        max_skew_ms=300_000,
        commit_timeout_s=10.0,
    )
    app = create_app(log, identity, info, ArtifactStore(data_dir / "artifacts", 1 << 20))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=api_port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    url = f"http://127.0.0.1:{api_port}"
    try:
        with httpx.Client(base_url=url, timeout=15) as client:
            publish, claim, model, artifact = _seed(client, identity)
        yield Seeded(url, log, publish, claim, model, artifact)
    finally:
        server.should_exit = True
        thread.join(10)
        log.close()


# -- the document -------------------------------------------------------------------------------------


def _document(node: Seeded) -> dict[str, Any]:
    response = httpx.get(f"{node.url}/openapi.json")
    assert response.status_code == 200
    doc: dict[str, Any] = response.json()
    return doc


def _free_objects(obj: object, where: str = "") -> Iterator[str]:
    """Every schema in `obj` that is an object without properties (a `dict[str, Any]` answer)."""
    if isinstance(obj, dict):
        if obj.get("type") == "object" and "properties" not in obj:
            yield where
        for key, value in obj.items():
            yield from _free_objects(value, f"{where}/{key}")
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            yield from _free_objects(value, f"{where}/{i}")


def test_every_answer_has_a_schema_and_every_refusal_its_status(node: Seeded) -> None:
    doc = _document(node)
    assert not list(_free_objects(doc))
    operations = {f"{method.upper()} {path}": op for path, ops in doc["paths"].items() for method, op in ops.items()}
    assert len(operations) == 16 and "POST /v1/entries" in operations
    for label, operation in operations.items():
        responses = operation["responses"]
        assert "422" not in responses and "429" in responses, label  # a bad parameter is a 400 here
        for code, response in responses.items():
            content = response.get("content", {})
            assert content, (label, code)
            if "application/json" in content:
                assert content["application/json"]["schema"], (label, code)
            if code >= "400":
                assert content["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorAnswer"}
    submit = operations["POST /v1/entries"]
    assert sorted(submit["responses"]) == ["200", "201", "400", "409", "413", "429", "503"]
    body = submit["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/SignedMessage"}
    kinds = doc["components"]["schemas"]["SignedMessage"]["discriminator"]["mapping"]
    assert sorted(kinds) == ["claim", "publish", "reference", "vote"]


def test_the_answers_are_the_bytes_a_node_always_sent(node: Seeded) -> None:
    """The response models document the answers; the answers stay the log's own JSON, and the typed
    answers a client parses re-encode to exactly those bytes."""
    with httpx.Client(base_url=node.url) as client:
        for path, parse in [
            (f"/v1/entries/{node.claim}", Entry.from_json),
            (f"/v1/claims/{node.claim}", ClaimStatus.from_json),
            (f"/v1/owner?model_hash={node.model_hash}", Standing.from_json),
        ]:
            sent = client.get(path).content
            typed = parse(json.loads(sent))
            assert sent == json.dumps(typed.to_json(), ensure_ascii=False, separators=(",", ":")).encode(), path
        assert client.get(f"/v1/entries/{node.claim}").json() == node.log.entry(node.claim)
        assert client.get(f"/v1/claims/{node.claim}").json() == node.log.claim_status(node.claim)
    status = ClaimStatus.from_json(node.log.claim_status(node.claim))
    assert (status.decided, status.result) == ("owner", "owner")
    assert status.standing is not None and status.standing.claim == node.claim


# -- schemathesis ---------------------------------------------------------------------------------------


def _known_cases(node: Seeded, operation: Any) -> list[Any]:
    """Requests that reach what the node holds (generated ones mostly meet 404s)."""
    size = node.log.size()
    publish = node.publish.msg
    assert isinstance(publish, Publish)
    fresh = Publish.create(Identity.generate(), scheme="mtlsign", time=now_ms(), key_hash="cd" * 32,
                           verifier_hash="ab" * 32, info_hash="ef" * 32, nonce="01" * 16)  # fmt: skip
    requests: dict[str, list[dict[str, Any]]] = {
        "GET /v1/entries/{index}": [{"path_parameters": {"index": i}} for i in range(size)],
        "GET /v1/entries": [{"query": {}}, {"query": {"start": 0, "limit": 1000}}],
        "GET /v1/publishes/{key_hash}": [{"path_parameters": {"key_hash": publish.key_hash}}],
        "GET /v1/claims/{index}": [{"path_parameters": {"index": node.claim}}],
        "GET /v1/owner": [{"query": {"model_hash": node.model_hash}}],
        "GET /v1/checkpoint": [{"query": {}}, {"query": {"size": 1}}],
        "GET /v1/proof/inclusion": [{"query": {"index": i, "size": size}} for i in range(size)],
        "GET /v1/proof/consistency": [{"query": {"first": 1, "second": size}}],
        "GET /v1/root": [{"query": {"size": size}}],
        "GET /v1/artifacts/{digest}": [{"path_parameters": {"digest": node.artifact}}],
        "PUT /v1/artifacts/{digest}": [
            {
                "path_parameters": {"digest": hashlib.sha256(b"x").hexdigest()},
                "body": b"x",
                "media_type": "application/octet-stream",
            }
        ],  # fmt: skip
        "POST /v1/entries": [{"body": fresh.to_json()}, {"body": fresh.to_json()}],  # appended, then duplicate
    }
    return [operation.Case(**request) for request in requests.get(operation.label, [{}])]


def _generated(operation: Any, mode: GenerationMode) -> list[str]:
    """Run `EXAMPLES` generated requests of `operation`; the failures found."""
    failures: list[str] = []

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck), report_multiple_bugs=False)  # fmt: skip
    def run(case: Any) -> None:
        case.call_and_validate(checks=CHECKS)

    try:
        run()
    except Unsatisfiable:  # nothing it takes can be invalid (a free string, any bytes): no negative case
        assert mode == GenerationMode.NEGATIVE, operation.label
    except Exception as exc:  # noqa: BLE001 - collected, so every operation is run and reported
        failures.append(f"{operation.label} ({mode.value}): {exc}")
    return failures


def test_the_node_keeps_to_its_own_openapi_document(node: Seeded) -> None:
    schema = schemathesis.openapi.from_url(f"{node.url}/openapi.json")
    tested: list[str] = []
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        for case in _known_cases(node, operation):
            response = case.call_and_validate(checks=CHECKS)
            assert response.status_code < 300, (operation.label, response.status_code, response.text[:300])
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            failures += _generated(operation, mode)
        tested.append(operation.label)
    assert "POST /v1/entries" in tested and len(tested) == 16, tested
    assert not failures, "\n\n".join(failures)
