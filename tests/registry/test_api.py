"""The HTTP API against a single-node community served by uvicorn in this process."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn

from registry.api import NodeInfo, create_app
from registry.checkpoint import Checkpoint, open_note
from registry.encoding import MAX_MESSAGE_BYTES
from registry.fetch import ArtifactStore
from registry.identity import Identity
from registry.log import RegistryLog
from registry.merkle import verify_consistency, verify_inclusion
from tests.helpers import PublishFactory, free_ports, now_ms

Http = httpx.Client
ARTIFACT_LIMIT = 1 << 20


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[httpx.Client, Identity, RegistryLog]]:
    port, api_port = free_ports(2)
    identity = Identity.generate()
    data_dir = tmp_path_factory.mktemp("api")
    log = RegistryLog(
        f"127.0.0.1:{port}", [], data_dir, "a-test-secret-0123456789", members=frozenset({identity.public_hex})
    )
    store = ArtifactStore(data_dir / "artifacts", ARTIFACT_LIMIT)
    info = NodeInfo(
        name="solo",
        community="wmnode.test/api",
        members=({"name": "solo", "raft": f"127.0.0.1:{port}", "api": "x"},),
        raft_to_name={f"127.0.0.1:{port}": "solo"},
        max_skew_ms=300_000,
        commit_timeout_s=10.0,
    )
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(log, identity, info, store), host="127.0.0.1", port=api_port, log_level="warning", lifespan="off"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{api_port}", timeout=15) as client:
            yield client, identity, log
    finally:
        server.should_exit = True
        thread.join(10)
        log.close()


def post(client: Http, body: bytes | dict) -> tuple[int, dict]:  # type: ignore[type-arg]
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = client.post("/v1/entries", content=data, headers={"content-type": "application/json"})
    return response.status_code, response.json()


def test_publish_then_duplicate(node: tuple[Http, Identity, RegistryLog], make_publish: PublishFactory) -> None:
    client, _, _ = node
    msg = make_publish()
    code, first = post(client, msg.canonical_bytes())
    assert code == 201 and first["status"] == "appended"
    code, again = post(client, msg.to_json())
    assert code == 200 and (again["index"], again["leaf_hash"], again["time"]) == (
        first["index"],
        first["leaf_hash"],
        first["time"],
    )
    entry = client.get(f"/v1/entries/{first['index']}").json()
    assert entry == {
        "index": first["index"],
        "time": first["time"],
        "msg": msg.to_json(),
        "leaf_hash": first["leaf_hash"],
    }


def _bad_bodies(make_publish: PublishFactory) -> list[tuple[bytes, int, str]]:
    good = make_publish().to_json()
    forged = dict(good, time=good["time"] + 1)
    unknown = dict(good, colour="blue")
    wrong_type = dict(good, time=str(good["time"]))
    non_hex = dict(good, key_hash="zz" * 32)
    return [
        (json.dumps(forged).encode(), 400, "signature does not match owner"),
        (json.dumps(unknown).encode(), 400, "unknown field.*colour"),
        (json.dumps(wrong_type).encode(), 400, "'time' must be an integer"),
        (json.dumps(non_hex).encode(), 400, "'key_hash' must be 32 bytes of lowercase hex"),
        (make_publish(time=now_ms() - 3_600_000).canonical_bytes(), 409, "backdated by 3600 s"),
        (b'{"type": "publish", "pad": "' + b"x" * MAX_MESSAGE_BYTES + b'"}', 413, "over the limit of 65536 bytes"),
        (b"{not json", 400, "not valid JSON"),
        (b'{"type": "ballot", "v": 1}', 400, "unknown message type 'ballot'"),
        (b'{"type": "vote", "v": 1}', 400, "field 'v' must be 2 for 'vote'"),  # votes carry fp_bound since v2
        (b'{"type": "vote", "v": 2}', 400, r"missing field\(s\) in 'vote'"),
        (b'{"type": "reference", "v": 1}', 400, r"missing field\(s\) in 'reference'"),
    ]


def test_every_bad_input_is_refused_with_nothing_appended(
    node: tuple[Http, Identity, RegistryLog], make_publish: PublishFactory
) -> None:
    client, _, log = node
    for body, status, fragment in _bad_bodies(make_publish):
        before = log.head()
        code, answer = post(client, body)
        assert code == status, (fragment, answer)
        assert re.search(fragment, answer["detail"]), (fragment, answer)
        assert log.head() == before


def test_status_fields(node: tuple[Http, Identity, RegistryLog]) -> None:
    client, identity, log = node
    status = client.get("/v1/status").json()
    assert {"node", "role", "leader", "term", "commit_index", "size", "root", "members"} <= set(status)
    assert (status["node"], status["role"], status["leader"]) == (identity.public_hex, "leader", "solo")
    assert (status["size"], status["root"]) == (log.head()[0], log.head()[1].hex())


def test_checkpoints_and_proofs_verify(node: tuple[Http, Identity, RegistryLog], make_publish: PublishFactory) -> None:
    client, identity, _ = node
    first_cp = Checkpoint.from_json(client.get("/v1/checkpoint").json())
    for _ in range(3):
        post(client, make_publish().canonical_bytes())
    cp = Checkpoint.from_json(client.get("/v1/checkpoint").json())
    cp.verify(identity.public_hex)
    note = open_note(client.get("/checkpoint").text, "solo", identity.public_hex)
    assert (note.origin, note.size, note.root.hex()) == ("wmnode.test/api", cp.size, cp.root)
    for index in range(cp.size):
        proof = client.get("/v1/proof/inclusion", params={"index": index, "size": cp.size}).json()
        verify_inclusion(
            bytes.fromhex(proof["leaf_hash"]),
            index,
            cp.size,
            [bytes.fromhex(p) for p in proof["path"]],
            bytes.fromhex(cp.root),
        )
    if first_cp.size:
        proof = client.get("/v1/proof/consistency", params={"first": first_cp.size, "second": cp.size}).json()
        verify_consistency(
            first_cp.size,
            cp.size,
            bytes.fromhex(first_cp.root),
            bytes.fromhex(cp.root),
            [bytes.fromhex(p) for p in proof["path"]],
        )


@pytest.mark.parametrize(
    ("path", "status", "fragment"),
    [
        ("/v1/entries/999999", 404, "no entry 999999"),
        ("/v1/entries/abc", 400, "index"),
        ("/v1/proof/inclusion?index=0&size=999999", 404, "beyond the current size"),
        ("/v1/proof/consistency?first=0&second=1", 404, "no consistency proof"),
        ("/v1/entries?limit=0", 400, "limit must be 1-1000"),
    ],
)
def test_bad_reads(node: tuple[Http, Identity, RegistryLog], path: str, status: int, fragment: str) -> None:
    client, _, _ = node
    response = client.get(path)
    assert response.status_code == status
    assert fragment in response.json()["detail"]


def test_entries_page(node: tuple[Http, Identity, RegistryLog], make_publish: PublishFactory) -> None:
    client, _, log = node
    post(client, make_publish().canonical_bytes())
    page = client.get("/v1/entries", params={"limit": 2}).json()
    assert page["size"] == log.size()
    assert [e["index"] for e in page["entries"]] == list(range(log.size() - 2, log.size()))
