"""Tails TaskMarket events into the database: the API's view of the chain.

Each batch of events and the cursor that follows it are written in one transaction, and every
event row is keyed by (block, log index), so a crash mid-batch loses nothing and re-indexing is a
no-op. Projections (tasks, rounds, submissions, earnings) are rebuilt from the events plus the
round reports in the store (and whether a task has validation data, from the private directory),
so deleting the database and restarting rebuilds the same state.
"""

from __future__ import annotations

import dataclasses
import logging
import threading

from sqlalchemy.orm import Session

from backend.db import (
    ChainEventRow,
    Cursor,
    Database,
    EarningRow,
    RoundRow,
    RoundState,
    SubmissionRow,
    TaskRow,
    TaskState,
)
from backend.validation import ValidationStore
from fedmarket.chain import ChainEvent, MarketClient
from fedmarket.cid import cid_from_digest
from fedmarket.errors import CodecError, StoreError
from fedmarket.report import RejectionReason, RoundReport
from fedmarket.store import ContentStore

log = logging.getLogger("fedmarket.indexer")
CURSOR = "market"
MAX_BLOCKS_PER_BATCH = 2000


def _jsonable(value):
    if dataclasses.is_dataclass(value):
        return _jsonable(dataclasses.asdict(value))
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, int) and abs(value) >= 2**53:
        return str(value)  # JSON numbers lose precision past 2**53
    return value


class Indexer:
    """`validation` (the owners' private splits) lets a rebuilt index know which tasks have one."""

    def __init__(
        self,
        *,
        chain: MarketClient,
        db: Database,
        store: ContentStore,
        validation: ValidationStore | None = None,
    ) -> None:
        self.chain = chain
        self.db = db
        self.store = store
        self.validation = validation
        self._lock = threading.Lock()  # the API catches up on demand while the worker tails

    def last_indexed_block(self) -> int:
        with self.db.session() as session:
            cursor = session.get(Cursor, CURSOR)
            return cursor.block_number if cursor else self.chain.deployment.deploy_block - 1

    def sync_once(self) -> int:
        """Indexes up to MAX_BLOCKS_PER_BATCH new blocks; returns how many events it stored."""
        with self._lock:
            return self._sync_batch()

    def _sync_batch(self) -> int:
        start = self.last_indexed_block() + 1
        head = self.chain.block_number()
        if start > head:
            return 0
        end = min(head, start + MAX_BLOCKS_PER_BATCH - 1)
        events = list(self.chain.iter_events(from_block=start, to_block=end))
        with self.db.session() as session:
            stored = 0
            for event in events:
                if session.get(ChainEventRow, (event.block_number, event.log_index)) is not None:
                    continue
                session.add(
                    ChainEventRow(
                        block_number=event.block_number, log_index=event.log_index, tx_hash=event.tx_hash,
                        name=event.name, task_id=event.task_id, args=_jsonable(event.args),
                    )
                )  # fmt: skip
                self._project(session, event)
                stored += 1
            session.merge(Cursor(name=CURSOR, block_number=end))
        return stored

    def sync(self) -> None:
        """Catches up to the head."""
        while self.last_indexed_block() < self.chain.block_number():
            self.sync_once()

    # ------------------------------------------------------------------ projections

    def _project(self, session: Session, event: ChainEvent) -> None:
        handler = getattr(self, f"_on_{event.name}", None)
        if handler is not None:
            handler(session, event, event.args)

    def _on_TaskCreated(self, session: Session, event: ChainEvent, args: dict) -> None:
        terms = args["terms"]  # fedmarket.protocol.TaskTerms
        session.merge(
            TaskRow(
                task_id=args["taskId"], owner=args["owner"], coordinator=args["coordinator"],
                spec_cid=cid_from_digest(terms.spec_hash), terms=_jsonable(terms), status=TaskState.OPEN,
                created_tx=event.tx_hash, created_block=event.block_number, current_round=0,
                has_validation_data=self._has_validation_data(args["taskId"]),
            )
        )  # fmt: skip

    def _has_validation_data(self, task_id: int) -> bool:
        return self.validation is not None and self.validation.has(task_id)

    def _on_TaskCancelled(self, session: Session, event: ChainEvent, args: dict) -> None:
        self._close_task(session, args["taskId"], TaskState.CANCELLED, args["refund"])

    def _on_TaskCompleted(self, session: Session, event: ChainEvent, args: dict) -> None:
        self._close_task(session, args["taskId"], TaskState.COMPLETED, args["refund"])

    def _on_TaskExpired(self, session: Session, event: ChainEvent, args: dict) -> None:
        self._close_task(session, args["taskId"], TaskState.EXPIRED, args["refund"])

    def _close_task(self, session: Session, task_id: int, status: TaskState, refund: int) -> None:
        task = session.get(TaskRow, task_id)
        if task:
            task.status, task.refund = status, str(refund)

    def _on_RoundStarted(self, session: Session, event: ChainEvent, args: dict) -> None:
        model_cid = cid_from_digest(args["modelHash"])
        session.merge(
            RoundRow(
                task_id=args["taskId"], round=args["round"], status=RoundState.STARTED, model_cid=model_cid,
                commit_deadline=args["commitDeadline"], reveal_deadline=args["revealDeadline"],
                started_tx=event.tx_hash,
            )
        )  # fmt: skip
        task = session.get(TaskRow, args["taskId"])
        if task:
            task.current_round, task.model_cid = args["round"], model_cid

    def _on_Committed(self, session: Session, event: ChainEvent, args: dict) -> None:
        session.merge(
            SubmissionRow(
                task_id=args["taskId"], round=args["round"], trainer=args["trainer"],
                commitment="0x" + args["commitment"].hex(), committed_tx=event.tx_hash,
            )
        )  # fmt: skip

    def _on_Revealed(self, session: Session, event: ChainEvent, args: dict) -> None:
        row = session.get(SubmissionRow, (args["taskId"], args["round"], args["trainer"]))
        if row:
            row.update_hash = "0x" + args["updateHash"].hex()
            row.update_cid = cid_from_digest(args["updateHash"])
            row.revealed_tx = event.tx_hash

    def _on_TrainerSlashed(self, session: Session, event: ChainEvent, args: dict) -> None:
        row = session.get(SubmissionRow, (args["taskId"], args["round"], args["trainer"]))
        if row:
            row.accepted, row.slashed = False, str(args["amount"])
            row.reason = row.reason or RejectionReason.NO_REVEAL

    def _on_RoundAborted(self, session: Session, event: ChainEvent, args: dict) -> None:
        row = session.get(RoundRow, (args["taskId"], args["round"]))
        if row:
            row.status, row.closed_tx = RoundState.ABORTED, event.tx_hash

    def _on_RoundFinalized(self, session: Session, event: ChainEvent, args: dict) -> None:
        task_id, round_no = args["taskId"], args["round"]
        row = session.get(RoundRow, (task_id, round_no))
        if row is None:
            return
        row.status, row.closed_tx = RoundState.FINALIZED, event.tx_hash
        row.new_model_cid = cid_from_digest(args["newModelHash"])
        row.report_cid = cid_from_digest(args["reportHash"])
        row.rewards_root = "0x" + args["rewardsRoot"].hex()
        row.payout = str(args["payout"])
        task = session.get(TaskRow, task_id)
        if task:
            task.model_cid = row.new_model_cid
        report = self._report(row.report_cid)
        if report is None:
            return
        row.metrics = report.metrics.model_dump(mode="json")
        for item in report.submissions:
            submission = session.get(SubmissionRow, (task_id, round_no, item.trainer))
            if submission:
                submission.accepted = item.accepted
                submission.reason = item.reason
                submission.score = item.score
                submission.payout = str(item.payout)
        for trainer, amount in report.cumulative.items():
            earning = session.get(EarningRow, (task_id, trainer)) or EarningRow(
                task_id=task_id, trainer=trainer, claimed="0"
            )
            earning.cumulative = str(amount)
            session.merge(earning)

    def _on_RewardsClaimed(self, session: Session, event: ChainEvent, args: dict) -> None:
        key = (args["taskId"], args["account"])
        earning = session.get(EarningRow, key) or EarningRow(task_id=key[0], trainer=key[1], cumulative="0")
        earning.claimed = str(args["cumulativeAmount"])
        session.merge(earning)

    def _report(self, cid: str) -> RoundReport | None:
        try:
            return RoundReport.from_json(self.store.get(cid))
        except (StoreError, CodecError) as exc:
            log.warning("indexer: round report %s unreadable: %s", cid, exc)
            return None
