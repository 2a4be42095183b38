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

import io
import json
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import Tensor

from backend.db import Database, SettlementRow
from backend.settlement import Revealed, decide_round
from fedmarket.chain import MarketClient, TaskInfo
from fedmarket.cid import cid_from_digest, digest_of
from fedmarket.codec import decode_model, encode_model
from fedmarket.errors import BlobNotFoundError, CorruptBlobError, FedmarketError
from fedmarket.models import build_model
from fedmarket.protocol import BPS, RoundPhase, TaskStatus
from fedmarket.merkle import RewardsTree
from fedmarket.spec import TaskSpec
from fedmarket.store import ContentStore
from trainer.training import LocalData, evaluate

log = logging.getLogger("fedmarket.orchestrator")


def canonical_json(value) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def validation_path(private_dir: Path, task_id: int) -> Path:
    return private_dir / f"task-{task_id}-validation.npz"


def load_validation(path: Path) -> LocalData:
    """The owner's split: NPZ arrays X, y (never unpickled)."""
    with np.load(io.BytesIO(path.read_bytes()), allow_pickle=False) as archive:
        return LocalData(X=archive["X"].astype(np.float32), y=archive["y"].astype(np.int64))


@dataclass
class StepResult:
    action: str
    detail: str = ""


class TaskOrchestrator:
    """Drives one task; `step()` is idempotent and safe to call after any crash."""

    def __init__(
        self, *, task_id: int, chain: MarketClient, store: ContentStore, db: Database, private_dir: Path
    ) -> None:
        self.task_id = task_id
        self.chain = chain
        self.store = store
        self.db = db
        self.private_dir = private_dir
        self._spec: TaskSpec | None = None
        self._validation: tuple[int, LocalData] | None = None  # (file mtime, data)

    # ------------------------------------------------------------------ state machine

    def step(self) -> StepResult:
        info = self.chain.task(self.task_id)
        if info.status != TaskStatus.OPEN:
            return StepResult("done", info.status.name.lower())
        if info.terms.coordinator.lower() != self.chain.address.lower():
            return StepResult("not_ours")
        phase = self.chain.phase(self.task_id)
        if phase in (RoundPhase.NONE, RoundPhase.FINALIZED, RoundPhase.ABORTED):
            return self._start_round(info)
        if phase in (RoundPhase.COMMIT, RoundPhase.REVEAL):
            return StepResult("waiting", phase.name.lower())
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
                result = StepResult("error", str(exc))
            except Exception:
                log.exception("task %s: unexpected error; retrying", self.task_id)
                result = StepResult("error")
            if result.action in ("done", "not_ours"):
                return
            if result.action in ("waiting", "waiting_trainers", "waiting_validation", "error"):
                stop.wait(poll_interval)

    # ------------------------------------------------------------------ inputs

    def spec(self, info: TaskInfo | None = None) -> TaskSpec:
        if self._spec is None:
            info = info or self.chain.task(self.task_id)
            self._spec = TaskSpec.from_json(self.store.get(cid_from_digest(info.terms.spec_hash)))
        return self._spec

    def validation(self) -> LocalData | None:
        """The owner's split, reloaded when the owner uploads a new one (the file is replaced)."""
        path = validation_path(self.private_dir, self.task_id)
        try:
            version = path.stat().st_mtime_ns
        except FileNotFoundError:
            return None
        if self._validation is None or self._validation[0] != version:
            self._validation = (version, load_validation(path))
        return self._validation[1]

    def _model_state(self, spec: TaskSpec, model_hash: bytes) -> dict[str, Tensor]:
        return decode_model(self.store.get(cid_from_digest(model_hash)), model=build_model(spec))

    def _evaluator(self, spec: TaskSpec, data: LocalData):
        model = build_model(spec)

        def evaluate_state(state: Mapping[str, Tensor]) -> tuple[float, float]:
            model.load_state_dict(state)
            result = evaluate(model, data)
            return result.loss, result.accuracy

        return evaluate_state

    # ------------------------------------------------------------------ actions

    def _start_round(self, info: TaskInfo) -> StepResult:
        if self.validation() is None:
            return StepResult("waiting_validation")
        if info.trainer_count < info.terms.min_trainers:
            return StepResult("waiting_trainers", f"{info.trainer_count}/{info.terms.min_trainers} joined")
        spec = self.spec(info)
        if info.current_round == 0:
            # Round 1 trains the seeded initial model that every party can rebuild from the spec.
            model_hash = digest_of(blob := initial_model_blob(spec))
            self.store.put(blob)
        else:
            model_hash = info.model_hash
            if not self.store.has(cid_from_digest(model_hash)):
                raise BlobNotFoundError(f"global model {cid_from_digest(model_hash)} is not in the store")
        result = self.chain.start_round(self.task_id, model_hash)
        log.info("task %s: round %s started (tx %s)", self.task_id, info.current_round + 1, result.tx_hash)
        return StepResult("started", result.tx_hash)

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
        log.info("task %s: round %s aborted, quorum missed (tx %s)", self.task_id, info.current_round, result.tx_hash)
        return StepResult("aborted", result.tx_hash)

    def _previous_cumulative(self, info: TaskInfo) -> dict[str, int]:
        """Cumulative earnings as of the latest finalized round, from its report in the store."""
        for round_no in range(info.current_round - 1, 0, -1):
            previous = self.chain.round(self.task_id, round_no)
            if previous.closed and not previous.aborted:
                report = json.loads(self.store.get(cid_from_digest(previous.report_hash)))
                return {account: int(amount) for account, amount in report["cumulative"].items()}
        return {}

    def _finalize(self, info: TaskInfo) -> StepResult:
        round_no = info.current_round
        with self.db.session() as session:
            row = session.get(SettlementRow, (self.task_id, round_no))
            payload = dict(row.payload) if row else None
        if payload is None:
            payload = self._decide(info)
            with self.db.session() as session:
                session.merge(SettlementRow(task_id=self.task_id, round=round_no, kind="finalize", payload=payload))
        started = time.perf_counter()
        result = self.chain.finalize_round(
            self.task_id,
            new_model_hash=bytes.fromhex(payload["new_model_hash"]),
            rewards_root=bytes.fromhex(payload["rewards_root"]),
            round_payout=int(payload["payout"]),
            report_hash=bytes.fromhex(payload["report_hash"]),
            rejected=payload["rejected"],
        )
        with self.db.session() as session:
            session.get(SettlementRow, (self.task_id, round_no)).tx_hash = result.tx_hash
        log.info(
            "task %s: round %s finalized in %.2fs of chain time (tx %s)",
            self.task_id, round_no, time.perf_counter() - started, result.tx_hash,
        )  # fmt: skip
        return StepResult("finalized", result.tx_hash)

    def _decide(self, info: TaskInfo) -> dict:
        """Everything finalizeRound needs, with the report and new model already in the store."""
        timings: dict[str, float] = {}
        round_no = info.current_round
        spec = self.spec(info)
        validation = self.validation()
        if validation is None:
            raise FedmarketError(f"task {self.task_id}: validation data missing; cannot score round {round_no}")

        started = time.perf_counter()
        committers, reveals = self._round_participants(info)
        stakes = {t: self.chain.trainer(self.task_id, t).stake for t in committers}
        timings["chain_reads"] = time.perf_counter() - started

        started = time.perf_counter()
        global_state = self._model_state(spec, info.model_hash)
        revealed = [Revealed(trainer, update_hash, self._fetch(update_hash)) for trainer, update_hash in reveals]
        timings["storage_reads"] = time.perf_counter() - started

        def budget_for(rejected: list[str]) -> int:
            """The contract's round budget: pool plus this round's slashes, over the rounds left."""
            slashed = sum(stakes[t] * info.terms.slash_bps // BPS for t in rejected)
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
        tree = RewardsTree(cumulative)

        started = time.perf_counter()
        model_blob = encode_model(decision.new_state)
        new_model_cid = self.store.put(model_blob)
        timings["storage_writes"] = time.perf_counter() - started
        report = {
            "task_id": self.task_id,
            "round": round_no,
            "model_cid": cid_from_digest(info.model_hash),
            "new_model_cid": new_model_cid,
            "budget": str(decision.budget),
            "payout": str(decision.total_payout),
            "metrics": decision.metrics,
            "submissions": [
                {
                    "trainer": v.trainer,
                    "update_hash": v.update_hash.hex() if v.update_hash else None,
                    "update_cid": cid_from_digest(v.update_hash) if v.update_hash else None,
                    "accepted": v.accepted,
                    "reason": v.reason,
                    "detail": v.detail,
                    "num_samples": v.num_samples,
                    "norm": v.norm,
                    "score": v.score,
                    "payout": str(v.payout),
                    "slashed": str(stakes[v.trainer] * info.terms.slash_bps // BPS) if not v.accepted else "0",
                }
                for v in decision.verdicts
            ],
            "cumulative": {account: str(amount) for account, amount in sorted(cumulative.items())},
            "rewards_root": tree.root.hex(),
            "timings": timings,
        }
        report_blob = canonical_json(report)
        report_cid = self.store.put(report_blob)
        log.info(
            "task %s: round %s decided: accuracy %.4f, %d accepted, %d rejected, payout %s",
            self.task_id, round_no, decision.metrics["accuracy"], decision.metrics["accepted"],
            decision.metrics["rejected"], decision.total_payout,
        )  # fmt: skip
        return {
            "new_model_hash": digest_of(model_blob).hex(),
            "new_model_cid": new_model_cid,
            "rewards_root": tree.root.hex(),
            "payout": str(decision.total_payout),
            "report_hash": digest_of(report_blob).hex(),
            "report_cid": report_cid,
            "rejected": decision.rejected,
        }

    def _fetch(self, update_hash: bytes) -> bytes | None:
        try:
            return self.store.get(cid_from_digest(update_hash))
        except (BlobNotFoundError, CorruptBlobError):
            return None  # rejected as not_uploaded


def initial_model_blob(spec: TaskSpec) -> bytes:
    """The seeded round-1 model every party can rebuild from the spec."""
    return encode_model(build_model(spec))
