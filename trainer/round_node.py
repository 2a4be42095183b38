"""What the trainer node and the validator node share: the loop over a task's rounds.

Each node asks the chain, not its disk, which round and phase it is in and whether it already
acted, so a restarted node picks up where it was. A subclass names the phases it acts in and what
it does there (:meth:`RoundNode.act`) and how to read its own membership (:meth:`RoundNode.member`);
the loop, gas accounting, claims and the stake's return at the end live here, once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from fedmarket.chain import MarketClient, TaskInfo
from fedmarket.protocol import RoundPhase, TaskStatus
from fedmarket.rounds import fetch_spec
from fedmarket.spec import TaskSpec
from fedmarket.store import ContentStore

EventSink = Callable[[str, dict], None]


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


class RoundNode:
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

    def ensure_joined(self) -> None:
        raise NotImplementedError

    def member(self) -> Membership:
        """This account's record in the task, in this node's role."""
        raise NotImplementedError

    def act(self, round_no: int, phase: RoundPhase, spec: TaskSpec) -> bool:
        """Does what `phase` (one of :attr:`acts_in`) calls for; False when there is nothing to do."""
        raise NotImplementedError

    def may_withdraw(self, info: TaskInfo) -> bool:
        """Whether the stake may be taken back now that the task ended or the node was removed."""
        return True

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
