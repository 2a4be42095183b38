"""Helpers for the TaskMarket contract tests: default terms, event decoding, and a driver.

`MarketDriver` takes a task through its life cycle with real transactions: `create_task` posts
one, `join` stakes trainers, `run_round` starts a round and commits/reveals for chosen trainers
(moving the clock when someone stays silent), `finalize` settles it with a cumulative rewards
tree. The fixtures built on it live in this folder's conftest.py.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace

import pytest
from eth_account.signers.local import LocalAccount
from eth_utils import event_abi_to_log_topic, is_address, to_checksum_address
from web3.logs import DISCARD

from fedmarket.deploy import ONE_TOKEN
from fedmarket.errors import ContractRevert
from fedmarket.merkle import RewardsTree
from fedmarket.protocol import RoundPhase, TaskTerms, make_commitment, new_salt

POOL = 1_000 * ONE_TOKEN
STAKE = 10 * ONE_TOKEN
SLASH_BPS = 2_500
COMMIT_WINDOW = 600
REVEAL_WINDOW = 300
SETTLEMENT_GRACE = 3600  # fedmarket.deploy.DEFAULT_SETTLEMENT_GRACE, what the session deployment uses


def digest(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


SPEC_HASH = digest("spec")
MODEL_0 = digest("model-0")


def make_terms(coordinator: str, **overrides) -> TaskTerms:
    terms = TaskTerms(
        spec_hash=SPEC_HASH,
        coordinator=coordinator,
        rounds=3,
        min_trainers=2,
        max_trainers=5,
        slash_bps=SLASH_BPS,
        commit_window=COMMIT_WINDOW,
        reveal_window=REVEAL_WINDOW,
        reward_pool=POOL,
        min_stake=STAKE,
    )
    return replace(terms, **overrides)


def events(chain, receipt, name: str) -> list[dict]:
    """Decoded `name` events of the market in `receipt` (other contracts' logs are skipped)."""
    return [log["args"] for log in chain.market.events[name]().process_receipt(receipt, errors=DISCARD)]


def event_names(chain, receipt) -> list[str]:
    """Names of the market's events in `receipt`, in log order."""
    by_topic = {
        event_abi_to_log_topic(entry): entry["name"] for entry in chain.market.abi if entry["type"] == "event"
    }
    return [
        by_topic[bytes(log["topics"][0])]
        for log in receipt["logs"]
        if log["address"] == chain.market.address and log["topics"]
    ]


def error_args(error: ContractRevert) -> dict:
    """The revert's arguments, with addresses checksummed (the decoder returns them lowercase)."""

    def plain(value):
        if isinstance(value, str) and len(value) == 42 and is_address(value):
            return to_checksum_address(value)
        return value

    return {key: plain(value) for key, value in error.args.items()}


def reverts(fn, *args, **kwargs) -> ContractRevert:
    """Runs `fn` and returns the ContractRevert it must raise."""
    with pytest.raises(ContractRevert) as excinfo:
        fn(*args, **kwargs)
    return excinfo.value


@dataclass
class Update:
    """What a trainer committed to in one round: enough to reveal it."""

    trainer: LocalAccount
    update_hash: bytes
    salt: bytes


@dataclass
class RoundRun:
    task_id: int
    round_no: int
    updates: dict[str, Update] = field(default_factory=dict)  # by trainer address
    start_receipt: dict | None = None


class MarketDriver:
    """Drives a task through its life cycle on `chain` with real transactions."""

    def __init__(self, chain, owner: LocalAccount, coordinator: LocalAccount) -> None:
        self.chain = chain
        self.owner = owner
        self.coordinator = coordinator
        self.market = chain.market
        self.token = chain.token

    # ------------------------------------------------------------ tasks and trainers

    def terms(self, **overrides) -> TaskTerms:
        return make_terms(overrides.pop("coordinator", self.coordinator.address), **overrides)

    def approve(self, account: LocalAccount, amount: int):
        return self.chain.tx(account, self.token.functions.approve(self.market.address, amount))

    def create_task(self, owner: LocalAccount | None = None, **overrides) -> tuple[int, dict]:
        """Posts a task (the owner approves the pool first); returns (taskId, receipt)."""
        owner = owner or self.owner
        terms = self.terms(**overrides)
        self.approve(owner, terms.reward_pool)
        receipt = self.chain.tx(owner, self.market.functions.createTask(terms.as_tuple()))
        (created,) = events(self.chain, receipt, "TaskCreated")
        return created["taskId"], receipt

    def join(self, task_id: int, trainers: list[LocalAccount]) -> list[dict]:
        stake = self.get_terms(task_id).min_stake
        receipts = []
        for trainer in trainers:
            self.approve(trainer, stake)
            receipts.append(self.chain.tx(trainer, self.market.functions.join(task_id)))
        return receipts

    # ------------------------------------------------------------ rounds

    def start_round(self, task_id: int, model_hash: bytes = MODEL_0) -> RoundRun:
        receipt = self.chain.tx(self.coordinator, self.market.functions.startRound(task_id, model_hash))
        round_no = self.get_state(task_id)["currentRound"]
        return RoundRun(task_id, round_no, start_receipt=receipt)

    def commit(self, run: RoundRun, trainer: LocalAccount, *, update_hash: bytes | None = None, salt=None):
        update_hash = update_hash or digest(f"update-{trainer.address}-{run.round_no}")
        update = Update(trainer, update_hash, salt or new_salt())
        commitment = make_commitment(run.task_id, run.round_no, trainer.address, update_hash, update.salt)
        receipt = self.chain.tx(trainer, self.market.functions.commit(run.task_id, commitment))
        run.updates[trainer.address] = update
        return receipt

    def reveal(self, run: RoundRun, trainer: LocalAccount, *, update_hash: bytes | None = None, salt=None):
        update = run.updates[trainer.address]
        return self.chain.tx(
            trainer,
            self.market.functions.reveal(run.task_id, update_hash or update.update_hash, salt or update.salt),
        )

    def run_round(
        self,
        task_id: int,
        *,
        committers: list[LocalAccount],
        revealers: list[LocalAccount] | None = None,
        model_hash: bytes = MODEL_0,
        to_settling: bool = True,
    ) -> RoundRun:
        """Starts a round, commits for `committers` and reveals for `revealers` (default: all
        committers). With `to_settling`, moves the clock past whichever deadline a silent
        trainer left standing, so the round ends in its Settling phase."""
        revealers = committers if revealers is None else revealers
        run = self.start_round(task_id, model_hash)
        for trainer in committers:
            self.commit(run, trainer)
        if self.phase(task_id) == RoundPhase.COMMIT:
            if not to_settling and not revealers:
                return run
            self.advance_past("commitDeadline", run)
        for trainer in revealers:
            self.reveal(run, trainer)
        if to_settling and self.phase(task_id) == RoundPhase.REVEAL:
            self.advance_past("revealDeadline", run)
        return run

    def advance_past(self, deadline: str, run: RoundRun, extra: int = 1) -> None:
        target = self.get_round(run.task_id, run.round_no)[deadline]
        now = self.chain.now()
        if now <= target:
            self.chain.advance(target - now + extra)

    def finalize(
        self,
        task_id: int,
        *,
        earnings: dict[str, int],
        payout: int,
        rejected: list[str] = (),
        new_model: bytes | None = None,
        report: bytes | None = None,
    ) -> tuple[dict, RewardsTree]:
        """Settles the current round with a tree over cumulative `earnings` (address -> amount)."""
        tree = RewardsTree(earnings)
        round_no = self.get_state(task_id)["currentRound"]
        receipt = self.chain.tx(
            self.coordinator,
            self.market.functions.finalizeRound(
                task_id,
                new_model or digest(f"model-{round_no}"),
                tree.root,
                payout,
                report or digest(f"report-{round_no}"),
                list(rejected),
            ),
        )
        return receipt, tree

    def claim(self, task_id: int, account: LocalAccount, tree: RewardsTree):
        amount = tree.earnings[account.address]
        proof = tree.proof(account.address)
        return self.chain.tx(account, self.market.functions.claim(task_id, amount, proof))

    # ------------------------------------------------------------ views

    def get_terms(self, task_id: int) -> TaskTerms:
        terms, _ = self.market.functions.getTask(task_id).call()
        return TaskTerms.from_tuple(terms)

    def get_state(self, task_id: int) -> dict:
        _, state = self.market.functions.getTask(task_id).call()
        keys = (
            "owner", "status", "currentRound", "trainerCount",
            "pool", "unclaimed", "modelHash", "rewardsRoot",
        )  # fmt: skip
        return dict(zip(keys, state, strict=True))

    def get_round(self, task_id: int, round_no: int) -> dict:
        values = self.market.functions.getRound(task_id, round_no).call()
        keys = (
            "commitDeadline", "revealDeadline", "commitCount", "revealCount",
            "closed", "aborted", "modelHash", "reportHash", "payout",
        )  # fmt: skip
        return dict(zip(keys, values, strict=True))

    def get_trainer(self, task_id: int, trainer: str) -> dict:
        values = self.market.functions.getTrainer(task_id, trainer).call()
        return dict(
            zip(("stake", "claimed", "lastCommitRound", "lastRevealRound", "joined"), values, strict=True)
        )

    def phase(self, task_id: int) -> RoundPhase:
        return RoundPhase(self.market.functions.roundPhase(task_id).call())

    def budget(self, task_id: int) -> int:
        return self.market.functions.roundBudget(task_id).call()
