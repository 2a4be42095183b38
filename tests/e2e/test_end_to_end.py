"""The whole market, end to end, on the real contracts: an owner posts a `digits` task through the
coordinator's HTTP API, three trainer nodes (`python -m trainer.cli run`, real processes) train on
label-skewed shares of the data for two rounds, and everybody gets what they were promised.

One trainer is killed with SIGKILL right after its first commit and started again on the same
state dir: it must reveal the update it committed to, and that update must count. To make "right
after its first commit" exact, the other two nodes are paused (SIGSTOP) until the kill: otherwise
the victim, when last to commit, may reveal before the test can kill it.

The scenario runs once per module (`finished_task`); each test checks one thing a user would see.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from fedmarket.chain import MarketClient
from fedmarket.cid import cid_from_digest
from fedmarket.client import CoordinatorClient
from fedmarket.codec import decode_model
from fedmarket.datasets import dirichlet_split, load_dataset, save_npz, train_test_split
from fedmarket.learning import EvalResult, LocalData, evaluate
from fedmarket.models import build_model
from fedmarket.processes import log_tail
from fedmarket.protocol import TaskStatus, TaskTerms, make_commitment
from fedmarket.spec import TaskSpec, mlp_spec
from fedmarket.store import HttpStore

ONE_TOKEN = 10**18
REWARD_POOL = 1_000 * ONE_TOKEN
MIN_STAKE = 10 * ONE_TOKEN
ROUNDS = 2
TIMEOUT = 60.0  # seconds any one wait may take before the scenario gives up


@dataclass
class Outcome:
    """What the scenario left behind for the tests to check."""

    task_id: int
    spec: TaskSpec
    validation: LocalData
    trainers: list[str]
    exit_codes: dict[str, int]
    victim: str
    victim_saved: dict  # round-1.json of the victim's state dir, read right after the kill
    victim_commitment: bytes  # its round-1 commitment on chain at the kill
    restart_log: str


def digits_spec() -> TaskSpec:
    return mlp_spec(
        name="digits-mlp",
        description="8x8 handwritten digits, flattened.",
        input_dim=64,
        num_classes=10,
        hidden=(32,),
        norm_bound=25.0,
        init_seed=0,
        training={
            "local_epochs": 1,
            "batch_size": 32,
            "optimizer": "sgd",
            "learning_rate": 0.15,
            "momentum": 0.5,
        },
        # Honest, label-skewed updates may score a little below zero; none of them is an attack.
        scoring={"base_share": 0.2, "harm_threshold": -1.0},
    )


def wait_for(
    condition: Callable[[], object], what: str, *, watch: list[subprocess.Popen], timeout: float = TIMEOUT
) -> object:
    """Polls `condition` until it holds; fails at once if a process in `watch` exits meanwhile."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(proc.poll() is not None for proc in watch):
            raise AssertionError(f"a trainer exited while waiting for {what}")
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise TimeoutError(f"waited {timeout} s for {what}")


@pytest.fixture(scope="module")
def finished_task(e2e_market, coordinator_url, processes, workdir, owner, coordinator, trainers) -> Outcome:
    market = MarketClient.connect(e2e_market.rpc_url, e2e_market.deployment)
    api = CoordinatorClient(coordinator_url)

    # The owner keeps 20% of the data as its validation split; three trainers share the rest, non-IID.
    X, y = load_dataset("digits")
    X_train, X_val, y_train, y_val = train_test_split(X, y, test_fraction=0.2, seed=0)
    parts = dirichlet_split(y_train, parts=3, alpha=1.0, seed=0, min_size=100)
    data_files = [
        save_npz(workdir / "data" / f"trainer-{i}.npz", X_train[p], y_train[p]) for i, p in enumerate(parts)
    ]

    spec = digits_spec()
    terms = TaskTerms(
        spec_hash=spec.spec_hash(), coordinator=coordinator.address, rounds=ROUNDS, min_trainers=2, max_trainers=3,
        slash_bps=5000, commit_window=60, reveal_window=30, reward_pool=REWARD_POOL, min_stake=MIN_STAKE,
    )  # fmt: skip
    task_id = api.post_task(spec=spec, terms=terms, owner_key=owner.key, market=market)["task_id"]

    accounts = trainers[:3]
    victim, others = accounts[0], accounts[1:]
    state_dir = workdir / "trainer-state"

    def start_trainer(account, data_file: Path, log: Path) -> subprocess.Popen:
        command = [
            sys.executable, "-m", "trainer.cli", "run", str(task_id), "--data", str(data_file),
            "--key", account.key.hex(), "--rpc-url", e2e_market.rpc_url, "--deployment", str(e2e_market.deployment_file),
            "--coordinator", coordinator_url, "--state-dir", str(state_dir), "--poll", "0.1",
        ]  # fmt: skip
        return processes.start(command, log=log)

    logs = {a.address: workdir / f"trainer-{i}.log" for i, a in enumerate(accounts)}
    procs = {
        a.address: start_trainer(a, f, logs[a.address]) for a, f in zip(accounts, data_files, strict=True)
    }

    def fail(message: str) -> None:
        shown = [*logs.values(), workdir / "trainer-0-restarted.log", workdir / "coordinator.log"]
        tails = "\n".join(f"--- {path.name}\n{log_tail(path)}" for path in shown)
        raise AssertionError(f"{message}\n{tails}")

    try:
        # No round starts before the validation split is there: every node joins first.
        wait_for(
            lambda: market.task(task_id).trainer_count == 3, "three trainers to join", watch=[*procs.values()]
        )
        for account in others:
            processes.signal(procs[account.address], signal.SIGSTOP)
        api.upload_validation_data(task_id, X_val, y_val, owner_key=owner.key, market=market)

        victim_committed = lambda: market.commitment(task_id, victim.address).round_no == 1  # noqa: E731
        wait_for(victim_committed, "the victim's round-1 commit", watch=[procs[victim.address]])
        processes.signal(procs[victim.address], signal.SIGKILL)
        procs[victim.address].wait(10)
        commitment = market.commitment(task_id, victim.address)
        assert not commitment.revealed, "the victim revealed before it was killed: the test proves nothing"
        saved_path = state_dir / victim.address.lower() / f"task-{task_id}" / "round-1.json"
        victim_saved = json.loads(saved_path.read_text())

        for account in others:
            processes.signal(procs[account.address], signal.SIGCONT)
        restart_log = workdir / "trainer-0-restarted.log"
        restarted = start_trainer(victim, data_files[0], restart_log)

        exit_codes = {}
        deadline = time.monotonic() + 2 * TIMEOUT
        for address, proc in [*((a.address, procs[a.address]) for a in others), (victim.address, restarted)]:
            try:
                exit_codes[address] = proc.wait(max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                raise TimeoutError(f"trainer {address} still running after {2 * TIMEOUT} s") from None
    except (TimeoutError, AssertionError) as exc:
        fail(str(exc))
    finally:
        api.close()
    return Outcome(
        task_id=task_id, spec=spec, validation=LocalData(X_val, y_val), trainers=[a.address for a in accounts],
        exit_codes=exit_codes, victim=victim.address, victim_saved=victim_saved,
        victim_commitment=commitment.commitment, restart_log=restart_log.read_text(),
    )  # fmt: skip


@pytest.fixture(scope="module")
def market(e2e_market) -> MarketClient:
    return MarketClient.connect(e2e_market.rpc_url, e2e_market.deployment)


@pytest.fixture(scope="module")
def api(coordinator_url):
    with CoordinatorClient(coordinator_url) as client:
        yield client


def evaluate_model(cid: str, *, spec: TaskSpec, data: LocalData, store: HttpStore) -> EvalResult:
    """Fetches a model from the coordinator's blob API (verified against its CID) and scores it."""
    model = build_model(spec)
    model.load_state_dict(decode_model(store.get(cid), model=model))
    return evaluate(model, data)


def test_every_trainer_process_exits_cleanly(finished_task):
    assert finished_task.exit_codes == {address: 0 for address in finished_task.trainers}


def test_task_completes_with_the_final_model_on_chain(finished_task, market, api):
    info = market.task(finished_task.task_id)
    rounds = api.task(finished_task.task_id)["rounds"]
    assert info.status == TaskStatus.COMPLETED
    assert [r["status"] for r in rounds] == ["finalized"] * ROUNDS
    assert rounds[-1]["new_model_cid"] == cid_from_digest(info.model_hash)


def test_final_global_model_beats_the_initial_model(finished_task, api, coordinator_url):
    rounds = api.task(finished_task.task_id)["rounds"]
    with HttpStore(coordinator_url) as store:
        kwargs = dict(spec=finished_task.spec, data=finished_task.validation, store=store)
        initial = evaluate_model(rounds[0]["model_cid"], **kwargs)
        final = evaluate_model(rounds[-1]["new_model_cid"], **kwargs)
    assert final.loss < initial.loss
    assert final.accuracy > initial.accuracy + 0.3, (initial, final)
    # What the coordinator reported to the owner is what the model does on the owner's split.
    assert rounds[-1]["metrics"]["accuracy"] == pytest.approx(final.accuracy, abs=1e-6)


def test_every_honest_trainer_claimed_its_earnings(finished_task, market, api):
    for address in finished_task.trainers:
        earned = int(api.rewards(finished_task.task_id, address)["cumulative"])
        assert earned > 0
        assert market.claimed(finished_task.task_id, address) == earned


def test_every_trainer_got_its_stake_back(finished_task, market):
    for address in finished_task.trainers:
        assert market.trainer(finished_task.task_id, address).stake == 0


def test_market_holds_exactly_what_it_owes(finished_task, market, e2e_market):
    owed = 0
    for task_id in range(1, market.task_count() + 1):
        info = market.task(task_id)
        joined = {e.args["trainer"] for e in market.iter_events("TrainerJoined", task_id=task_id)}
        owed += info.pool + info.unclaimed + sum(market.trainer(task_id, t).stake for t in joined)
    assert market.token_balance(e2e_market.deployment.market) == owed


def test_restarted_trainer_reveals_the_update_it_committed(finished_task, market):
    saved = finished_task.victim_saved
    # What was on disk at the kill is what the victim had committed to on chain ...
    update_hash, salt = bytes.fromhex(saved["update_hash"]), bytes.fromhex(saved["salt"])
    committed = make_commitment(finished_task.task_id, 1, finished_task.victim, update_hash, salt)
    assert committed == finished_task.victim_commitment
    # ... and the restarted node revealed exactly that update, without training round 1 again.
    revealed = [
        e.args["updateHash"]
        for e in market.iter_events("Revealed", task_id=finished_task.task_id)
        if e.args["trainer"] == finished_task.victim and e.args["round"] == 1
    ]
    assert revealed == [update_hash]
    assert "round 1: training" not in finished_task.restart_log
    assert "round 1: uploaded" in finished_task.restart_log


def test_restarted_trainers_update_is_accepted_and_paid(finished_task, api):
    submissions = api.round(finished_task.task_id, 1)["submissions"]
    verdict = next(s for s in submissions if s["trainer"] == finished_task.victim)
    assert verdict["update_hash"].removeprefix("0x") == finished_task.victim_saved["update_hash"]
    assert verdict["accepted"] is True
    assert int(verdict["payout"]) > 0
    assert {s["trainer"] for s in submissions if s["accepted"]} == set(finished_task.trainers)
