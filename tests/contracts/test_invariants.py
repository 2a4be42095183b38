"""Stateful fuzzing of TaskMarket against a Python model, on the real Anvil.

Hypothesis drives an owner, a coordinator, an outsider, five trainers and four validators (one of
them also a trainer) through random operations on up to two tasks: create, join, leave,
joinAsValidator (stakes and data hashes valid or not), leaveValidator, withdrawStake, startRound,
commit, reveal (honest or with a wrong salt), commitScores and revealScores (random vectors with
flags, sometimes of the wrong length or out of range, sometimes revealed with a wrong salt), the
clock, finalizeRound (the settlement rebuilt from the model, sometimes broken), abortRound,
publishModel, claim, cancel and expire. The model predicts each call's outcome, down to the custom
error of a revert; each finalization must pay exactly what fedmarket.consensus computes from the
model's own record of the round. Trainers bound to a round that sit it out lose their seat and pay
the seat charge when it closes (or when they leave after its commit phase). After every step:

- the market holds exactly the open pools + unclaimed rewards + both roles' stakes its views report,
  and the burn address holds every slash;
- the views, and every account's token balance, match the model;
- no account ever got more from the market than its claimed rewards plus its own deposits.

Each example runs inside its own evm_snapshot/evm_revert. Examples are derandomized so the suite
is reproducible; `make fuzz` (FEDMARKET_FUZZ=1, FEDMARKET_FUZZ_EXAMPLES=200) explores new ones.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test
from web3.logs import DISCARD

from fedmarket.consensus import HARMFUL, INVALID, MAX_SCORE, UNAVAILABLE, compute_consensus
from fedmarket.errors import ContractRevert
from fedmarket.protocol import (
    BPS,
    Outcome,
    RoundPhase,
    TaskStatus,
    TaskTerms,
    make_commitment,
    make_score_commitment,
)
from testkit.contracts import BURN_ADDRESS, SETTLEMENT_GRACE, by_address, digest, events

WINDOW = 600  # every phase window, seconds
MARGIN = 30  # the clock never stops closer than this to a deadline, so wall-clock drift cannot flip a phase
MAX_TASKS = 2
TRAINERS = 5
# What a step does, repeated for weight: `progress` moves a round forward through its phases,
# the others poke at any task with any account, in any phase.
OPERATIONS = [
    *["progress"] * 12,
    *["claim"] * 3,
    *[
        "join",
        "join_several",
        "leave",
        "withdraw_stake",
        "commit",
        "everyone_commits",
        "reveal",
        "most_reveal",
    ],
    *["join_validator", "leave_validator", "commit_scores", "reveal_scores"],
    *["advance", "finalize", "abort", "publish", "start_round", "cancel_task", "create_task", "expire_task"],
]
ENTRIES = st.one_of(
    st.integers(1, 10**18), st.integers(1, 10**18), st.sampled_from([0, -5, MAX_SCORE]),
    st.sampled_from([UNAVAILABLE, INVALID, HARMFUL]),
)  # fmt: skip


def indexes(count: int, min_size: int, max_size: int):
    return st.lists(st.integers(0, count - 1), min_size=min_size, max_size=max_size, unique=True)


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
    published: bool = True  # the last finalized round's model (vacuously before any)
    model_hash: bytes = bytes(32)
    closed_at: int = 0
    pool: int = 0
    unclaimed: int = 0
    paid_out: int = 0  # allocated by finalizeRound, in total
    claimed_total: int = 0
    members: set[str] = field(default_factory=set)
    stakes: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    claimable: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    validators: set[str] = field(default_factory=set)
    v_stakes: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    v_claimable: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    data_hashes: dict[str, bytes] = field(default_factory=lambda: defaultdict(bytes))
    # this round
    bound: set[str] = field(default_factory=set)  # members at its start that neither committed nor left
    committed: dict[str, tuple[bytes, bytes]] = field(default_factory=dict)  # (update, salt)
    revealed: set[str] = field(default_factory=set)
    score_committed: dict[str, tuple[list[int], bytes]] = field(default_factory=dict)  # (scores, salt)
    score_revealed: dict[str, list[int]] = field(default_factory=dict)

    @property
    def seat_charge(self) -> int:
        return self.terms.min_stake * self.terms.slash_bps // BPS

    def reset_round(self) -> None:
        self.bound = set()
        self.committed, self.revealed = {}, set()
        self.score_committed, self.score_revealed = {}, {}

    def settlement(self) -> tuple:
        validators = by_address(list(self.score_revealed))
        return (
            by_address(list(self.revealed)),
            by_address([a for a in self.committed if a not in self.revealed]),
            validators,
            [self.score_revealed[v] for v in validators],
            by_address([v for v in self.score_committed if v not in self.score_revealed]),
        )


def task_terms(coordinator: str):
    @st.composite
    def build(draw):
        min_trainers = draw(st.integers(1, 3))
        min_validators = draw(st.integers(1, 2))
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
            min_validators=min_validators,
            max_validators=draw(st.integers(min_validators, 4)),
            validator_share_bps=draw(st.sampled_from([1_000, 0, 10_000, 3_333])),
            score_window=WINDOW,
            score_reveal_window=WINDOW,
            min_validator_stake=draw(st.sampled_from([10**19, 449, 1])),
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
        self.validator_pool = ctx["validators"]
        self.accounts = list({a.address: a for a in [self.owner, self.coordinator, self.outsider, *self.trainers,
                                                     *self.validator_pool]}.values())  # fmt: skip
        self.stakers = [a for a in self.accounts if a not in (self.owner, self.coordinator, self.outsider)]
        self.tasks: list[TaskModel] = []
        self.market_start = self.chain.balance(self.market.address)
        self.burn_start = self.chain.balance(BURN_ADDRESS)
        self.burned = 0
        self.expected_balance = {a.address: self.chain.balance(a.address) for a in self.accounts}
        self.deposited: dict[str, int] = defaultdict(int)
        self.received: dict[str, int] = defaultdict(int)
        self.claimed_total: dict[str, int] = defaultdict(int)

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

    def pick_validator(self, data):
        return self.validator_pool[data.draw(st.integers(0, len(self.validator_pool) - 1), label="validator")]

    def round_view(self, task: TaskModel):
        return self.market.functions.getRound(task.task_id, task.current_round).call()

    def deadlines(self) -> list[int]:
        found = []
        for task in self.tasks:
            if task.round_open:
                found += list(self.round_view(task)[:4])
            elif task.status == TaskStatus.OPEN and task.current_round:
                found.append(task.closed_at + SETTLEMENT_GRACE)
        return found

    def close_round(self, task: TaskModel, receipt, *, finalized: bool) -> None:
        task.round_open = False
        task.published = not finalized
        task.closed_at = self.chain.w3.eth.get_block(receipt["blockNumber"])["timestamp"]
        task.reset_round()
        if task.current_round == task.terms.rounds:
            refund, task.pool = task.pool, 0
            task.status = TaskStatus.COMPLETED
            self.pay(task.owner, refund)

    def unseat(self, task: TaskModel) -> int:
        """The closing settlement frees the seats of the bound trainers that did not commit; returns
        their charges, burned with the slashes."""
        charged = 0
        for address in task.bound:
            task.members.discard(address)
            task.stakes[address] -= task.seat_charge
            charged += task.seat_charge
        task.bound = set()
        return charged

    def slash_trainer(self, task: TaskModel, address: str) -> int:
        amount = task.stakes[address] * task.terms.slash_bps // BPS
        task.stakes[address] -= amount
        task.members.discard(address)
        return amount

    def slash_validator(self, task: TaskModel, address: str) -> int:
        amount = task.v_stakes[address] * task.terms.slash_bps // BPS
        task.v_stakes[address] -= amount
        task.validators.discard(address)
        return amount

    def list_errors(self, task: TaskModel, non_revealers: list[str], silent: list[str]) -> str | None:
        """The error _slashCommitters and _slashSilentValidators raise for these lists, if any."""
        seen: set[str] = set()
        for address in non_revealers:
            if address not in task.committed:
                return "TaskMarketNotCommitted"
            if address in task.revealed:
                return "TaskMarketRevealed"
            if address in seen:
                return "TaskMarketAlreadyRejected"
            seen.add(address)
        if len(non_revealers) != len(task.committed) - len(task.revealed):
            return "TaskMarketNonRevealersMismatch"
        seen = set()
        for address in silent:
            if address not in task.score_committed or address in task.score_revealed or address in seen:
                return "TaskMarketNotSilent"
            seen.add(address)
        if len(silent) != len(task.score_committed) - len(task.score_revealed):
            return "TaskMarketSilentValidatorsMismatch"
        return None

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
        for index in data.draw(indexes(TRAINERS, 0, TRAINERS), label="joiners"):
            self.join_task(self.tasks[0], self.trainers[index])
        for index in data.draw(indexes(len(self.validator_pool), 0, 2), label="validators"):
            self.join_validator(self.tasks[0], self.validator_pool[index], data)

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
        elif self.chain.now() < task.closed_at + SETTLEMENT_GRACE:
            expected = "TaskMarketNotExpired"
        else:
            expected = None
        if self.attempt(self.outsider, self.market.functions.expireTask(task.task_id), expected):
            self.pay(task.owner, task.pool)
            task.pool, task.status = 0, TaskStatus.EXPIRED

    # ------------------------------------------------------------ trainers and validators

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
        for index in data.draw(indexes(TRAINERS, 1, 3), label="trainers"):
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
        # bound and not committed: free in the commit phase, charged after it
        charge = task.seat_charge if address in task.bound and self.phase(task) != RoundPhase.COMMIT else 0
        if self.attempt(trainer, self.market.functions.leave(task.task_id), expected):
            task.members.discard(address)
            task.bound.discard(address)
            self.pay(address, task.stakes[address] - charge)
            self.burned += charge
            task.stakes[address] = 0

    def join_validator(self, task: TaskModel, validator, data) -> None:
        address = validator.address
        minimum = task.terms.min_validator_stake
        stake = minimum + data.draw(st.sampled_from([0, 1, minimum]), label="extra stake")
        if sometimes(data, 15, "stake too low"):
            stake = minimum - 1
        data_hash = bytes(32) if sometimes(data, 15, "no data hash") else digest(f"split-{address}-{stake}")
        if task.status != TaskStatus.OPEN:
            expected = "TaskMarketTaskNotOpen"
        elif address in task.validators:
            expected = "TaskMarketAlreadyValidator"
        elif len(task.validators) >= task.terms.max_validators:
            expected = "TaskMarketValidatorsFull"
        elif stake < minimum:
            expected = "TaskMarketStakeTooLow"
        elif data_hash == bytes(32):
            expected = "TaskMarketInvalidDataHash"
        else:
            expected = None
        fn = self.market.functions.joinAsValidator(task.task_id, data_hash, stake)
        if self.attempt(validator, fn, expected):
            task.validators.add(address)
            task.v_stakes[address] += stake
            task.data_hashes[address] = data_hash
            self.deposit(address, stake)

    def op_join_validator(self, data):
        self.join_validator(self.pick_task(data), self.pick_validator(data), data)

    def op_leave_validator(self, data):
        task, validator = self.pick_task(data), self.pick_validator(data)
        address = validator.address
        if address not in task.validators:
            expected = "TaskMarketNotValidator"
        elif task.round_open and address in task.score_committed:
            expected = "TaskMarketOpenScoreCommitment"
        else:
            expected = None
        if self.attempt(validator, self.market.functions.leaveValidator(task.task_id), expected):
            task.validators.discard(address)
            self.pay(address, task.v_stakes[address])
            task.v_stakes[address] = 0

    def op_withdraw_stake(self, data):
        task = self.pick_task(data)
        account = data.draw(st.sampled_from(self.stakers), label="account")
        address = account.address
        joined = address in task.members or address in task.validators
        if joined and task.status == TaskStatus.OPEN:
            expected = "TaskMarketStillJoined"
        elif task.stakes[address] + task.v_stakes[address] == 0:
            expected = "TaskMarketNothingToWithdraw"
        else:
            expected = None
        if self.attempt(account, self.market.functions.withdrawStake(task.task_id), expected):
            task.members.discard(address)
            task.validators.discard(address)
            self.pay(address, task.stakes[address] + task.v_stakes[address])
            task.stakes[address] = task.v_stakes[address] = 0

    def op_claim(self, data):
        task = self.pick_task(data)
        earners = [a for a in self.stakers if task.claimable[a.address] + task.v_claimable[a.address]]
        if earners and not sometimes(data, 5, "anyone"):
            account = data.draw(st.sampled_from(earners), label="earner")
        else:
            account = data.draw(st.sampled_from(self.stakers), label="account")
        address = account.address
        amount = task.claimable[address] + task.v_claimable[address]
        expected = None if amount else "TaskMarketNothingToClaim"
        if self.attempt(account, self.market.functions.claim(task.task_id), expected):
            task.claimable[address] = task.v_claimable[address] = 0
            task.unclaimed -= amount
            task.claimed_total += amount
            self.claimed_total[address] += amount
            self.pay(address, amount)

    # ------------------------------------------------------------ rounds

    def op_start_round(self, data):
        caller = self.outsider if sometimes(data, 10, "by outsider") else self.coordinator
        self.start_round_of(self.pick_task(data), caller, data)

    def start_round_of(self, task: TaskModel, caller, data) -> None:
        model = task.model_hash if task.current_round else digest(f"model-{task.task_id}")
        wrong_model = task.current_round and sometimes(data, 12, "wrong model")
        if wrong_model:
            model = digest("some other model")
        if task.status != TaskStatus.OPEN:
            expected = "TaskMarketTaskNotOpen"
        elif caller is not self.coordinator:
            expected = "TaskMarketNotCoordinator"
        elif task.round_open:
            expected = "TaskMarketWrongPhase"
        elif not task.published:
            expected = "TaskMarketModelNotPublished"
        elif wrong_model:
            expected = "TaskMarketModelMismatch"
        elif len(task.members) < task.terms.min_trainers:
            expected = "TaskMarketNotEnoughTrainers"
        elif len(task.validators) < task.terms.min_validators:
            expected = "TaskMarketNotEnoughValidators"
        else:
            expected = None
        if self.attempt(caller, self.market.functions.startRound(task.task_id, model), expected):
            task.current_round += 1
            task.round_open = True
            task.model_hash = model
            task.reset_round()
            task.bound = set(task.members)

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
            task.bound.discard(address)

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

    def commit_scores_for(self, task: TaskModel, validator, data) -> None:
        address = validator.address
        phase = self.phase(task)
        if phase != RoundPhase.SCORE_COMMIT:
            expected = "TaskMarketWrongPhase"
        elif address not in task.validators:
            expected = "TaskMarketNotValidator"
        elif address in task.score_committed:
            expected = "TaskMarketScoresAlreadyCommitted"
        else:
            expected = None
        count = len(task.revealed) + (1 if sometimes(data, 30, "wrong length") else 0)
        scores = data.draw(st.lists(ENTRIES, min_size=count, max_size=count), label="scores")
        if scores and sometimes(data, 30, "out of range"):
            scores[data.draw(st.integers(0, len(scores) - 1), label="where")] = MAX_SCORE + 1
        salt = os.urandom(32)
        commitment = make_score_commitment(task.task_id, task.current_round, address, scores, salt)
        if self.attempt(validator, self.market.functions.commitScores(task.task_id, commitment), expected):
            task.score_committed[address] = (scores, salt)

    def op_commit_scores(self, data):
        self.commit_scores_for(self.pick_task(data), self.pick_validator(data), data)

    def reveal_scores_for(self, task: TaskModel, validator, *, honest: bool) -> None:
        address = validator.address
        phase = self.phase(task)
        scores, salt = task.score_committed.get(address, ([], bytes(32)))
        out_of_range = [i for i, e in enumerate(scores) if e > MAX_SCORE or -MAX_SCORE > e > HARMFUL]
        if phase != RoundPhase.SCORE_REVEAL:
            expected = "TaskMarketWrongPhase"
        elif address not in task.score_committed:
            expected = "TaskMarketScoresNotCommitted"
        elif address in task.score_revealed:
            expected = "TaskMarketScoresAlreadyRevealed"
        elif len(scores) != len(task.revealed):
            expected = "TaskMarketScoreCountMismatch"
        elif out_of_range:
            expected = "TaskMarketScoreOutOfRange"
        elif not honest:
            expected = "TaskMarketScoreCommitmentMismatch"
        else:
            expected = None
        if not honest:
            salt = os.urandom(32)
        fn = self.market.functions.revealScores(task.task_id, scores, salt)
        if self.attempt(validator, fn, expected):
            task.score_revealed[address] = scores

    def op_reveal_scores(self, data):
        honest = not sometimes(data, 5, "wrong salt")
        self.reveal_scores_for(self.pick_task(data), self.pick_validator(data), honest=honest)

    def op_advance(self, data):
        self.advance_clock(far=sometimes(data, 4, "far"))

    def advance_clock(self, far: bool) -> None:
        """Moves the clock just past the next deadline (or past all of them), never near one."""
        now = self.chain.now()
        deadlines = self.deadlines()
        upcoming = [d for d in deadlines if d > now]  # one at `now` has passed: phases test `now < deadline`
        if far or not upcoming:
            target = now + (2 * SETTLEMENT_GRACE + 4 * WINDOW if far else 100)
        else:
            target = min(upcoming) + MARGIN
        while any(target - MARGIN < d <= target + MARGIN for d in deadlines):
            target = max(d for d in deadlines if target - MARGIN < d <= target + MARGIN) + MARGIN
        self.chain.advance(target - now)

    # ------------------------------------------------------------ settlement

    def op_finalize(self, data):
        caller = data.draw(st.sampled_from([self.outsider, self.coordinator, *self.trainers]), label="caller")
        self.finalize_task(self.pick_task(data), data, caller)

    def finalize_task(self, task: TaskModel, data, caller) -> None:
        settlement = task.settlement()
        trainers, non_revealers, validators, scores, silent = settlement
        broken = data.draw(
            st.sampled_from(["none"] * 12 + ["drop revealer", "drop non-revealer", "list revealer",
                                            "swap validators", "change score", "drop silent"]),
            label="broken settlement",
        )  # fmt: skip
        trainers, non_revealers, validators, scores, silent = (
            list(trainers), list(non_revealers), list(validators), [list(v) for v in scores], list(silent),
        )  # fmt: skip
        phase = self.phase(task)
        if task.status != TaskStatus.OPEN:
            expected = "TaskMarketTaskNotOpen"
        elif phase != RoundPhase.SETTLING:
            expected = "TaskMarketWrongPhase"
        elif len(task.revealed) < task.terms.min_trainers:
            expected = "TaskMarketQuorumNotReached"
        elif len(task.score_revealed) < task.terms.min_validators:
            expected = "TaskMarketValidatorQuorumNotReached"
        elif broken == "drop revealer" and trainers:
            trainers.pop()
            expected = "TaskMarketRevealersMismatch"
        elif broken == "swap validators" and len(validators) > 1:
            validators[0], validators[1], scores[0], scores[1] = (
                validators[1],
                validators[0],
                scores[1],
                scores[0],
            )
            expected = "TaskMarketUnsorted"
        elif broken == "change score" and validators and scores[0]:
            scores[0][0] = scores[0][0] + 1 if scores[0][0] < MAX_SCORE else 0
            expected = "TaskMarketScoresMismatch"
        elif broken == "drop non-revealer" and non_revealers:
            non_revealers.pop()
            expected = "TaskMarketNonRevealersMismatch"
        elif broken == "list revealer" and trainers:
            non_revealers.append(trainers[0])
            expected = "TaskMarketRevealed"
        elif broken == "drop silent" and silent:
            silent.pop()
            expected = "TaskMarketSilentValidatorsMismatch"
        else:
            expected = None
        budget = task.pool // max(task.terms.rounds - task.current_round + 1, 1)
        fn = self.market.functions.finalizeRound(
            task.task_id, (trainers, non_revealers, validators, scores, silent)
        )
        receipt = self.attempt(caller, fn, expected)
        if not receipt:
            return
        consensus = compute_consensus(
            trainers=trainers, validators=validators, stakes=[task.v_stakes[v] for v in validators],
            scores=scores, budget=budget, validator_share_bps=task.terms.validator_share_bps,
        )  # fmt: skip
        # the chain paid exactly what the mirror computes from the model's own record
        settled = events(self.chain, receipt, "TrainerSettled")
        assert [(e["trainer"], e["outcome"], e["consensus"], e["payout"]) for e in settled] == [
            (r.trainer, r.outcome, r.consensus, r.payout) for r in consensus.trainers
        ]
        scored = events(self.chain, receipt, "ValidatorSettled")
        assert [(e["validator"], e["agreement"], e["payout"]) for e in scored] == [
            (r.validator, r.agreement, r.payout) for r in consensus.validators
        ]
        for result in consensus.trainers:
            task.claimable[result.trainer] += result.payout
        for result in consensus.validators:
            task.v_claimable[result.validator] += result.payout
        payout = consensus.trainer_payout + consensus.validator_payout
        burned = sum(
            self.slash_trainer(task, r.trainer) for r in consensus.trainers if r.outcome == Outcome.REJECTED
        )
        burned += sum(self.slash_trainer(task, a) for a in non_revealers)
        burned += sum(self.slash_validator(task, v) for v in silent)
        burned += self.unseat(task)
        (finalized,) = events(self.chain, receipt, "RoundFinalized")
        assert (finalized["trainerPayout"], finalized["validatorPayout"], finalized["burned"]) == (
            consensus.trainer_payout, consensus.validator_payout, burned,
        )  # fmt: skip
        self.burned += burned
        task.pool -= payout
        task.unclaimed += payout
        task.paid_out += payout
        self.close_round(task, receipt, finalized=True)

    def op_abort(self, data):
        task = self.pick_task(data)
        caller = data.draw(st.sampled_from([self.outsider, self.coordinator, *self.trainers]), label="caller")
        self.abort_task(task, data, caller)

    def abort_task(self, task: TaskModel, data, caller) -> None:
        _, non_revealers, _, _, silent = task.settlement()
        if non_revealers and sometimes(data, 8, "drop a non-revealer"):
            non_revealers.pop()
        if task.revealed and sometimes(data, 10, "list a revealer"):
            non_revealers.append(sorted(task.revealed)[0])
        if silent and sometimes(data, 8, "drop a silent validator"):
            silent.pop()
        if sometimes(data, 10, "stray"):
            non_revealers.append(self.pick_trainer(data).address)
        phase = self.phase(task)
        if task.status != TaskStatus.OPEN:
            expected = "TaskMarketTaskNotOpen"
        elif phase != RoundPhase.SETTLING:
            expected = "TaskMarketWrongPhase"
        elif (
            len(task.revealed) >= task.terms.min_trainers
            and len(task.score_revealed) >= task.terms.min_validators
        ):
            expected = "TaskMarketAbortNotAllowed"
        else:
            expected = self.list_errors(task, non_revealers, silent)
        fn = self.market.functions.abortRound(task.task_id, non_revealers, silent)
        receipt = self.attempt(caller, fn, expected)
        if receipt:
            burned = sum(self.slash_trainer(task, a) for a in non_revealers)
            burned += sum(self.slash_validator(task, v) for v in silent)
            burned += self.unseat(task)
            assert events(self.chain, receipt, "RoundAborted")[0]["burned"] == burned
            self.burned += burned
            self.close_round(task, receipt, finalized=False)

    def op_publish(self, data):
        task = self.pick_task(data)
        caller = self.outsider if sometimes(data, 8, "by outsider") else self.coordinator
        self.publish_model(task, caller)

    def publish_model(self, task: TaskModel, caller) -> None:
        finalized = task.current_round and not task.round_open and self.phase(task) == RoundPhase.FINALIZED
        if task.status not in (TaskStatus.OPEN, TaskStatus.COMPLETED):
            expected = "TaskMarketTaskNotOpen"
        elif caller is not self.coordinator:
            expected = "TaskMarketNotCoordinator"
        elif not finalized:
            expected = "TaskMarketWrongPhase"
        elif task.published:
            expected = "TaskMarketModelAlreadyPublished"
        else:
            expected = None
        model = digest(f"aggregate-{task.task_id}-{task.current_round}")
        fn = self.market.functions.publishModel(task.task_id, model, digest("report"))
        if self.attempt(caller, fn, expected):
            task.published = True
            task.model_hash = model

    def progress_task(self, data) -> None:
        """Moves a task's round forward by one to four phases, with participants that may stay
        silent or cheat: fill the quorums and start a round, commit, reveal, score, settle (or
        abort), publish."""
        task = self.pick_task(data)
        for _ in range(data.draw(st.integers(1, 4), label="phases")):
            if task.status != TaskStatus.OPEN:
                return
            if not task.round_open:
                if not task.published:
                    self.publish_model(task, self.coordinator)
                    continue
                outside = [t for t in self.trainers if t.address not in task.members]
                for trainer in outside[: max(0, task.terms.min_trainers - len(task.members))]:
                    self.join_task(task, trainer)
                outside = [v for v in self.validator_pool if v.address not in task.validators]
                for validator in outside[: max(0, task.terms.min_validators - len(task.validators))]:
                    self.join_validator(task, validator, data)
                self.start_round_of(task, self.coordinator, data)
                continue
            phase = self.phase(task)
            if phase == RoundPhase.COMMIT:
                silent = sometimes(data, 6, "silent committers")
                members = [t for t in self.trainers if t.address in task.members - set(task.committed)]
                for trainer in members[: len(members) - silent]:
                    self.commit_for(task, trainer)
            elif phase == RoundPhase.REVEAL:
                pending = [t for t in self.trainers if t.address in set(task.committed) - task.revealed]
                silent = sometimes(data, 6, "silent revealers")
                for trainer in pending[: len(pending) - silent]:
                    self.reveal_for(task, trainer, honest=not sometimes(data, 15, "wrong salt"))
            elif phase == RoundPhase.SCORE_COMMIT:
                silent = sometimes(data, 6, "silent score committers")
                pending = [
                    v for v in self.validator_pool if v.address in task.validators - set(task.score_committed)
                ]
                for validator in pending[: len(pending) - silent]:
                    self.commit_scores_for(task, validator, data)
            elif phase == RoundPhase.SCORE_REVEAL:
                pending = [v for v in self.validator_pool if v.address in set(task.score_committed)
                           and v.address not in task.score_revealed]  # fmt: skip
                silent = sometimes(data, 6, "silent score revealers")
                for validator in pending[: len(pending) - silent]:
                    self.reveal_scores_for(task, validator, honest=not sometimes(data, 15, "wrong salt"))
            elif phase == RoundPhase.SETTLING:
                quorum = (
                    len(task.revealed) >= task.terms.min_trainers
                    and len(task.score_revealed) >= task.terms.min_validators
                )
                if quorum and not sometimes(data, 8, "abort instead"):
                    self.finalize_task(task, data, self.outsider)
                else:
                    self.abort_task(task, data, self.outsider)
                continue
            if self.phase(task) == phase and not sometimes(data, 5, "stay in phase"):
                self.advance_clock(far=False)

    def op_progress(self, data):
        self.progress_task(data)

    # ------------------------------------------------------------ invariants

    @invariant()
    def market_books_balances_and_payouts_match_the_model(self):
        """One batched read of every view and balance, checked against the model."""
        market, token = self.market.functions, self.chain.token.functions
        with self.w3.batch_requests() as batch:
            batch.add(token.balanceOf(self.market.address))
            batch.add(token.balanceOf(BURN_ADDRESS))
            for account in self.accounts:
                batch.add(token.balanceOf(account.address))
            for task in self.tasks:
                batch.add(market.getTask(task.task_id))
                for account in self.stakers:
                    batch.add(market.getTrainer(task.task_id, account.address))
                    batch.add(market.getValidator(task.task_id, account.address))
            results = iter(batch.execute())

        market_balance = next(results)
        assert next(results) - self.burn_start == self.burned, "burned tokens"
        for account in self.accounts:
            address = account.address
            assert next(results) == self.expected_balance[address], f"token balance of {address}"
            # nobody gets more from the market than the rewards it claimed plus what it put in
            assert self.received[address] <= self.claimed_total[address] + self.deposited[address]
        owed = 0
        for task in self.tasks:
            _, state = next(results)
            owner, status, current_round, trainer_count, validator_count, pool, unclaimed = state[:7]
            assert (owner, status, current_round) == (task.owner, task.status, task.current_round)
            assert (pool, unclaimed) == (task.pool, task.unclaimed)
            assert (trainer_count, validator_count) == (len(task.members), len(task.validators))
            assert task.claimed_total + unclaimed == task.paid_out
            owed += pool + unclaimed
            for account in self.stakers:
                address = account.address
                stake, claimable, _, _, joined = next(results)
                assert (stake, claimable, joined) == (
                    task.stakes[address], task.claimable[address], address in task.members,
                ), f"trainer {address} in task {task.task_id}"  # fmt: skip
                v_stake, v_claimable, _, _, v_joined, data_hash = next(results)
                assert (v_stake, v_claimable, v_joined) == (
                    task.v_stakes[address], task.v_claimable[address], address in task.validators,
                ), f"validator {address} in task {task.task_id}"  # fmt: skip
                assert data_hash == task.data_hashes[address] or not task.data_hashes[address]
                owed += stake + v_stake
        # the market holds exactly the open pools + unclaimed rewards + stakes
        assert market_balance - self.market_start == owed


@pytest.fixture
def fuzz_settings() -> settings:
    explore = bool(os.environ.get("FEDMARKET_FUZZ"))
    return settings(
        max_examples=int(os.environ.get("FEDMARKET_FUZZ_EXAMPLES", 8)),  # `make fuzz` runs 200
        stateful_step_count=35,
        deadline=None,
        derandomize=not explore,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def test_market_invariants_hold_under_random_operations(
    market_chain, deployment, owner, coordinator, outsider, trainers, validators, fuzz_settings
):
    pool = [*validators, trainers[0]]  # trainers[0] may take both roles
    actors = [owner, *trainers[:TRAINERS], *validators]
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
            "validators": pool,
        }

    run_state_machine_as_test(Machine, settings=fuzz_settings)
