"""Run one registry node: data dir, identity, replicated log and HTTP API in one process."""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import uvicorn

from contracts.datasets import check_pinned
from contracts.errors import NodeError
from contracts.fetch import ArtifactStore, Fetcher
from contracts.identity import Identity, load_or_create_identity
from registry.community.config import NodeConfig
from registry.log.replicated import RegistryLog
from registry.serve.api import create_app
from registry.serve.info import node_info
from registry.serve.metering import Metering
from registry.serve.verifier import VerifierWorker

logger = logging.getLogger(__name__)

DEFAULT_DATA_ROOT = Path("wmnode-data")


def data_dir_for(config: NodeConfig) -> Path:
    return config.data_dir or DEFAULT_DATA_ROOT / config.name


@contextmanager
def locked_data_dir(path: Path) -> Iterator[Path]:
    """Create the data dir (0700) and hold an exclusive lock: two nodes on one journal corrupt it."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        handle: IO[str] = open(path / "LOCK", "w")
    except OSError as exc:
        raise NodeError(f"cannot use data dir {path}: {exc.strerror}") from exc
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        handle.close()
        raise NodeError(f"data dir {path} is in use by another node process") from exc
    try:
        handle.write(str(os.getpid()))
        handle.flush()
        yield path
    finally:
        handle.close()


def check_port_free(host: str, port: int, what: str) -> None:
    """Fail fast: pysyncobj would retry a busy Raft port forever, uvicorn would only log it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise NodeError(f"cannot bind the {what} address {host}:{port}: {exc.strerror}") from exc


def node_identity(config: NodeConfig, data_dir: Path) -> Identity:
    """The node's signing key: from `identity_seed` (loopback examples) or `data_dir/node.key`."""
    if config.identity_seed is not None:
        return Identity.from_seed(config.identity_seed)
    return load_or_create_identity(data_dir / "node.key")


def check_own_key(config: NodeConfig, identity: Identity) -> None:
    """A node whose key is not its member entry's would sign votes nobody counts: refuse to start."""
    _ = config.member_keys  # every member needs a key (raises naming the ones without)
    if config.me.key != identity.public_hex:
        raise NodeError(
            f"this node's key is {identity.public_hex}, but the members entry for {config.name!r} says "
            f"{config.me.key}; put the node's key in every member's config"
        )


class _Stopper:
    """SIGTERM before the API serves: unwind (through `finally`) while only start-up code runs;
    once the server object exists, ask it to exit instead, so the signal can never land as an
    exception inside some other thread's clean-up (Python would print and ignore it there)."""

    def __init__(self) -> None:
        self.server: uvicorn.Server | None = None
        self.requested = False

    def __call__(self, signum: int, frame: object) -> None:
        self.requested = True
        if self.server is None:
            raise KeyboardInterrupt
        self.server.should_exit = True


def run_node(config: NodeConfig, dev: bool = False, log_json: bool = False, judges: bool = True) -> None:
    """Start the node and serve until SIGINT/SIGTERM; the log is closed cleanly on the way out.

    `log_json`: leave uvicorn's loggers to the root logger's (JSON) handler instead of its own.
    `judges=False` (`--no-judges`): start no judge process; the node serves every route, reports
    `verifier_ready: false` and votes `error` on every claim (registry.serve.verifier).
    """
    stopper = _Stopper()
    signal.signal(signal.SIGTERM, stopper)  # uvicorn installs its own while it serves
    try:
        _run_node(config, dev, stopper, log_json, judges)
    except KeyboardInterrupt:
        logger.info("node %s stopped before it finished starting", config.name)


def _check_before_start(config: NodeConfig, dev: bool) -> None:
    """What must hold before anything starts: the secret, pinned data sets, free ports."""
    config.check_secret(dev)
    if config.uses_example_secret:
        logger.warning(
            "this node uses the EXAMPLE community secret from %s: fine on loopback, never in a real community",
            config.source,
        )
    elif config.secret is None:
        logger.warning("dev mode: no community secret; Raft peers are authenticated by member key only (loopback only)")
    for dataset in config.verification.datasets:  # before anything starts: a wrong copy judges wrongly
        check_pinned(dataset)
    check_port_free(config.raft.host, config.raft.port, "Raft")
    check_port_free(config.api.host, config.api.port, "API")


def _open_log(config: NodeConfig, identity: Identity, data_dir: Path) -> RegistryLog:
    _ = config.member_keys  # every member has a key: the Raft handshake admits members by key
    return RegistryLog(
        str(config.raft),
        {str(p.raft): p.key for p in config.peers if p.key is not None},
        data_dir,
        config.secret,
        community=config.community,
        identity=identity,
        clock=config.clock,
    )


def _server(config: NodeConfig, app: Any, metering: Metering, log_json: bool) -> uvicorn.Server:
    return uvicorn.Server(
        uvicorn.Config(
            app,
            host=config.api.host,
            port=config.api.port,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=2,
            log_config=None if log_json else uvicorn.config.LOGGING_CONFIG,
            **metering.uvicorn_options(),
        )
    )


def _run_node(config: NodeConfig, dev: bool, stopper: _Stopper, log_json: bool = False, judges: bool = True) -> None:
    _check_before_start(config, dev)
    with locked_data_dir(data_dir_for(config)) as data_dir:
        identity = node_identity(config, data_dir)
        check_own_key(config, identity)
        log = _open_log(config, identity, data_dir)
        store = ArtifactStore(data_dir / "artifacts", config.max_artifact_bytes)
        metering = Metering(config.limits, store, log)  # quotas, collection, rate limits, connection caps
        fetcher = Fetcher(store, [p.api_url for p in config.peers], config.fetch)
        worker = VerifierWorker(log, identity, fetcher, node_info(config), data_dir, config.references, judges)
        worker.on_judged = metering.metrics.verify_seconds.observe
        metering.metrics.watch(metering.metrics.claim_queue, worker.queue_length)
        try:
            app = create_app(
                log,
                identity,
                node_info(config),
                store,
                worker.ready.is_set,
                worker.references_done.is_set,
                metering=metering,
            )
            server = _server(config, app, metering, log_json)
            logger.info(
                "node %s (%s) serving %s, raft %s, data %s",
                config.name,
                identity.public_hex[:16],
                config.me.api_url,
                config.raft,
                data_dir,
            )
            stopper.server = server
            if stopper.requested:
                return
            worker.start()
            metering.store.start()
            server.run()
            if not server.started and not stopper.requested:
                raise NodeError(f"could not serve the API on {config.api} (port in use?)")
        finally:
            stopper.server = None
            metering.store.stop()
            worker.stop()
            log.close()
