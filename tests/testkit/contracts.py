"""Helpers for the TaskMarket contract tests: default terms, event decoding, and a driver.

`MarketDriver` takes a task through its life cycle with real transactions: `create_task` posts
one, `join` and `join_validators` stake trainers and validators, `run_round` starts a round, has
the chosen trainers commit and reveal and the chosen validators commit and reveal score vectors
(moving the clock when someone stays silent), `settlement` rebuilds the round's Settlement from
its events, `finalize` / `abort` close it and `publish` publishes its model. `expected` is what
`fedmarket.consensus` says the finalization must pay. The fixtures built on it live in
tests/contracts/conftest.py.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import pytest
from eth_account.signers.local import LocalAccount
from eth_utils import event_abi_to_log_topic, is_address, to_checksum_address
from web3.logs import DISCARD

from fedmarket.consensus import Consensus, compute_consensus
from fedmarket.deploy import ONE_TOKEN
from fedmarket.errors import ContractRevert
from fedmarket.protocol import RoundPhase, TaskTerms, make_commitment, make_score_commitment, new_salt

POOL = 1_000 * ONE_TOKEN
STAKE = 10 * ONE_TOKEN
VALIDATOR_STAKE = 20 * ONE_TOKEN
SLASH_BPS = 2_500
SEAT_CHARGE = STAKE * SLASH_BPS // 10_000  # what a bound trainer that does not commit pays
VALIDATOR_SHARE_BPS = 1_000
COMMIT_WINDOW = 600
REVEAL_WINDOW = 300
SCORE_WINDOW = 400
SCORE_REVEAL_WINDOW = 200
SETTLEMENT_GRACE = 3600  # fedmarket.deploy.DEFAULT_SETTLEMENT_GRACE, what the session deployment uses
SCORE = 10**18  # a plain positive score
MAX_TRAINERS = 256  # TaskMarket.MAX_TRAINERS
MAX_VALIDATORS = 16  # TaskMarket.MAX_VALIDATORS
BURN_ADDRESS = "0x000000000000000000000000000000000000dEaD"

# Which deadline of getRound() closes which phase.
DEADLINES = {
    RoundPhase.COMMIT: "commitDeadline",
    RoundPhase.REVEAL: "revealDeadline",
    RoundPhase.SCORE_COMMIT: "scoreCommitDeadline",
    RoundPhase.SCORE_REVEAL: "scoreRevealDeadline",
}
STATE_KEYS = (
    "owner", "status", "currentRound", "trainerCount", "validatorCount", "pool", "unclaimed", "modelHash",
)  # fmt: skip
ROUND_KEYS = (
    "commitDeadline", "revealDeadline", "scoreCommitDeadline", "scoreRevealDeadline",
    "commitCount", "revealCount", "scoreCommitCount", "scoreRevealCount",
    "closed", "aborted", "modelPublished", "closedAt", "payout", "modelHash", "newModelHash", "reportHash",
)  # fmt: skip
TRAINER_KEYS = ("stake", "claimable", "lastCommitRound", "lastRevealRound", "joined")
VALIDATOR_KEYS = ("stake", "claimable", "lastScoreCommitRound", "lastScoreRevealRound", "joined", "dataHash")


def digest(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


SPEC_HASH = digest("spec")
MODEL_0 = digest("model-0")
DATA_HASH = digest("validation split")


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
        min_validators=1,
        max_validators=4,
        validator_share_bps=VALIDATOR_SHARE_BPS,
        score_window=SCORE_WINDOW,
        score_reveal_window=SCORE_REVEAL_WINDOW,
        min_validator_stake=VALIDATOR_STAKE,
    )
    return replace(terms, **overrides)


def by_address(addresses: Sequence[str]) -> list[str]:
    """Addresses in the contract's (numeric) ascending order."""
    return sorted(addresses, key=lambda address: int(address, 16))


def events(chain, receipt, name: str) -> list[dict]:
    """Decoded `name` events of the market in `receipt` (other contracts' logs are skipped)."""
    return [dict(log["args"]) for log in chain.market.events[name]().process_receipt(receipt, errors=DISCARD)]


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
class Vote:
    """What a validator committed to in one round: its score vector and salt."""

    validator: LocalAccount
    scores: list[int]
    salt: bytes


# A round's score vectors: by validator address, or a function (validator, revealers) -> vector.
Scores = dict[str, list[int]] | Callable[[str, list[str]], list[int]] | None


@dataclass
class RoundRun:
    task_id: int
    round_no: int
    updates: dict[str, Update] = field(default_factory=dict)  # by trainer address
    votes: dict[str, Vote] = field(default_factory=dict)  # by validator address
    start_receipt: dict | None = None
    revealed: list[str] | None = None  # the revealers, once the reveal phase is over

    @property
    def start_block(self) -> int:
        return self.start_receipt["blockNumber"] if self.start_receipt else 0


class MarketDriver:
    """Drives a task through its life cycle on `chain` with real transactions."""

    def __init__(self, chain, owner: LocalAccount, coordinator: LocalAccount) -> None:
        self.chain = chain
        self.owner = owner
        self.coordinator = coordinator
        self.market = chain.market
        self.token = chain.token
        self.validators: dict[int, list[LocalAccount]] = {}  # joined through this driver, by task
        self.runs: dict[int, RoundRun] = {}  # latest round started through this driver, by task

    # ------------------------------------------------------------ tasks, trainers, validators

    def terms(self, **overrides) -> TaskTerms:
        return make_terms(overrides.pop("coordinator", self.coordinator.address), **overrides)

    def approve(self, account: LocalAccount, amount: int):
        """Approves `amount` for the market unless the allowance already covers it (a test that
        approved an unlimited allowance saves a transaction per stake)."""
        if self.token.functions.allowance(account.address, self.market.address).call() >= amount:
            return None
        return self.chain.tx(account, self.token.functions.approve(self.market.address, amount))

    def create_task(self, owner: LocalAccount | None = None, **overrides) -> tuple[int, dict]:
        """Posts a task (the owner approves the pool first); returns (taskId, receipt)."""
        owner = owner or self.owner
        terms = self.terms(**overrides)
        self.approve(owner, terms.reward_pool)
        receipt = self.chain.tx(owner, self.market.functions.createTask(terms.as_tuple()))
        (created,) = events(self.chain, receipt, "TaskCreated")
        return created["taskId"], receipt

    def join(self, task_id: int, trainers: Sequence[LocalAccount]) -> list[dict]:
        stake = self.get_terms(task_id).min_stake
        receipts = []
        for trainer in trainers:
            self.approve(trainer, stake)
            receipts.append(self.chain.tx(trainer, self.market.functions.join(task_id)))
        return receipts

    def join_validators(
        self,
        task_id: int,
        validators: Sequence[LocalAccount],
        *,
        stake: int | Sequence[int] | None = None,
        data_hash: bytes | None = None,
    ) -> list[dict]:
        """Stakes each validator (the terms' minimum unless `stake` says otherwise, one per
        validator or the same for all) on its own data hash (or `data_hash`)."""
        minimum = self.get_terms(task_id).min_validator_stake
        stakes = [stake or minimum] * len(validators) if not isinstance(stake, Sequence) else list(stake)
        receipts = []
        for validator, amount in zip(validators, stakes, strict=True):
            self.approve(validator, amount)
            data = data_hash or digest(f"split-{validator.address}")
            receipts.append(
                self.chain.tx(validator, self.market.functions.joinAsValidator(task_id, data, amount))
            )
            self.validators.setdefault(task_id, []).append(validator)
        return receipts

    def joined_validators(self, task_id: int) -> list[LocalAccount]:
        """The validators joined through this driver that are still joined."""
        return [
            v for v in self.validators.get(task_id, []) if self.get_validator(task_id, v.address)["joined"]
        ]

    # ------------------------------------------------------------ rounds

    def start_round(self, task_id: int, model_hash: bytes | None = None) -> RoundRun:
        """Starts the next round: on `model_hash`, else MODEL_0 for the first round and the task's
        current model afterwards."""
        if model_hash is None:
            state = self.get_state(task_id)
            model_hash = state["modelHash"] if state["currentRound"] else MODEL_0
        receipt = self.chain.tx(self.coordinator, self.market.functions.startRound(task_id, model_hash))
        round_no = self.get_state(task_id)["currentRound"]
        run = RoundRun(task_id, round_no, start_receipt=receipt)
        self.runs[task_id] = run
        return run

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

    def revealers(self, run: RoundRun) -> list[str]:
        """The round's revealers, ascending: the trainers a score vector scores, in order."""
        if run.revealed is not None:
            return run.revealed
        revealed = by_address([e["trainer"] for e in self._round_events(run, "Revealed")])
        if self.phase(run.task_id) not in (RoundPhase.COMMIT, RoundPhase.REVEAL):
            run.revealed = revealed  # final
        return revealed

    def vector(self, run: RoundRun, validator: str, scores: Scores = None) -> list[int]:
        revealers = self.revealers(run)
        if scores is None:
            return [SCORE] * len(revealers)
        if callable(scores):
            return list(scores(validator, revealers))
        return list(scores[validator])

    def commit_scores(self, run: RoundRun, validator: LocalAccount, scores: Sequence[int], *, salt=None):
        vote = Vote(validator, list(scores), salt or new_salt())
        commitment = make_score_commitment(
            run.task_id, run.round_no, validator.address, vote.scores, vote.salt
        )
        receipt = self.chain.tx(validator, self.market.functions.commitScores(run.task_id, commitment))
        run.votes[validator.address] = vote
        return receipt

    def reveal_scores(self, run: RoundRun, validator: LocalAccount, *, scores=None, salt=None):
        vote = run.votes[validator.address]
        fn = self.market.functions.revealScores(
            run.task_id, list(vote.scores if scores is None else scores), salt or vote.salt
        )
        return self.chain.tx(validator, fn)

    def run_round(
        self,
        task_id: int,
        *,
        committers: Sequence[LocalAccount],
        revealers: Sequence[LocalAccount] | None = None,
        scores: Scores = None,
        scorers: Sequence[LocalAccount] | None = None,
        score_revealers: Sequence[LocalAccount] | None = None,
        model_hash: bytes | None = None,
        stop: RoundPhase = RoundPhase.SETTLING,
    ) -> RoundRun:
        """Starts a round and plays it through phase `stop`: `committers` commit, `revealers`
        (default: all committers) reveal, `scorers` (default: the validators joined through this
        driver) commit `scores` (default: SCORE for every revealer) and `score_revealers` (default:
        all scorers) reveal them, each phase's participants only up to `stop`. The clock moves past
        the deadline of any phase before `stop` that a silent participant left open, never past
        `stop`'s own: the round ends in phase `stop`, or a later one an early close led to."""
        order = [RoundPhase.COMMIT, RoundPhase.REVEAL, RoundPhase.SCORE_COMMIT, RoundPhase.SCORE_REVEAL]
        order.append(RoundPhase.SETTLING)
        revealers = list(committers) if revealers is None else list(revealers)
        run = self.start_round(task_id, model_hash)
        for trainer in committers:
            self.commit(run, trainer)
        if not self._move_on(run, RoundPhase.COMMIT, stop, order):
            return run
        for trainer in revealers:
            self.reveal(run, trainer)
        if not self._move_on(run, RoundPhase.REVEAL, stop, order):
            return run
        scorers = self.joined_validators(task_id) if scorers is None else list(scorers)
        score_revealers = list(scorers) if score_revealers is None else list(score_revealers)
        for validator in scorers:
            self.commit_scores(run, validator, self.vector(run, validator.address, scores))
        if not self._move_on(run, RoundPhase.SCORE_COMMIT, stop, order):
            return run
        for validator in score_revealers:
            self.reveal_scores(run, validator)
        self._move_on(run, RoundPhase.SCORE_REVEAL, stop, order)
        return run

    def _move_on(self, run: RoundRun, done: RoundPhase, stop: RoundPhase, order: list[RoundPhase]) -> bool:
        """After the participants of phase `done` acted: False to stop there; else moves the clock
        past its deadline if it is still open, and True."""
        if order.index(stop) <= order.index(done):
            return False
        if self.phase(run.task_id) == done:
            self.advance_past(DEADLINES[done], run)
        return True

    def advance_past(self, deadline: str, run: RoundRun, extra: int = 1) -> None:
        target = self.get_round(run.task_id, run.round_no)[deadline]
        now = self.chain.now()
        if now <= target:
            self.chain.advance(target - now + extra)

    def advance_to_settling(self, run: RoundRun) -> None:
        """Moves the clock past the last deadline still ahead."""
        self.advance_past("scoreRevealDeadline", run)

    # ------------------------------------------------------------ settlement

    def _round_events(self, run: RoundRun, name: str) -> list[dict]:
        logs = self.market.events[name]().get_logs(
            from_block=run.start_block, argument_filters={"taskId": run.task_id, "round": run.round_no}
        )
        return [dict(log["args"]) for log in logs]

    def settlement(self, run: RoundRun | int) -> tuple:
        """The round's Settlement, rebuilt from its events as anyone could."""
        run = self.runs[run] if isinstance(run, int) else run
        committers = {e["trainer"] for e in self._round_events(run, "Committed")}
        revealers = self.revealers(run)
        vectors = {e["validator"]: list(e["scores"]) for e in self._round_events(run, "ScoresRevealed")}
        score_committers = {e["validator"] for e in self._round_events(run, "ScoresCommitted")}
        validators = by_address(list(vectors))
        return (
            revealers,
            by_address(list(committers - set(revealers))),
            validators,
            [vectors[v] for v in validators],
            by_address(list(score_committers - set(vectors))),
        )

    def expected(self, run: RoundRun | int, settlement: tuple | None = None) -> Consensus:
        """What fedmarket.consensus says finalizing the round now must pay."""
        run = self.runs[run] if isinstance(run, int) else run
        trainers, _, validators, scores, _ = settlement or self.settlement(run)
        return compute_consensus(
            trainers=trainers,
            validators=validators,
            stakes=[self.get_validator(run.task_id, v)["stake"] for v in validators],
            scores=scores,
            budget=self.budget(run.task_id),
            validator_share_bps=self.get_terms(run.task_id).validator_share_bps,
        )

    def finalize(self, task_id: int, settlement: tuple | None = None, *, caller: LocalAccount | None = None):
        """finalizeRound with the current round's Settlement (or `settlement`)."""
        settlement = settlement if settlement is not None else self.settlement(task_id)
        fn = self.market.functions.finalizeRound(task_id, settlement)
        return self.chain.tx(caller or self.coordinator, fn)

    def abort(
        self,
        task_id: int,
        *,
        non_revealers: Sequence[str] | None = None,
        silent: Sequence[str] | None = None,
        caller: LocalAccount | None = None,
    ):
        """abortRound, listing the round's non-revealers and silent validators unless told otherwise."""
        _, missing, _, _, quiet = self.settlement(task_id)
        non_revealers = missing if non_revealers is None else list(non_revealers)
        silent = quiet if silent is None else list(silent)
        fn = self.market.functions.abortRound(task_id, non_revealers, silent)
        return self.chain.tx(caller or self.coordinator, fn)

    def publish(self, task_id: int, model: bytes | None = None, report: bytes | None = None):
        round_no = self.get_state(task_id)["currentRound"]
        fn = self.market.functions.publishModel(
            task_id, model or digest(f"model-{task_id}-{round_no}"), report or digest(f"report-{round_no}")
        )
        return self.chain.tx(self.coordinator, fn)

    def settle(self, task_id: int, *, publish: bool = True):
        """Finalizes the current round and (with `publish`) publishes its model; returns the
        finalization's receipt."""
        receipt = self.finalize(task_id)
        if publish:
            self.publish(task_id)
        return receipt

    def claim(self, task_id: int, account: LocalAccount):
        return self.chain.tx(account, self.market.functions.claim(task_id))

    # ------------------------------------------------------------ views

    def get_terms(self, task_id: int) -> TaskTerms:
        terms, _ = self.market.functions.getTask(task_id).call()
        return TaskTerms.from_tuple(terms)

    def get_state(self, task_id: int) -> dict:
        _, state = self.market.functions.getTask(task_id).call()
        return dict(zip(STATE_KEYS, state, strict=True))

    def get_round(self, task_id: int, round_no: int) -> dict:
        values = self.market.functions.getRound(task_id, round_no).call()
        return dict(zip(ROUND_KEYS, values, strict=True))

    def get_trainer(self, task_id: int, trainer: str) -> dict:
        values = self.market.functions.getTrainer(task_id, trainer).call()
        return dict(zip(TRAINER_KEYS, values, strict=True))

    def get_validator(self, task_id: int, validator: str) -> dict:
        values = self.market.functions.getValidator(task_id, validator).call()
        return dict(zip(VALIDATOR_KEYS, values, strict=True))

    def phase(self, task_id: int) -> RoundPhase:
        return RoundPhase(self.market.functions.roundPhase(task_id).call())

    def budget(self, task_id: int) -> int:
        return self.market.functions.roundBudget(task_id).call()
