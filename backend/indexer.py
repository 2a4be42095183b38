"""Tails TaskMarket events into the database: the API's view of the chain.

Each batch of events and the cursor that follows it are written in one transaction, and every
event row is keyed by (block, log index), so a crash mid-batch loses nothing and re-indexing is a
no-op. The projections (tasks, validators, rounds, submissions, round validators, earnings) are
made from the events alone, with two reads of chain state at an event's block: a round's
deadlines (phases close early and move the later deadlines up, which no event says) and when it
closed. The round report in the store adds each aggregated update's sample count when it can be
read. So deleting the database and indexing again rebuilds the same state.
"""

from __future__ import annotations

import dataclasses
import logging
import threading

from eth_utils import to_checksum_address
from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.db import (
    ChainEventRow,
    Cursor,
    Database,
    EarningRow,
    RoundRow,
    RoundState,
    RoundValidatorRow,
    SubmissionRow,
    TaskRow,
    TaskState,
    ValidatorRow,
)
from fedmarket.chain import ChainEvent, MarketClient
from fedmarket.cid import cid_from_digest
from fedmarket.consensus import HARMFUL, INVALID, UNAVAILABLE
from fedmarket.errors import CodecError, StoreError
from fedmarket.ledger import address_order
from fedmarket.protocol import Outcome
from fedmarket.report import RoundReport, SubmissionOutcome
from fedmarket.store import ContentStore

log = logging.getLogger("fedmarket.indexer")
CURSOR = "market"
MAX_BLOCKS_PER_BATCH = 2000
OUTCOMES = {
    Outcome.ACCEPTED: SubmissionOutcome.ACCEPTED,
    Outcome.WORTHLESS: SubmissionOutcome.WORTHLESS,
    Outcome.UNAVAILABLE: SubmissionOutcome.UNAVAILABLE,
    Outcome.REJECTED: SubmissionOutcome.REJECTED,
}
FLAG_NAMES = {UNAVAILABLE: "unavailable", INVALID: "invalid", HARMFUL: "harmful"}
# Events after which a round's deadlines or close time may have moved (read from chain state).
ROUND_CLOCK_EVENTS = frozenset(
    {
        "RoundStarted",
        "Committed",
        "Revealed",
        "ScoresCommitted",
        "ScoresRevealed",
        "RoundFinalized",
        "RoundAborted",
    }
)


def _jsonable(value):
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
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


def score_entry(entry: int) -> str:
    """A revealed score entry as the API shows it: a flag's name, else the decimal score."""
    return FLAG_NAMES.get(entry, str(entry))


def _add(amount: str | None, more: int) -> str:
    return str(int(amount or 0) + int(more))


class Indexer:
    def __init__(self, *, chain: MarketClient, db: Database, store: ContentStore) -> None:
        self.chain = chain
        self.db = db
        self.store = store
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
            clocks: dict[tuple[int, int], int] = {}  # (task, round) -> its latest event's block
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
                session.flush()  # the next event's handler reads what this one wrote
                if event.name in ROUND_CLOCK_EVENTS:
                    clocks[(event.args["taskId"], event.args["round"])] = event.block_number
                stored += 1
            for (task_id, round_no), block in clocks.items():
                self._read_round_clock(session, task_id, round_no, block)
            session.merge(Cursor(name=CURSOR, block_number=end))
        return stored

    def sync(self) -> None:
        """Catches up to the head."""
        while self.last_indexed_block() < self.chain.block_number():
            self.sync_once()

    def _read_round_clock(self, session: Session, task_id: int, round_no: int, block: int) -> None:
        """The round's deadlines and close time as the chain held them after `block` (its latest
        event in this batch): they only change in transactions that emit one of its events."""
        row = session.get(RoundRow, (task_id, round_no))
        if row is None:
            return
        info = self.chain.round(task_id, round_no, block=block)
        row.commit_deadline, row.reveal_deadline = info.commit_deadline, info.reveal_deadline
        row.score_commit_deadline = info.score_commit_deadline
        row.score_reveal_deadline = info.score_reveal_deadline
        row.closed_at = info.closed_at or None

    # ------------------------------------------------------------------ projections

    def _project(self, session: Session, event: ChainEvent) -> None:
        handler = getattr(self, f"_on_{event.name}", None)
        if handler is not None:
            handler(session, event, event.args)

    # tasks

    def _on_TaskCreated(self, session: Session, event: ChainEvent, args: dict) -> None:
        terms = args["terms"]  # fedmarket.protocol.TaskTerms
        session.merge(
            TaskRow(
                task_id=args["taskId"], owner=args["owner"], coordinator=args["coordinator"],
                spec_cid=cid_from_digest(terms.spec_hash), terms=_jsonable(terms), status=TaskState.OPEN,
                created_tx=event.tx_hash, created_block=event.block_number, current_round=0,
            )
        )  # fmt: skip

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

    # validators (trainers are read from the events themselves: see routers.tasks)

    def _on_ValidatorJoined(self, session: Session, event: ChainEvent, args: dict) -> None:
        session.merge(
            ValidatorRow(
                task_id=args["taskId"], validator=args["validator"], stake=str(args["stake"]),
                data_hash="0x" + args["dataHash"].hex(), joined=True, joined_tx=event.tx_hash,
                joined_block=event.block_number,
            )
        )  # fmt: skip

    def _on_ValidatorLeft(self, session: Session, event: ChainEvent, args: dict) -> None:
        row = session.get(ValidatorRow, (args["taskId"], args["validator"]))
        if row:
            row.joined, row.stake = False, "0"

    def _on_StakeWithdrawn(self, session: Session, event: ChainEvent, args: dict) -> None:
        row = session.get(ValidatorRow, (args["taskId"], args["account"]))
        if row:  # takes every stake the account has left in the task, a validator's included
            row.joined, row.stake = False, "0"

    # rounds

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

    def _on_ScoresCommitted(self, session: Session, event: ChainEvent, args: dict) -> None:
        session.merge(
            RoundValidatorRow(
                task_id=args["taskId"], round=args["round"], validator=args["validator"],
                commitment="0x" + args["commitment"].hex(), committed_tx=event.tx_hash,
            )
        )  # fmt: skip

    def _on_ScoresRevealed(self, session: Session, event: ChainEvent, args: dict) -> None:
        task_id, round_no = args["taskId"], args["round"]
        row = session.get(RoundValidatorRow, (task_id, round_no, args["validator"]))
        if row is None:
            return
        # A vector has one entry per revealer of the round, in ascending address order; the
        # reveal phase is over by now, so the revealed submissions are all of them.
        revealers = session.scalars(
            select(SubmissionRow.trainer).where(
                SubmissionRow.task_id == task_id,
                SubmissionRow.round == round_no,
                SubmissionRow.update_hash.is_not(None),
            )
        ).all()
        trainers = sorted(revealers, key=address_order)
        scores = [int(entry) for entry in args["scores"]]
        if len(scores) != len(trainers):  # the contract refuses such a vector; never expected
            log.warning(
                "indexer: task %s round %s: %d scores for %d revealers",
                task_id,
                round_no,
                len(scores),
                len(trainers),
            )
            trainers = trainers[: len(scores)]
        row.scores = {trainer: score_entry(entry) for trainer, entry in zip(trainers, scores, strict=False)}
        row.revealed_tx = event.tx_hash

    def _on_TrainerSettled(self, session: Session, event: ChainEvent, args: dict) -> None:
        task_id, round_no, trainer = args["taskId"], args["round"], args["trainer"]
        row = session.get(SubmissionRow, (task_id, round_no, trainer))
        if row:
            row.outcome = OUTCOMES[Outcome(args["outcome"])]
            row.consensus, row.payout = str(args["consensus"]), str(args["payout"])
        if args["payout"]:
            earning = self._earning(session, task_id, trainer)
            earning.as_trainer = _add(earning.as_trainer, args["payout"])

    def _on_ValidatorSettled(self, session: Session, event: ChainEvent, args: dict) -> None:
        task_id, round_no, validator = args["taskId"], args["round"], args["validator"]
        row = session.get(RoundValidatorRow, (task_id, round_no, validator))
        if row:
            row.agreement, row.payout = str(args["agreement"]), str(args["payout"])
        if args["payout"]:
            earning = self._earning(session, task_id, validator)
            earning.as_validator = _add(earning.as_validator, args["payout"])

    def _on_TrainerSlashed(self, session: Session, event: ChainEvent, args: dict) -> None:
        row = session.get(SubmissionRow, (args["taskId"], args["round"], args["trainer"]))
        if row:
            row.slashed = _add(row.slashed, args["amount"])
            if row.update_hash is None:
                row.outcome = SubmissionOutcome.NO_REVEAL

    def _on_ValidatorSlashed(self, session: Session, event: ChainEvent, args: dict) -> None:
        task_id, validator = args["taskId"], args["validator"]
        row = session.get(RoundValidatorRow, (task_id, args["round"], validator))
        if row:
            row.slashed = _add(row.slashed, args["amount"])
        member = session.get(ValidatorRow, (task_id, validator))
        if member:  # slashed and removed from the task
            member.stake = str(max(0, int(member.stake) - int(args["amount"])))
            member.joined = False

    def _on_RoundFinalized(self, session: Session, event: ChainEvent, args: dict) -> None:
        row = session.get(RoundRow, (args["taskId"], args["round"]))
        if row is None:
            return
        row.status, row.closed_tx = RoundState.FINALIZED, event.tx_hash
        row.trainer_payout, row.validator_payout = str(args["trainerPayout"]), str(args["validatorPayout"])
        row.payout = str(args["trainerPayout"] + args["validatorPayout"])
        row.burned = str(args["burned"])

    def _on_RoundAborted(self, session: Session, event: ChainEvent, args: dict) -> None:
        row = session.get(RoundRow, (args["taskId"], args["round"]))
        if row:
            row.status, row.closed_tx = RoundState.ABORTED, event.tx_hash
            row.payout = row.trainer_payout = row.validator_payout = "0"
            row.burned = str(args["burned"])

    def _on_ModelPublished(self, session: Session, event: ChainEvent, args: dict) -> None:
        task_id, round_no = args["taskId"], args["round"]
        row = session.get(RoundRow, (task_id, round_no))
        if row is None:
            return
        row.new_model_cid = cid_from_digest(args["modelHash"])
        row.report_cid = cid_from_digest(args["reportHash"])
        row.published_tx = event.tx_hash
        task = session.get(TaskRow, task_id)
        if task and task.current_round == round_no:
            task.model_cid = row.new_model_cid  # what the next round trains
        report = self._report(row.report_cid)
        if report is None:
            return
        for item in report.submissions:
            submission = session.get(SubmissionRow, (task_id, round_no, item.trainer))
            if submission and item.outcome == SubmissionOutcome.ACCEPTED:
                submission.num_samples = item.num_samples

    # earnings

    def _on_RewardsClaimed(self, session: Session, event: ChainEvent, args: dict) -> None:
        earning = self._earning(session, args["taskId"], args["account"])
        earning.claimed = _add(earning.claimed, args["amount"])

    def _earning(self, session: Session, task_id: int, account: str) -> EarningRow:
        account = to_checksum_address(account)
        earning = session.get(EarningRow, (task_id, account))
        if earning is None:
            earning = EarningRow(
                task_id=task_id, account=account, as_trainer="0", as_validator="0", claimed="0"
            )
            session.add(earning)
        return earning

    def _report(self, cid: str) -> RoundReport | None:
        try:
            return RoundReport.from_json(self.store.get(cid))
        except (StoreError, CodecError) as exc:
            log.warning("indexer: round report %s unreadable: %s", cid, exc)
            return None
