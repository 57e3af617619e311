"""Clients that check whom they talk to: `publish`, `monitor` and the checkpoint memory, against fake APIs.

Each fake node is a real HTTP server on loopback that serves our API from a log we control and signs
checkpoints with a key we choose, so a test can play a stranger, an honest member or a forking one.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
from click.testing import CliRunner

from contracts.encoding import canonical
from contracts.errors import ConfigError, MessageError, NotFoundError, PayloadTooLargeError, VerificationError
from contracts.identity import Identity, derive_owner_key, write_identity
from registry.cli import main
from registry.client.monitor import FORK, INVALID, OK, UNREACHABLE, CheckpointState, Community, Monitor, Peer
from registry.client.node_client import NodeClient
from registry.client.receipt import verify_receipt
from registry.proofs.checkpoint import Checkpoint
from registry.proofs.merkle import MerkleTree, leaf_hash
from tests.helpers import PublishFactory, free_ports, now_ms

COMMUNITY = "wmnode.test/fake"


class FakeLog:
    """An append-only log as a node holds it: entries and their RFC 6962 tree."""

    def __init__(self, notes: list[str] | None = None) -> None:
        self.entries: list[dict[str, Any]] = []
        self.tree = MerkleTree()
        for note in notes or []:
            self.append({"type": "note", "note": note}, 1)

    def append(self, msg: dict[str, Any], time: int) -> dict[str, Any]:
        entry = {"index": len(self.entries), "msg": msg, "time": time}
        leaf = leaf_hash(canonical(entry))
        self.tree.append(leaf)
        self.entries.append({**entry, "leaf_hash": leaf.hex()})
        return self.entries[-1]


class FakeApi:
    """Answers the node API from `log`, signing checkpoints with `identity` (a member's, or not)."""

    def __init__(self, identity: Identity, log: FakeLog) -> None:
        self.identity, self.log = identity, log
        #: Replaces the answer to a path (e.g. "/v1/proof/consistency") with these bytes.
        self.override: dict[str, bytes] = {}

    def answer(self, method: str, path: str, query: dict[str, int], body: bytes) -> Any:
        log = self.log
        if method == "POST" and path == "/v1/entries":
            entry = log.append(json.loads(body), now_ms())
            return {**{k: entry[k] for k in ("index", "time", "leaf_hash")}, "status": "appended"}
        if path.startswith("/v1/entries/"):
            index = int(path.rsplit("/", 1)[1])
            if index >= len(log.entries):
                raise NotFoundError(f"no entry {index}")
            return log.entries[index]
        if path == "/v1/checkpoint":
            size = query.get("size", len(log.tree))
            return Checkpoint.create(self.identity, size, log.tree.root(size), now_ms()).to_json()
        if path == "/v1/proof/inclusion":
            proof = log.tree.inclusion_proof(query["index"], query["size"])
            return {"index": query["index"], "size": query["size"], "path": [p.hex() for p in proof]}
        if path == "/v1/proof/consistency":
            proof = log.tree.consistency_proof(query["first"], query["second"])
            return {"first": query["first"], "second": query["second"], "path": [p.hex() for p in proof]}
        raise NotFoundError(f"no route {path}")

    def respond(self, method: str, path: str, query: dict[str, int], body: bytes) -> tuple[int, bytes]:
        if path in self.override:
            return 200, self.override[path]
        try:
            return 200, json.dumps(self.answer(method, path, query, body)).encode()
        except NotFoundError as exc:
            return 404, json.dumps({"error": "NotFoundError", "detail": str(exc)}).encode()


class FakeNode(ThreadingHTTPServer):
    """A real HTTP server on loopback in front of a `FakeApi`."""

    daemon_threads = True

    def __init__(self, api: FakeApi) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.api = api

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def stop(self) -> None:
        """Stop serving and close the socket, so the address refuses connections."""
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    server: FakeNode

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _serve(self, method: str) -> None:
        url = urlparse(self.path)
        query = {k: int(v[0]) for k, v in parse_qs(url.query).items()}
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        status, data = self.server.api.respond(method, url.path, query, body)
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")


@pytest.fixture
def serve() -> Iterator[Callable[[Identity, FakeLog], FakeNode]]:
    """Start fake nodes; every one is shut down after the test."""
    started: list[tuple[FakeNode, threading.Thread]] = []

    def start(identity: Identity, log: FakeLog) -> FakeNode:
        node = FakeNode(FakeApi(identity, log))
        thread = threading.Thread(target=node.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        started.append((node, thread))
        return node

    yield start
    for node, thread in started:
        node.stop()
        thread.join(timeout=5)


@pytest.fixture(autouse=True)
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Never the user's ~/.config: every test keeps its checkpoints in its own folder."""
    directory = tmp_path / "state"
    monkeypatch.setenv("WMNODE_STATE_DIR", str(directory))
    return directory


@pytest.fixture
def members() -> list[Identity]:
    return [Identity.generate() for _ in range(3)]


def write_config(path: Path, members: list[Identity], urls: list[str]) -> Path:
    """A community config naming these members' keys and API addresses (raft ports are never used)."""
    raft = free_ports(len(members))
    tables = "".join(
        f'\n[[members]]\nname = "node{i + 1}"\nraft = "127.0.0.1:{raft[i]}"\napi = "{urlparse(url).netloc}"\n'
        f'key = "{identity.public_hex}"\n'
        for i, (identity, url) in enumerate(zip(members, urls, strict=True))
    )
    path.write_text(
        f'community = "{COMMUNITY}"\nname = "node1"\nraft = "127.0.0.1:{raft[0]}"\n'
        f'api = "{urlparse(urls[0]).netloc}"\n{tables}'
    )
    return path


def dead_url() -> str:
    """A loopback port nothing listens on: an unreachable member."""
    return f"http://127.0.0.1:{free_ports(1)[0]}"


def make_bundle(directory: Path, owner: Identity) -> Path:
    """The files `publish --bundle` reads (no model needed: it only hashes the verifier and info)."""
    directory.mkdir()
    nonce = os.urandom(16)
    key = derive_owner_key(owner, nonce)
    (directory / "key.json").write_text(
        json.dumps({"nonce": nonce.hex(), "key_proof": key.key_proof.hex(), "owner": owner.public_hex})
    )
    (directory / "info.json").write_text(json.dumps({"scheme": "mtlsign"}))
    (directory / "verifier.safetensors").write_bytes(b"not really safetensors")
    return directory


@pytest.fixture
def owner_files(tmp_path: Path) -> tuple[Path, Path]:
    owner = Identity.generate()
    write_identity(owner, tmp_path / "owner.key")
    return tmp_path / "owner.key", make_bundle(tmp_path / "bundle", owner)


def wmnode(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, result.output


# --- the attacker's test: a fake API signs with a key no member has ---------------------------------


def test_publish_refuses_a_receipt_signed_by_a_non_member_and_never_says_release(
    tmp_path: Path,
    serve: Callable[[Identity, FakeLog], FakeNode],
    members: list[Identity],
    owner_files: tuple[Path, Path],
) -> None:
    stranger = Identity.generate()
    fake = serve(stranger, FakeLog())
    config = write_config(tmp_path / "c.toml", members, [dead_url() for _ in members])
    key_file, bundle = owner_files
    code, out = wmnode(
        "publish", "--node", fake.url, "--config", str(config), "--identity", str(key_file), "--bundle", str(bundle)
    )
    assert code == 1
    assert f"is signed by {stranger.public_hex}, which is not a member of community '{COMMUNITY}'" in out
    assert "may be released" not in out
    assert not (bundle / "receipt.json").exists()


def test_without_a_config_publish_warns_and_does_not_say_release(
    serve: Callable[[Identity, FakeLog], FakeNode], owner_files: tuple[Path, Path]
) -> None:
    fake = serve(Identity.generate(), FakeLog())
    key_file, bundle = owner_files
    code, out = wmnode("publish", "--node", fake.url, "--identity", str(key_file), "--bundle", str(bundle))
    assert code == 0  # it still works, and says what it could not check
    assert "warning: no --config: checkpoints were not checked against a community" in out
    assert "may be released" not in out and "unconfirmed" in out


def test_publish_says_release_once_a_majority_of_members_include_the_entry(
    tmp_path: Path,
    serve: Callable[[Identity, FakeLog], FakeNode],
    members: list[Identity],
    owner_files: tuple[Path, Path],
) -> None:
    log = FakeLog(["a", "b"])
    nodes = [serve(m, log) for m in members]
    config = write_config(tmp_path / "c.toml", members, [n.url for n in nodes])
    key_file, bundle = owner_files
    code, out = wmnode("publish", "--config", str(config), "--identity", str(key_file), "--bundle", str(bundle))
    assert code == 0, out
    assert "confirmed by node1, node2: 2 of 3 members" in out  # the home node (the config's) was asked
    assert "the model may be released now" in out
    receipt = json.loads((bundle / "receipt.json").read_text())
    assert receipt["entry"]["index"] == 2 and len(receipt["confirmations"]) == 2
    verify_receipt(receipt, members=[m.public_hex for m in members])
    with pytest.raises(VerificationError, match="not a member of the community"):
        verify_receipt(receipt, members=[members[2].public_hex])


def test_publish_fails_when_fewer_than_a_majority_confirm(
    tmp_path: Path,
    serve: Callable[[Identity, FakeLog], FakeNode],
    members: list[Identity],
    owner_files: tuple[Path, Path],
) -> None:
    home = serve(members[0], FakeLog())
    stranger_at_node2 = serve(Identity.generate(), FakeLog())  # node2's address answers with another key
    config = write_config(tmp_path / "c.toml", members, [home.url, stranger_at_node2.url, dead_url()])
    key_file, bundle = owner_files
    code, out = wmnode(
        "publish", "--config", str(config), "--identity", str(key_file), "--bundle", str(bundle),
        "--confirm-timeout", "0.5",
    )  # fmt: skip
    assert code == 1
    assert "entry #0 is confirmed by 1 of 3 members of 'wmnode.test/fake' within 0.5 s (a majority is 2)" in out
    assert "node2: checkpoint from" in out and "which is not a member" in out and "node3: cannot reach" in out
    assert "may be released" not in out and not (bundle / "receipt.json").exists()


def test_publish_refuses_an_entry_that_is_not_the_message_it_sent(
    tmp_path: Path,
    serve: Callable[[Identity, FakeLog], FakeNode],
    members: list[Identity],
    owner_files: tuple[Path, Path],
    make_publish: PublishFactory,
) -> None:
    """A node that answers with another entry's index would borrow that entry's confirmations."""
    log = FakeLog()
    log.append(make_publish(Identity.generate()).to_json(), 1)  # someone else's publish
    nodes = [serve(m, log) for m in members]
    honest_answer = nodes[0].api.answer
    nodes[0].api.answer = lambda method, path, query, body: (  # type: ignore[method-assign]
        {"index": 0, "time": 1, "leaf_hash": log.entries[0]["leaf_hash"], "status": "appended"}
        if method == "POST"
        else honest_answer(method, path, query, body)
    )
    config = write_config(tmp_path / "c.toml", members, [n.url for n in nodes])
    key_file, bundle = owner_files
    code, out = wmnode("publish", "--config", str(config), "--identity", str(key_file), "--bundle", str(bundle))
    assert code == 1 and "answered with an entry that is not the message we sent" in out, out


# --- monitor: forks across members, across rounds, against the kept state -----------------------------


def monitor_once(config: Path, *extra: str) -> tuple[int, str]:
    return wmnode("monitor", "--once", "--config", str(config), "--timeout", "2", *extra)


def lines_of(out: str, name: str) -> list[str]:
    """The monitor's lines about one member: `DATE TIME NAME STATUS ...`."""
    return [line for line in out.splitlines() if line.split()[2:3] == [name] and not line.startswith("error:")]


def test_two_roots_for_one_size_signed_by_members_is_a_fork_naming_the_member(
    tmp_path: Path, serve: Callable[[Identity, FakeLog], FakeNode], members: list[Identity]
) -> None:
    honest, forked = FakeLog(["a", "b"]), FakeLog(["a", "B"])
    nodes = [serve(members[0], honest), serve(members[1], honest), serve(members[2], forked)]
    code, out = monitor_once(write_config(tmp_path / "c.toml", members, [n.url for n in nodes]))
    assert code == 1
    root_a, root_b = honest.tree.root().hex(), forked.tree.root().hex()
    assert f"node1 signed size 2 root {root_a} and node3 signed size 2 root {root_b}" in out
    assert len(lines_of(out, "node1")) == 1 and len(lines_of(out, "node3")) == 1  # one line per member
    assert f" {FORK} " in lines_of(out, "node3")[0] and f" {OK} " in lines_of(out, "node2")[0]
    assert "error: node1, node3 fork: fork in community" in out


def test_a_larger_tree_that_does_not_extend_a_smaller_one_is_a_fork(
    tmp_path: Path, serve: Callable[[Identity, FakeLog], FakeNode], members: list[Identity]
) -> None:
    honest, rewritten = FakeLog(["a", "b"]), FakeLog(["a", "B", "c"])
    nodes = [serve(members[0], honest), serve(members[1], honest), serve(members[2], rewritten)]
    code, out = monitor_once(write_config(tmp_path / "c.toml", members, [n.url for n in nodes]))
    assert code == 1
    assert "node3's consistency proof fails" in out and "node3 signed size 3" in out


def test_a_rewritten_history_is_caught_across_rounds_by_the_consistency_proof(
    tmp_path: Path, serve: Callable[[Identity, FakeLog], FakeNode], members: list[Identity]
) -> None:
    """Every member agrees within each round, but round 2's tree does not extend round 1's."""
    nodes = [serve(m, FakeLog(["a", "b", "c"])) for m in members]
    config = write_config(tmp_path / "c.toml", members, [n.url for n in nodes])
    assert monitor_once(config)[0] == 0
    rewritten = FakeLog(["a", "b", "C", "d", "e"])
    for node in nodes:
        node.api.log = rewritten
    code, out = monitor_once(config)
    assert code == 1
    assert "consistency proof fails" in out and "signed size 3" in out and "signed size 5" in out
    assert all(f" {FORK} " in lines_of(out, f"node{i}")[0] for i in (1, 2, 3))


def test_a_consistent_community_passes_round_after_round_with_a_member_down(
    tmp_path: Path, serve: Callable[[Identity, FakeLog], FakeNode], members: list[Identity], state_dir: Path
) -> None:
    log = FakeLog(["a", "b"])
    urls = [serve(members[0], log).url, serve(members[1], log).url, dead_url()]
    config = write_config(tmp_path / "c.toml", members, urls)
    code, out = monitor_once(config)
    assert code == 0, out
    assert "first seen" in lines_of(out, "node1")[0] and f" {UNREACHABLE} " in lines_of(out, "node3")[0]
    for note in ("c", "d", "e"):
        log.append({"type": "note", "note": note}, 2)
    code, out = monitor_once(config)
    assert code == 0, out
    assert "size 5" in lines_of(out, "node2")[0] and "extends size 2 seen before" in lines_of(out, "node2")[0]

    state = json.loads((state_dir / "checkpoints.json").read_text())
    kept = state["communities"][COMMUNITY]
    assert [c["size"] for c in kept[members[0].public_hex]] == [2, 5]
    assert members[2].public_hex not in kept and state["forks"] == []
    assert stat.S_IMODE((state_dir / "checkpoints.json").stat().st_mode) == 0o600


def test_the_state_file_remembers_and_a_later_fork_against_it_is_reported(
    tmp_path: Path, serve: Callable[[Identity, FakeLog], FakeNode], members: list[Identity], state_dir: Path
) -> None:
    log = FakeLog(["a", "b", "c"])
    nodes = [serve(m, log) for m in members]
    config = write_config(tmp_path / "c.toml", members, [n.url for n in nodes])
    assert monitor_once(config)[0] == 0
    kept_root = log.tree.root().hex()
    # Later only node1 answers, now with another tree of the size it showed before: no member
    # contradicts it in this round, only the memory does.
    other = FakeLog(["a", "b", "X"])
    nodes[0].api.log = other
    for node in nodes[1:]:
        node.stop()
    code, out = monitor_once(config)
    assert code == 1
    assert f"signed size 3 root {kept_root}" in out and f"signed size 3 root {other.tree.root().hex()}" in out
    assert "one was kept from before" in out
    forks = json.loads((state_dir / "checkpoints.json").read_text())["forks"]
    assert len(forks) == 1 and members[0].public_hex in forks[0]["members"]
    assert {c["root"] for c in forks[0]["checkpoints"]} == {kept_root, other.tree.root().hex()}
    monitor_once(config)  # seen again: still reported, kept as evidence once
    assert len(json.loads((state_dir / "checkpoints.json").read_text())["forks"]) == 1


def test_publish_checks_the_members_against_what_the_monitor_kept(
    tmp_path: Path,
    serve: Callable[[Identity, FakeLog], FakeNode],
    members: list[Identity],
    owner_files: tuple[Path, Path],
) -> None:
    log = FakeLog(["a", "b"])
    nodes = [serve(m, log) for m in members]
    config = write_config(tmp_path / "c.toml", members, [n.url for n in nodes])
    assert monitor_once(config)[0] == 0
    rewritten = FakeLog(["a", "B"])  # the whole community now shows a history that drops entry #1
    for node in nodes:
        node.api.log = rewritten
    key_file, bundle = owner_files
    code, out = wmnode("publish", "--config", str(config), "--identity", str(key_file), "--bundle", str(bundle))
    assert code == 1 and "fork in community" in out and "consistency proof fails" in out, out
    assert "may be released" not in out and not (bundle / "receipt.json").exists()


def test_a_member_address_that_signs_with_another_key_is_invalid(
    tmp_path: Path, serve: Callable[[Identity, FakeLog], FakeNode], members: list[Identity]
) -> None:
    log = FakeLog(["a"])
    stranger = Identity.generate()
    nodes = [serve(members[0], log), serve(members[0], log), serve(stranger, log)]  # node2 speaks as node1
    code, out = monitor_once(write_config(tmp_path / "c.toml", members, [n.url for n in nodes]))
    assert code == 1
    assert f" {INVALID} " in lines_of(out, "node2")[0] and "is signed by node1's key" in out
    assert f"signed by {stranger.public_hex}, which is not a member" in lines_of(out, "node3")[0]


def test_a_malformed_proof_from_the_largest_member_is_a_fork_not_a_crash(
    tmp_path: Path, serve: Callable[[Identity, FakeLog], FakeNode], members: list[Identity]
) -> None:
    small, large = FakeLog(["a"]), FakeLog(["a", "b"])
    nodes = [serve(members[0], small), serve(members[1], small), serve(members[2], large)]
    nodes[2].api.override["/v1/proof/consistency"] = json.dumps({"path": ["zz" * 32]}).encode()
    code, out = monitor_once(write_config(tmp_path / "c.toml", members, [n.url for n in nodes]))
    assert code == 1 and "node3's consistency proof fails" in out and "malformed consistency proof" in out


def test_a_damaged_state_file_is_an_error_not_a_fresh_start(tmp_path: Path, members: list[Identity]) -> None:
    path = tmp_path / "checkpoints.json"
    path.write_text('{"v": 1, "communities": {"c": {"' + "ab" * 32 + '": [{"size": 1}]}}, "forks": []}')
    with pytest.raises(ConfigError, match="is not a wmnode checkpoint state"):
        CheckpointState.load(path)


def test_the_state_keeps_a_bounded_number_of_checkpoints_per_member(tmp_path: Path) -> None:
    member = Identity.generate()
    state = CheckpointState(tmp_path / "s.json")
    for size in range(1, 100):
        state.keep(COMMUNITY, Checkpoint.create(member, size, hashlib.sha256(b"%d" % size).digest(), 1))
    state.save()
    again = CheckpointState.load(tmp_path / "s.json")
    assert [c.size for c in again.of(COMMUNITY, member.public_hex)] == list(range(36, 100))


def test_certificate_verify_refuses_a_certificate_whose_tree_differs_from_a_kept_one(
    tmp_path: Path, state_dir: Path
) -> None:
    """Offline, a certificate's checkpoints are compared with the ones this client kept before."""
    from tests.registry.client.test_certificate import _Log, _owned

    log = _Log()
    cert = tmp_path / "cert.json"
    cert.write_text(json.dumps(_owned(log, community=COMMUNITY)))
    config = write_config(tmp_path / "c.toml", log.members, [dead_url() for _ in log.members])
    code, out = wmnode("certificate", "verify", str(cert), "--config", str(config))
    assert code == 0 and "certificate holds" in out, out

    state = CheckpointState(state_dir / "checkpoints.json")
    other_root = hashlib.sha256(b"another tree").digest()
    state.keep(COMMUNITY, Checkpoint.create(log.members[1], len(log.tree), other_root, 1))
    state.save()
    code, out = wmnode("certificate", "verify", str(cert), "--config", str(config))
    assert code == 1 and f"node2 signed size {len(log.tree)} root {other_root.hex()}" in out, out
    assert "one was kept from before" in out


# --- the client: every byte from a node is untrusted ---------------------------------------------------


def _client(handler: Callable[[httpx.Request], httpx.Response]) -> NodeClient:
    return NodeClient("http://node.test", transport=httpx.MockTransport(handler))


def test_the_client_bounds_and_validates_what_a_node_sends() -> None:
    with _client(lambda _: httpx.Response(200, content=b"x" * 100_000)) as client:
        with pytest.raises(PayloadTooLargeError, match="sent more than 65536 bytes"):
            client.signed_checkpoint()
    with _client(lambda _: httpx.Response(200, json={"path": ["AB" * 32]})) as client:
        with pytest.raises(MessageError, match="malformed inclusion proof"):
            client.inclusion_path(0, 2)
    with _client(lambda _: httpx.Response(200, json={"path": ["ab" * 32] * 65})) as client:
        with pytest.raises(MessageError, match="at most 64 hashes"):
            client.consistency_path(1, 2)
    with _client(lambda _: httpx.Response(200, content=b"not json")) as client:
        with pytest.raises(MessageError, match="is not JSON"):
            client.status()
    with _client(lambda _: httpx.Response(200, json=[1, 2])) as client:
        with pytest.raises(MessageError, match="answered list, not an object"):
            client.entry(0)
    with _client(lambda _: httpx.Response(500, json=["odd"])) as client:
        with pytest.raises(Exception, match=r"HTTP 500 from http://node.test/v1/status"):
            client.status()


def test_a_monitor_with_an_injected_client_checks_without_a_network(members: list[Identity], tmp_path: Path) -> None:
    """The library runs without HTTP servers too: the connector is a parameter."""
    log = FakeLog(["a", "b"])
    fakes = {f"http://m{i}.test": FakeApi(identity, log) for i, identity in enumerate(members)}

    def connect(url: str, timeout: float) -> NodeClient:
        def handle(request: httpx.Request) -> httpx.Response:
            query = {k: int(v) for k, v in request.url.params.items()}
            status, body = fakes[url].respond(request.method, request.url.path, query, request.content)
            return httpx.Response(status, content=body)

        return NodeClient(url, timeout, transport=httpx.MockTransport(handle))

    community = Community(COMMUNITY, tuple(Peer(f"node{i + 1}", u, m.public_hex) for i, (u, m) in
                                            enumerate(zip(fakes, members, strict=True))), "http://m0.test")  # fmt: skip
    with Monitor(community, CheckpointState(tmp_path / "s.json"), connect=connect) as monitor:
        assert [o.status for o in monitor.round()] == [OK, OK, OK]
        log.append({"type": "note"}, 3)
        assert [o.detail for o in monitor.round()] == ["extends size 2 seen before"] * 3
