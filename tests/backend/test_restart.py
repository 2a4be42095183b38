"""Crashes: a coordinator killed at any moment and started again on the same data loses nothing,
settles every round exactly once and never pays twice; its database can be rebuilt from the
chain and the store.

The crash test runs the real service (`python -m backend.app`) as a subprocess with its
background indexer and orchestrator threads, and SIGKILLs it in the middle of rounds.
"""

from __future__ import annotations

import random
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from backend.db import Database, SettlementRow
from fedmarket.chain import MarketClient
from fedmarket.cid import cid_from_digest
from fedmarket.client import CoordinatorClient
from fedmarket.devnet import free_port
from fedmarket.errors import ContractRevert
from fedmarket.processes import COORDINATOR_COMMAND, log_tail, wait_until_healthy
from fedmarket.protocol import RoundPhase, TaskStatus
from fedmarket.report import RoundReport
from fedmarket.store import DirectoryStore, HttpStore
from testkit.coordinator import (
    MIN_STAKE,
    ScriptedTrainer,
    advance_chain,
    digits_spec,
    play_round,
    task_terms,
)
from testkit.market import REPO_ROOT, coordinator_env

KILL_SEED = 20240601  # the random kill delays; change it to try other crash points


class CoordinatorProcess:
    """`python -m backend.app` on a fixed port and data dir: start, SIGKILL, start again."""

    def __init__(self, env, data_dir: Path, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.environ = coordinator_env(env, data_dir, self.port)
        self.log = log
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self, timeout: float = 60.0) -> None:
        with open(self.log, "ab") as log:
            log.write(f"\n===== start {self.starts + 1} =====\n".encode())
            self.proc = subprocess.Popen(
                COORDINATOR_COMMAND, cwd=REPO_ROOT, env=self.environ,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        self.starts += 1
        wait_until_healthy(self.url, self.proc, self.log, timeout=timeout)

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a power cut."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def coordinator_process(fresh_market, tmp_path):
    process = CoordinatorProcess(fresh_market, tmp_path / "coordinator", tmp_path / "coordinator.log")
    yield process
    process.stop()


def wait_for(condition, what: str, process: CoordinatorProcess | None = None, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(
        f"timed out waiting for {what}" + (f"; coordinator log:\n{log_tail(process.log)}" if process else "")
    )


def test_a_coordinator_killed_at_any_moment_settles_every_round_once(
    coordinator_process, fresh_market, owner, coordinator, trainers, digits, w3, tmp_path
):
    process, rng = coordinator_process, random.Random(KILL_SEED)
    process.start()
    market = MarketClient.connect(fresh_market.rpc_url, fresh_market.deployment)
    api = CoordinatorClient(process.url)
    store = HttpStore(process.url)
    spec = digits_spec()
    terms = task_terms(spec, coordinator.address, rounds=4, reveal_window=60)  # the devnet key
    task_id = api.post_task(spec=spec, terms=terms, owner_key=owner.key, market=market)["task_id"]
    api.upload_validation_data(
        task_id, digits.validation.X, digits.validation.y, owner_key=owner.key, market=market
    )
    players = [
        ScriptedTrainer(trainers[i], market, store, digits.share(300 * i, 300 * (i + 1)), seed=i)
        for i in range(3)
    ]
    for player in players:
        player.join(task_id)

    def round_started(round_no: int) -> None:
        wait_for(
            lambda: market.task(task_id).current_round == round_no and market.phase(task_id) == RoundPhase.COMMIT,
            f"round {round_no} to start", process,
        )  # fmt: skip

    def round_closed(round_no: int) -> None:
        wait_for(lambda: market.round(task_id, round_no).closed, f"round {round_no} to close", process)

    def prepare(group):
        for player in group:
            player.prepare(task_id, spec)

    def commit(group):
        for player in group:
            player.commit(task_id)

    def upload(group):
        for player in group:
            player.upload()

    def reveal(group):
        for player in group:
            player.reveal(task_id)

    # Round 1: killed in the commit phase; the other commits land while it is down.
    round_started(1)
    prepare(players)
    commit(players[:1])
    process.kill()
    commit(players[1:])
    process.start()
    upload(players)
    reveal(players)
    round_closed(1)

    # Round 2: killed after every upload; every reveal lands while it is down, so it must
    # settle a round it never saw close.
    round_started(2)
    prepare(players)
    commit(players)
    upload(players)
    process.kill()
    reveal(players)
    assert market.phase(task_id) == RoundPhase.SETTLING
    process.start()
    round_closed(2)

    # Rounds 3 and 4: killed at random moments around settlement (deciding, recording the
    # settlement, sending finalizeRound, starting the next round), twice each. In round 3 the
    # last trainer commits and never reveals, so the round settles only after its deadline.
    players[2].mode = "no_reveal"
    crash_points = []
    for round_no in (3, 4):
        round_started(round_no)
        active = players if round_no == 3 else players[:2]
        prepare(active)
        commit(active)
        upload(active)
        reveal(active)
        if round_no == 3:
            advance_chain(w3, market.round(task_id, 3).reveal_deadline - market.chain_time() + 1)
        for _ in range(2):
            time.sleep(rng.uniform(0.0, 0.6))
            process.kill()
            crash_points.append(crash_point(tmp_path / "coordinator", market, task_id, round_no))
            process.start()
        round_closed(round_no)
    print("killed while:", crash_points)  # which moments this seed hit (`pytest -s` shows it)

    wait_for(lambda: market.task(task_id).status == TaskStatus.COMPLETED, "the task to complete", process)
    process.kill()  # nothing below needs it; the chain and the store are the record

    # Exactly one settlement per round, and the three rounds the quorum reached were finalized.
    closes = [e for e in market.iter_events(task_id=task_id) if e.name in ("RoundFinalized", "RoundAborted")]
    assert Counter(e.args["round"] for e in closes) == {1: 1, 2: 1, 3: 1, 4: 1}, closes
    assert all(e.name == "RoundFinalized" for e in closes)
    slashes = list(market.iter_events("TrainerSlashed", task_id=task_id))
    assert [(e.args["round"], e.args["trainer"]) for e in slashes] == [(3, players[2].address)]

    # Each round's report is in the store under its on-chain hash; the settlement the
    # coordinator recorded is the one that was sent.
    blobs = DirectoryStore(tmp_path / "coordinator" / "blobs")
    reports = {
        e.args["round"]: RoundReport.from_json(blobs.get(cid_from_digest(e.args["reportHash"])))
        for e in closes
    }
    for e in closes:
        assert reports[e.args["round"]].payout == e.args["payout"]
    assert_settlements_match_the_chain(tmp_path / "coordinator", market, task_id)

    # Money: the market holds exactly the stakes and the unclaimed rewards; each trainer can
    # claim what the reports say, once.
    info = market.task(task_id)
    stakes = sum(market.trainer(task_id, p.address).stake for p in players)
    assert stakes == 3 * MIN_STAKE - (MIN_STAKE - market.trainer(task_id, players[2].address).stake)
    total_paid = sum(e.args["payout"] for e in closes)
    assert info.unclaimed == total_paid
    assert market.token_balance(market.market_address) == info.pool + stakes + info.unclaimed
    final = reports[4].cumulative
    process.start()  # serves the proofs
    for player in players:
        earned = sum(
            item.payout for r in reports.values() for item in r.submissions if item.trainer == player.address
        )
        assert final.get(player.address, 0) == earned
        rewards = api.rewards(task_id, player.address)
        assert int(rewards["cumulative"]) == earned
        if earned:
            player.chain.claim(task_id, earned, rewards["proof"])
            with pytest.raises(ContractRevert) as twice:
                player.chain.claim(task_id, earned, rewards["proof"])
            assert twice.value.name == "TaskMarketNothingToClaim"
        assert market.claimed(task_id, player.address) == earned
    assert market.task(task_id).unclaimed == 0
    assert market.token_balance(market.market_address) == stakes
    api.close()
    store.close()


def settlements(data_dir: Path, task_id: int) -> dict[int, SettlementRow]:
    db = Database(f"sqlite:///{data_dir / 'coordinator.db'}")
    try:
        with db.session() as session:
            return {row.round: row for row in session.query(SettlementRow).filter_by(task_id=task_id)}
    finally:
        db.dispose()


def crash_point(data_dir: Path, market: MarketClient, task_id: int, round_no: int) -> str:
    """Where in settling `round_no` a (dead) coordinator stopped, from its database and the chain."""
    row = settlements(data_dir, task_id).get(round_no)
    if market.round(task_id, round_no).closed:
        if row is not None and row.tx_hash is None:
            return "finalizeRound mined, not yet recorded"
        return "settled" + (", next round started" if market.task(task_id).current_round > round_no else "")
    return "deciding" if row is None else "decision recorded, finalizeRound not mined"


def assert_settlements_match_the_chain(data_dir: Path, market: MarketClient, task_id: int) -> None:
    rows = settlements(data_dir, task_id)
    for round_no, row in rows.items():
        assert market.round(task_id, round_no).report_hash.hex() == row.payload["report_hash"], round_no


# ---------------------------------------------------------------------- rebuilding the index


def api_view(coordinator, task_id: int, accounts: list[str]) -> dict:
    """Everything the API shows about a task."""
    task = coordinator.api.task(task_id)
    return {
        "tasks": coordinator.api.tasks(),
        "task": task,
        "rounds": [coordinator.api.round(task_id, r["round"]) for r in task["rounds"]],
        "rewards": [coordinator.api.rewards(task_id, account) for account in accounts],
    }


def test_deleting_the_database_and_restarting_rebuilds_the_same_api(
    start_coordinator, post_task, make_trainer, w3, tmp_path
):
    first = start_coordinator()
    task = post_task(first, rounds=3)
    players = [make_trainer(first, 0), make_trainer(first, 1), make_trainer(first, 2, mode="garbage")]
    for player in players:
        player.join(task.task_id)
    assert play_round(first, task, players, w3).action == "finalized"
    assert play_round(first, task, players[:2], w3).action == "finalized"
    rewards = first.api.rewards(task.task_id, players[0].address)
    players[0].chain.claim(task.task_id, int(rewards["cumulative"]), rewards["proof"])
    assert first.step(task.task_id).action == "started"  # round 3 open, nobody committed yet
    players[1].prepare(task.task_id, task.spec)
    players[1].commit(task.task_id)
    first.sync()
    accounts = [p.address for p in players]
    before = api_view(first, task.task_id, accounts)
    first.close()

    for path in (tmp_path / "coordinator").glob("coordinator.db*"):
        path.unlink()
    rebuilt = start_coordinator(data_dir=tmp_path / "coordinator")  # indexes the chain at start
    assert api_view(rebuilt, task.task_id, accounts) == before
    assert before["task"]["has_validation_data"] is True
    assert before["rewards"][0]["claimed"] == before["rewards"][0]["cumulative"] != "0"
