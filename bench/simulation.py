"""An in-process market for the benchmarks: one real Anvil devnet, the real contracts, the real
coordinator code (:class:`backend.orchestrator.TaskOrchestrator`, driven by ``step()`` instead of
its polling thread), and trainers and validators reduced to their protocol steps with the SDK
called directly, everyone one after another in this process.

What is real: every transaction and the contract's consensus, payout and slashing; the scoring
rule each validator runs on its own held-out split (:mod:`fedmarket.scoring`, with the copy
references a validator node reads, :func:`fedmarket.rounds.copy_references`); the aggregation
and publication of each round's model. What is simulated: the nodes' processes, polling and HTTP
(they share one ``DirectoryStore``), so a round costs what its work costs and nothing more.

Used by ``bench/protocol_overhead.py`` (``make bench``), ``bench/attacks.py`` (``make attacks``)
and ``bench/fairness.py`` (``make fairness``).
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from eth_account.signers.local import LocalAccount
from torch import Tensor

from backend.db import Database
from backend.orchestrator import StepAction, TaskOrchestrator
from fedmarket.chain import MarketClient, TxResult
from fedmarket.cid import cid_from_digest
from fedmarket.codec import decode_model, state_delta
from fedmarket.contracts import compile_contracts
from fedmarket.deploy import ONE_TOKEN, deploy_market, fund_accounts
from fedmarket.devnet import dev_account
from fedmarket.learning import LocalData, evaluate, train
from fedmarket.models import build_model
from fedmarket.protocol import TaskTerms, make_score_commitment, new_salt
from fedmarket.report import RoundReport
from fedmarket.rounds import PreparedUpdate, prepare_update, score_revealed
from fedmarket.scoring import ScoredUpdate
from fedmarket.spec import TaskSpec
from fedmarket.store import DirectoryStore
from trainer.attacks import Attack, AttackContext

OWNER_INDEX, COORDINATOR_INDEX, FIRST_PARTICIPANT_INDEX = 1, 2, 4  # Anvil dev accounts, as in the demo


# ------------------------------------------------------------------------------------ timing


class Stopwatch:
    """Seconds per category. A span opened inside another is not counted again (a store method
    that calls another store method, a transaction that reads the chain), so categories never overlap."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._open = False

    @contextmanager
    def span(self, category: str) -> Iterator[None]:
        if self._open:
            yield
            return
        self._open = True
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[category] += time.perf_counter() - started
            self._open = False

    def take(self) -> dict[str, float]:
        """What was measured since the last take, and start again from zero."""
        taken = dict(self.seconds)
        self.seconds.clear()
        return taken


class ChainTimer:
    """A MarketClient observer (fedmarket.chain.ChainObserver) that books the client's chain I/O on
    a stopwatch and keeps each transaction's gas: every transaction as ``chain_tx``, every read (a
    view, an eth_getLogs page, a block query) as ``chain_reads``."""

    def __init__(self, watch: Stopwatch) -> None:
        self.watch = watch
        self.sent: list[tuple[str, int, float]] = []  # (function, gas used, seconds), in sending order

    def span(self, kind: str, name: str):
        return self.watch.span("chain_tx" if kind == "transaction" else "chain_reads")

    def transaction_mined(self, name: str, result: TxResult, seconds: float) -> None:
        self.sent.append((name, result.gas_used, seconds))


class TimedStore(DirectoryStore):
    """A DirectoryStore whose reads and writes are booked as ``storage``."""

    def __init__(self, root: Path, *, watch: Stopwatch) -> None:
        super().__init__(root)
        self.watch = watch

    def put(self, data) -> str:
        with self.watch.span("storage"):
            return super().put(data)

    def get(self, cid: str) -> bytes:
        with self.watch.span("storage"):
            return super().get(cid)

    def has(self, cid: str) -> bool:
        with self.watch.span("storage"):
            return super().has(cid)


# ------------------------------------------------------------------------------------ actors


@dataclass
class Trained:
    """A trainer's honest work in a round, before it commits (an attacker may rewrite `delta`)."""

    global_state: dict[str, Tensor]
    delta: dict[str, Tensor]
    num_samples: int
    seconds: float


@dataclass
class SimulatedTrainer:
    """A trainer node reduced to its protocol steps, with the SDK called directly."""

    chain: MarketClient  # observed by a ChainTimer
    data: LocalData
    pending: PreparedUpdate | None = None  # until revealed

    @property
    def address(self) -> str:
        return self.chain.signer

    def train(
        self,
        task_id: int,
        round_no: int,
        *,
        spec: TaskSpec,
        store: TimedStore,
        seed: int,
        data: LocalData | None = None,
    ) -> Trained:
        """Fetch the global model and train on `data` (default: its own)."""
        watch = store.watch  # the same stopwatch as this trainer's ChainTimer
        model_hash = self.chain.round(task_id, round_no).model_hash
        blob = store.get(cid_from_digest(model_hash))
        with watch.span("codec"):
            model = build_model(spec)
            global_state = decode_model(blob, model=model)
            model.load_state_dict(global_state)
        started = time.perf_counter()
        result = train(model, data or self.data, spec.training, seed=seed)
        seconds = time.perf_counter() - started
        delta = state_delta(model.state_dict(), global_state)
        return Trained(global_state, delta, result.num_samples, seconds)

    def commit(
        self, task_id: int, round_no: int, trained: Trained, *, spec: TaskSpec, store: TimedStore
    ) -> None:
        """Encode `trained` (its delta as it now stands) and commit to it."""
        with store.watch.span("codec"):
            trained_state = {k: trained.global_state[k] + trained.delta[k] for k in trained.global_state}
            self.pending = prepare_update(
                global_state=trained.global_state, trained_state=trained_state, task_id=task_id,
                round_no=round_no, trainer=self.address, num_samples=trained.num_samples,
            )  # fmt: skip
        self.chain.commit(task_id, self.pending.commitment)

    def train_and_commit(
        self, task_id: int, round_no: int, *, spec: TaskSpec, store: TimedStore, seed: int
    ) -> float:
        """The honest round: train, encode, commit; returns the seconds spent training."""
        trained = self.train(task_id, round_no, spec=spec, store=store, seed=seed)
        self.commit(task_id, round_no, trained, spec=spec, store=store)
        return trained.seconds

    def upload_and_reveal(self, task_id: int, store: TimedStore) -> None:
        assert self.pending is not None, "train_and_commit first"
        store.put(self.pending.blob)
        self.chain.reveal(task_id, self.pending.update_hash, self.pending.salt)
        self.pending = None


VectorRewrite = Callable[[list[str], list[int]], list[int]]


@dataclass
class SimulatedValidator:
    """A validator node reduced to its protocol steps: score with the real rule, commit, reveal."""

    chain: MarketClient  # observed by a ChainTimer
    data: LocalData
    rewrite: VectorRewrite | None = None  # a dishonest validator's change to its vector
    entries: list[int] = field(default_factory=list)
    scored: dict[str, ScoredUpdate] = field(default_factory=dict)  # the last round's, by trainer
    salt: bytes = b""

    @property
    def address(self) -> str:
        return self.chain.signer

    def score_and_commit(self, task_id: int, round_no: int, *, spec: TaskSpec, store: TimedStore) -> float:
        """Score the round's revealed updates as a validator node does, commit; returns the
        seconds spent scoring (fetches, copy references, checks, values, evaluations)."""
        started = time.perf_counter()
        with store.watch.span("scoring"):
            ledger, self.scored = score_revealed(
                self.chain, store, spec, self.data, task_id=task_id, round_no=round_no,
                fetch=lambda h: store.get(cid_from_digest(h)),
            )  # fmt: skip
        scoring = time.perf_counter() - started
        self.entries = [self.scored[t].entry for t in ledger.trainers]
        if self.rewrite is not None:
            self.entries = self.rewrite(ledger.trainers, self.entries)
        self.salt = new_salt()
        self.chain.commit_scores(
            task_id, make_score_commitment(task_id, round_no, self.address, self.entries, self.salt)
        )
        return scoring

    def reveal(self, task_id: int) -> None:
        self.chain.reveal_scores(task_id, self.entries, self.salt)


# ------------------------------------------------------------------------------------ a market


@dataclass(frozen=True)
class MarketTerms:
    """The money side of a simulated task (the demo's figures by default)."""

    reward_pool: int = 10_000 * ONE_TOKEN
    min_stake: int = 100 * ONE_TOKEN
    validator_stake: int = 100 * ONE_TOKEN
    slash_bps: int = 5_000
    validator_share_bps: int = 1_000


class SimulatedMarket:
    """A deployed market with funded trainers and validators, one task at a time."""

    def __init__(
        self,
        w3,
        workdir: Path,
        *,
        trainers: int,
        validators: int,
        tasks: int = 1,
        money: MarketTerms = MarketTerms(),
        watch: Callable[[], Stopwatch] = Stopwatch,
        client: Callable[[LocalAccount, Stopwatch], MarketClient] | None = None,
    ) -> None:
        self.w3, self.money = w3, money
        artifacts = compile_contracts()
        deployer = dev_account(0)
        self.deployment = deploy_market(
            w3, deployer, token=artifacts["FMToken"], market=artifacts["TaskMarket"]
        )
        trainer_accounts = [dev_account(FIRST_PARTICIPANT_INDEX + i) for i in range(trainers)]
        validator_accounts = [dev_account(FIRST_PARTICIPANT_INDEX + trainers + i) for i in range(validators)]
        fund_accounts(
            w3,
            self.deployment,
            deployer,
            [dev_account(OWNER_INDEX).address],
            tokens=money.reward_pool * tasks,
        )
        fund_accounts(
            w3,
            self.deployment,
            deployer,
            [a.address for a in trainer_accounts],
            tokens=money.min_stake * tasks,
        )
        fund_accounts(
            w3,
            self.deployment,
            deployer,
            [a.address for a in validator_accounts],
            tokens=money.validator_stake * tasks,
        )
        self.coordinator_watch, self.trainer_watch, self.validator_watch = watch(), watch(), watch()
        self.store = TimedStore(workdir / "blobs", watch=self.coordinator_watch)
        self.trainer_store = TimedStore(workdir / "blobs", watch=self.trainer_watch)  # same directory
        self.validator_store = TimedStore(workdir / "blobs", watch=self.validator_watch)
        self.db = Database(f"sqlite:///{workdir / 'coordinator.db'}")
        self.db.migrate()
        make_client = client or (lambda account, w: MarketClient(w3, self.deployment, account))
        self.coordinator = make_client(dev_account(COORDINATOR_INDEX), self.coordinator_watch)
        self.owner = MarketClient(w3, self.deployment, dev_account(OWNER_INDEX))
        self.trainer_clients = [make_client(a, self.trainer_watch) for a in trainer_accounts]
        self.validator_clients = [make_client(a, self.validator_watch) for a in validator_accounts]

    def create_task(
        self,
        spec: TaskSpec,
        *,
        rounds: int,
        trainers: Sequence[SimulatedTrainer],
        validators: Sequence[SimulatedValidator],
    ) -> tuple[int, TaskOrchestrator]:
        """Post the task, join everyone, and hand back its orchestrator."""
        self.store.put(spec.to_canonical_json())
        money = self.money
        terms = TaskTerms(
            rounds=rounds, spec_hash=spec.spec_hash(), coordinator=self.coordinator.signer,
            min_trainers=max(1, len(trainers) // 2), max_trainers=len(trainers), slash_bps=money.slash_bps,
            commit_window=3600, reveal_window=3600, reward_pool=money.reward_pool, min_stake=money.min_stake,
            min_validators=len(validators), max_validators=len(validators),
            validator_share_bps=money.validator_share_bps, score_window=3600, score_reveal_window=3600,
            min_validator_stake=money.validator_stake,
        )  # fmt: skip
        task_id = self.owner.create_task(terms).task_id
        for trainer in trainers:
            trainer.chain.join(task_id)
        for validator in validators:
            validator.chain.join_as_validator(task_id, validator.data.canonical_hash(), money.validator_stake)
        return task_id, TaskOrchestrator(
            task_id=task_id, chain=self.coordinator, store=self.store, db=self.db
        )

    def round_report(self, task_id: int, round_no: int) -> RoundReport:
        """The round report the coordinator stored."""
        report_hash = self.coordinator.round(task_id, round_no).report_hash
        return RoundReport.from_json(self.store.get(cid_from_digest(report_hash)))

    def accuracy(self, spec: TaskSpec, task_id: int, round_no: int, test: LocalData) -> float:
        """The accuracy on `test` of the model round `round_no` published."""
        model = build_model(spec)
        published = self.coordinator.round(task_id, round_no).new_model_hash
        model.load_state_dict(decode_model(self.store.get(cid_from_digest(published)), model=model))
        return evaluate(model, test).accuracy


def step(orchestrator: TaskOrchestrator, expected: StepAction, round_no: int) -> float:
    """One coordinator step, which must do `expected`; returns its seconds."""
    started = time.perf_counter()
    result = orchestrator.step()
    seconds = time.perf_counter() - started
    if result.action != expected:
        raise RuntimeError(f"round {round_no}: orchestrator did {result.action!r}, expected {expected!r}")
    return seconds


@dataclass
class RunResult:
    """One task played to the end; trainers are keyed by their index in the run."""

    name: str
    accuracy: list[float] = field(default_factory=list)  # per round, of the published model
    earned: dict[str, int] = field(default_factory=dict)  # trainer -> base units paid
    paid_rounds: Counter = field(default_factory=Counter)  # trainer -> rounds with a payout
    slashes: Counter = field(default_factory=Counter)  # trainer -> rounds slashed
    outcomes: dict[str, Counter] = field(default_factory=dict)  # trainer -> outcome -> rounds
    reasons: dict[str, Counter] = field(default_factory=dict)  # trainer -> validator flag reasons
    seconds: float = 0.0


def play_task(
    market: SimulatedMarket,
    spec: TaskSpec,
    *,
    name: str,
    trainer_data: Sequence[LocalData],
    validator_data: Sequence[LocalData],
    test: LocalData,
    rounds: int,
    seed: int,
    attack: Attack | None = None,
    attackers: set[int] = frozenset(),  # type: ignore[assignment]
    num_classes: int = 10,
) -> RunResult:
    """One task, every round played in full: train, (attack), commit, reveal, score, settle,
    publish. The attackers (indices into `trainer_data`) collude: each knows the group's honest
    deltas, the last published aggregate and the updates revealed last round."""
    started = time.perf_counter()
    if attack is not None and attack.flips_labels:
        trainer_data = [
            attack.training_data(d, num_classes) if i in attackers else d for i, d in enumerate(trainer_data)
        ]
    trainers = [SimulatedTrainer(c, d) for c, d in zip(market.trainer_clients, trainer_data, strict=False)]
    validators = [
        SimulatedValidator(c, d) for c, d in zip(market.validator_clients, validator_data, strict=False)
    ]
    task_id, orchestrator = market.create_task(spec, rounds=rounds, trainers=trainers, validators=validators)
    result = RunResult(name)
    previous_global: dict[str, Tensor] | None = None
    previous_updates: dict[int, dict[str, Tensor]] = {}
    store, validator_store = market.trainer_store, market.validator_store
    for round_no in range(1, rounds + 1):
        step(orchestrator, StepAction.STARTED, round_no)
        active = [i for i, t in enumerate(trainers) if t.chain.trainer(task_id, t.address).joined]
        trained = {  # a rejected trainer has lost its seat
            i: trainers[i].train(task_id, round_no, spec=spec, store=store, seed=seed + 1000 * round_no + i)
            for i in active
        }
        global_state = trained[active[0]].global_state
        if attack is not None:
            context = AttackContext(
                norm_bound=spec.norm_bound,
                trainers=len(active),
                colluders=[trained[i].delta for i in sorted(attackers) if i in trained],
                previous_aggregate=None
                if previous_global is None
                else {k: global_state[k] - previous_global[k] for k in global_state},
                previous_updates=[d for i, d in previous_updates.items() if i not in attackers],
            )
            for i in sorted(attackers & trained.keys()):
                trained[i].delta = attack.rewrite(trained[i].delta, context)
        for i, work in trained.items():
            trainers[i].commit(task_id, round_no, work, spec=spec, store=store)
        for i in trained:
            trainers[i].upload_and_reveal(task_id, store)
        for validator in validators:
            validator.score_and_commit(task_id, round_no, spec=spec, store=validator_store)
        for validator in validators:
            validator.reveal(task_id)
        step(orchestrator, StepAction.FINALIZED, round_no)
        step(orchestrator, StepAction.PUBLISHED, round_no)
        previous_global = global_state
        previous_updates = {i: w.delta for i, w in trained.items()}
        _book(market, result, task_id, round_no, trainers, validators)
        result.accuracy.append(market.accuracy(spec, task_id, round_no, test))
        flagged = sorted(
            {(i, str(reason)) for v in validators for i, t in enumerate(trainers)
             if (reason := getattr(v.scored.get(t.address), "reason", None)) is not None}
        )  # fmt: skip
        flags = " ".join(f"{i}:{reason}" for i, reason in flagged)
        print(
            f"  {name:<15} round {round_no:>2}: accuracy {result.accuracy[-1]:.4f}  flags {flags or '-'}",
            flush=True,
        )
    result.seconds = time.perf_counter() - started
    return result


def _book(
    market: SimulatedMarket, result: RunResult, task_id: int, round_no: int, trainers, validators
) -> None:
    report = market.round_report(task_id, round_no)
    index = {t.address: i for i, t in enumerate(trainers)}
    for submission in report.submissions:
        key = str(index[submission.trainer])
        result.earned[key] = result.earned.get(key, 0) + submission.payout
        result.outcomes.setdefault(key, Counter())[submission.outcome.value] += 1
        if submission.payout:
            result.paid_rounds[key] += 1
        if submission.slashed:
            result.slashes[key] += 1
    for validator in validators:
        for trainer, scored in validator.scored.items():
            if scored.reason is not None:
                result.reasons.setdefault(str(index[trainer]), Counter())[scored.reason.value] += 1
