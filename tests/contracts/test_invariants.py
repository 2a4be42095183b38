"""Stateful fuzzing of TaskMarket against a Python model, on the real Anvil.

Hypothesis drives an owner, a coordinator, an outsider and five trainers through random
operations on up to two tasks: create, join, leave, withdrawStake, startRound, commit, reveal
(honest or with a wrong salt), the clock, finalizeRound (random payouts, cumulative earnings
that may over-allocate, rejected subsets, missing non-revealers), abortRound, claim and cancel.
The model predicts each call's outcome, down to the custom error of a revert. After every step:

- the market holds exactly the open pools + unclaimed rewards + stakes its views report;
- the views, and every account's token balance, match the model;
- no account ever got more from the market than its claimed rewards plus its own deposits (plus,
  for a task owner, the stakes slashed into its pools, which the last round refunds).

Each example runs inside its own evm_snapshot/evm_revert. Examples are derandomized so the suite
is reproducible; set FEDMARKET_FUZZ=1 (and FEDMARKET_FUZZ_EXAMPLES=n) to explore new ones.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test
from testkit.contracts import SETTLEMENT_GRACE, digest
from web3.logs import DISCARD

from fedmarket.errors import ContractRevert
from fedmarket.merkle import RewardsTree
from fedmarket.protocol import BPS, RoundPhase, TaskStatus, TaskTerms, make_commitment

WINDOW = 600  # commit and reveal windows, seconds
MARGIN = 30  # the clock never stops closer than this to a deadline, so wall-clock drift cannot flip a phase
MAX_TASKS = 2
TRAINERS = 5
# What a step does, repeated for weight: `progress` moves a round forward through its phases,
# the others poke at any task with any trainer, in any phase.
OPERATIONS = [
    *["progress"] * 8,
    *["claim"] * 3,
    *["join", "join_several", "leave", "withdraw_stake", "commit", "everyone_commits"],
    *["reveal", "most_reveal", "advance", "finalize", "abort", "start_round", "cancel_task", "create_task"],
    "expire_task",
]


def trainer_indexes(min_size: int, max_size: int):
    return st.lists(st.integers(0, TRAINERS - 1), min_size=min_size, max_size=max_size, unique=True)


def sometimes(data, one_in: int, label: str) -> bool:
    """True about once in `one_in` steps. Not encoded as 0: Hypothesis starts from all-zero
    choices and mutates from there, which would make the rare case the common one."""
    return data.draw(st.integers(0, one_in - 1), label=label) == 1


@dataclass
class TaskModel:
    task_id: int
    terms: TaskTerms
    owner: str
    status: TaskStatus = TaskStatus.OPEN
    current_round: int = 0
    round_open: bool = False
    pool: int = 0
    unclaimed: int = 0
    paid_out: int = 0  # allocated by finalizeRound, in total
    members: set[str] = field(default_factory=set)
    stakes: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    claimed: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    earned: dict[str, int] = field(default_factory=dict)  # cumulative earnings in the current root
    committed: dict[str, tuple[bytes, bytes]] = field(default_factory=dict)  # this round: (update, salt)
    revealed: set[str] = field(default_factory=set)


def task_terms(coordinator: str):
    @st.composite
    def build(draw):
        min_trainers = draw(st.integers(1, 3))
        return TaskTerms(
            spec_hash=digest(f"spec-{draw(st.integers(0, 9))}"),
            coordinator=coordinator,
            rounds=draw(st.sampled_from([3, 2, 1])),
            min_trainers=min_trainers,
            max_trainers=draw(st.integers(min_trainers, TRAINERS)),
            slash_bps=draw(st.sampled_from([2_500, 10_000, 0, 1, 9_999])),
            commit_window=WINDOW,
            reveal_window=WINDOW,
            reward_pool=draw(st.sampled_from([10**21, 10**18 + 7, 999, 1])),
            min_stake=draw(st.sampled_from([10**19, 3 * 10**18 + 1, 449, 1])),
        )

    return build()


class MarketMachine(RuleBasedStateMachine):
    """Set `context` (a dict built by the test) before running."""

    context: dict = {}

    def __init__(self) -> None:
        super().__init__()
        ctx = self.context
        self.w3 = ctx["w3"]
        self.snapshot = self.w3.provider.make_request("evm_snapshot", [])["result"]
        self.chain = ctx["chain_class"](self.w3, ctx["deployment"])  # fresh nonce caches
        self.market = self.chain.market
        self.owner, self.coordinator, self.outsider = ctx["owner"], ctx["coordinator"], ctx["outsider"]
        self.trainers = ctx["trainers"]
        self.accounts = [self.owner, self.coordinator, self.outsider, *self.trainers]
        self.tasks: list[TaskModel] = []
        self.market_start = self.chain.balance(self.market.address)
        self.expected_balance = {a.address: self.chain.balance(a.address) for a in self.accounts}
        self.deposited: dict[str, int] = defaultdict(int)
        self.received: dict[str, int] = defaultdict(int)
        self.claimed_total: dict[str, int] = defaultdict(int)
        self.slashed_to: dict[str, int] = defaultdict(int)  # task owner -> stakes slashed into its pools

    def teardown(self) -> None:
        reverted = self.w3.provider.make_request("evm_revert", [self.snapshot])["result"]
        assert reverted is True, "evm_revert failed: the next example would not start from a clean chain"

    @rule(data=st.data())
    def step(self, data):
        """One operation, drawn with the weights in OPERATIONS (rules alone would be drawn
        unevenly, and a round needs many steps in a row to get anywhere)."""
        getattr(self, "op_" + data.draw(st.sampled_from(OPERATIONS), label="operation"))(data)

    # ------------------------------------------------------------ helpers

    def attempt(self, account, fn, expected: str | None):
        """Sends `fn`; a revert must be the predicted custom error, a success must be predicted."""
        try:
            receipt = self.chain.tx(account, fn)
        except ContractRevert as error:
            assert expected is not None, f"unexpected revert {error}"
            assert error.name == expected, f"expected {expected}, got {error}"
            return None
        assert expected is None, f"expected {expected}, but the call succeeded"
        return receipt

    def pay(self, address: str, amount: int) -> None:
        self.expected_balance[address] += amount
        self.received[address] += amount

    def deposit(self, address: str, amount: int) -> None:
        self.expected_balance[address] -= amount
        self.deposited[address] += amount

    def phase(self, task: TaskModel) -> RoundPhase:
        return RoundPhase(self.market.functions.roundPhase(task.task_id).call())

    def pick_task(self, data) -> TaskModel:
        return self.tasks[data.draw(st.integers(0, len(self.tasks) - 1), label="task")]

    def pick_trainer(self, data):
        return self.trainers[data.draw(st.integers(0, len(self.trainers) - 1), label="trainer")]

    def deadlines(self) -> list[int]:
        found = []
        for task in self.tasks:
            if task.round_open:
                round_ = self.market.functions.getRound(task.task_id, task.current_round).call()
                found += [round_[0], round_[1], round_[1] + SETTLEMENT_GRACE]
            elif task.status == TaskStatus.OPEN and task.current_round:
                found.append(self.expires_at(task))
        return found

    def expires_at(self, task: TaskModel) -> int:
        """When a task whose current round is closed may be expired."""
        return self.market.functions.getRound(task.task_id, task.current_round).call()[1] + SETTLEMENT_GRACE

    def close_round(self, task: TaskModel) -> None:
        task.round_open = False
        task.committed, task.revealed = {}, set()
        if task.current_round == task.terms.rounds:
            refund, task.pool = task.pool, 0
            task.status = TaskStatus.COMPLETED
            self.pay(task.owner, refund)

    def slash(self, task: TaskModel, listed: list[str], *, only_non_revealers: bool):
        """Predicts the slashing loop: (error, tokens slashed)."""
        seen, slashed, non_revealers = set(), 0, 0
        for address in listed:
            if address not in task.committed:
                return "TaskMarketNotCommitted", 0
            if address in seen:
                return "TaskMarketAlreadyRejected", 0
            if only_non_revealers and address in task.revealed:
                return "TaskMarketRevealed", 0
            seen.add(address)
            slashed += task.stakes[address] * task.terms.slash_bps // BPS
            non_revealers += address not in task.revealed
        if non_revealers != len(task.committed) - len(task.revealed):
            return "TaskMarketNonRevealersMismatch", 0
        return None, slashed

    def apply_slash(self, task: TaskModel, listed: list[str]) -> int:
        slashed = 0
        for address in listed:
            amount = task.stakes[address] * task.terms.slash_bps // BPS
            task.stakes[address] -= amount
            task.members.discard(address)
            slashed += amount
        self.slashed_to[task.owner] += slashed
        return slashed

    def draw_listed(self, data, task: TaskModel, *, with_revealers: bool) -> list[str]:
        """Mostly every non-revealer (what the contract demands), sometimes one short, plus
        some revealers (finalize: rejected updates) and now and then a stray account."""
        non_revealers = sorted(a for a in task.committed if a not in task.revealed)
        if non_revealers and sometimes(data, 8, "drop a non-revealer"):
            non_revealers.pop()
        listed = list(non_revealers)
        if with_revealers and task.revealed:
            revealers = st.sampled_from(sorted(task.revealed))
            listed += data.draw(st.lists(revealers, unique=True, max_size=2), label="rejected")
        if sometimes(data, 10, "stray"):
            listed.append(self.pick_trainer(data).address)
        return data.draw(st.permutations(listed), label="order") if listed else []

    # ------------------------------------------------------------ tasks

    def create(self, terms: TaskTerms) -> None:
        self.deposit(self.owner.address, terms.reward_pool)
        receipt = self.attempt(self.owner, self.market.functions.createTask(terms.as_tuple()), None)
        (created,) = self.market.events.TaskCreated().process_receipt(receipt, errors=DISCARD)
        task_id = created["args"]["taskId"]
        self.tasks.append(TaskModel(task_id, terms, self.owner.address, pool=terms.reward_pool))

    @initialize(data=st.data())
    def first_task(self, data):
        self.create(data.draw(task_terms(self.coordinator.address), label="terms"))
        for index in data.draw(trainer_indexes(0, TRAINERS), label="joiners"):
            self.join_task(self.tasks[0], self.trainers[index])

    def op_create_task(self, data):
        if len(self.tasks) < MAX_TASKS:
            self.create(data.draw(task_terms(self.coordinator.address), label="terms"))

    def op_cancel_task(self, data):
        task = self.pick_task(data)
        caller = data.draw(st.sampled_from([self.owner, self.outsider]), label="caller")
        if task.status != TaskStatus.OPEN:
            expected = "TaskMarketTaskNotOpen"
        elif caller.address != task.owner:
            expected = "TaskMarketNotTaskOwner"
        elif task.current_round != 0:
            expected = "TaskMarketTaskStarted"
        else:
            expected = None
        if self.attempt(caller, self.market.functions.cancelTask(task.task_id), expected):
            self.pay(task.owner, task.pool)
            task.pool, task.status = 0, TaskStatus.CANCELLED

    def op_expire_task(self, data):
        task = self.pick_task(data)
        if task.status != TaskStatus.OPEN:
            expected = "TaskMarketTaskNotOpen"
        elif task.current_round == 0 or task.round_open:
            expected = "TaskMarketWrongPhase"
        elif self.chain.now() < self.expires_at(task):
            expected = "TaskMarketNotExpired"
        else:
            expected = None
        if self.attempt(self.outsider, self.market.functions.expireTask(task.task_id), expected):
            self.pay(task.owner, task.pool)
            task.pool, task.status = 0, TaskStatus.EXPIRED

    # ------------------------------------------------------------ trainers

    def join_task(self, task: TaskModel, trainer) -> None:
        address = trainer.address
        if task.status != TaskStatus.OPEN:
            expected = "TaskMarketTaskNotOpen"
        elif address in task.members:
            expected = "TaskMarketAlreadyJoined"
        elif len(task.members) >= task.terms.max_trainers:
            expected = "TaskMarketTaskFull"
        else:
            expected = None
        if self.attempt(trainer, self.market.functions.join(task.task_id), expected):
            task.members.add(address)
            task.stakes[address] += task.terms.min_stake
            self.deposit(address, task.terms.min_stake)

    def op_join(self, data):
        self.join_task(self.pick_task(data), self.pick_trainer(data))

    def op_join_several(self, data):
        task = self.pick_task(data)
        for index in data.draw(trainer_indexes(1, 3), label="trainers"):
            self.join_task(task, self.trainers[index])

    def op_leave(self, data):
        task, trainer = self.pick_task(data), self.pick_trainer(data)
        address = trainer.address
        if address not in task.members:
            expected = "TaskMarketNotJoined"
        elif task.round_open and address in task.committed:
            expected = "TaskMarketOpenCommitment"
        else:
            expected = None
        if self.attempt(trainer, self.market.functions.leave(task.task_id), expected):
            task.members.discard(address)
            self.pay(address, task.stakes[address])
            task.stakes[address] = 0

    def op_withdraw_stake(self, data):
        task, trainer = self.pick_task(data), self.pick_trainer(data)
        address = trainer.address
        if address in task.members and task.status == TaskStatus.OPEN:
            expected = "TaskMarketStillJoined"
        elif task.stakes[address] == 0:
            expected = "TaskMarketNothingToWithdraw"
        else:
            expected = None
        if self.attempt(trainer, self.market.functions.withdrawStake(task.task_id), expected):
            task.members.discard(address)
            self.pay(address, task.stakes[address])
            task.stakes[address] = 0

    # ------------------------------------------------------------ rounds

    def op_start_round(self, data):
        caller = self.outsider if sometimes(data, 10, "by outsider") else self.coordinator
        self.start_round_of(self.pick_task(data), caller)

    def start_round_of(self, task: TaskModel, caller) -> None:
        if task.status != TaskStatus.OPEN:
            expected = "TaskMarketTaskNotOpen"
        elif caller is not self.coordinator:
            expected = "TaskMarketNotCoordinator"
        elif task.round_open:
            expected = "TaskMarketWrongPhase"
        elif len(task.members) < task.terms.min_trainers:
            expected = "TaskMarketNotEnoughTrainers"
        else:
            expected = None
        model = digest(f"model-{task.task_id}-{task.current_round}")
        if self.attempt(caller, self.market.functions.startRound(task.task_id, model), expected):
            task.current_round += 1
            task.round_open = True
            task.committed, task.revealed = {}, set()

    def commit_for(self, task: TaskModel, trainer) -> None:
        address = trainer.address
        phase = self.phase(task)
        if phase != RoundPhase.COMMIT:
            expected = "TaskMarketWrongPhase"
        elif address not in task.members:
            expected = "TaskMarketNotJoined"
        elif address in task.committed:
            expected = "TaskMarketAlreadyCommitted"
        else:
            expected = None
        update, salt = digest(f"update-{address}-{task.current_round}"), os.urandom(32)
        commitment = make_commitment(task.task_id, task.current_round, address, update, salt)
        if self.attempt(trainer, self.market.functions.commit(task.task_id, commitment), expected):
            task.committed[address] = (update, salt)

    def op_commit(self, data):
        self.commit_for(self.pick_task(data), self.pick_trainer(data))

    def op_everyone_commits(self, data):
        task = self.pick_task(data)
        for trainer in self.trainers:
            if trainer.address in task.members and trainer.address not in task.committed:
                self.commit_for(task, trainer)

    def reveal_for(self, task: TaskModel, trainer, *, honest: bool) -> None:
        address = trainer.address
        phase = self.phase(task)
        if phase != RoundPhase.REVEAL:
            expected = "TaskMarketWrongPhase"
        elif address not in task.committed:
            expected = "TaskMarketNotCommitted"
        elif address in task.revealed:
            expected = "TaskMarketAlreadyRevealed"
        elif not honest:
            expected = "TaskMarketCommitmentMismatch"
        else:
            expected = None
        update, salt = task.committed.get(address, (digest("never committed"), bytes(32)))
        if not honest:
            salt = os.urandom(32)
        if self.attempt(trainer, self.market.functions.reveal(task.task_id, update, salt), expected):
            task.revealed.add(address)

    def op_reveal(self, data):
        honest = not sometimes(data, 5, "wrong salt")
        self.reveal_for(self.pick_task(data), self.pick_trainer(data), honest=honest)

    def op_most_reveal(self, data):
        task = self.pick_task(data)
        silent = data.draw(st.integers(0, 2), label="silent")
        pending = [t for t in self.trainers if t.address in task.committed and t.address not in task.revealed]
        for trainer in pending[: max(0, len(pending) - silent)]:
            self.reveal_for(task, trainer, honest=True)

    def op_advance(self, data):
        self.advance_clock(far=sometimes(data, 4, "far"))

    def advance_clock(self, far: bool) -> None:
        """Moves the clock just past the next deadline (or past all of them), never near one."""
        now = self.chain.now()
        deadlines = self.deadlines()
        upcoming = [d for d in deadlines if d > now]  # one at `now` has passed: phases test `now < deadline`
        if far or not upcoming:
            target = now + (2 * SETTLEMENT_GRACE + 2 * WINDOW if far else 100)
        else:
            target = min(upcoming) + MARGIN
        while any(target - MARGIN < d <= target + MARGIN for d in deadlines):
            target = max(d for d in deadlines if target - MARGIN < d <= target + MARGIN) + MARGIN
        self.chain.advance(target - now)

    def op_finalize(self, data):
        task = self.pick_task(data)
        caller = self.outsider if sometimes(data, 10, "by outsider") else self.coordinator
        self.finalize_task(task, data, caller)

    def finalize_task(self, task: TaskModel, data, caller) -> None:
        listed = self.draw_listed(data, task, with_revealers=True)
        phase = self.phase(task)
        slashed = 0
        if task.status != TaskStatus.OPEN:
            expected = "TaskMarketTaskNotOpen"
        elif caller is not self.coordinator:
            expected = "TaskMarketNotCoordinator"
        elif phase != RoundPhase.SETTLING:
            expected = "TaskMarketWrongPhase"
        elif len(task.revealed) < task.terms.min_trainers:
            expected = "TaskMarketQuorumNotReached"
        else:
            expected, slashed = self.slash(task, listed, only_non_revealers=False)
        rounds_left = max(task.terms.rounds - task.current_round + 1, 1)
        budget = (task.pool + slashed) // rounds_left
        over_budget = sometimes(data, 10, "over budget")
        payout = budget + 1 if over_budget else data.draw(st.sampled_from([budget // 3, budget, 0]))
        if expected is None and payout > budget:
            expected = "TaskMarketPayoutExceedsBudget"
        # cumulative earnings: what the root said before, plus this round's shares; sometimes
        # (a faulty coordinator) more than the payout
        earned = dict(task.earned)
        room = payout * (3 if sometimes(data, 5, "over-allocate") else 1)
        for index in data.draw(trainer_indexes(1, 3), label="earners"):
            share = data.draw(st.sampled_from([room, room // 2, room // 3, 1, 0]), label="share")
            share = min(share, room)
            room -= share
            address = self.trainers[index].address
            earned[address] = earned.get(address, 0) + share
        tree = RewardsTree(earned)
        fn = self.market.functions.finalizeRound(
            task.task_id, digest("new model"), tree.root, payout, digest("report"), listed
        )
        if self.attempt(caller, fn, expected):
            slashed = self.apply_slash(task, listed)
            task.pool = task.pool + slashed - payout
            task.unclaimed += payout
            task.paid_out += payout
            task.earned = earned
            self.close_round(task)

    def op_abort(self, data):
        task = self.pick_task(data)
        caller = data.draw(st.sampled_from([self.outsider, self.coordinator, *self.trainers]), label="caller")
        self.abort_task(task, data, caller)

    def abort_task(self, task: TaskModel, data, caller) -> None:
        listed = self.draw_listed(data, task, with_revealers=sometimes(data, 10, "list a revealer"))
        phase = self.phase(task)
        if task.status != TaskStatus.OPEN:
            expected = "TaskMarketTaskNotOpen"
        elif phase != RoundPhase.SETTLING:
            expected = "TaskMarketWrongPhase"
        else:
            reveal_deadline = self.market.functions.getRound(task.task_id, task.current_round).call()[1]
            quorum = len(task.revealed) >= task.terms.min_trainers
            if quorum and self.chain.now() < reveal_deadline + SETTLEMENT_GRACE:
                expected = "TaskMarketAbortNotAllowed"
            else:
                expected, _ = self.slash(task, listed, only_non_revealers=True)
        if self.attempt(caller, self.market.functions.abortRound(task.task_id, listed), expected):
            task.pool += self.apply_slash(task, listed)
            self.close_round(task)

    def progress_task(self, data) -> None:
        """Moves a task's round forward by one to three phases, with trainers that may stay
        silent or cheat: fill the quorum and start a round, commit, reveal, settle (or abort)."""
        task = self.pick_task(data)
        for _ in range(data.draw(st.integers(1, 3), label="phases")):
            if task.status != TaskStatus.OPEN:
                return
            if not task.round_open:
                outside = [t for t in self.trainers if t.address not in task.members]
                for trainer in outside[: max(0, task.terms.min_trainers - len(task.members))]:
                    self.join_task(task, trainer)
                self.start_round_of(task, self.coordinator)
                continue
            phase = self.phase(task)
            if phase == RoundPhase.COMMIT:
                silent = sometimes(data, 4, "silent committers")
                members = [t for t in self.trainers if t.address in set(task.members) - set(task.committed)]
                for trainer in members[: len(members) - silent]:
                    self.commit_for(task, trainer)
            elif phase == RoundPhase.REVEAL:
                pending = [t for t in self.trainers if t.address in set(task.committed) - task.revealed]
                silent = sometimes(data, 4, "silent revealers")
                for trainer in pending[: len(pending) - silent]:
                    self.reveal_for(task, trainer, honest=not sometimes(data, 10, "wrong salt"))
            elif phase == RoundPhase.SETTLING:
                if len(task.revealed) >= task.terms.min_trainers and not sometimes(data, 6, "abort instead"):
                    self.finalize_task(task, data, self.coordinator)
                else:
                    self.abort_task(task, data, self.outsider)
                continue
            if self.phase(task) == phase and not sometimes(data, 5, "stay in phase"):
                self.advance_clock(far=False)

    def op_progress(self, data):
        self.progress_task(data)

    def op_claim(self, data):
        task = self.pick_task(data)
        earners = [t for t in self.trainers if t.address in task.earned]
        if earners and not sometimes(data, 5, "anyone"):
            trainer = data.draw(st.sampled_from(earners), label="earner")
        else:
            trainer = self.pick_trainer(data)
        address = trainer.address
        inflate = sometimes(data, 6, "inflate")
        tree = RewardsTree(task.earned)
        if address in task.earned:
            amount, proof = task.earned[address] + inflate, tree.proof(address)
        else:
            amount, proof = data.draw(st.integers(0, 10**18), label="amount"), []
        if address not in task.earned or inflate:
            expected = "TaskMarketInvalidProof"
        elif amount <= task.claimed[address]:
            expected = "TaskMarketNothingToClaim"
        elif amount - task.claimed[address] > task.unclaimed:
            expected = "TaskMarketClaimExceedsAllocation"
        else:
            expected = None
        if self.attempt(trainer, self.market.functions.claim(task.task_id, amount, proof), expected):
            paid = amount - task.claimed[address]
            task.claimed[address] = amount
            task.unclaimed -= paid
            self.claimed_total[address] += paid
            self.pay(address, paid)

    # ------------------------------------------------------------ invariants

    @invariant()
    def market_books_balances_and_payouts_match_the_model(self):
        """One batched read of every view and balance, checked against the model."""
        market, token = self.market.functions, self.chain.token.functions
        with self.w3.batch_requests() as batch:
            batch.add(token.balanceOf(self.market.address))
            for account in self.accounts:
                batch.add(token.balanceOf(account.address))
            for task in self.tasks:
                batch.add(market.getTask(task.task_id))
                for trainer in self.trainers:
                    batch.add(market.getTrainer(task.task_id, trainer.address))
            results = iter(batch.execute())

        market_balance = next(results)
        for account in self.accounts:
            address = account.address
            assert next(results) == self.expected_balance[address], f"token balance of {address}"
            # nobody gets more from the market than the rewards it claimed plus what it put in
            # (for a task owner, plus the stakes slashed into its pool)
            earned = self.claimed_total[address] + self.slashed_to[address]
            assert self.received[address] <= earned + self.deposited[address]
        owed = 0
        for task in self.tasks:
            _, state = next(results)
            owner, status, current_round, trainer_count, pool, unclaimed = state[:6]
            assert (owner, status, current_round) == (task.owner, task.status, task.current_round)
            assert (pool, unclaimed, trainer_count) == (task.pool, task.unclaimed, len(task.members))
            assert sum(task.claimed.values()) + unclaimed == task.paid_out
            owed += pool + unclaimed
            for trainer in self.trainers:
                stake, claimed, _, _, joined = next(results)
                address = trainer.address
                expected = (task.stakes[address], task.claimed[address], address in task.members)
                assert (stake, claimed, joined) == expected, f"trainer {address} in task {task.task_id}"
                owed += stake
        # the market holds exactly the open pools + unclaimed rewards + stakes
        assert market_balance - self.market_start == owed


@pytest.fixture
def fuzz_settings() -> settings:
    explore = bool(os.environ.get("FEDMARKET_FUZZ"))
    return settings(
        max_examples=int(os.environ.get("FEDMARKET_FUZZ_EXAMPLES", 25)),
        stateful_step_count=30,
        deadline=None,
        derandomize=not explore,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def test_market_invariants_hold_under_random_operations(
    market_chain, deployment, owner, coordinator, outsider, trainers, fuzz_settings
):
    actors = [owner, *trainers[:TRAINERS]]
    for account in actors:  # unlimited allowances, inside this test's snapshot
        unlimited = market_chain.token.functions.approve(market_chain.market.address, 2**256 - 1)
        market_chain.tx(account, unlimited)

    class Machine(MarketMachine):
        context = {
            "w3": market_chain.w3,
            "deployment": deployment,
            "chain_class": type(market_chain),
            "owner": owner,
            "coordinator": coordinator,
            "outsider": outsider,
            "trainers": trainers[:TRAINERS],
        }

    run_state_machine_as_test(Machine, settings=fuzz_settings)
