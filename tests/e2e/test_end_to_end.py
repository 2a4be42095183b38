"""The whole market, end to end, on the real contracts: an owner posts a `digits` task through the
coordinator's HTTP API, three trainer nodes (`python -m trainer.cli run`) train on label-skewed
shares of the data and two validator nodes (`python -m trainer.validator_cli run`: the owner's,
on its own held-out split, and an independent one on another) score them, for two rounds, all
real processes; everybody gets what the contract's consensus promised, and `fedmarket verify`
agrees with every number.

One trainer is killed with SIGKILL right after its first commit and started again on the same
state dir: it must reveal the update it committed to, and that update must count. To make "right
after its first commit" exact, the other two nodes are paused (SIGSTOP) until the kill: otherwise
the victim, when last to commit, may reveal before the test can kill it.

The scenario runs once per module (`finished_task`); each test checks one thing a user would see.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from fedmarket import verify as verify_module
from fedmarket.chain import MarketClient
from fedmarket.cid import cid_from_digest
from fedmarket.client import CoordinatorClient
from fedmarket.codec import decode_model
from fedmarket.datasets import dirichlet_split, load_dataset, save_npz, train_test_split
from fedmarket.learning import EvalResult, LocalData, evaluate
from fedmarket.ledger import read_round
from fedmarket.models import build_model
from fedmarket.processes import log_tail
from fedmarket.protocol import Outcome as Verdict
from fedmarket.protocol import TaskStatus, TaskTerms, make_commitment
from fedmarket.spec import TaskSpec, mlp_spec
from fedmarket.store import DirectoryStore, HttpStore

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
    validators: list[str]
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
        scoring={"harm_threshold": -1.0},
    )


def wait_for(
    condition: Callable[[], object], what: str, *, watch: list[subprocess.Popen], timeout: float = TIMEOUT
) -> object:
    """Polls `condition` until it holds; fails at once if a process in `watch` exits meanwhile."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(proc.poll() is not None for proc in watch):
            raise AssertionError(f"a node exited while waiting for {what}")
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise TimeoutError(f"waited {timeout} s for {what}")


@pytest.fixture(scope="module")
def finished_task(
    e2e_market, coordinator_url, processes, workdir, owner, outsider, coordinator, trainers
) -> Outcome:
    market = MarketClient.connect(e2e_market.rpc_url, e2e_market.deployment)
    api = CoordinatorClient(coordinator_url)

    # 20% of the data is the test's yardstick; the owner's validator and an independent one hold
    # 10% each; three trainers share the rest, non-IID.
    X, y = load_dataset("digits")
    X_rest, X_val, y_rest, y_val = train_test_split(X, y, test_fraction=0.2, seed=0)
    X_rest, X_v1, y_rest, y_v1 = train_test_split(X_rest, y_rest, test_fraction=0.125, seed=1)
    X_train, X_v2, y_train, y_v2 = train_test_split(X_rest, y_rest, test_fraction=0.143, seed=2)
    validator_files = [
        save_npz(workdir / "data" / "validator-owner.npz", X_v1, y_v1),
        save_npz(workdir / "data" / "validator-outsider.npz", X_v2, y_v2),
    ]
    parts = dirichlet_split(y_train, parts=3, alpha=1.0, seed=0, min_size=100)
    data_files = [
        save_npz(workdir / "data" / f"trainer-{i}.npz", X_train[p], y_train[p]) for i, p in enumerate(parts)
    ]

    spec = digits_spec()
    terms = TaskTerms(
        spec_hash=spec.spec_hash(), coordinator=coordinator.address, rounds=ROUNDS, min_trainers=2, max_trainers=3,
        slash_bps=5000, commit_window=60, reveal_window=30, reward_pool=REWARD_POOL, min_stake=MIN_STAKE,
        min_validators=2, max_validators=2, validator_share_bps=1_000, score_window=60, score_reveal_window=30,
        min_validator_stake=MIN_STAKE,
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

    def start_validator(account, data_file: Path, log: Path) -> subprocess.Popen:
        command = [
            sys.executable, "-m", "trainer.validator_cli", "run", str(task_id), "--data", str(data_file),
            "--key", account.key.hex(), "--rpc-url", e2e_market.rpc_url, "--deployment", str(e2e_market.deployment_file),
            "--coordinator", coordinator_url, "--state-dir", str(workdir / "validator-state"), "--poll", "0.1",
        ]  # fmt: skip
        return processes.start(command, log=log)

    logs = {a.address: workdir / f"trainer-{i}.log" for i, a in enumerate(accounts)}
    procs = {
        a.address: start_trainer(a, f, logs[a.address]) for a, f in zip(accounts, data_files, strict=True)
    }
    validator_accounts = [owner, outsider]
    validator_logs = [workdir / "validator-owner.log", workdir / "validator-outsider.log"]
    validator_procs = {
        a.address: start_validator(a, f, log)
        for a, f, log in zip(validator_accounts, validator_files, validator_logs, strict=True)
    }

    def fail(message: str) -> None:
        shown = [
            *logs.values(),
            *validator_logs,
            workdir / "trainer-0-restarted.log",
            workdir / "coordinator.log",
        ]
        tails = "\n".join(f"--- {path.name}\n{log_tail(path)}" for path in shown)
        raise AssertionError(f"{message}\n{tails}")

    try:
        # Pause the other two as soon as they joined, before the coordinator can start round 1.
        wait_for(
            lambda: all(market.trainer(task_id, a.address).joined for a in others), "two trainers to join",
            watch=[*procs.values()],
        )  # fmt: skip
        for account in others:
            processes.signal(procs[account.address], signal.SIGSTOP)

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
        deadline = time.monotonic() + 3 * TIMEOUT
        waited = [
            *((a.address, procs[a.address]) for a in others), (victim.address, restarted),
            *validator_procs.items(),
        ]  # fmt: skip
        for address, proc in waited:
            try:
                exit_codes[address] = proc.wait(max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                raise TimeoutError(f"node {address} still running after {3 * TIMEOUT} s") from None
    except (TimeoutError, AssertionError) as exc:
        fail(str(exc))
    finally:
        api.close()
    return Outcome(
        task_id=task_id, spec=spec, validation=LocalData(X_val, y_val), trainers=[a.address for a in accounts],
        validators=[a.address for a in validator_accounts], exit_codes=exit_codes, victim=victim.address, victim_saved=victim_saved,
        victim_commitment=commitment.commitment, restart_log=restart_log.read_text(),
    )  # fmt: skip


@pytest.fixture(scope="module")
def market(e2e_market) -> MarketClient:
    return MarketClient.connect(e2e_market.rpc_url, e2e_market.deployment)


def evaluate_model(cid: str, *, spec: TaskSpec, data: LocalData, store: HttpStore) -> EvalResult:
    """Fetches a model from the coordinator's blob API (verified against its CID) and scores it."""
    model = build_model(spec)
    model.load_state_dict(decode_model(store.get(cid), model=model))
    return evaluate(model, data)


def test_every_node_process_exits_cleanly(finished_task):
    everyone = [*finished_task.trainers, *finished_task.validators]
    assert finished_task.exit_codes == {address: 0 for address in everyone}


def test_task_completes_with_the_final_model_on_chain(finished_task, market):
    info = market.task(finished_task.task_id)
    assert info.status == TaskStatus.COMPLETED
    rounds = [market.round(finished_task.task_id, r) for r in range(1, ROUNDS + 1)]
    assert all(r.closed and not r.aborted and r.model_published for r in rounds)
    assert rounds[-1].new_model_hash == info.model_hash
    assert rounds[1].model_hash == rounds[0].new_model_hash  # round 2 trained on round 1's aggregate


def test_final_global_model_beats_the_initial_model(finished_task, market, coordinator_url):
    first, last = (market.round(finished_task.task_id, r) for r in (1, ROUNDS))
    with HttpStore(coordinator_url) as store:
        kwargs = dict(spec=finished_task.spec, data=finished_task.validation, store=store)
        initial = evaluate_model(cid_from_digest(first.model_hash), **kwargs)
        final = evaluate_model(cid_from_digest(last.new_model_hash), **kwargs)
    assert final.loss < initial.loss
    assert final.accuracy > initial.accuracy + 0.3, (initial, final)


def test_nobody_is_slashed_and_everything_earned_is_claimed(finished_task, market):
    earned: dict[str, int] = {}
    for event in market.iter_events(task_id=finished_task.task_id):
        if event.name in ("TrainerSettled", "ValidatorSettled"):
            account = event.args.get("trainer") or event.args["validator"]
            earned[account] = earned.get(account, 0) + event.args["payout"]
    claimed = {
        e.args["account"]: e.args["amount"]
        for e in market.iter_events("RewardsClaimed", task_id=finished_task.task_id)
    }
    slashed = [e for e in market.iter_events(task_id=finished_task.task_id) if e.name.endswith("Slashed")]
    assert slashed == []  # nobody here cheats
    for address in finished_task.validators:
        assert earned.get(address, 0) > 0, address
    assert sum(earned.get(t, 0) for t in finished_task.trainers) > 0
    for address in [*finished_task.trainers, *finished_task.validators]:
        assert market.claimable(finished_task.task_id, address) == 0  # every node claimed at the end
    # The owner validates too, so its RewardsClaimed covers its validator pay.
    assert sum(claimed.values()) == sum(earned.values())


def test_every_participant_got_its_stake_back(finished_task, market):
    for address in finished_task.trainers:
        assert market.trainer(finished_task.task_id, address).stake == 0
    for address in finished_task.validators:
        assert market.validator(finished_task.task_id, address).stake == 0


def test_market_holds_exactly_what_it_owes(finished_task, market, e2e_market):
    owed = 0
    for task_id in range(1, market.task_count() + 1):
        info = market.task(task_id)
        joined = {e.args["trainer"] for e in market.iter_events("TrainerJoined", task_id=task_id)}
        validating = {e.args["validator"] for e in market.iter_events("ValidatorJoined", task_id=task_id)}
        owed += info.pool + info.unclaimed
        owed += sum(market.trainer(task_id, t).stake for t in joined)
        owed += sum(market.validator(task_id, v).stake for v in validating)
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


def test_restarted_trainers_update_is_scored_like_the_others(finished_task, market):
    ledger = read_round(market, finished_task.task_id, 1)
    settled = ledger.settled_trainers[finished_task.victim]
    assert ledger.reveals[finished_task.victim].hex() == finished_task.victim_saved["update_hash"]
    # Scored like any other (a skewed update may be valued at 0: Worthless, not refused).
    assert settled.outcome in (Verdict.ACCEPTED, Verdict.WORTHLESS)
    assert (settled.payout > 0) == (settled.outcome == Verdict.ACCEPTED)
    assert all(ledger.settled_trainers[t].outcome != Verdict.REJECTED for t in finished_task.trainers)


def test_fedmarket_verify_agrees_with_every_round(finished_task, e2e_market, coordinator_url, service_env):
    result = subprocess.run(
        [sys.executable, "-m", "fedmarket.cli", "verify", str(finished_task.task_id), "--rpc-url", e2e_market.rpc_url,
         "--deployment", str(e2e_market.deployment_file), "--store", coordinator_url],
        env=service_env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "every settled round checks out" in result.stdout


# ------------------------------------------------------------------ verify catches tampering
# These run last in the module: each changes one artifact, checks `fedmarket verify` names it,
# and puts it back.


def run_verify(finished_task, e2e_market, coordinator_url, service_env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fedmarket.cli", "verify", str(finished_task.task_id), "--rpc-url", e2e_market.rpc_url,
         "--deployment", str(e2e_market.deployment_file), "--store", coordinator_url],
        env=service_env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.fixture
def tamper(workdir):
    """Overwrites one blob of the coordinator's store (found by CID) and restores it afterwards."""
    store = DirectoryStore(workdir / "coordinator" / "blobs")
    saved: list[tuple[Path, bytes]] = []

    def overwrite(cid: str, data: bytes) -> None:
        path = store._path(cid)
        saved.append((path, path.read_bytes()))
        path.write_bytes(data)

    yield overwrite
    for path, original in saved:
        path.write_bytes(original)


@pytest.mark.parametrize("artifact", ["model", "report"])
def test_verify_catches_a_tampered_blob(
    artifact, finished_task, market, e2e_market, coordinator_url, service_env, tamper
):
    round_1 = market.round(finished_task.task_id, 1)
    digest = round_1.new_model_hash if artifact == "model" else round_1.report_hash
    tamper(cid_from_digest(digest), b"tampered")
    result = run_verify(finished_task, e2e_market, coordinator_url, service_env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"round 1: {artifact}" in result.stdout


def lying_ledger(change):
    """`read_round` as an RPC that lies about one round-1 fact would serve it."""

    def read(market, task_id, round_no, **kwargs):
        ledger = read_round(market, task_id, round_no, **kwargs)
        if round_no == 1:
            change(ledger)
        return ledger

    return read


def _raise_a_score(ledger) -> None:
    validator = ledger.validators[0]
    vector = list(ledger.score_reveals[validator])
    vector[0] = vector[0] * 3 + 10**9
    ledger.score_reveals[validator] = tuple(vector)


def _raise_a_payout(ledger) -> None:
    trainer = ledger.trainers[0]
    settled = ledger.settled_trainers[trainer]
    ledger.settled_trainers[trainer] = dataclasses.replace(settled, payout=settled.payout + 1)


@pytest.mark.parametrize("change", [_raise_a_score, _raise_a_payout], ids=["score-vector", "payout"])
def test_verify_catches_a_score_vector_or_payout_that_does_not_add_up(
    change, finished_task, market, coordinator_url, monkeypatch
):
    monkeypatch.setattr(verify_module, "read_round", lying_ledger(change))
    with HttpStore(coordinator_url) as store:
        results = verify_module.verify_task(market, store, finished_task.task_id)
    findings = [f for r in results for f in r.findings]
    assert any(f.what == "consensus" for f in findings), findings
    assert all(f.round_no == 1 for f in findings), findings  # the other round still checks out
