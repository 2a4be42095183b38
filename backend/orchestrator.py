"""Runs a task's rounds: start, wait, settle, repeat, reading the chain as the source of truth.

Each :meth:`TaskOrchestrator.step` looks at the task's on-chain phase and does the one thing it
calls for, so a coordinator killed at any moment resumes where the chain is:

    no round / last round closed -> publish the global model, startRound
    Commit or Reveal             -> wait (the contract closes phases early when everyone acted)
    Settling, quorum missed      -> abortRound (non-revealers are slashed)
    Settling                     -> decide the round, record the decision, finalizeRound

A settlement is written to the database before its transaction is sent and re-sent from there
after a crash; the contract accepts one settlement per round, so none is ever paid twice.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict
from torch import Tensor

from backend.db import Database, SettlementRow
from backend.settlement import Revealed, decide_round
from backend.validation import ValidationStore
from fedmarket.chain import MarketClient, TaskInfo
from fedmarket.cid import cid_from_digest, digest_of
from fedmarket.codec import encode_model
from fedmarket.errors import BlobNotFoundError, CorruptBlobError, FedmarketError
from fedmarket.learning import LocalData, evaluate
from fedmarket.merkle import RewardsTree
from fedmarket.models import build_model
from fedmarket.protocol import BPS, RoundPhase, TaskStatus
from fedmarket.report import RoundReport, SubmissionReport, TokenAmount
from fedmarket.rounds import fetch_model, fetch_spec, initial_model_blob
from fedmarket.spec import TaskSpec
from fedmarket.store import ContentStore

log = logging.getLogger("fedmarket.orchestrator")


class StepAction(enum.StrEnum):
    """What one :meth:`TaskOrchestrator.step` did."""

    DONE = "done"  # the task is no longer open
    NOT_OURS = "not_ours"  # another coordinator runs it
    WAITING = "waiting"  # commit or reveal phase open
    WAITING_TRAINERS = "waiting_trainers"  # fewer joined trainers than the quorum
    WAITING_VALIDATION = "waiting_validation"  # the owner has not uploaded its validation split
    STARTED = "started"
    ABORTED = "aborted"
    FINALIZED = "finalized"
    ERROR = "error"  # logged; the step is retried


STOPPING = {StepAction.DONE, StepAction.NOT_OURS}
IDLE = {StepAction.WAITING, StepAction.WAITING_TRAINERS, StepAction.WAITING_VALIDATION, StepAction.ERROR}


@dataclass
class StepResult:
    action: StepAction
    detail: str = ""


class FinalizePlan(BaseModel):
    """The arguments of one finalizeRound, recorded before it is sent (`settlements.payload`)."""

    model_config = ConfigDict(frozen=True)

    new_model_hash: str
    new_model_cid: str
    rewards_root: str
    payout: TokenAmount
    report_hash: str
    report_cid: str
    rejected: list[str]


class TaskOrchestrator:
    """Drives one task; `step()` is idempotent and safe to call after any crash."""

    def __init__(
        self,
        *,
        task_id: int,
        chain: MarketClient,
        store: ContentStore,
        db: Database,
        validation: ValidationStore,
    ) -> None:
        self.task_id = task_id
        self.chain = chain
        self.store = store
        self.db = db
        self.validation_store = validation
        self._spec: TaskSpec | None = None

    # ------------------------------------------------------------------ state machine

    def step(self) -> StepResult:
        info = self.chain.task(self.task_id)
        if info.status != TaskStatus.OPEN:
            return StepResult(StepAction.DONE, info.status.name.lower())
        if info.terms.coordinator != self.chain.address:
            return StepResult(StepAction.NOT_OURS)
        phase = self.chain.phase(self.task_id)
        if phase in (RoundPhase.NONE, RoundPhase.FINALIZED, RoundPhase.ABORTED):
            return self._start_round(info)
        if phase in (RoundPhase.COMMIT, RoundPhase.REVEAL):
            return StepResult(StepAction.WAITING, phase.name.lower())
        round_info = self.chain.round(self.task_id, info.current_round)
        if round_info.reveal_count < info.terms.min_trainers:
            return self._abort(info)
        return self._finalize(info)

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

    def validation(self) -> LocalData | None:
        """The owner's split, reloaded when the owner uploads a new one (the file is replaced)."""
        return self.validation_store.load(self.task_id, self.spec())

    def _evaluator(
        self, spec: TaskSpec, data: LocalData
    ) -> Callable[[Mapping[str, Tensor]], tuple[float, float]]:
        model = build_model(spec)

        def evaluate_state(state: Mapping[str, Tensor]) -> tuple[float, float]:
            model.load_state_dict(state)
            result = evaluate(model, data)
            return result.loss, result.accuracy

        return evaluate_state

    # ------------------------------------------------------------------ actions

    def _start_round(self, info: TaskInfo) -> StepResult:
        spec = self.spec(info)
        if self.validation() is None:
            return StepResult(StepAction.WAITING_VALIDATION)
        if info.trainer_count < info.terms.min_trainers:
            return StepResult(
                StepAction.WAITING_TRAINERS, f"{info.trainer_count}/{info.terms.min_trainers} joined"
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

    def _round_participants(self, info: TaskInfo) -> tuple[list[str], list[tuple[str, bytes]]]:
        """Committers and (revealer, update hash) of the current round, in chain order."""
        committers, reveals = [], []
        from_block = self._round_start_block(info)
        for event in self.chain.iter_events(from_block=from_block, task_id=self.task_id):
            if event.args.get("round") != info.current_round:
                continue
            if event.name == "Committed":
                committers.append(event.args["trainer"])
            elif event.name == "Revealed":
                reveals.append((event.args["trainer"], event.args["updateHash"]))
        return committers, reveals

    def _round_start_block(self, info: TaskInfo) -> int:
        for event in self.chain.iter_events("RoundStarted", task_id=self.task_id):
            if event.args["round"] == info.current_round:
                return event.block_number
        return self.chain.deployment.deploy_block

    def _abort(self, info: TaskInfo) -> StepResult:
        committers, reveals = self._round_participants(info)
        revealed = {trainer for trainer, _ in reveals}
        non_revealers = [t for t in committers if t not in revealed]
        result = self.chain.abort_round(self.task_id, non_revealers)
        log.info(
            "task %s: round %s aborted, quorum missed (tx %s)",
            self.task_id,
            info.current_round,
            result.tx_hash,
        )
        return StepResult(StepAction.ABORTED, result.tx_hash)

    def _previous_cumulative(self, info: TaskInfo) -> dict[str, int]:
        """Cumulative earnings as of the latest finalized round, from its report in the store."""
        for round_no in range(info.current_round - 1, 0, -1):
            previous = self.chain.round(self.task_id, round_no)
            if previous.closed and not previous.aborted:
                report = RoundReport.from_json(self.store.get(cid_from_digest(previous.report_hash)))
                return dict(report.cumulative)
        return {}

    def _finalize(self, info: TaskInfo) -> StepResult:
        round_no = info.current_round
        with self.db.session() as session:
            row = session.get(SettlementRow, (self.task_id, round_no))
            plan = FinalizePlan.model_validate(row.payload) if row else None
        if plan is None:
            plan = self._decide(info)
            with self.db.session() as session:
                session.merge(
                    SettlementRow(task_id=self.task_id, round=round_no, payload=plan.model_dump(mode="json"))
                )
        started = time.perf_counter()
        result = self.chain.finalize_round(
            self.task_id,
            new_model_hash=bytes.fromhex(plan.new_model_hash),
            rewards_root=bytes.fromhex(plan.rewards_root),
            round_payout=plan.payout,
            report_hash=bytes.fromhex(plan.report_hash),
            rejected=plan.rejected,
        )
        with self.db.session() as session:
            session.get(SettlementRow, (self.task_id, round_no)).tx_hash = result.tx_hash
        log.info(
            "task %s: round %s finalized in %.2fs of chain time (tx %s)",
            self.task_id, round_no, time.perf_counter() - started, result.tx_hash,
        )  # fmt: skip
        return StepResult(StepAction.FINALIZED, result.tx_hash)

    def _decide(self, info: TaskInfo) -> FinalizePlan:
        """Everything finalizeRound needs, with the report and new model already in the store."""
        timings: dict[str, float] = {}
        round_no = info.current_round
        spec = self.spec(info)
        validation = self.validation()
        if validation is None:
            raise FedmarketError(
                f"task {self.task_id}: validation data missing; cannot score round {round_no}"
            )

        started = time.perf_counter()
        committers, reveals = self._round_participants(info)
        stakes = {t: self.chain.trainer(self.task_id, t).stake for t in committers}
        timings["chain_reads"] = time.perf_counter() - started

        started = time.perf_counter()
        global_state = fetch_model(self.store, spec, info.model_hash)
        revealed = [
            Revealed(trainer, update_hash, self._fetch(update_hash)) for trainer, update_hash in reveals
        ]
        timings["storage_reads"] = time.perf_counter() - started

        def slash_of(trainer: str) -> int:
            return stakes[trainer] * info.terms.slash_bps // BPS

        def budget_for(rejected: list[str]) -> int:
            """The contract's round budget: pool plus this round's slashes, over the rounds left."""
            slashed = sum(slash_of(t) for t in rejected)
            return (info.pool + slashed) // (info.terms.rounds - round_no + 1)

        decision = decide_round(
            spec=spec, task_id=self.task_id, round_no=round_no, global_state=global_state,
            committers=committers, revealed=revealed, budget_for=budget_for,
            evaluate_state=self._evaluator(spec, validation),
        )  # fmt: skip
        timings.update(decision.timings)

        cumulative = self._previous_cumulative(info)
        for trainer, amount in decision.payouts.items():
            cumulative[trainer] = cumulative.get(trainer, 0) + amount

        started = time.perf_counter()
        model_blob = encode_model(decision.new_state)
        new_model_cid = self.store.put(model_blob)
        timings["storage_writes"] = time.perf_counter() - started
        submissions = [
            SubmissionReport(
                trainer=v.trainer,
                update_hash=v.update_hash.hex() if v.update_hash else None,
                update_cid=cid_from_digest(v.update_hash) if v.update_hash else None,
                accepted=v.accepted,
                reason=v.reason,
                detail=v.detail,
                num_samples=v.num_samples,
                norm=v.norm,
                score=v.score,
                payout=v.payout,
                slashed=0 if v.accepted else slash_of(v.trainer),
            )  # fmt: skip
            for v in decision.verdicts
        ]
        report = RoundReport(
            task_id=self.task_id,
            round=round_no,
            model_cid=cid_from_digest(info.model_hash),
            new_model_cid=new_model_cid,
            budget=decision.budget,
            payout=decision.total_payout,
            metrics=decision.metrics,
            submissions=tuple(submissions),
            cumulative=dict(sorted(cumulative.items())),
            rewards_root=RewardsTree(cumulative).root.hex(),
            timings=timings,
        )
        report_cid = self.store.put(report.to_canonical_json())
        log.info(
            "task %s: round %s decided: accuracy %.4f, %d accepted, %d rejected, payout %s",
            self.task_id, round_no, report.metrics.accuracy or 0.0, report.metrics.accepted,
            report.metrics.rejected, decision.total_payout,
        )  # fmt: skip
        return FinalizePlan(
            new_model_hash=digest_of(model_blob).hex(),
            new_model_cid=new_model_cid,
            rewards_root=report.rewards_root,
            payout=decision.total_payout,
            report_hash=report.report_hash().hex(),
            report_cid=report_cid,
            rejected=decision.rejected,
        )

    def _fetch(self, update_hash: bytes) -> bytes | None:
        try:
            return self.store.get(cid_from_digest(update_hash))
        except (BlobNotFoundError, CorruptBlobError):
            return None  # rejected as not_uploaded
