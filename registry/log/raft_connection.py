"""One authenticated, encrypted, bounded connection on the Raft port: the handshake and the frames
(the design: registry.log.raft_transport)."""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pysyncobj.poller import POLL_EVENT_TYPE
from pysyncobj.tcp_connection import CONNECTION_STATE

from contracts.errors import VerificationError
from contracts.identity import verify_signature
from registry.log.raft_auth import (
    AUTH_DOMAIN,
    FRAME_LENGTH,
    HELLO_BYTES,
    MAGIC,
    TRANSCRIPT_DOMAIN,
    RaftAuth,
    x25519_public,
)
from registry.log.raft_wire import WireError, check_message, decode, encode

logger = logging.getLogger(__name__)


class _Handshake(Exception):
    """A peer failed the handshake; the message says why (logged once, connection dropped)."""


class SecureConnection:
    """One peer connection on pysyncobj's poller, with the interface its `TCPTransport` uses."""

    def __init__(self, poller: Any, auth: RaftAuth, sock: socket.socket | None = None, expected_key: str = "") -> None:
        self._poller, self._auth, self._limits = poller, auth, auth.limits
        self.expected_key = expected_key
        self.peer_key: str | None = None
        self.peer_ip = ""
        self._on_message: Callable[[Any], None] | None = None
        self._on_connected: Callable[[], None] | None = None
        self._on_disconnected: Callable[[], None] | None = None
        self._sock: socket.socket | None = None
        self._fileno: int | None = None
        self.opened = time.monotonic()
        self.state = CONNECTION_STATE.DISCONNECTED
        self._reset()
        if sock is not None:  # accepted: the peer dialled us
            self._initiator = False
            self._attach(sock)
            self.peer_ip = peer_ip(sock)
            self.state = CONNECTION_STATE.CONNECTING
            self._tcp_up = True
            self._send_hello()
            self._subscribe()

    # -- the interface pysyncobj's TCPTransport calls -------------------------------------------

    def setOnConnectedCallback(self, callback: Callable[[], None] | None) -> None:  # noqa: N802 - pysyncobj's names
        self._on_connected = callback

    def setOnMessageReceivedCallback(self, callback: Callable[[Any], None] | None) -> None:  # noqa: N802
        self._on_message = callback

    def setOnDisconnectedCallback(self, callback: Callable[[], None] | None) -> None:  # noqa: N802
        self._on_disconnected = callback

    def fileno(self) -> int | None:
        return self._fileno

    def getSendBufferSize(self) -> int:  # noqa: N802
        return len(self._wbuf)

    def connect(self, host: str, port: int) -> bool:
        self.disconnect(notify=False)
        self._reset()
        self._initiator = True
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        try:
            sock.connect((host, port))
        except BlockingIOError:
            pass
        except OSError:
            sock.close()
            return False
        self._attach(sock)
        self.state = CONNECTION_STATE.CONNECTING
        self._subscribe(write=True)
        return True

    def send(self, message: Any) -> None:
        if self.state != CONNECTION_STATE.CONNECTED:
            return
        payload = encode(message)
        if len(payload) + 16 > self._limits.max_frame_bytes:
            logger.error("a Raft message of %d bytes is over the frame limit; not sent", len(payload))
            return
        self._queue(self._seal(payload))

    def disconnect(self, notify: bool = True) -> None:
        was = self.state
        if self._sock is not None:
            if self._fileno is not None:
                self._poller.unsubscribe(self._fileno)
            self._sock.close()
        self._sock, self._fileno = None, None
        self._rbuf, self._wbuf = bytearray(), bytearray()
        self.state = CONNECTION_STATE.DISCONNECTED
        if notify and was != CONNECTION_STATE.DISCONNECTED and self._on_disconnected is not None:
            self._on_disconnected()

    # -- internals --------------------------------------------------------------------------

    def _reset(self) -> None:
        self._initiator = True
        self._tcp_up = False
        self._rbuf, self._wbuf = bytearray(), bytearray()
        self._eph = X25519PrivateKey.generate()
        self._my_hello = MAGIC + self._auth.settings + self._auth.public + x25519_public(self._eph) + os.urandom(32)
        self._peer_hello = b""
        self._transcript = b""
        self._send_aead: AESGCM | None = None
        self._recv_aead: AESGCM | None = None
        self._send_n = self._recv_n = 0
        self.peer_key = None
        self._deadline = time.monotonic() + self._limits.handshake_s
        self._last_read = self._last_send = time.monotonic()

    def _attach(self, sock: socket.socket) -> None:
        self.opened = time.monotonic()
        sock.setblocking(False)
        self._sock, self._fileno = sock, sock.fileno()
        self._deadline = time.monotonic() + self._limits.handshake_s
        self._last_read = time.monotonic()

    def _subscribe(self, write: bool = False) -> None:
        if self._fileno is None:
            return
        events = POLL_EVENT_TYPE.READ | POLL_EVENT_TYPE.ERROR
        if write or self._wbuf:
            events |= POLL_EVENT_TYPE.WRITE
        self._poller.subscribe(self._fileno, self._on_event, events)

    def sweep(self, now: float) -> None:
        """Drop a connection past its handshake deadline, or silent for too long once up."""
        if self.state == CONNECTION_STATE.CONNECTING and now > self._deadline:
            self._drop("handshake not finished in time")
        elif self.state == CONNECTION_STATE.CONNECTED:
            if now - self._last_read > self._limits.idle_s:
                self._drop("peer silent for too long")
            elif now - self._last_send > self._limits.idle_s / 4:
                self._queue(self._seal(b""))  # keep-alive: followers have nothing else to say to each other

    def _drop(self, why: str) -> None:
        who = self.peer_key[:16] + "…" if self.peer_key else (self.peer_ip or self.expected_key[:16] or "peer")
        logger.info("raft connection %s dropped: %s", who, why)
        self.disconnect()

    def _on_event(self, fd: int, event: int) -> None:
        if fd != self._fileno or self._sock is None:
            self._poller.unsubscribe(fd)
            return
        if event & POLL_EVENT_TYPE.ERROR:
            self.disconnect()
            return
        if not self._tcp_up:
            if self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                self.disconnect()
                return
            self._tcp_up = True
            self.peer_ip = peer_ip(self._sock)
            self._send_hello()
        if event & POLL_EVENT_TYPE.WRITE:
            self._flush()
        if event & POLL_EVENT_TYPE.READ and self._sock is not None:
            self._read()
        if self._sock is not None:
            self._subscribe()

    def _send_hello(self) -> None:
        self._queue(self._my_hello)

    def _queue(self, frame: bytes) -> None:
        self._last_send = time.monotonic()
        self._wbuf += FRAME_LENGTH.pack(len(frame))
        self._wbuf += frame
        if len(self._wbuf) > self._limits.max_write_buffer:
            self._drop("peer does not read (send buffer full)")
            return
        self._flush()

    def _flush(self) -> None:
        while self._wbuf and self._sock is not None:
            try:
                sent = self._sock.send(self._wbuf)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self.disconnect()
                return
            if sent <= 0:
                break
            del self._wbuf[:sent]
        if self._wbuf and self._sock is not None:
            self._subscribe(write=True)

    def _read(self) -> None:
        budget = self._limits.read_budget
        while budget > 0 and self._sock is not None:
            try:
                chunk = self._sock.recv(min(65536, budget))
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self.disconnect()
                return
            if not chunk:
                self.disconnect()
                return
            budget -= len(chunk)
            self._last_read = time.monotonic()
            self._rbuf += chunk
            if not self._parse():
                return

    def _parse(self) -> bool:
        """Handle every complete frame; False once the connection was dropped."""
        while len(self._rbuf) >= 4:
            (size,) = FRAME_LENGTH.unpack_from(self._rbuf)
            # Nothing bigger than a hello (or the 80-byte signature) until the peer has proven its key.
            limit = self._limits.max_frame_bytes if self.state == CONNECTION_STATE.CONNECTED else HELLO_BYTES
            if size == 0 or size > limit:
                self._drop(f"frame of {size} bytes announced (limit {limit})")
                return False
            if len(self._rbuf) < 4 + size:
                return True
            frame = bytes(self._rbuf[4 : 4 + size])
            del self._rbuf[: 4 + size]
            try:
                self._frame(frame)
            except (_Handshake, WireError) as exc:
                self._drop(str(exc))
                return False
            if self._sock is None:
                return False
        return True

    def _frame(self, frame: bytes) -> None:
        if not self._peer_hello:
            self._hello(frame)
            return
        try:
            payload = self._open(frame)
        except InvalidTag:
            raise _Handshake("a frame did not authenticate") from None
        if self.state != CONNECTION_STATE.CONNECTED:
            self._auth_frame(payload)
            return
        if not payload:  # keep-alive
            return
        message = check_message(decode(payload))
        if self._on_message is not None:
            self._on_message(message)

    def _hello(self, frame: bytes) -> None:
        if len(frame) != HELLO_BYTES or not frame.startswith(MAGIC):
            raise _Handshake("not a wmnode Raft hello")
        at = len(MAGIC)
        settings, key = frame[at : at + 32], frame[at + 32 : at + 64]
        eph = frame[at + 64 : at + 96]
        if settings != self._auth.settings:
            raise _Handshake("peer runs with other community settings (members, clock rules)")
        key_hex = key.hex()
        if key_hex not in self._auth.keys:
            raise _Handshake(f"key {key_hex[:16]}… is not another member's")
        if self._initiator and key_hex != self.expected_key:
            raise _Handshake(f"dialled {self.expected_key[:16]}… but {key_hex[:16]}… answered")
        try:
            shared = self._eph.exchange(X25519PublicKey.from_public_bytes(eph))
        except ValueError:
            raise _Handshake("bad ephemeral key") from None
        self._peer_hello, self.peer_key = frame, key_hex
        first, second = (self._my_hello, frame) if self._initiator else (frame, self._my_hello)
        self._transcript = hashlib.sha256(TRANSCRIPT_DOMAIN + first + second).digest()
        okm = HKDF(algorithm=hashes.SHA256(), length=64, salt=self._auth.psk or None, info=self._transcript).derive(
            shared
        )
        forward, backward = AESGCM(okm[:32]), AESGCM(okm[32:])
        self._send_aead, self._recv_aead = (forward, backward) if self._initiator else (backward, forward)
        role = b"I" if self._initiator else b"R"
        self._queue(self._seal(self._auth.identity.sign(AUTH_DOMAIN + role + self._transcript)))

    def _auth_frame(self, signature: bytes) -> None:
        role = b"R" if self._initiator else b"I"
        try:
            verify_signature(self.peer_key or "", signature, AUTH_DOMAIN + role + self._transcript)
        except VerificationError:
            raise _Handshake("peer's signature over the handshake does not verify") from None
        self.state = CONNECTION_STATE.CONNECTED
        self._last_read = time.monotonic()
        if self._on_connected is not None:
            self._on_connected()

    def _seal(self, payload: bytes) -> bytes:
        assert self._send_aead is not None
        nonce = self._send_n.to_bytes(12, "big")
        self._send_n += 1
        return self._send_aead.encrypt(nonce, payload, None)

    def _open(self, frame: bytes) -> bytes:
        assert self._recv_aead is not None
        nonce = self._recv_n.to_bytes(12, "big")
        self._recv_n += 1
        return self._recv_aead.decrypt(nonce, frame, None)


def peer_ip(sock: socket.socket) -> str:
    try:
        return str(sock.getpeername()[0])
    except OSError:
        return ""
