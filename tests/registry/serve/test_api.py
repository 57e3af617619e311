"""The HTTP API against a single-node community served by uvicorn in this process."""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn

from contracts.encoding import MAX_MESSAGE_BYTES
from contracts.fetch import ArtifactStore
from contracts.identity import Identity, derive_owner_key
from registry.log.messages import Claim, Reference
from registry.log.replicated import RegistryLog
from registry.proofs.checkpoint import Checkpoint, open_note
from registry.proofs.merkle import verify_consistency, verify_inclusion
from registry.serve.api import create_app
from registry.serve.info import NodeInfo
from tests.contracts.artifacts import LENET_CARD, artifact_with_card, safetensors_bytes
from tests.helpers import PublishFactory, free_ports, now_ms

Http = httpx.Client
ARTIFACT_LIMIT = 1 << 20


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[httpx.Client, Identity, RegistryLog]]:
    port, api_port = free_ports(2)
    identity = Identity.generate()
    data_dir = tmp_path_factory.mktemp("api")
    log = RegistryLog(f"127.0.0.1:{port}", {}, data_dir, "a-test-secret-0123456789", identity=identity)
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
        (b'{"type": "vote", "v": 1}', 400, "field 'v' must be 3 for 'vote'"),  # votes carry control figures since v3
        (b'{"type": "vote", "v": 3}', 400, r"missing field\(s\) in 'vote'"),
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


# -- claims are checked against the community's floors on arrival (DESIGN §6.1 rule 2, §6.2) -------

#: An MTLSign info at the built-in floors. Integers only: `gamma` 1 is the strictest bar.
MTLSIGN_INFO: dict[str, Any] = {
    "scheme": "mtlsign", "n": 600, "gamma": 1, "taps": ["conv1"], "pool": 4, "hidden": 256,
    "input_shape": [1, 28, 28], "mean": [0], "std": [1],
}  # fmt: skip
NEW_LABEL_INFO: dict[str, Any] = {
    "scheme": "new-label", "dataset": "digits", "delta": 10, "beta": 0.3, "n": 100, "threshold": 1,
    "input_shape": [1, 28, 28], "mean": [0], "std": [1],
}  # fmt: skip
PASSPORT_INFO: dict[str, Any] = {
    "scheme": "passport", "version": "V3", "passport_type": "T1", "layers": {"features.0": [1, 1, 28, 28]},
    "delta": 1, "noise_sigmas": 1, "noise_floor": 1, "noise_draws": 5, "dataset": "digits", "n_eval": 200,
    "input_shape": [1, 28, 28], "mean": [0], "std": [1], "num_classes": 10,
}  # fmt: skip
INFOS = {"mtlsign": MTLSIGN_INFO, "new-label": NEW_LABEL_INFO, "passport": PASSPORT_INFO}
#: The suspect: a LeNet-5 on 1x28x28 inputs, normalised as the infos above say.
SUSPECT_CARD = {**LENET_CARD, "mean": [0.0], "std": [1.0]}


def upload(client: Http, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    response = client.put(f"/v1/artifacts/{digest}", content=data)
    assert response.status_code in (200, 201), response.text
    return digest


def json_bytes(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def claim_on(
    client: Http,
    make_publish: PublishFactory,
    owner: Identity,
    info: bytes,
    model: bytes,
    *,
    scheme: str = "mtlsign",
    upload_info: bool = True,
    upload_model: bool = True,
    info_uri: str | None = None,
    verifier: bytes | None = None,
) -> Claim:
    """Publish a `scheme` watermark with `info`, and the claim on `model` a claimant would then send."""
    info_digest = upload(client, info) if upload_info else hashlib.sha256(info).hexdigest()
    model_digest = upload(client, model) if upload_model else hashlib.sha256(model).hexdigest()
    verifier_digest = upload(client, verifier) if verifier is not None else "ab" * 32
    pub = make_publish(scheme=scheme, info_hash=info_digest, verifier_hash=verifier_digest)
    code, answer = post(client, pub.canonical_bytes())
    assert code == 201, answer
    key = derive_owner_key(owner, bytes.fromhex(pub.nonce))
    return Claim.create(
        owner,
        publish=answer["index"],
        model_uri=f"sha256:{model_digest}",
        model_hash=model_digest,
        verifier_uri=f"sha256:{verifier_digest}",
        info_uri=info_uri or f"sha256:{info_digest}",
        key=key.key,
        key_proof=key.key_proof,
        time=now_ms(),
    )


def assert_refused(client: Http, log: RegistryLog, claim: Claim, fragment: str, error: str = "InfoError") -> None:
    """The claim is refused with 409 (a RejectedError) naming why, and nothing reaches the log."""
    before = log.head()
    code, answer = post(client, claim.canonical_bytes())
    assert (code, answer.get("error")) == (409, error), answer
    assert re.search(fragment, answer["detail"]), (fragment, answer)
    assert log.head() == before and log.lookup(claim) is None  # nothing appended, no judge started


def test_a_claim_within_the_floors_that_fits_its_card_is_appended(
    node: tuple[Http, Identity, RegistryLog], make_publish: PublishFactory, owner: Identity
) -> None:
    client, _, log = node
    for scheme, obj in INFOS.items():
        claim = claim_on(client, make_publish, owner, json_bytes(obj), artifact_with_card(SUSPECT_CARD), scheme=scheme)
        code, answer = post(client, claim.canonical_bytes())
        assert (code, answer["status"]) == (201, "appended"), (scheme, answer)
        assert log.state.claims[answer["index"]].model_hash == claim.model_hash


@pytest.mark.parametrize(
    ("scheme", "changes", "fragment"),
    [
        ("mtlsign", {"n": 599}, "mtlsign info: n 599 is below the community's floor 600"),
        ("mtlsign", {"pool": 8}, "mtlsign info: pool 8 is over the community's cap 4"),
        ("mtlsign", {"hidden": 4096}, "mtlsign info: hidden 4096 is over the community's cap 256"),
        ("new-label", {"delta": 1}, r"new-label info: Δ must be the one output the task does not have, class 10"),
        ("new-label", {"n": 10}, "new-label info: n 10 is below the community's floor 100"),
        ("new-label", {"dataset": "mnist"}, r"data set 'mnist' is not one every member holds \(digits\)"),
        ("passport", {"passport_type": "T2"}, "passport info: T2 passports are images the claimant ships"),
        ("passport", {"passport_type": "T3"}, "passport info: T3 passports are images the claimant ships"),
        ("mtlsign", {"colour": "blue"}, r"mtlsign info: missing fields \[\], unknown fields \['colour'\]"),
    ],
)
def test_a_claim_whose_info_is_out_of_bounds_is_refused_with_nothing_appended(
    node: tuple[Http, Identity, RegistryLog],
    make_publish: PublishFactory,
    owner: Identity,
    scheme: str,
    changes: dict[str, Any],
    fragment: str,
) -> None:
    client, _, log = node
    info = json_bytes({**INFOS[scheme], **changes})
    claim = claim_on(client, make_publish, owner, info, artifact_with_card(SUSPECT_CARD), scheme=scheme)
    assert_refused(client, log, claim, fragment)


def test_a_verifier_that_ships_the_inputs_the_key_should_derive_is_refused(
    node: tuple[Http, Identity, RegistryLog], make_publish: PublishFactory, owner: Identity
) -> None:
    client, _, log = node
    triggers = {"triggers": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}
    verifier = safetensors_bytes(triggers, b"\x00" * 4)  # hand-picked trigger inputs, not key-derived ones
    claim = claim_on(client, make_publish, owner, json_bytes(NEW_LABEL_INFO), artifact_with_card(SUSPECT_CARD),
                     scheme="new-label", verifier=verifier)  # fmt: skip
    assert_refused(client, log, claim, "new-label: the verifier artifact ships triggers, but this scheme's "
                   "verification inputs come from the key; it may hold nothing")  # fmt: skip
    empty = safetensors_bytes({"__metadata__": {"format": "pt"}})
    claim = claim_on(client, make_publish, owner, json_bytes(NEW_LABEL_INFO), artifact_with_card(SUSPECT_CARD),
                     scheme="new-label", verifier=empty)  # fmt: skip
    assert post(client, claim.canonical_bytes())[0] == 201


def test_a_claim_on_a_scheme_the_community_does_not_judge_is_refused(
    node: tuple[Http, Identity, RegistryLog], make_publish: PublishFactory, owner: Identity
) -> None:
    client, _, log = node
    claim = claim_on(client, make_publish, owner, json_bytes(MTLSIGN_INFO), b"weights", scheme="universal")
    assert_refused(client, log, claim, "this community judges no 'universal' claims")


@pytest.mark.parametrize(
    ("info", "fragment"),
    [
        # 169 bytes of JSON: the minimum N, but on 256x256 inputs that a LeNet never takes (39 M elements).
        ({**MTLSIGN_INFO, "input_shape": [1, 256, 256]}, r"\[1, 256, 256\] must have 1 or 3 channels and sides of at most 64"),  # noqa: E501
        # The controls ask as many inputs as the claim, 8 times over: 18,000 inputs, 221 M elements.
        ({**MTLSIGN_INFO, "n": 2000, "input_shape": [3, 64, 64], "mean": [0, 0, 0], "std": [1, 1, 1]},
         r"18000 inputs of \[3, 64, 64\] \(221184000 elements\) exceed .* with 8 control keys"),
        ({**MTLSIGN_INFO, "n": 100_000}, r"900000 inputs of \[1, 28, 28\] \(705600000 elements\) exceed the community"),
    ],
)  # fmt: skip
def test_the_small_info_attack_is_refused_on_arrival(
    node: tuple[Http, Identity, RegistryLog],
    make_publish: PublishFactory,
    owner: Identity,
    info: dict[str, Any],
    fragment: str,
) -> None:
    client, _, log = node
    data = json_bytes(info)
    assert len(data) < 200  # a few bytes that would cost every member minutes of work
    claim = claim_on(client, make_publish, owner, data, artifact_with_card(SUSPECT_CARD))
    assert_refused(client, log, claim, fragment)


@pytest.mark.parametrize(
    "changes", [{"input_shape": [1, 32, 32]}, {"mean": [1]}, {"std": [0.25]}], ids=["shape", "mean", "std"]
)
def test_an_info_that_differs_from_the_card_is_appended_for_the_judge(
    node: tuple[Http, Identity, RegistryLog], make_publish: PublishFactory, owner: Identity, changes: dict[str, Any]
) -> None:
    """The info's shape is what the owner published and its normalisation only the encoding of its
    inputs: the judge runs the suspect at that shape through its own card (schemes.suspect), so a
    thief who re-cards a copy does not get the owner's claim refused on arrival."""
    client, _, log = node
    claim = claim_on(
        client, make_publish, owner, json_bytes({**MTLSIGN_INFO, **changes}), artifact_with_card(SUSPECT_CARD)
    )
    code, answer = post(client, claim.canonical_bytes())
    assert (code, answer["status"]) == (201, "appended"), answer


def test_a_claim_whose_info_or_verifier_is_not_its_publishs_is_refused(
    node: tuple[Http, Identity, RegistryLog], make_publish: PublishFactory, owner: Identity
) -> None:
    """Another info uploaded beside the published one would commit, and every node vote `error`."""
    client, _, log = node
    claim = claim_on(client, make_publish, owner, json_bytes(MTLSIGN_INFO), artifact_with_card(SUSPECT_CARD))
    other = upload(client, json_bytes({**MTLSIGN_INFO, "hidden": 64}))
    fields = {"publish": claim.publish, "model_uri": claim.model_uri, "model_hash": claim.model_hash,
              "verifier_uri": claim.verifier_uri, "info_uri": claim.info_uri, "key": bytes.fromhex(claim.key),
              "key_proof": bytes.fromhex(claim.key_proof), "time": claim.time}  # fmt: skip
    forged = Claim.create(owner, **{**fields, "info_uri": f"sha256:{other}"})
    assert_refused(client, log, forged, r"info_uri is not the info its publish names", "RejectedError")
    swapped = Claim.create(owner, **{**fields, "verifier_uri": "sha256:" + upload(client, b"other")})
    assert_refused(
        client, log, swapped, r"verifier_uri is not the verifier artifact its publish names", "RejectedError"
    )
    assert post(client, claim.canonical_bytes())[0] == 201  # the honest claim of the same publish


def test_a_claim_whose_info_was_never_uploaded_is_refused(
    node: tuple[Http, Identity, RegistryLog], make_publish: PublishFactory, owner: Identity
) -> None:
    client, _, log = node
    info = json_bytes({**MTLSIGN_INFO, "hidden": 128})
    claim = claim_on(client, make_publish, owner, info, artifact_with_card(SUSPECT_CARD), upload_info=False)
    digest = claim.info_uri.removeprefix("sha256:")
    fragment = rf"^the info sha256:{digest[:16]}… is not in this node's store; upload it first$"
    assert_refused(client, log, claim, fragment, "RejectedError")
    upload(client, info)  # once uploaded, the same claim is taken
    assert post(client, claim.canonical_bytes())[0] == 201


@pytest.mark.parametrize(
    ("info", "fragment"),
    [
        (b"[1, 2, 3]", "info must be a JSON object"),
        (b'{"scheme": "mtlsign", "scheme": "mtlsign"}', "duplicate JSON key 'scheme'"),
        (b"{not json", "not valid JSON"),
        (b" " * (64 * 1024 + 1), "the info is over 65536 bytes"),
    ],
)
def test_an_info_that_is_not_a_small_json_object_is_refused(
    node: tuple[Http, Identity, RegistryLog], make_publish: PublishFactory, owner: Identity, info: bytes, fragment: str
) -> None:
    client, _, log = node
    claim = claim_on(client, make_publish, owner, info, artifact_with_card(SUSPECT_CARD))
    before = log.head()
    code, answer = post(client, claim.canonical_bytes())
    assert code in (400, 409) and re.search(fragment, answer["detail"]), answer
    assert log.head() == before


def test_an_info_elsewhere_than_the_store_is_refused(
    node: tuple[Http, Identity, RegistryLog], make_publish: PublishFactory, owner: Identity
) -> None:
    client, _, log = node
    claim = claim_on(client, make_publish, owner, json_bytes(MTLSIGN_INFO), artifact_with_card(SUSPECT_CARD),
                     info_uri="https://93.184.216.34/info.json")  # fmt: skip
    before = log.head()
    code, answer = post(client, claim.canonical_bytes())
    assert (code, answer["error"]) == (409, "RejectedError")
    assert answer["detail"] == "info_uri must name an artifact in the nodes' store (upload the info first)"
    assert log.head() == before


def test_an_info_with_decimal_parameters_is_appended(
    node: tuple[Http, Identity, RegistryLog], make_publish: PublishFactory, owner: Identity
) -> None:
    client, _, _ = node
    info = json_bytes({**MTLSIGN_INFO, "gamma": 0.75, "mean": [0.5], "std": [0.5]})
    claim = claim_on(client, make_publish, owner, info, artifact_with_card(LENET_CARD))
    code, answer = post(client, claim.canonical_bytes())
    assert (code, answer.get("status")) == (201, "appended"), answer


def test_a_claim_on_a_model_this_node_does_not_hold_is_refused(
    node: tuple[Http, Identity, RegistryLog], make_publish: PublishFactory, owner: Identity
) -> None:
    client, _, log = node
    info = json_bytes({**MTLSIGN_INFO, "input_shape": [1, 32, 32], "mean": [0], "std": [1]})
    # A model no earlier test uploaded (the module's node keeps its store between tests).
    unseen = artifact_with_card(SUSPECT_CARD, body=os.urandom(16))
    claim = claim_on(client, make_publish, owner, info, unseen, upload_model=False)
    before = log.head()
    code, answer = post(client, claim.canonical_bytes())
    assert code == 409 and "store" in answer["detail"], answer
    assert log.head() == before


def test_a_suspect_with_a_deeply_nested_header_is_refused_cleanly(
    node: tuple[Http, Identity, RegistryLog], make_publish: PublishFactory, owner: Identity
) -> None:
    client, _, log = node
    deep = b"[" * 5000 + b"]" * 5000
    model = len(deep).to_bytes(8, "little") + deep
    claim = claim_on(client, make_publish, owner, json_bytes(MTLSIGN_INFO), model)
    before = log.head()
    response = client.post("/v1/entries", content=claim.canonical_bytes())
    assert response.status_code in (400, 409), response.text
    assert log.head() == before


def test_references_are_served_once_admitted(node: tuple[Http, Identity, RegistryLog]) -> None:
    client, identity, _ = node  # a community of one: its own record is a majority
    ref = Reference.create(identity, arch="lenet5", num_classes=10, input_shape="1x28x28", dataset="digits",
                           recipe="plain", seed=1, model_hash="9a" * 32)  # fmt: skip
    code, answer = post(client, ref.canonical_bytes())
    assert code == 201, answer
    listed = client.get("/v1/references").json()["references"]
    assert {"model_hash": "9a" * 32, "recipe": "plain", "input_shape": "1x28x28", "members": 1}.items() <= next(
        r for r in listed if r["model_hash"] == "9a" * 32
    ).items()
    status = client.get("/v1/status").json()
    assert status["references"] == len(listed) >= 1 and status["references_ready"] is True
    stranger = Reference.create(Identity.generate(), arch="lenet5", num_classes=10, input_shape="1x28x28",
                                dataset="digits", recipe="passport", seed=1, model_hash="9b" * 32)  # fmt: skip
    code, answer = post(client, stranger.canonical_bytes())
    assert (code, answer["error"]) == (409, "RejectedError")
    assert "reaches the log only through that member's own node" in answer["detail"]
