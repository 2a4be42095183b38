"""Helpers for the coordinator tests (the fixtures that use them are in ``conftest.py``).

- :class:`Coordinator`: an in-process coordinator app (lifespan running, no background workers)
  with the SDK clients around it; tests drive it with :meth:`Coordinator.step` (one
  ``TaskOrchestrator.step()``) and :meth:`Coordinator.sync` (one indexer catch-up);
- :func:`digits_spec` / :func:`task_terms`: a small digits task and its on-chain terms;
- :class:`ScriptedTrainer`: joins, trains one local epoch, encodes, commits, uploads and reveals
  through the SDK, honestly or in one of the ways a coordinator must refuse;
- :func:`play_round`: one whole round, from start to settlement.
"""

from __future__ import annotations

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
from fedmarket.client import CoordinatorClient
from fedmarket.codec import encode_update, state_delta
from fedmarket.deploy import ONE_TOKEN
from fedmarket.learning import LocalData, train
from fedmarket.models import build_model
from fedmarket.protocol import RoundPhase, TaskTerms
from fedmarket.rounds import DeltaRewrite, PreparedUpdate, fetch_model, prepare_update
from fedmarket.spec import TaskSpec, mlp_spec
from fedmarket.store import ContentStore, HttpStore
from testkit.market import MarketEnv

REWARD_POOL = 1_000 * ONE_TOKEN
MIN_STAKE = 10 * ONE_TOKEN
SLASH_BPS = 5_000
TEST_SERVER = "http://testserver"


# ---------------------------------------------------------------------- data and specs


@dataclass(frozen=True)
class Digits:
    """scikit-learn's digits: the trainers' pool and the owner's validation split."""

    train: LocalData
    validation: LocalData

    def share(self, start: int, stop: int, *, shuffle_labels: bool = False, seed: int = 0) -> LocalData:
        """Training samples [start, stop); with `shuffle_labels`, the same inputs with useless labels."""
        X, y = self.train.X[start:stop], self.train.y[start:stop].copy()
        if shuffle_labels:
            np.random.default_rng(seed).shuffle(y)
        return LocalData(X, y)


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
        "scoring": {"base_share": 0.2, "harm_threshold": -0.2},
    }
    fields.update(overrides)
    return mlp_spec(**fields)


def task_terms(spec: TaskSpec, coordinator: str, **overrides) -> TaskTerms:
    """One round, quorum 2, 1,000 tokens, stake 10, half the stake slashed; overrides by field name."""
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
    }
    fields.update(overrides)
    return TaskTerms(**fields)


def advance_chain(w3: Web3, seconds: int) -> None:
    """Moves the chain's clock forward and mines a block at the new time."""
    w3.provider.make_request("evm_increaseTime", [int(seconds)])
    w3.provider.make_request("evm_mine", [])


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
        if self.mode in ("no_reveal", "no_upload"):
            return None
        return self._timed("storage", self.store.put, self.update)

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


def play_round(
    coordinator: Coordinator,
    task: PostedTask,
    trainers: list[ScriptedTrainer],
    w3: Web3,
    *,
    step_seconds: dict[str, float] | None = None,
) -> StepResult:
    """One whole round: start it, every trainer commits, uploads and reveals, the clock moves past
    the reveal deadline if someone did not reveal, and the coordinator settles. Indexes at the end.
    `step_seconds` receives how long the starting and the settling step took."""
    step_seconds = step_seconds if step_seconds is not None else {}
    clock = time.perf_counter()
    started = coordinator.step(task.task_id)
    step_seconds["start"] = time.perf_counter() - clock
    assert started.action == StepAction.STARTED, started
    send_updates(task, trainers)
    market = coordinator.market
    if market.phase(task.task_id) != RoundPhase.SETTLING:
        round_info = market.round(task.task_id)
        advance_chain(w3, round_info.reveal_deadline - market.chain_time() + 1)
    assert market.phase(task.task_id) == RoundPhase.SETTLING
    clock = time.perf_counter()
    settled = coordinator.step(task.task_id)
    step_seconds["settle"] = time.perf_counter() - clock
    coordinator.sync()
    return settled
