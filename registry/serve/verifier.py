"""The verifier on every node (DESIGN §1, §4.4, §6): judge each committed claim, record a signed vote.

Apply only records a claim; this worker, never the apply path, does the heavy part, and the
heaviest part runs in judge processes (registry.serve.judges) with memory, CPU and wall-clock limits.
For every claim in the log that lacks this node's vote it

1. re-checks the revealed key against the publish's key_hash and the owner's key_proof;
2. fetches the info and checks it against the publish's hash and the community's floors and caps
   (contracts.infos: a claim below them is voted `not-owner`, before any work);
3. fetches the verifier artifact and the suspect (store, peers or guarded http(s)), checks their
   hashes and the suspect's card against the info;
4. picks the reference models that match the suspect (recorded by a majority of members);
5. hands all of it to a judge, which runs the scheme on the suspect and on the references and
   decides (registry.judge.process), and votes with the judge's verdict, false-positive bound and the
   references it checked; `error` with the reason when any step could not be carried out.

Fairness (§6.2): claims are served in commit order, each claimant's k-th waiting claim after
every claimant's (k−1)-th, so a burst from one claimant waits its turn behind another's single
claim and a new identity is never served first for being new; `judges` claims run at once, and a
prediction API must answer each request within the community's deadline. A claim being judged is
marked on disk (data_dir/judging/INDEX); a node killed mid-judgement finds the mark at restart and
votes `error` on that claim instead of judging it again, so it neither loops on a claim that
kills it nor votes twice (apply refuses a second vote anyway). At first start the node also trains
and records the reference models its config lists (`[[references]]`), in a judge.

A node started without judges (`wmnode start --no-judges`: tests and nodes that only serve the log)
starts no judge process (nothing imports torch). It never reports itself ready to judge, and it votes
`error` on every claim, naming the reason (NO_JUDGES_REASON), so a claim never waits on it: the
judging members decide it, and where too few judge, it is decided `error` (nothing decided; the
claimant may claim again).
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pysyncobj import FAIL_REASON

from contracts.bundle import MAX_INFO_BYTES, MAX_VERIFIER_BYTES
from contracts.errors import InfoError, WmnodeError
from contracts.fetch import Fetcher
from contracts.identity import Identity
from contracts.infos import Info, is_black_box
from contracts.limits import JobLimits
from contracts.modelid import model_identity
from contracts.references import ReferenceSpec
from registry.log.clock import CLOCK_NOT_STARTED, STALE_STAMP, now_ms
from registry.log.messages import (
    ERROR,
    MAX_VOTE_REFERENCES,
    NOT_OWNER,
    PREDICT,
    Claim,
    Message,
    Publish,
    Reference,
    Vote,
    uri_kind,
)
from registry.log.replicated import RegistryLog
from registry.log.state import REJECTED, Outcome
from registry.serve.admission import (
    check_published_artifacts,
    check_suspect,
    check_verifier_file,
    info_bytes,
    read_info,
)
from registry.serve.claim_inputs import ClaimFiles, check_key, reference_matches
from registry.serve.info import NodeInfo
from registry.serve.jobs import BuildJob, BuildPolicy, Built, DatasetFile, JudgeJob, JudgeVerdict, ReferenceFile
from registry.serve.judges import Judge, JudgeLimitError

logger = logging.getLogger(__name__)

_IDLE_S = 0.5
#: Training a reference is the community's own work, not a stranger's: it gets a longer clock.
_BUILD_WALL_S = 900.0
#: The reason a node started without judges gives in its vote on every claim.
NO_JUDGES_REASON = "this node was started without judges (wmnode start --no-judges): it judges no claims"


@dataclass(frozen=True)
class Judgement:
    verdict: str
    score: int
    threshold: int
    reason: str
    fp_bound: str = "1.00e+00"
    references: tuple[str, ...] = ()
    controls: str = ""
    model_id: str = ""


class VerifierWorker:
    """Judges claims in judge processes, fairly across claimants; submits each vote until it commits."""

    def __init__(
        self,
        log: RegistryLog,
        identity: Identity,
        fetcher: Fetcher,
        info: NodeInfo,
        data_dir: Path | None = None,
        references: tuple[ReferenceSpec, ...] = (),
        judges: bool = True,
    ) -> None:
        """`judges=False`: no judge process; an `error` vote with NO_JUDGES_REASON on every claim."""
        self.log, self.identity, self.fetcher, self.info = log, identity, fetcher, info
        self.policy = info.verification
        self.references = references
        self.work_dir = (data_dir or Path(tempfile.mkdtemp(prefix="wmnode-verifier-"))) / "judging"
        threads = int(os.environ.get("WMNODE_VERIFY_THREADS", "0")) or 1
        self.judges = [Judge(f"judge-{i}", threads) for i in range(self.policy.judges if judges else 0)]
        self.limits = JobLimits(
            self.policy.judge_memory_mib * 2**20, self.policy.judge_cpu_seconds, float(self.policy.judge_wall_seconds)
        )
        self._stop = threading.Event()
        self._lock = threading.Condition()
        self._done: set[int] = set()
        self._in_flight: set[int] = set()
        #: Votes judged but not yet committed (a quorum outage): resubmitted, never re-judged.
        self._unsent: dict[int, Vote] = {}
        self._threads: list[threading.Thread] = []
        #: Set once the judges are up and the log is replayed; then once the references are recorded.
        #: Without judges `ready` is never set, and `references_done` only when none are configured.
        self.ready = threading.Event()
        self.references_done = threading.Event()
        #: Told the seconds each judgement took (the node's verifier-time histogram).
        self.on_judged: Callable[[float], None] = lambda seconds: None

    def start(self) -> None:
        self.work_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        for judge in self.judges:
            judge.start()
        starter = threading.Thread(target=self._start, name="verifier", daemon=True)
        starter.start()
        self._threads.append(starter)

    def stop(self) -> None:
        self._stop.set()
        self.log.state.changed.set()
        with self._lock:
            self._lock.notify_all()
        for thread in self._threads:
            if thread.is_alive():
                thread.join(timeout=10)
        for judge in self.judges:
            judge.stop()

    # -- start-up ----------------------------------------------------------------------------

    def _start(self) -> None:
        try:
            for judge in self.judges:
                if not judge.wait_ready():
                    logger.error("judge %s did not start", judge.name)
            self._wait_caught_up()
            self._settle_interrupted()
            if self._stop.is_set():
                return
            if not self.judges:
                self._refuse_claims()
                return
            self.ready.set()
            # The first judge trains the configured references, then serves; the others serve now.
            for i, judge in enumerate(self.judges):
                thread = threading.Thread(target=self._serve, args=(judge, i == 0), name=judge.name, daemon=True)
                thread.start()
                self._threads.append(thread)
            self._watch()
        except Exception:  # noqa: BLE001 - a dead verifier must say so in the node's log
            logger.exception("the verifier stopped")

    def _refuse_claims(self) -> None:
        """Without judges: never ready; one thread votes `error` (NO_JUDGES_REASON) on every claim."""
        if not self.references:
            self.references_done.set()  # none to record: honest; otherwise they stay unrecorded here
        logger.warning("this node has no judges: it reports verifier_ready false and votes error on every claim")
        thread = threading.Thread(target=self._serve, args=(None,), name="no-judges", daemon=True)
        thread.start()
        self._threads.append(thread)
        self._watch()

    def _wait_caught_up(self) -> None:
        """After a restart, replay the log first: the claims this node voted on carry its vote."""
        while not self._stop.is_set():
            status = self.log.raft_status()
            if status.get("leader") is not None and status.get("commit_idx", 0) <= status.get("last_applied", -1):
                return
            self._stop.wait(0.05)

    def _settle_interrupted(self) -> None:
        """Claims this node was judging when it died: an `error` vote each, never a second judgement."""
        for mark in sorted(self.work_dir.glob("claim-*")):
            index = int(mark.name.removeprefix("claim-")) if mark.name[6:].isdigit() else -1
            claim = self.log.state.claims.get(index)
            if claim is not None and self.identity.public_hex not in claim.votes:
                logger.warning("claim #%d was being judged when this node stopped; voting error", index)
                result = Judgement(ERROR, 0, 0, "this node stopped while judging the claim; it does not judge it again")
                self._unsent[index] = self._vote(index, self._claim(index), result)
            mark.unlink(missing_ok=True)
        for temp in self.work_dir.glob("fetched-*"):
            temp.unlink(missing_ok=True)

    def _build_references(self, judge: Judge) -> None:
        """Train and record the configured reference models this node has not recorded yet."""
        me = self.identity.public_hex
        for spec in self.references:
            if self._stop.is_set():
                return
            slot_nodes = self.log.state.references.get(spec.slot, {})
            if any(me in nodes for nodes in slot_nodes.values()):
                continue
            started = time.perf_counter()
            out = self.work_dir / f"reference-{spec.recipe}.safetensors"
            try:
                job = BuildJob.from_json({**spec.job(), "out": str(out)})
                Built.from_json(judge.run(job.to_json(), JobLimits(self.limits.memory_bytes, 3600, _BUILD_WALL_S)))
                digest = self.fetcher.store.put_bytes(out.read_bytes())
            except (WmnodeError, JudgeLimitError, OSError) as exc:
                logger.error("reference %s could not be built: %s", spec.recipe, exc)
                continue
            finally:
                out.unlink(missing_ok=True)
            msg = Reference.create(
                self.identity, arch=spec.slot[0], num_classes=spec.slot[1], input_shape=spec.shape_text,
                dataset=spec.dataset, recipe=spec.recipe, seed=spec.seed, model_hash=digest,
            )  # fmt: skip
            self._submit(msg)
            logger.info("reference %s %s built in %.1f s: %s", spec.recipe, spec.arch, time.perf_counter() - started,
                        digest[:16])  # fmt: skip

    # -- the loop ----------------------------------------------------------------------------

    def _watch(self) -> None:
        """Wake the judges' threads whenever apply records a claim or a vote."""
        while not self._stop.is_set():
            self.log.state.changed.clear()
            with self._lock:
                self._lock.notify_all()
            self.log.state.changed.wait(_IDLE_S)

    def _serve(self, judge: Judge | None, builds: bool = False) -> None:
        """Judge claims in `judge` until stopped; `judge=None`: vote `error` without judging."""
        if builds and judge is not None:
            self._build_references(judge)
            self.references_done.set()
        while not self._stop.is_set():
            with self._lock:
                index = self._take()
                if index is None:
                    self._lock.wait(_IDLE_S)
                    continue
            try:
                self._handle(index, judge)
            except Exception:  # noqa: BLE001 - one claim must not stop the judge's thread
                logger.exception("claim #%d could not be handled", index)
                self._done.add(index)
            finally:
                with self._lock:
                    self._in_flight.discard(index)
                    self._lock.notify_all()

    def queue_length(self) -> int:
        """Claims in the log this node has not voted on yet, being judged or waiting."""
        me = self.identity.public_hex
        with self.log.state.lock:
            return sum(1 for i, c in self.log.state.claims.items() if me not in c.votes and i not in self._done)

    def _take(self) -> int | None:
        """The next claim to judge: in commit order, each claimant's k-th waiting claim after every
        claimant's (k−1)-th (DESIGN §6.2). Nothing favours a claimant for being new: a fresh identity's
        first claim waits behind every first claim committed before it, and a burst from one claimant
        waits behind another's single claim. One claimant holds at most `judges − 1` judges at once,
        so a burst of slow claims always leaves a judge for the next claimant; what a slow claim can
        hold a judge for is bounded (the judge's limits, a prediction API's per-request deadline).
        The order is derived from the log and the claims in flight: no per-claimant state is kept."""
        me = self.identity.public_hex
        with self.log.state.lock:
            waiting = [
                (i, c.owner) for i, c in sorted(self.log.state.claims.items())
                if me not in c.votes and i not in self._done
            ]  # fmt: skip
        busy: dict[str, int] = {}
        for index, owner in waiting:
            if index in self._in_flight:
                busy[owner] = busy.get(owner, 0) + 1
        share = max(1, len(self.judges) - 1)
        rank: dict[str, int] = {}
        best: tuple[int, int] | None = None
        for index, owner in waiting:
            rank[owner] = rank.get(owner, -1) + 1
            if index in self._in_flight or busy.get(owner, 0) >= share:
                continue
            if best is None or (rank[owner], index) < best:
                best = (rank[owner], index)
        if best is None:
            return None
        self._in_flight.add(best[1])
        return best[1]

    def _handle(self, index: int, judge: Judge | None) -> None:
        vote = self._unsent.pop(index, None)
        if vote is None:
            vote = self._unjudged(index) if judge is None else self._judge_marked(index, judge)
        if self._submit(vote):
            self._done.add(index)
        else:
            self._unsent[index] = vote  # tried again on the next pass

    def _judge_marked(self, index: int, judge: Judge) -> Vote:
        """Judge claim `index`, marked on disk meanwhile (a restart votes `error` on a marked claim)."""
        mark = self.work_dir / f"claim-{index}"
        mark.write_text(str(now_ms()))
        try:
            return self._judge(index, judge)
        finally:
            mark.unlink(missing_ok=True)

    def _unjudged(self, index: int) -> Vote:
        """Without judges: `error`, naming why, so that no claim waits on this node's vote."""
        claim = Claim.from_json(self.log.entry(index)["msg"])
        assert isinstance(claim, Claim)
        logger.info("claim #%d: %s (%s)", index, ERROR, NO_JUDGES_REASON)
        return self._vote(index, claim, Judgement(ERROR, 0, 0, NO_JUDGES_REASON))

    def _judge(self, index: int, judge: Judge) -> Vote:
        claim = self._claim(index)
        started = time.perf_counter()
        files = ClaimFiles(self.fetcher.store, self.fetcher, self.work_dir)
        try:
            result = self._verdict(index, claim, judge, files)
        except InfoError as exc:
            result = Judgement(NOT_OWNER, 0, 0, f"refused: {exc.diagnostics()}"[:500])
        except JudgeLimitError as exc:
            result = Judgement(ERROR, 0, 0, str(exc)[:500])
        except WmnodeError as exc:
            result = Judgement(ERROR, 0, 0, exc.diagnostics()[:500])
        finally:
            files.clean()
        self.on_judged(time.perf_counter() - started)
        logger.info("claim #%d: %s (%s) in %.2f s", index, result.verdict, result.reason, time.perf_counter() - started)
        return self._vote(index, claim, result)

    def _claim(self, index: int) -> Claim:
        claim = Claim.from_json(self.log.entry(index)["msg"])
        assert isinstance(claim, Claim)
        return claim

    def _verdict(self, index: int, claim: Claim, judge: Judge, files: ClaimFiles) -> Judgement:
        """Prepare the claim's job and have `judge` run it (or the refusal preparing it came to)."""
        prepared = self._prepare(index, claim, files)
        if isinstance(prepared, Judgement):
            return prepared
        job, model_id = prepared
        answer = JudgeVerdict.from_json(judge.run(job.to_json(), self.limits))
        return Judgement(answer.verdict, answer.score, answer.threshold, answer.reason, answer.fp_bound,
                         answer.references, answer.controls, model_id)  # fmt: skip

    def _prepare(self, index: int, claim: Claim, files: ClaimFiles) -> tuple[JudgeJob, str] | Judgement:
        """Everything torch-free: key, info and its floors, artifacts, card, references; the judge's
        job and the model's function identity (the node's, not a judge's), or a refusal."""
        publish = Publish.from_json(self.log.entry(claim.publish)["msg"])
        assert isinstance(publish, Publish)
        check_key(claim, publish)
        check_published_artifacts(claim, publish.info_hash, publish.verifier_hash)
        info_path = files.get(claim.info_uri, publish.info_hash, MAX_INFO_BYTES, "info")
        typed = read_info(publish.scheme, info_bytes(info_path), self.policy)
        verifier_path = files.get(claim.verifier_uri, publish.verifier_hash, MAX_VERIFIER_BYTES, "verifier")
        check_verifier_file(typed, verifier_path)
        card, model_path, model_id = self._suspect(claim, publish.scheme, typed, files)
        references = self._matching_references(typed, card)
        if not references and self.policy.require_references:
            shape = "x".join(map(str, typed.input_shape))
            return Judgement(ERROR, 0, 0, f"no reference model matches the suspect ({shape}); this community "
                                          "decides no claim without one")  # fmt: skip
        floors = self.policy.floors(publish.scheme)
        job = JudgeJob(
            scheme=publish.scheme,
            key=claim.key,
            info_path=str(info_path),
            verifier_path=str(verifier_path),
            model_path=None if model_path is None else str(model_path),
            predict_uri=claim.model_uri if model_path is None else None,
            fetch=self.fetcher.policy,
            references=references,
            threshold_floor=getattr(floors, "min_threshold", getattr(floors, "min_gamma", 0.0)),
            max_false_positive=self.policy.max_false_positive,
            controls=self.policy.control_keys,
            # Seeded by the claim's leaf: nobody knew it before the commit.
            control_seed=self.log.entry(index)["leaf_hash"],
            datasets=tuple(DatasetFile(**d.job()) for d in self.policy.datasets),
            build=BuildPolicy(tuple(self.policy.architectures), self.policy.max_parameters),
            predict_deadline_s=self.policy.predict_deadline_seconds,
            tries=self.log.state.tries(index, model_id),
        )
        return job, model_id

    def _suspect(
        self, claim: Claim, scheme: str, info: Info, files: ClaimFiles
    ) -> tuple[dict[str, Any] | None, Path | None, str]:
        """The suspect's card and file, checked against the info, and its function identity as this
        node reads it (a prediction API, which only black-box schemes can judge, has neither card
        nor file, and is named by its model_hash)."""
        if uri_kind(claim.model_uri) == PREDICT:
            if not is_black_box(scheme):
                raise WmnodeError(f"{scheme} is a white-box scheme: it needs the model's weights, not an API")
            return None, None, claim.model_hash
        path = files.get(claim.model_uri, claim.model_hash, self.fetcher.policy.max_bytes, "suspect model")
        model_id = model_identity(path)
        return check_suspect(info, path, self.policy, self.log.state.checkpoint_archs()), path, model_id

    def _matching_references(self, info: Info, card: dict[str, Any] | None) -> tuple[ReferenceFile, ...]:
        """Admitted references that match the suspect. A trained one: the suspect's architecture,
        classes and input shape (a prediction API shows none of them but the shape: every reference of
        that shape and data set). A public checkpoint (DESIGN §6.1 rule 3), judged at the claim's
        shape: for a white-box scheme, one of the suspect's architecture whatever its head (MTLSign
        reads its early stages, passport its convolutions); for a black-box one, one with the
        suspect's classes."""
        out = []
        for ref in self.log.state.admitted_references():
            if not reference_matches(ref, info, card):
                continue
            try:
                self.fetcher.artifact(ref["model_hash"], self.fetcher.policy.max_bytes)
            except WmnodeError as exc:
                logger.warning("reference %s is on no reachable member: %s", ref["model_hash"][:16], exc)
                continue
            out.append(ReferenceFile(ref["model_hash"], str(self.fetcher.store.path(ref["model_hash"]))))
        return tuple(out[:MAX_VOTE_REFERENCES])

    def _vote(self, index: int, claim: Claim, result: Judgement) -> Vote:
        return Vote.create(
            self.identity,
            claim=index,
            claim_hash=claim.body_hash(),
            verdict=result.verdict,
            score=result.score,
            threshold=result.threshold,
            reason="".join(c if c.isprintable() else " " for c in result.reason)[:500],
            fp_bound=result.fp_bound,
            references=result.references,
            controls=result.controls,
            model_id=result.model_id,
        )

    def _submit(self, msg: Message) -> bool:
        """Submit until committed or refused (already voted): True; False when the community
        could not commit it for a while (the caller keeps the vote and tries again later)."""
        deadline = time.monotonic() + 10 * self.info.commit_timeout_s
        while not self._stop.is_set() and time.monotonic() < deadline:
            done = threading.Event()
            box: list[tuple[Outcome | None, int]] = []
            self.log.submit(self.log.seal(msg), _collector(box, done))
            if done.wait(self.info.commit_timeout_s) and box[0][1] == FAIL_REASON.SUCCESS and box[0][0] is not None:
                outcome = box[0][0]
                if outcome.code in (STALE_STAMP, CLOCK_NOT_STARTED):  # re-stamp and submit again
                    self._stop.wait(0.05)
                    continue
                if outcome.status == REJECTED:
                    logger.warning("%s refused: %s", msg.TYPE, outcome.reason)
                return True
            self._stop.wait(0.2)
        logger.warning("%s not committed yet; it is kept and submitted again", msg.TYPE)
        return False


def _collector(box: list[tuple[Outcome | None, int]], done: threading.Event) -> Callable[[Outcome | None, int], None]:
    def _cb(res: Outcome | None, err: int) -> None:
        box.append((res, err))
        done.set()

    return _cb
