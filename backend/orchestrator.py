"""Runs a task's rounds: start, wait, settle, publish, repeat, reading the chain as the source of truth.

The coordinator keeps the clock and the model, not the money: the contract computes who is paid
and slashed from the validators' revealed scores. Each :meth:`TaskOrchestrator.step` looks at the
task's on-chain phase and does the one thing it calls for, so a coordinator killed at any moment
resumes where the chain is:

    no round / last round aborted -> startRound on the current global model
    last round finalized          -> aggregate its Accepted updates, store model + report,
                                     publishModel (then the next step starts the next round)
    Commit ... ScoreReveal        -> wait (the contract closes phases early when everyone acted)
    Settling, a quorum missed     -> abortRound (non-revealers and silent validators are slashed)
    Settling                      -> finalizeRound with the round's public inputs (anyone could)

The new model is a pure function of public data (:func:`fedmarket.verify.next_global_model`,
the very function `fedmarket verify` checks it with: the aggregate, stepped by the spec's server
optimizer from the previous published step or stored state), so recomputing it after a crash
gives the same hash; the contract accepts one settlement and one publication per round.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from dataclasses import dataclass

from backend.db import Database
from fedmarket.chain import MarketClient, TaskInfo
from fedmarket.cid import cid_from_digest, digest_from_cid, digest_of
from fedmarket.codec import decode_update
from fedmarket.consensus import HARMFUL, INVALID, UNAVAILABLE, normalized_scores
from fedmarket.errors import BlobNotFoundError, FedmarketError
from fedmarket.ledger import RoundLedger, read_round
from fedmarket.protocol import Outcome, RoundPhase, TaskStatus
from fedmarket.report import RoundReport, SubmissionOutcome, SubmissionReport, ValidatorReport
from fedmarket.rounds import fetch_model, fetch_spec, initial_model_blob
from fedmarket.spec import TaskSpec
from fedmarket.store import ContentStore
from fedmarket.verify import next_global_model

log = logging.getLogger("fedmarket.orchestrator")


class StepAction(enum.StrEnum):
    """What one :meth:`TaskOrchestrator.step` did."""

    DONE = "done"  # the task is no longer open (and its last model is published)
    NOT_OURS = "not_ours"  # another coordinator runs it
    WAITING = "waiting"  # a commit, reveal or score phase is open
    WAITING_TRAINERS = "waiting_trainers"  # fewer joined trainers than the quorum
    WAITING_VALIDATORS = "waiting_validators"  # fewer joined validators than the quorum
    STARTED = "started"
    ABORTED = "aborted"
    FINALIZED = "finalized"
    PUBLISHED = "published"
    ERROR = "error"  # logged; the step is retried


STOPPING = {StepAction.DONE, StepAction.NOT_OURS}
IDLE = {StepAction.WAITING, StepAction.WAITING_TRAINERS, StepAction.WAITING_VALIDATORS, StepAction.ERROR}
OUTCOMES = {
    Outcome.ACCEPTED: SubmissionOutcome.ACCEPTED,
    Outcome.WORTHLESS: SubmissionOutcome.WORTHLESS,
    Outcome.UNAVAILABLE: SubmissionOutcome.UNAVAILABLE,
    Outcome.REJECTED: SubmissionOutcome.REJECTED,
}


@dataclass
class StepResult:
    action: StepAction
    detail: str = ""


class TaskOrchestrator:
    """Drives one task; `step()` is idempotent and safe to call after any crash."""

    def __init__(self, *, task_id: int, chain: MarketClient, store: ContentStore, db: Database) -> None:
        self.task_id = task_id
        self.chain = chain
        self.store = store
        self.db = db
        self._spec: TaskSpec | None = None

    # ------------------------------------------------------------------ state machine

    def step(self) -> StepResult:
        info = self.chain.task(self.task_id)
        if info.terms.coordinator != self.chain.address:
            return StepResult(StepAction.NOT_OURS)
        if info.current_round and self._unpublished(info):
            return self._publish(info)
        if info.status != TaskStatus.OPEN:
            return StepResult(StepAction.DONE, info.status.name.lower())
        phase = self.chain.phase(self.task_id)
        if phase in (RoundPhase.NONE, RoundPhase.FINALIZED, RoundPhase.ABORTED):
            return self._start_round(info)
        if phase != RoundPhase.SETTLING:
            return StepResult(StepAction.WAITING, phase.name.lower())
        round_info = self.chain.round(self.task_id, info.current_round)
        ledger = self._ledger(info.current_round)
        if (
            round_info.reveal_count < info.terms.min_trainers
            or round_info.score_reveal_count < info.terms.min_validators
        ):
            result = self.chain.abort_round(self.task_id, ledger.non_revealers, ledger.silent_validators)
            log.info(
                "task %s: round %s aborted, quorum missed (tx %s)",
                self.task_id,
                info.current_round,
                result.tx_hash,
            )
            return StepResult(StepAction.ABORTED, result.tx_hash)
        result = self.chain.finalize_round(self.task_id, ledger.settlement())
        log.info("task %s: round %s finalized (tx %s)", self.task_id, info.current_round, result.tx_hash)
        return StepResult(StepAction.FINALIZED, result.tx_hash)

    def run(self, stop: threading.Event, *, poll_interval: float = 0.5) -> None:
        """Steps until the task ends or `stop` is set; errors are logged and retried."""
        while not stop.is_set():
            try:
                result = self.step()
            except FedmarketError as exc:
                log.warning("task %s: %s; retrying", self.task_id, exc)
                result = StepResult(StepAction.ERROR, str(exc))
            except Exception:  # a bug must not kill the task's thread: log it and retry
                log.exception("task %s: unexpected error; retrying", self.task_id)
                result = StepResult(StepAction.ERROR)
            if result.action in STOPPING:
                return
            if result.action in IDLE:
                stop.wait(poll_interval)

    # ------------------------------------------------------------------ inputs

    def spec(self, info: TaskInfo | None = None) -> TaskSpec:
        if self._spec is None:
            info = info or self.chain.task(self.task_id)
            self._spec = fetch_spec(self.store, info.terms.spec_hash)
        return self._spec

    def _ledger(self, round_no: int) -> RoundLedger:
        return read_round(self.chain, self.task_id, round_no, from_block=self._round_start_block(round_no))

    def _round_start_block(self, round_no: int) -> int:
        for event in self.chain.iter_events("RoundStarted", task_id=self.task_id):
            if event.args["round"] == round_no:
                return event.block_number
        return self.chain.deployment.deploy_block

    def _unpublished(self, info: TaskInfo) -> bool:
        round_info = self.chain.round(self.task_id, info.current_round)
        return round_info.closed and not round_info.aborted and not round_info.model_published

    # ------------------------------------------------------------------ actions

    def _start_round(self, info: TaskInfo) -> StepResult:
        spec = self.spec(info)
        if info.trainer_count < info.terms.min_trainers:
            return StepResult(
                StepAction.WAITING_TRAINERS, f"{info.trainer_count}/{info.terms.min_trainers} joined"
            )
        if info.validator_count < info.terms.min_validators:
            return StepResult(
                StepAction.WAITING_VALIDATORS, f"{info.validator_count}/{info.terms.min_validators} joined"
            )
        if info.current_round == 0:
            # Round 1 trains the seeded initial model that every party can rebuild from the spec.
            model_hash = digest_of(blob := initial_model_blob(spec))
            self.store.put(blob)
        else:
            model_hash = info.model_hash
            if not self.store.has(cid_from_digest(model_hash)):
                raise BlobNotFoundError(
                    cid_from_digest(model_hash), where=f"{self.store!r} (the global model)"
                )
        result = self.chain.start_round(self.task_id, model_hash)
        log.info("task %s: round %s started (tx %s)", self.task_id, info.current_round + 1, result.tx_hash)
        return StepResult(StepAction.STARTED, result.tx_hash)

    def _publish(self, info: TaskInfo) -> StepResult:
        round_no = info.current_round
        report = self.build_report(info, round_no)
        report_cid = self.store.put(report.to_canonical_json())
        result = self.chain.publish_model(
            self.task_id, digest_from_cid(report.new_model_cid), report.report_hash()
        )
        log.info(
            "task %s: round %s model published: %d accepted of %d, report %s (tx %s)",
            self.task_id, round_no, len(report.accepted), len(report.submissions), report_cid, result.tx_hash,
        )  # fmt: skip
        return StepResult(StepAction.PUBLISHED, result.tx_hash)

    def build_report(self, info: TaskInfo, round_no: int) -> RoundReport:
        """The new model from the round's aggregated (Accepted and Worthless) updates and the server
        optimizer's state after its step (both stored), and the report describing them."""
        timings: dict[str, float] = {}
        spec = self.spec(info)
        started = time.perf_counter()
        ledger = self._ledger(round_no)
        round_info = self.chain.round(self.task_id, round_no)
        timings["chain_reads"] = time.perf_counter() - started

        started = time.perf_counter()
        global_state = fetch_model(self.store, spec, ledger.model_hash)
        accepted = ledger.aggregated()
        updates = {
            t: decode_update(self.store.get(cid_from_digest(ledger.reveals[t])), model=global_state)
            for t in accepted
        }
        timings["storage_reads"] = time.perf_counter() - started

        started = time.perf_counter()
        new_model = next_global_model(
            self.chain, self.store, spec, ledger, global_state, [updates[t] for t in accepted]
        )
        new_model_cid = self.store.put(new_model.model_blob)
        state_cid = self.store.put(new_model.state_blob) if new_model.state_blob is not None else None
        timings["aggregation"] = time.perf_counter() - started

        views = validator_views(ledger)
        submissions = []
        for trainer in [*ledger.trainers, *ledger.non_revealers]:
            settled = ledger.settled_trainers.get(trainer)
            update_hash = ledger.reveals.get(trainer)
            submissions.append(
                SubmissionReport(
                    trainer=trainer,
                    update_hash=update_hash.hex() if update_hash else None,
                    update_cid=cid_from_digest(update_hash) if update_hash else None,
                    outcome=OUTCOMES[settled.outcome] if settled else SubmissionOutcome.NO_REVEAL,
                    consensus=settled.consensus if settled else 0,
                    payout=settled.payout if settled else 0,
                    slashed=ledger.trainer_slashes.get(trainer, 0),
                    num_samples=updates[trainer].num_samples if trainer in updates else 0,
                    scores=views.get(trainer, {}),
                )
            )
        validators = []
        for validator in ledger.score_committers:
            settled_v = ledger.settled_validators.get(validator)
            validators.append(
                ValidatorReport(
                    validator=validator,
                    revealed=validator in ledger.score_reveals,
                    agreement=settled_v.agreement if settled_v else 0,
                    payout=settled_v.payout if settled_v else 0,
                    slashed=ledger.validator_slashes.get(validator, 0),
                )
            )
        paid = sum(s.payout for s in submissions) + sum(v.payout for v in validators)
        if paid != round_info.payout:
            raise FedmarketError(
                f"round {round_no}: the settlement events pay {paid}, the round {round_info.payout}"
            )
        return RoundReport(
            task_id=self.task_id,
            round=round_no,
            model_cid=cid_from_digest(ledger.model_hash),
            new_model_cid=new_model_cid,
            aggregation=spec.aggregation.method,
            budget=self.chain.round_budget(self.task_id, block=ledger.finalized_block - 1)
            if ledger.finalized_block
            else paid,
            payout=round_info.payout,
            submissions=tuple(submissions),
            validators=tuple(validators),
            timings=timings,
            server_state_cid=state_cid,
        )


FLAG_NAMES = {UNAVAILABLE: "unavailable", INVALID: "invalid", HARMFUL: "harmful"}


def validator_views(ledger: RoundLedger) -> dict[str, dict[str, str]]:
    """Per trainer, each validator's normalized score or flag (`SubmissionReport.scores`)."""
    validators = ledger.validators
    vectors = [ledger.score_reveals[v] for v in validators]
    normalized = normalized_scores(trainers=ledger.trainers, validators=validators, scores=vectors)
    views: dict[str, dict[str, str]] = {}
    for i, trainer in enumerate(ledger.trainers):
        views[trainer] = {
            validator: "self"
            if validator == trainer
            else FLAG_NAMES.get(vectors[v][i], str(normalized[v][i]))
            for v, validator in enumerate(validators)
        }
    return views
