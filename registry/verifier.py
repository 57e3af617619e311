"""The verifier on every node (DESIGN §1, §4.4): judge each committed claim, record a signed vote.

Apply only records a claim; this worker thread, never the apply path, does the heavy part. For
every claim in the log that lacks this node's vote it

1. re-checks the revealed key against the publish's key_hash and the owner's key_proof;
2. fetches the info and the verifier artifact and checks them against the publish's hashes;
3. fetches the suspect (store, peers or guarded http(s)) and checks it against the claim's
   model_hash, then loads it from safetensors only; a prediction API (black-box schemes only) is
   queried through `RemotePredictor` under the same fetch policy;
4. runs the publish's scheme, looked up by name, and votes `owner` / `not-owner`, or `error` with
   the reason when any step above could not be carried out.

A node that restarts finds its own earlier votes in the log and skips those claims; a vote that
was submitted twice is refused by apply, so every member votes at most once per claim.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

from pysyncobj import FAIL_REASON

from registry.api import NodeInfo, now_ms
from registry.errors import VerificationError, WmnodeError
from registry.fetch import Fetcher
from registry.identity import Identity, verify_owner_key
from registry.log import REJECTED, Outcome, RegistryLog, envelope
from registry.messages import ERROR, NOT_OWNER, OWNER, PREDICT, Claim, Vote, uri_kind

logger = logging.getLogger(__name__)

MAX_INFO_BYTES = 64 * 1024
_IDLE_S = 0.5


@dataclass(frozen=True)
class Judgement:
    verdict: str
    score: int
    threshold: int
    reason: str


def per_mille(value: float) -> int:
    return max(0, min(1000, round(1000 * float(value))))


def judge(claim: Claim, publish: dict[str, Any], fetcher: Fetcher) -> Judgement:
    """Verify one claim against the publish it rests on (the `msg` of that log entry)."""
    key, proof = bytes.fromhex(claim.key), bytes.fromhex(claim.key_proof)
    if hashlib.sha256(key).hexdigest() != publish["key_hash"]:
        raise VerificationError("the revealed key does not hash to the publish's key_hash")
    verify_owner_key(claim.owner, bytes.fromhex(publish["nonce"]), key, proof)

    # Torch and the schemes load on first use (the worker warms them up at start).
    from schemes.base import get_scheme
    from schemes.bundle import MAX_VERIFIER_BYTES
    from schemes.serving import RemotePredictor
    from schemes.training import default_device
    from schemes.zoo import model_from_bytes, read_weights_bytes, strict_json

    info_bytes = fetcher.fetch(claim.info_uri, publish["info_hash"], MAX_INFO_BYTES, "info")
    info = strict_json(info_bytes, "info")
    if not isinstance(info, dict) or info.get("scheme") != publish["scheme"]:
        raise WmnodeError(f"info does not describe a {publish['scheme']!r} watermark")
    scheme = get_scheme(publish["scheme"])
    verifier = read_weights_bytes(
        fetcher.fetch(claim.verifier_uri, publish["verifier_hash"], MAX_VERIFIER_BYTES, "verifier artifact"),
        "verifier artifact",
    )
    suspect: Any
    if uri_kind(claim.model_uri) == PREDICT:
        if not scheme.black_box:
            raise WmnodeError(f"{scheme.name} is a white-box scheme: it needs the model's weights, not an API")
        suspect = RemotePredictor(claim.model_uri, fetcher.policy)
    else:
        data = fetcher.fetch(claim.model_uri, claim.model_hash, fetcher.policy.max_bytes, "suspect model")
        model, _ = model_from_bytes(data, max_bytes=fetcher.policy.max_bytes, what="suspect model")
        suspect = model.to(default_device())
    verdict = scheme.verify(suspect, key, verifier, info)
    word = "found" if verdict.passed else "not found"
    return Judgement(
        OWNER if verdict.passed else NOT_OWNER,
        per_mille(verdict.score),
        per_mille(verdict.threshold),
        f"{scheme.name} watermark {word}: score {verdict.score:.3f}, threshold {verdict.threshold:g}",
    )


class VerifierWorker:
    """One thread per node: judge claims in log order, submit each vote until it commits."""

    def __init__(self, log: RegistryLog, identity: Identity, fetcher: Fetcher, info: NodeInfo) -> None:
        self.log, self.identity, self.fetcher, self.info = log, identity, fetcher, info
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="verifier", daemon=True)
        self._done: set[int] = set()
        #: Votes judged but not yet committed (a quorum outage): resubmitted, never re-judged.
        self._unsent: dict[int, Vote] = {}
        #: Set once torch and the schemes are loaded and the log is replayed (GET /v1/status says).
        self.ready = threading.Event()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.log.state.changed.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    # -- the loop ----------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._warm_up()
            self._wait_caught_up()
            self.ready.set()
            while not self._stop.is_set():
                self.log.state.changed.clear()
                for index in self._pending():
                    if self._stop.is_set():
                        return
                    self._handle(index)
                self.log.state.changed.wait(_IDLE_S)
        except Exception:  # noqa: BLE001 - a dead verifier must say so in the node's log
            logger.exception("the verifier thread stopped")

    def _warm_up(self) -> None:
        """Import torch and the schemes now, so the first claim is not charged for it."""
        import torch

        import schemes  # noqa: F401 - registers every scheme

        threads = int(os.environ.get("WMNODE_VERIFY_THREADS", "0")) or max(
            1, (os.cpu_count() or 1) // max(1, len(self.info.members))
        )
        torch.set_num_threads(threads)

    def _wait_caught_up(self) -> None:
        """After a restart, replay the log first: the claims this node voted on carry its vote."""
        while not self._stop.is_set():
            status = self.log.raft_status()
            if status.get("leader") is not None and status.get("commit_idx", 0) <= status.get("last_applied", -1):
                return
            self._stop.wait(0.05)

    def _pending(self) -> list[int]:
        me = self.identity.public_hex
        with self.log.state.lock:
            return sorted(i for i, c in self.log.state.claims.items() if me not in c.votes and i not in self._done)

    def _handle(self, index: int) -> None:
        vote = self._unsent.pop(index, None) or self._judge(index)
        if self._submit(vote):
            self._done.add(index)
        else:
            self._unsent[index] = vote  # tried again on the next pass

    def _judge(self, index: int) -> Vote:
        entry = self.log.entry(index)
        claim = Claim.from_json(entry["msg"])
        assert isinstance(claim, Claim)
        started = time.perf_counter()
        try:
            publish = self.log.entry(claim.publish)["msg"]
            result = judge(claim, publish, self.fetcher)
        except WmnodeError as exc:
            result = Judgement(ERROR, 0, 0, exc.diagnostics()[:500])
        except Exception as exc:  # noqa: BLE001 - a bad artifact must not kill the verifier
            logger.exception("claim #%d: verification raised", index)
            result = Judgement(ERROR, 0, 0, f"internal error: {type(exc).__name__}")
        logger.info("claim #%d: %s (%s) in %.2f s", index, result.verdict, result.reason, time.perf_counter() - started)
        return Vote.create(
            self.identity,
            claim=index,
            claim_hash=claim.body_hash(),
            verdict=result.verdict,
            score=result.score,
            threshold=result.threshold,
            reason="".join(c if c.isprintable() else " " for c in result.reason)[:500],
        )

    def _submit(self, vote: Vote) -> bool:
        """Submit until committed or refused (already voted): True; False when the community
        could not commit it for a while (the caller keeps the vote and tries again later)."""
        deadline = time.monotonic() + 10 * self.info.commit_timeout_s
        while not self._stop.is_set() and time.monotonic() < deadline:
            done = threading.Event()
            box: list[tuple[Outcome | None, int]] = []

            def _cb(
                res: Outcome | None,
                err: int,
                box: list[tuple[Outcome | None, int]] = box,
                done: threading.Event = done,
            ) -> None:
                box.append((res, err))
                done.set()

            self.log.submit(envelope(vote, now_ms(), self.info.max_skew_ms), _cb, validated=vote)
            if done.wait(self.info.commit_timeout_s) and box[0][1] == FAIL_REASON.SUCCESS and box[0][0] is not None:
                outcome = box[0][0]
                if outcome.status == REJECTED:
                    logger.warning("vote on claim #%d refused: %s", vote.claim, outcome.reason)
                return True
            self._stop.wait(0.2)
        logger.warning("vote on claim #%d not committed yet; it is kept and submitted again", vote.claim)
        return False
