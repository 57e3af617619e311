"""The Raft port: authenticated, encrypted, bounded connections between members only.

pysyncobj's own transport buffers up to 2 GiB per connection before it checks anything (with a
quadratic `bytes +=`), unpickles every frame, and admits anyone who holds the community secret.
This module keeps pysyncobj's Raft and its `Transport` interface and replaces the wire beneath:

* **Handshake** (per connection, both sides at once). Each side sends a fixed 136-byte HELLO:
  magic ‖ the community-settings digest ‖ its member key (Ed25519) ‖ an ephemeral X25519 key ‖ a
  random nonce. A HELLO from a key that is not another member's, or (on a connection we dialled)
  not the key of the member we dialled, or with other community settings, drops the connection.
  Both sides derive two direction keys, HKDF-SHA256(ikm = X25519 secret, salt = PSK,
  info = transcript hash), where the PSK is stretched from the community secret, and each then
  sends, encrypted, its Ed25519 signature over the transcript hash and its role. Only after the
  peer's signature verifies is the connection reported to Raft. So the community secret alone
  admits nobody, and a member can speak only as itself.
* **Frames**: a 4-byte big-endian length, then AES-256-GCM with a per-direction counter nonce
  (no replay, no reordering). The length is checked against the limit before any byte of the
  frame is buffered (136 bytes before authentication, `max_frame_bytes` after); buffers are
  bytearrays consumed from the front (linear).
* **Deadlines and counts**: a handshake must finish within `handshake_s`; an authenticated
  connection silent for `idle_s` is dropped; at most `max_pending` unauthenticated connections,
  `max_pending_per_ip` from one address. The sweep runs on every Raft tick, so a connection that
  sends nothing is dropped too (pysyncobj checks its timeouts only when bytes arrive).
* **Payloads** are decoded by `registry.raft_wire` (no pickle) and checked against their schema.
"""

from __future__ import annotations

import functools
import logging
import socket
import time
from collections.abc import Callable
from typing import Any

from pysyncobj.poller import POLL_EVENT_TYPE
from pysyncobj.tcp_connection import CONNECTION_STATE
from pysyncobj.transport import TCPTransport

from registry.log.raft_auth import (
    RaftAuth,
)
from registry.log.raft_connection import SecureConnection

logger = logging.getLogger(__name__)


class SecureServer:
    """The listening socket; admits a bounded number of unauthenticated connections."""

    def __init__(self, poller: Any, host: str, port: int, auth: RaftAuth, on_new: Callable[[SecureConnection], None],
                 may_accept: Callable[[str], bool]) -> None:  # fmt: skip
        self._poller, self._host, self._port, self._auth = poller, host, int(port), auth
        self._on_new, self._may_accept = on_new, may_accept
        self._sock: socket.socket | None = None

    def bind(self) -> None:
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        try:
            sock.bind((self._host, self._port))
            sock.listen(64)
        except OSError:
            sock.close()
            raise
        self._sock = sock
        self._poller.subscribe(sock.fileno(), self._on_accept, POLL_EVENT_TYPE.READ | POLL_EVENT_TYPE.ERROR)

    def unbind(self) -> None:
        if self._sock is not None:
            self._poller.unsubscribe(self._sock.fileno())
            self._sock.close()
            self._sock = None

    def _on_accept(self, fd: int, event: int) -> None:
        for _ in range(64):  # drain the backlog, boundedly
            if self._sock is None:
                return
            try:
                sock, addr = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            if not self._may_accept(str(addr[0])):
                sock.close()
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._on_new(SecureConnection(self._poller, self._auth, sock=sock))


class SecureTransport(TCPTransport):  # type: ignore[misc]
    """pysyncobj's TCPTransport with `SecureConnection`s, members mapped by key, not address."""

    def __init__(self, syncObj: Any, selfNode: Any, otherNodes: Any, *, auth: RaftAuth) -> None:  # noqa: N803
        self._auth = auth
        self._key_to_node: dict[str, Any] = {}
        self._member_ips = {address.rsplit(":", 1)[0].strip("[]") for address in auth.peers}
        self._stranger_tokens, self._stranger_refill = auth.limits.stranger_accepts_per_s, time.monotonic()
        super().__init__(syncObj, selfNode, otherNodes)

    @classmethod
    def factory(cls, auth: RaftAuth) -> Callable[..., SecureTransport]:
        return functools.partial(cls, auth=auth)

    def _createServer(self) -> None:  # noqa: N802
        host, port = self._syncObj.conf.bindAddress.rsplit(":", 1)
        self._server = SecureServer(
            self._syncObj._poller,
            host.strip("[]"),
            int(port),
            self._auth,
            self._onNewIncomingConnection,
            self._may_accept,
        )

    def _may_accept(self, ip: str) -> bool:
        """Admit a new connection, boundedly: members' addresses have their own lane, where a new
        connection evicts the oldest pending one from that address (the newest is most likely the
        member redialling); strangers are rate limited, capped per address, and at the global cap
        the oldest stranger is evicted, so held-open connections cannot lock members out."""
        limits = self._auth.limits
        pending = [c for c in self._unknownConnections if c.state != CONNECTION_STATE.DISCONNECTED]
        same = sorted((c for c in pending if c.peer_ip == ip), key=lambda c: c.opened)
        if ip in self._member_ips:
            for conn in same[: max(0, len(same) - limits.max_pending_per_ip + 1)]:
                conn.disconnect()
            return True
        now = time.monotonic()
        self._stranger_tokens = min(
            limits.stranger_accepts_per_s * 2,
            self._stranger_tokens + (now - self._stranger_refill) * limits.stranger_accepts_per_s,
        )
        self._stranger_refill = now
        if self._stranger_tokens < 1 or len(same) >= limits.max_pending_per_ip:
            return False
        self._stranger_tokens -= 1
        strangers = sorted((c for c in pending if c.peer_ip not in self._member_ips), key=lambda c: c.opened)
        if len(pending) >= limits.max_pending and strangers:
            strangers[0].disconnect()
            logger.info("raft port: %d connections handshaking; evicted the oldest stranger", len(pending))
        return True

    def addNode(self, node: Any) -> None:  # noqa: N802
        key = self._auth.peers.get(node.address)
        if key is None:
            raise ValueError(f"no member key for the Raft address {node.address}")
        self._nodes.add(node)
        self._nodeAddrToNode[node.address] = node
        self._key_to_node[key] = node
        if self._shouldConnect(node):
            conn = SecureConnection(self._syncObj._poller, self._auth, expected_key=key)
            conn.setOnConnectedCallback(functools.partial(self._onOutgoingConnected, conn))
            conn.setOnMessageReceivedCallback(functools.partial(self._onMessageReceived, node))
            conn.setOnDisconnectedCallback(functools.partial(self._onDisconnected, conn))
            self._connections[node] = conn

    def _onNewIncomingConnection(self, conn: SecureConnection) -> None:  # noqa: N802
        self._unknownConnections.add(conn)
        conn.setOnConnectedCallback(functools.partial(self._on_incoming_authenticated, conn))
        conn.setOnDisconnectedCallback(functools.partial(self._onDisconnected, conn))

    def _on_incoming_authenticated(self, conn: SecureConnection) -> None:
        node = self._key_to_node.get(conn.peer_key or "")
        self._unknownConnections.discard(conn)
        if node is None or self._shouldConnect(node):
            # Only the member with the higher address dials (pysyncobj's rule); anything else is odd.
            conn.disconnect(notify=False)
            return
        old = self._connections.get(node)
        self._connections[node] = conn
        conn.setOnMessageReceivedCallback(functools.partial(self._onMessageReceived, node))
        if old is not None and old is not conn:
            old.disconnect()
        self._onNodeConnected(node)

    def _onOutgoingConnected(self, conn: SecureConnection) -> None:  # noqa: N802
        self._onNodeConnected(self._connToNode(conn))

    def _onTick(self) -> None:  # noqa: N802
        super()._onTick()
        now = time.monotonic()
        for conn in list(self._unknownConnections):
            if conn.state == CONNECTION_STATE.DISCONNECTED:
                self._unknownConnections.discard(conn)
            else:
                conn.sweep(now)
        for conn in list(self._connections.values()):
            conn.sweep(now)
