"""What the trainer node and the validator node share: the loop over a task's rounds.

Each node asks the chain, not its disk, which round and phase it is in and whether it already
acted, so a restarted node picks up where it was. A subclass names the phases it acts in and what
it does there (:meth:`RoundNode.act`) and how to read its own membership (:meth:`RoundNode.member`);
the loop, gas accounting, claims and the stake's return at the end live here, once, and so do
the two sentences a person reads about a node's progress: what a restarted node resumes
(:meth:`RoundNode.resume_note`) and what stopping it now leaves pending (:meth:`RoundNode.pending`),
both from :meth:`RoundNode.standing`, which each role reads from its state dir and the chain.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from fedmarket.chain import MarketClient, TaskInfo
from fedmarket.display import duration, fmt, iso_time
from fedmarket.protocol import RoundPhase, TaskStatus
from fedmarket.rounds import fetch_spec
from fedmarket.spec import TaskSpec
from fedmarket.store import ContentStore

EventSink = Callable[[str, dict], None]
BPS = 10_000  # basis points: the terms' slash_bps


@dataclass(frozen=True)
class Standing:
    """What this node has done in a round and what it still must do there, from its state dir and
    the chain (never from memory: a restarted node reads the same)."""

    round: int
    done: str  # "committed", "scores committed", "trained", "revealed", ...
    next: str | None = None  # what it does next ("reveal"); None: nothing left in this round
    not_yet: str | None = None  # the same, undone ("not yet revealed")
    deadline_name: str | None = None  # "reveal", "commit", "score-reveal"
    deadline: int | None = None  # chain time by which `next` must happen
    at_stake: int = 0  # tokens slashed if `next` does not happen in time


@dataclass
class RoundSummary:
    """What a node did in a task, as its summary file records it."""

    rounds_committed: list[int] = field(default_factory=list)
    rounds_revealed: list[int] = field(default_factory=list)
    claimed: int = 0
    stake_returned: int = 0
    gas_used: int = 0
    ejected: bool = False  # slashed by the consensus and removed from the task


class Membership(Protocol):
    """A trainer's or validator's record in a task (`TrainerInfo`, `ValidatorInfo`)."""

    @property
    def joined(self) -> bool: ...

    @property
    def stake(self) -> int: ...


class RoundNode(ABC):
    acts_in: tuple[RoundPhase, ...] = ()  # the phases in which this node has something to do
    summary: RoundSummary

    def __init__(
        self,
        *,
        task_id: int,
        chain: MarketClient,
        store: ContentStore,
        poll_interval: float,
        on_event: EventSink | None,
    ) -> None:
        self.task_id = task_id
        self.chain = chain
        self.store = store
        self.address = chain.signer  # a read-only client cannot take part: ChainError here
        self.poll_interval = poll_interval
        self._emit = on_event or (lambda kind, info: None)
        self._spec: TaskSpec | None = None
        self._last_phase: tuple[int, RoundPhase] | None = None

    # ------------------------------------------------------------------ what a role defines

    @abstractmethod
    def ensure_joined(self) -> None:
        """Joins the task in this node's role unless already in it; raises, saying why, when it cannot."""

    @abstractmethod
    def member(self) -> Membership:
        """This account's record in the task, in this node's role."""

    @abstractmethod
    def act(self, round_no: int, phase: RoundPhase, spec: TaskSpec) -> bool:
        """Does what `phase` (one of :attr:`acts_in`) calls for; False when there is nothing to do."""

    def may_withdraw(self, info: TaskInfo) -> bool:
        """Whether the stake may be taken back now that the task ended or the node was removed."""
        return True

    @abstractmethod
    def standing(self, round_no: int, info: TaskInfo) -> Standing | None:
        """Where this node stands in `round_no` (the current round); None when it has done nothing there."""

    # ------------------------------------------------------------------ what a person reads

    def slashable(self, info: TaskInfo) -> int:
        """What a slash in this task would burn of this node's stake now."""
        return self.member().stake * info.terms.slash_bps // BPS

    def resume_note(self) -> str | None:
        """What a (re)started node picks up, e.g. "round 3: committed, will reveal"; None on a fresh start."""
        info = self.chain.task(self.task_id)
        if info.status != TaskStatus.OPEN or info.current_round == 0:
            return None
        standing = self.standing(info.current_round, info)
        if standing is None:
            return None
        then = f"will {standing.next}" if standing.next else "waiting for the round to settle"
        return f"round {standing.round}: {standing.done}, {then}"

    def pending(self, command: str = "the same command") -> str:
        """What stopping now leaves undone, and until when it can be done (Ctrl-C prints this)."""
        again = f"run {command} again"
        info = self.chain.task(self.task_id)
        if info.status != TaskStatus.OPEN or not self.member().joined:
            where = (
                f"task {self.task_id} is {info.status.name.lower()}" if info.status != TaskStatus.OPEN else ""
            )
            where = where or f"not in task {self.task_id} (not joined yet, or removed)"
            claimable = self.chain.claimable(self.task_id, self.address)
            return f"stopped: {where}; " + (
                f"{fmt(claimable)} to claim (the claim command)" if claimable else "nothing pending"
            )
        if info.current_round == 0:
            return f"stopped before round 1: nothing pending — {again} to take part in the rounds"
        standing = self.standing(info.current_round, info)
        if standing is None or standing.next is None or standing.deadline is None:
            done = f" {standing.done};" if standing is not None else ""
            return (
                f"stopped in round {info.current_round}:{done} nothing pending — {again} to take part in "
                "the next rounds and claim at the end"
            )
        # The next block's time: the chain's clock, or the wall clock where a devnet mines only on
        # traffic and its last block is old (the next block then takes the wall clock's time).
        left = standing.deadline - max(self.chain.chain_time(), int(time.time()))
        when = f"{iso_time(standing.deadline)}, in {duration(left)}"
        then = (
            f"or {fmt(standing.at_stake)} of the stake is slashed"
            if standing.at_stake
            else "to take part in this round"
        )
        return (
            f"stopped in round {standing.round}: {standing.done}, {standing.not_yet} — {again} before the "
            f"{standing.deadline_name} deadline ({when}) {then}"
        )

    # ------------------------------------------------------------------ the loop

    def spec(self) -> TaskSpec:
        if self._spec is None:
            self._spec = fetch_spec(self.store, self.chain.task(self.task_id).terms.spec_hash)
        return self._spec

    def _track(self, result) -> None:
        if result is not None:
            self.summary.gas_used += result.gas_used

    def run(self, *, claim: bool = True, stop: Callable[[], bool] = lambda: False) -> RoundSummary:
        self.ensure_joined()
        spec = self.spec()
        note = self.resume_note()
        if note is not None:
            self._emit("resumed", {"round": self.chain.task(self.task_id).current_round, "note": note})
        while not stop():
            info = self.chain.task(self.task_id)
            if info.status != TaskStatus.OPEN:
                break
            if not self.member().joined:
                # Slashed and removed: what was earned before stays claimable, the rest of the stake too.
                self.summary.ejected = True
                self._emit("ejected", {"round": info.current_round})
                break
            if not self.step(info.current_round, spec):
                time.sleep(self.poll_interval)
        if claim:
            self.finish()
        return self.summary

    def step(self, round_no: int, spec: TaskSpec) -> bool:
        """Does what the current phase calls for; False when there is nothing to do yet."""
        phase = self.chain.phase(self.task_id)
        if (round_no, phase) != self._last_phase:
            self._last_phase = (round_no, phase)
            self._emit("phase", {"round": round_no, "phase": phase.name.lower()})
        if round_no == 0 or phase not in self.acts_in:
            return False
        return self.act(round_no, phase, spec)

    # ------------------------------------------------------------------ the end

    def finish(self) -> None:
        """Claims what was earned and takes the stake back once the task has ended."""
        self.claim()
        info = self.chain.task(self.task_id)
        me = self.member()
        if me.stake and (info.status != TaskStatus.OPEN or not me.joined) and self.may_withdraw(info):
            self._track(self.chain.withdraw_stake(self.task_id))
            self.summary.stake_returned = me.stake
            self._emit("stake_withdrawn", {"amount": me.stake})

    def claim(self) -> int:
        """Claims what the contract credited this account in the task (as trainer and validator)."""
        amount = self.chain.claimable(self.task_id, self.address)
        if amount == 0:
            return 0
        self._track(self.chain.claim(self.task_id))
        self.summary.claimed += amount
        self._emit("claimed", {"amount": amount})
        return amount
