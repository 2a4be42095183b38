"""The validator node: joins a task with a stake and a committed data split, and scores every round.

Per round, once the reveal phase is over: read the round's revealers from the chain (in the
contract's order), download each revealed update from the store (verified against its hash; a
blob that cannot be fetched is flagged UNAVAILABLE), score them on the local data with the task's
scoring rule (:mod:`fedmarket.scoring`), persist vector + salt, commit its hash, then reveal it.
At the end: claim what was earned and take the stake back.

Restart-safe like the trainer node: the vector and its salt are on disk (fsynced) before the
commit is sent, and the chain is asked, not the disk, whether a commit or reveal already happened.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from fedmarket.chain import MarketClient, TaskInfo, ValidatorInfo
from fedmarket.cid import cid_from_digest
from fedmarket.display import fmt, iso_time
from fedmarket.errors import ContractRevert, FedmarketError
from fedmarket.files import atomic_write
from fedmarket.learning import LocalData
from fedmarket.protocol import RoundPhase, TaskStatus, make_score_commitment, new_salt
from fedmarket.rounds import score_revealed
from fedmarket.scoring import ScoredUpdate
from fedmarket.spec import TaskSpec
from fedmarket.store import ContentStore
from trainer.round_node import EventSink, RoundNode, RoundSummary, Standing

log = logging.getLogger("fedmarket.validator")
# Demo only: how a dishonest validator rewrites its honest vector (see trainer/attacks.py).
VectorRewrite = Callable[[list[str], list[int]], list[int]]


class ValidatorError(FedmarketError):
    """The validator cannot take part: a message a person can act on."""


@dataclass
class ScoreState:
    """What the node must remember about one round's scores across restarts."""

    round: int
    trainers: list[str]
    scores: list[int]
    salt: str
    reasons: dict[str, str] = field(default_factory=dict)
    committed: bool = False
    revealed: bool = False


class ValidatorSummary(RoundSummary):
    """A validator's summary (ejected: slashed for a missed score reveal and removed)."""


class ScoreStateDir:
    """`<root>/<validator>/task-<id>/scores-<n>.json`; atomic, fsynced writes."""

    def __init__(self, root: Path, task_id: int, validator: str) -> None:
        self.path = Path(root) / validator.lower() / f"task-{task_id}"
        self.path.mkdir(parents=True, exist_ok=True)

    def save(self, state: ScoreState) -> None:
        atomic_write(self.path / f"scores-{state.round}.json", json.dumps(state.__dict__).encode())

    def load(self, round_no: int) -> ScoreState | None:
        path = self.path / f"scores-{round_no}.json"
        return ScoreState(**json.loads(path.read_text())) if path.exists() else None

    def write_summary(self, summary: ValidatorSummary) -> Path:
        path = self.path / "validator-summary.json"
        atomic_write(path, json.dumps(summary.__dict__).encode())
        return path

    def all_rounds(self) -> list[ScoreState]:
        states = [ScoreState(**json.loads(p.read_text())) for p in self.path.glob("scores-*.json")]
        return sorted(states, key=lambda state: state.round)


class ValidatorNode(RoundNode):
    acts_in = (RoundPhase.SCORE_COMMIT, RoundPhase.SCORE_REVEAL)

    def __init__(
        self,
        *,
        task_id: int,
        chain: MarketClient,
        store: ContentStore,
        data: LocalData,
        state_root: Path,
        stake: int | None = None,
        poll_interval: float = 0.5,
        on_event: EventSink | None = None,
        rewrite_vector: VectorRewrite | None = None,
        reveal: bool = True,
    ) -> None:
        super().__init__(
            task_id=task_id, chain=chain, store=store, poll_interval=poll_interval, on_event=on_event
        )
        self.data = data
        self.data_hash = data.canonical_hash()
        self.state = ScoreStateDir(state_root, task_id, self.address)
        self.stake = stake
        self._rewrite = rewrite_vector
        self._reveal = reveal  # demo only: a lazy validator commits and never reveals
        self.summary = ValidatorSummary()

    def member(self) -> ValidatorInfo:
        return self.chain.validator(self.task_id, self.address)

    def may_withdraw(self, info: TaskInfo) -> bool:
        # Also a trainer still in the task: its trainer node withdraws both stakes later.
        return not (info.status == TaskStatus.OPEN and self.chain.trainer(self.task_id, self.address).joined)

    def ensure_joined(self) -> None:
        info = self.chain.task(self.task_id)
        if info.status != TaskStatus.OPEN:
            raise ValidatorError(f"task {self.task_id} is {info.status.name.lower()}; nothing to join")
        me = self.chain.validator(self.task_id, self.address)
        if me.joined:
            if me.data_hash != self.data_hash:
                raise ValidatorError(
                    f"{self.address} validates task {self.task_id} on data {me.data_hash.hex()[:16]}..., "
                    f"not on this file ({self.data_hash.hex()[:16]}...): a validator's data is fixed at join"
                )
            return
        if info.validator_count >= info.terms.max_validators:
            raise ValidatorError(
                f"task {self.task_id} has all its validators ({info.validator_count}/{info.terms.max_validators})"
            )
        stake = self.stake if self.stake is not None else info.terms.min_validator_stake
        if stake < info.terms.min_validator_stake:
            raise ValidatorError(
                f"a stake of {fmt(stake)} is below the task's minimum of {fmt(info.terms.min_validator_stake)}"
            )
        balance = self.chain.token_balance(self.address)
        if balance < stake:
            raise ValidatorError(
                f"{self.address} holds {fmt(balance)}; validating needs a stake of {fmt(stake)}"
            )
        self._track(self.chain.ensure_allowance(stake))
        self._track(self.chain.join_as_validator(self.task_id, self.data_hash, stake, auto_approve=False))
        self._emit("joined", {"stake": stake, "data_hash": self.data_hash.hex()})

    def standing(self, round_no: int, info: TaskInfo) -> Standing | None:
        on_chain = self.chain.score_commitment(self.task_id, self.address)
        phase = self.chain.phase(self.task_id)
        deadlines = self.chain.round(self.task_id, round_no)
        if on_chain.round_no == round_no:
            if on_chain.revealed:
                return Standing(round_no, "scores revealed")
            if phase in (RoundPhase.SCORE_COMMIT, RoundPhase.SCORE_REVEAL):
                return Standing(
                    round_no, "scores committed", next="reveal", not_yet="not yet revealed",
                    deadline_name="score-reveal", deadline=deadlines.score_reveal_deadline,
                    at_stake=self.slashable(info),
                )  # fmt: skip
            return Standing(
                round_no,
                f"scores committed and not revealed by the score-reveal deadline "
                f"({iso_time(deadlines.score_reveal_deadline)}): {fmt(self.slashable(info))} of the stake is "
                "slashed when the round settles",
            )
        if phase == RoundPhase.SCORE_COMMIT and self.state.load(round_no) is not None:
            return Standing(
                round_no, "scored", next="commit the saved scores", not_yet="scores not yet committed",
                deadline_name="score-commit", deadline=deadlines.score_commit_deadline,
            )  # fmt: skip
        return None

    def act(self, round_no: int, phase: RoundPhase, spec: TaskSpec) -> bool:
        on_chain = self.chain.score_commitment(self.task_id, self.address)
        committed = on_chain.round_no == round_no
        if phase == RoundPhase.SCORE_COMMIT and not committed:
            self._score_and_commit(round_no, spec)
            return True
        if phase == RoundPhase.SCORE_REVEAL and committed and not on_chain.revealed and self._reveal:
            saved = self.state.load(round_no)
            if saved is None:
                raise ValidatorError(
                    f"committed scores in round {round_no} but they are not in {self.state.path}; cannot reveal"
                )
            self._track(self.chain.reveal_scores(self.task_id, saved.scores, bytes.fromhex(saved.salt)))
            saved.revealed = True
            self.state.save(saved)
            self.summary.rounds_revealed.append(round_no)
            self._emit("revealed", {"round": round_no})
            return True
        return False

    def score(self, round_no: int, spec: TaskSpec) -> tuple[list[str], list[ScoredUpdate]]:
        """This validator's entries for the round, in the contract's order of revealers."""
        self._emit(
            "scoring", {"round": round_no, "updates": self.chain.round(self.task_id, round_no).reveal_count}
        )
        ledger, entries = score_revealed(
            self.chain,
            self.store,
            spec,
            self.data,
            task_id=self.task_id,
            round_no=round_no,
            fetch=self._fetch,
        )
        return ledger.trainers, [entries[t] for t in ledger.trainers]

    def _fetch(self, update_hash: bytes) -> bytes | None:
        """The blob, verified against its hash by the store; None if it cannot be had."""
        try:
            return self.store.get(cid_from_digest(update_hash))
        except FedmarketError as exc:
            log.warning("update %s unavailable: %s", update_hash.hex()[:16], exc)
            return None

    def _score_and_commit(self, round_no: int, spec: TaskSpec) -> None:
        saved = self.state.load(round_no)
        if saved is None:
            trainers, scored = self.score(round_no, spec)
            vector = [s.entry for s in scored]
            if self._rewrite is not None:
                vector = self._rewrite(trainers, vector)
            reasons = {s.trainer: s.reason.value for s in scored if s.reason is not None}
            saved = ScoreState(round_no, trainers, vector, new_salt().hex(), reasons)
            self.state.save(saved)  # on disk before the commit: a restart can still reveal
        commitment = make_score_commitment(
            self.task_id, round_no, self.address, saved.scores, bytes.fromhex(saved.salt)
        )
        try:
            self._track(self.chain.commit_scores(self.task_id, commitment))
        except ContractRevert as revert:
            if revert.name == "TaskMarketWrongPhase":
                self._emit("missed", {"round": round_no, "reason": "score-commit phase closed while scoring"})
                return
            raise
        saved.committed = True
        self.state.save(saved)
        self.summary.rounds_committed.append(round_no)
        self._emit("committed", {"round": round_no, "flags": len(saved.reasons)})
