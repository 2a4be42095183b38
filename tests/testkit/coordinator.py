"""Helpers for the coordinator tests (the fixtures that use them are in ``conftest.py``).

- :class:`Coordinator`: an in-process coordinator app (lifespan running, no background workers)
  with the SDK clients around it; tests drive it with :meth:`Coordinator.step` (one
  ``TaskOrchestrator.step()``) and :meth:`Coordinator.sync` (one indexer catch-up);
- :func:`digits_spec` / :func:`task_terms`: a small digits task and its on-chain terms;
- :class:`ScriptedTrainer`: joins, trains one local epoch, encodes, commits, uploads and reveals
  through the SDK, honestly or in one of the ways validators must flag;
- :class:`ScriptedValidator`: joins with a stake and the hash of its own digits split, scores
  each round's revealed updates with the real rule (:mod:`fedmarket.scoring`), commits and
  reveals its vector through the SDK, honestly or as an attacker;
- :func:`send_updates` / :func:`send_scores`: the trainers' / the validators' part of a round;
- :func:`play_round`: one whole round, from start to settlement and the published model.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from eth_account.signers.local import LocalAccount
from fastapi.testclient import TestClient
from web3 import Web3

from backend.orchestrator import StepAction, StepResult
from backend.services import Services
from fedmarket.chain import MarketClient
from fedmarket.cid import cid_from_digest, digest_of
from fedmarket.client import CoordinatorClient
from fedmarket.codec import encode_update, state_delta
from fedmarket.consensus import MAX_SCORE
from fedmarket.deploy import ONE_TOKEN
from fedmarket.errors import FedmarketError
from fedmarket.learning import LocalData, train
from fedmarket.models import build_model
from fedmarket.protocol import RoundPhase, TaskTerms, make_score_commitment, new_salt
from fedmarket.rounds import DeltaRewrite, PreparedUpdate, fetch_model, prepare_update, score_revealed
from fedmarket.scoring import ScoredUpdate
from fedmarket.spec import TaskSpec, mlp_spec
from fedmarket.store import ContentStore, HttpStore
from fedmarket.uploads import UploadSigner
from testkit.market import MarketEnv

REWARD_POOL = 1_000 * ONE_TOKEN
MIN_STAKE = 10 * ONE_TOKEN
SLASH_BPS = 5_000
VALIDATOR_STAKE = 20 * ONE_TOKEN
VALIDATOR_SHARE_BPS = 1_000
TEST_SERVER = "http://testserver"
# Label-skewed (non-IID) trainers: each brings classes of its own, so every validator's held-out
# data tells their updates apart (IID shares of 200 samples differ by noise only).
SKEWED_CLASSES = ((0, 1, 2), (3, 4, 5), (6, 7, 8, 9))
IID_SHARE = 300


# ---------------------------------------------------------------------- data and specs


@dataclass(frozen=True)
class Digits:
    """scikit-learn's digits: the trainers' pool and the validators' held-out pool."""

    train: LocalData
    validation: LocalData

    def share(self, start: int, stop: int, *, shuffle_labels: bool = False, seed: int = 0) -> LocalData:
        """Training samples [start, stop); with `shuffle_labels`, the same inputs with useless labels."""
        X, y = self.train.X[start:stop], self.train.y[start:stop].copy()
        if shuffle_labels:
            np.random.default_rng(seed).shuffle(y)
        return LocalData(X, y)

    def classes(self, labels: tuple[int, ...]) -> LocalData:
        """Every training sample of the given classes: a label-skewed (non-IID) trainer, whose
        update every validator can tell apart from the others'."""
        keep = np.isin(self.train.y, labels)
        return LocalData(self.train.X[keep], self.train.y[keep])

    def skewed(self, index: int) -> LocalData:
        """The classes of ``SKEWED_CLASSES[index % 3]``: a strongly label-skewed trainer."""
        return self.classes(SKEWED_CLASSES[index % len(SKEWED_CLASSES)])

    def iid(self, index: int, size: int = IID_SHARE) -> LocalData:
        """Trainer `index`'s default data: its own IID slice of the pool (the value of an honest
        update on it is clearly positive: zeroing it shrinks a useful step)."""
        slices = len(self.train) // size
        start = (index % slices) * size
        return self.share(start, start + size)

    def validation_share(self, index: int, parts: int) -> LocalData:
        """The `index`-th of `parts` disjoint slices of the held-out pool: one validator's own data."""
        n = len(self.validation)
        start, stop = index * n // parts, (index + 1) * n // parts
        return LocalData(self.validation.X[start:stop], self.validation.y[start:stop])


def digits_spec(**overrides) -> TaskSpec:
    """A small MLP on the 64 digits features; keyword arguments override any field."""
    fields = {
        "name": "digits-mlp",
        "input_dim": 64,
        "num_classes": 10,
        "hidden": (16,),
        "norm_bound": 25.0,
        "training": {
            "local_epochs": 1,
            "batch_size": 32,
            "optimizer": "sgd",
            "learning_rate": 0.15,
            "momentum": 0.5,
        },
        "scoring": {"harm_threshold": -0.2},
    }
    fields.update(overrides)
    return mlp_spec(**fields)


def task_terms(spec: TaskSpec, coordinator: str, **overrides) -> TaskTerms:
    """One round, 1,000 tokens, trainer stake 10 (half slashed for a rejected update or a missed
    reveal), quorums of 2 trainers and 2 validators, validator stake 20, 10% of each round's budget
    to validators; overrides by field name."""
    fields = {
        "spec_hash": spec.spec_hash(),
        "coordinator": coordinator,
        "rounds": 1,
        "min_trainers": 2,
        "max_trainers": 8,
        "slash_bps": SLASH_BPS,
        "commit_window": 600,
        "reveal_window": 300,
        "reward_pool": REWARD_POOL,
        "min_stake": MIN_STAKE,
        "min_validators": 2,
        "max_validators": 8,
        "validator_share_bps": VALIDATOR_SHARE_BPS,
        "score_window": 300,
        "score_reveal_window": 300,
        "min_validator_stake": VALIDATOR_STAKE,
    }
    fields.update(overrides)
    return TaskTerms(**fields)


def advance_chain(w3: Web3, seconds: int) -> None:
    """Moves the chain's clock forward and mines a block at the new time."""
    w3.provider.make_request("evm_increaseTime", [int(seconds)])
    w3.provider.make_request("evm_mine", [])


def signed_store(
    store: ContentStore, market: MarketClient, task_id: int, account: LocalAccount
) -> ContentStore:
    """`store` with its uploads signed by `account` for `task_id` (an HttpStore; others need no signature)."""
    if isinstance(store, HttpStore):
        return store.signed_by(UploadSigner.for_market(market, task_id, account))
    return store


def upload_headers(
    market: MarketClient, task_id: int, account: LocalAccount, data: bytes, **signer_fields
) -> dict[str, str]:
    """The headers of `account`'s signed upload of `data` for `task_id` (fedmarket.uploads)."""
    signer = UploadSigner.for_market(market, task_id, account)
    if signer_fields:
        signer = dataclasses.replace(signer, **signer_fields)
    return signer.headers(digest_of(data), len(data))


def files_under(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.exists() else []


# ---------------------------------------------------------------------- the coordinator


@dataclass
class Coordinator:
    """An in-process coordinator app (lifespan running) and the clients a test needs around it."""

    env: MarketEnv
    http: TestClient
    services: Services
    market: MarketClient  # read-only view of the market
    api: CoordinatorClient  # the SDK's HTTP client, over the app
    store_client: HttpStore  # the SDK's store client, over the app's /v1/blobs
    close: Callable[[], None]  # shuts the app down (its lifespan's exit), as a stop would

    @property
    def address(self) -> str:
        return self.services.chain.address

    def step(self, task_id: int) -> StepResult:
        """One orchestrator step for the task, as its background thread would take it."""
        return self.services.orchestrator(task_id).step()

    def sync(self) -> None:
        """Indexes the chain up to its head, as the background indexer would."""
        self.services.indexer.sync()


@dataclass(frozen=True)
class PostedTask:
    task_id: int
    spec: TaskSpec
    terms: TaskTerms
    spec_cid: str


# ---------------------------------------------------------------------- trainers


@dataclass
class ScriptedTrainer:
    """A trainer played by the test through the SDK: one call per protocol step.

    Modes:
        honest     trains one local epoch on `data` and sends the delta
        garbage    commits to and uploads random bytes
        no_reveal  commits an honest update and never reveals it
        no_upload  reveals an honest update it never uploaded
        zero       sends an all-zero delta (a free rider)
    `rewrite` changes the trained delta (e.g. scales it); `metadata` overrides fields of the
    update's metadata (``round``, ``trainer``, ``task_id``, ``num_samples``); `copy_of` sends
    that trainer's exact update bytes instead (it must prepare first).

    `timings` adds up the seconds spent training, on chain calls and on storage.
    """

    account: LocalAccount
    market: MarketClient
    store: ContentStore
    data: LocalData
    mode: str = "honest"
    rewrite: DeltaRewrite | None = None
    metadata: dict = field(default_factory=dict)
    copy_of: ScriptedTrainer | None = None
    seed: int = 0
    prepared: PreparedUpdate | None = None
    task_id: int = 0  # the task of the last prepare()
    timings: dict[str, float] = field(default_factory=lambda: {"training": 0.0, "chain": 0.0, "storage": 0.0})

    def __post_init__(self) -> None:
        self.chain = self.market.with_account(self.account)

    @property
    def address(self) -> str:
        return self.account.address

    def _timed(self, kind: str, fn, *args, **kwargs):
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            self.timings[kind] += time.perf_counter() - started

    def join(self, task_id: int) -> None:
        self._timed("chain", self.chain.join, task_id)

    def prepare(self, task_id: int, spec: TaskSpec) -> bytes:
        """Pulls the round's global model and builds this round's update (not sent yet)."""
        self.task_id = task_id
        round_no = self._timed("chain", self.chain.task, task_id).current_round
        model_hash = self._timed("chain", self.chain.round, task_id, round_no).model_hash
        where = {"task_id": task_id, "round_no": round_no, "trainer": self.address}
        if self.copy_of is not None:
            self.prepared = PreparedUpdate.from_blob(self.copy_of.update, **where)
        elif self.mode == "garbage":
            self.prepared = PreparedUpdate.from_blob(os.urandom(4096), **where)
        else:
            global_state = self._timed("storage", fetch_model, self.store, spec, model_hash)
            model = build_model(spec)
            model.load_state_dict(global_state)
            samples = len(self.data)
            if self.mode != "zero":  # a free rider sends the global model back: an all-zero delta
                samples = self._timed(
                    "training", train, model, self.data, spec.training, seed=self.seed + round_no
                ).num_samples
            if self.metadata:  # an update made for another task, round or trainer
                fields = {
                    "task_id": task_id,
                    "round": round_no,
                    "trainer": self.address,
                    "num_samples": samples,
                }
                delta = state_delta(model.state_dict(), global_state)
                delta = self.rewrite(delta) if self.rewrite else delta
                blob = encode_update(delta, **{**fields, **self.metadata})
                self.prepared = PreparedUpdate.from_blob(blob, **where)
            else:
                self.prepared = prepare_update(
                    global_state=global_state, trained_state=model.state_dict(), num_samples=samples,
                    rewrite=self.rewrite, **where,
                )  # fmt: skip
        return self.prepared.blob

    @property
    def update(self) -> bytes:
        assert self.prepared is not None, "prepare() first"
        return self.prepared.blob

    @property
    def update_hash(self) -> bytes:
        assert self.prepared is not None, "prepare() first"
        return self.prepared.update_hash

    def commit(self, task_id: int) -> None:
        assert self.prepared is not None, "prepare() first"
        self._timed("chain", self.chain.commit, task_id, self.prepared.commitment)

    def upload(self) -> str | None:
        """Puts the update in the store, signed by this trainer as a node signs it (HttpStore)."""
        if self.mode in ("no_reveal", "no_upload"):
            return None
        assert self.prepared is not None, "prepare() first"
        return self._timed(
            "storage", signed_store(self.store, self.market, self.task_id, self.account).put, self.update
        )

    def reveal(self, task_id: int) -> None:
        if self.mode != "no_reveal":
            assert self.prepared is not None, "prepare() first"
            self._timed("chain", self.chain.reveal, task_id, self.update_hash, self.prepared.salt)


def send_updates(task: PostedTask, trainers: list[ScriptedTrainer]) -> None:
    """The trainers' part of a started round: all prepare and commit, then all upload and reveal
    (each as its mode says: a `no_reveal` trainer commits and stays silent)."""
    for trainer in trainers:
        trainer.prepare(task.task_id, task.spec)
        trainer.commit(task.task_id)
    for trainer in trainers:
        trainer.upload()
        trainer.reveal(task.task_id)


# ---------------------------------------------------------------------- validators


def inflate(favourite: str, factor: int = 1000) -> Callable[[list[str], list[int]], list[int]]:
    """A vector rewrite that gives `favourite` `factor` times the best honest score (a colluder)."""

    def rewrite(trainers: list[str], entries: list[int]) -> list[int]:
        best = max([e for e in entries if 0 < e <= MAX_SCORE] or [10**9])
        return [
            min(MAX_SCORE, best * factor) if t == favourite else e
            for t, e in zip(trainers, entries, strict=True)
        ]

    return rewrite


@dataclass
class ScriptedValidator:
    """A validator played by the test through the SDK: join, then per round score, commit, reveal.

    Modes:
        honest   scores the round's revealed updates with the spec's rule on `data` and reveals
        lazy     commits its honest vector and never reveals it (slashed as a silent validator)
        absent   never commits (neither paid nor slashed)
    `rewrite(trainers, entries)` changes the honest vector before it is committed (see
    :func:`inflate`); `vector` replaces it outright (one entry per revealer, ascending address).

    After :meth:`score`, `trainers` is the round's revealers in the contract's order, `entries`
    the committed vector and `scored` the rule's verdicts (reasons behind flags) by trainer.
    `timings` adds up the seconds spent scoring, on chain calls and on storage.
    """

    account: LocalAccount
    market: MarketClient
    store: ContentStore
    data: LocalData
    stake: int | None = None
    mode: str = "honest"
    rewrite: Callable[[list[str], list[int]], list[int]] | None = None
    vector: list[int] | None = None
    round_no: int = 0
    trainers: list[str] = field(default_factory=list)
    entries: list[int] = field(default_factory=list)
    scored: dict[str, ScoredUpdate] = field(default_factory=dict)
    salt: bytes = b""
    timings: dict[str, float] = field(default_factory=lambda: {"scoring": 0.0, "chain": 0.0, "storage": 0.0})

    def __post_init__(self) -> None:
        self.chain = self.market.with_account(self.account)
        self.data_hash = self.data.canonical_hash()
        self._model = None

    @property
    def address(self) -> str:
        return self.account.address

    def _timed(self, kind: str, fn, *args, **kwargs):
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            self.timings[kind] += time.perf_counter() - started

    def join(self, task_id: int) -> None:
        self._timed("chain", self.chain.join_as_validator, task_id, self.data_hash, self.stake)

    def _fetch(self, update_hash: bytes) -> bytes | None:
        try:
            return self._timed("storage", self.store.get, cid_from_digest(update_hash))
        except FedmarketError:
            return None  # not uploaded, or not what was revealed: flagged UNAVAILABLE

    def score(self, task_id: int, spec: TaskSpec) -> list[int]:
        """This round's vector: the rule's entries for every revealer, as this validator's mode says."""
        self.round_no = self._timed("chain", self.chain.task, task_id).current_round
        started = time.perf_counter()
        ledger, self.scored = score_revealed(
            self.chain,
            self.store,
            spec,
            self.data,
            task_id=task_id,
            round_no=self.round_no,
            fetch=self._fetch,
        )
        self.trainers = ledger.trainers
        self.timings["scoring"] += time.perf_counter() - started
        entries = [self.scored[t].entry for t in self.trainers]
        if self.rewrite is not None:
            entries = self.rewrite(self.trainers, entries)
        if self.vector is not None:
            entries = list(self.vector)
        self.entries = entries
        return entries

    def commit(self, task_id: int) -> None:
        if self.mode == "absent":
            return
        self.salt = new_salt()
        commitment = make_score_commitment(task_id, self.round_no, self.address, self.entries, self.salt)
        self._timed("chain", self.chain.commit_scores, task_id, commitment)

    def reveal(self, task_id: int) -> None:
        if self.mode in ("lazy", "absent"):
            return
        self._timed("chain", self.chain.reveal_scores, task_id, self.entries, self.salt)

    def step(self, task_id: int, spec: TaskSpec) -> RoundPhase | None:
        """Does what the current phase asks of this validator, as a node's loop would (for tests
        where the coordinator runs on its own); the phase it acted in, None when nothing was due."""
        phase = self.chain.phase(task_id)
        round_no = self.chain.task(task_id).current_round
        mine = self.chain.score_commitment(task_id, self.address)
        if phase == RoundPhase.SCORE_COMMIT and mine.round_no != round_no and self.mode != "absent":
            self.score(task_id, spec)
            self.commit(task_id)
            return phase
        if (
            phase == RoundPhase.SCORE_REVEAL and mine.round_no == round_no == self.round_no
            and not mine.revealed and self.mode == "honest"
        ):  # fmt: skip
            self.reveal(task_id)
            return phase
        return None


def send_scores(
    task: PostedTask,
    validators: list[ScriptedValidator],
    w3: Web3 | None = None,
    *,
    moved: list | None = None,
) -> None:
    """The validators' part of a round in its score phases: all score and commit, then all reveal
    (each as its mode says). Nothing happens unless the round is in its score-commit phase. When
    a joined validator did not commit, the reveals wait for the score-commit deadline: with `w3`
    the clock is moved past it (and ``SCORE_COMMIT`` appended to `moved`)."""
    market = validators[0].market if validators else None
    if market is None or market.phase(task.task_id) != RoundPhase.SCORE_COMMIT:
        return
    for validator in validators:
        validator.score(task.task_id, task.spec)
        validator.commit(task.task_id)
    if w3 is not None and pass_phase(market, w3, task.task_id, RoundPhase.SCORE_COMMIT) and moved is not None:
        moved.append(RoundPhase.SCORE_COMMIT)
    for validator in validators:
        validator.reveal(task.task_id)


# ---------------------------------------------------------------------- rounds


DEADLINE_OF = {
    RoundPhase.COMMIT: "commit_deadline",
    RoundPhase.REVEAL: "reveal_deadline",
    RoundPhase.SCORE_COMMIT: "score_commit_deadline",
    RoundPhase.SCORE_REVEAL: "score_reveal_deadline",
}


def pass_phase(market: MarketClient, w3: Web3, task_id: int, phase: RoundPhase) -> bool:
    """If the round is still in `phase` (someone expected did not act), moves the chain's clock
    past its deadline; True when it had to."""
    if market.phase(task_id) != phase:
        return False
    deadline = getattr(market.round(task_id), DEADLINE_OF[phase])
    advance_chain(w3, deadline - market.chain_time() + 1)
    assert market.phase(task_id) != phase, f"still {phase.name} after its deadline"
    return True


def play_round(
    coordinator: Coordinator,
    task: PostedTask,
    trainers: list[ScriptedTrainer],
    validators: list[ScriptedValidator],
    w3: Web3,
    *,
    step_seconds: dict[str, float] | None = None,
    publish: bool = True,
    clock_moved: list[RoundPhase] | None = None,
) -> StepResult:
    """One whole round: start it; every trainer commits, uploads and reveals; every validator
    scores, commits and reveals; the clock moves past a phase's deadline only where someone
    expected did not act (those phases are appended to `clock_moved`); the coordinator settles
    (finalizes or aborts) and, after a finalize, publishes the new model unless `publish=False`.
    Indexes at the end and returns the settling step. `step_seconds` receives how long the
    coordinator's start, settle and publish steps took."""
    step_seconds = step_seconds if step_seconds is not None else {}
    clock_moved = clock_moved if clock_moved is not None else []
    market = coordinator.market
    clock = time.perf_counter()
    started = coordinator.step(task.task_id)
    step_seconds["start"] = time.perf_counter() - clock
    assert started.action == StepAction.STARTED, started
    send_updates(task, trainers)
    for phase in (RoundPhase.COMMIT, RoundPhase.REVEAL):
        if pass_phase(market, w3, task.task_id, phase):
            clock_moved.append(phase)
    send_scores(task, validators, w3, moved=clock_moved)
    for phase in (RoundPhase.SCORE_COMMIT, RoundPhase.SCORE_REVEAL):
        if pass_phase(market, w3, task.task_id, phase):
            clock_moved.append(phase)
    assert market.phase(task.task_id) == RoundPhase.SETTLING
    clock = time.perf_counter()
    settled = coordinator.step(task.task_id)
    step_seconds["settle"] = time.perf_counter() - clock
    if publish and settled.action == StepAction.FINALIZED:
        clock = time.perf_counter()
        published = coordinator.step(task.task_id)
        step_seconds["publish"] = time.perf_counter() - clock
        assert published.action == StepAction.PUBLISHED, published
    coordinator.sync()
    return settled
