"""Crashes: a coordinator killed at any moment and started again on the same data loses nothing:
every round is settled once by the contract and its model published once; its database can be
rebuilt from the chain alone.

The crash test runs the real service (`python -m backend.cli`, i.e. `fedmarket-coordinator`) as a subprocess with its
background indexer and orchestrator threads, and SIGKILLs it in the middle of rounds, while the
test plays the trainers and the validators.
"""

from __future__ import annotations

import random
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from fedmarket.chain import MarketClient
from fedmarket.cid import cid_from_digest
from fedmarket.client import CoordinatorClient
from fedmarket.devnet import free_port
from fedmarket.errors import ContractRevert
from fedmarket.ledger import read_round
from fedmarket.processes import COORDINATOR_COMMAND, log_tail, wait_until_healthy
from fedmarket.protocol import BPS, RoundPhase, TaskStatus
from fedmarket.report import RoundReport
from fedmarket.store import DirectoryStore, HttpStore
from testkit.coordinator import (
    MIN_STAKE,
    SLASH_BPS,
    VALIDATOR_STAKE,
    PostedTask,
    ScriptedTrainer,
    ScriptedValidator,
    advance_chain,
    digits_spec,
    play_round,
    send_scores,
    task_terms,
)
from testkit.market import REPO_ROOT, coordinator_env

KILL_SEED = 20240601  # the random kill delays; change it to try other crash points


class CoordinatorProcess:
    """`python -m backend.cli` on a fixed port and data dir: start, SIGKILL, start again."""

    def __init__(self, env, data_dir: Path, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.environ = coordinator_env(env, data_dir, self.port)
        self.log = log
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self, timeout: float = 120.0) -> None:  # generous: CI hosts are shared
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


def wait_for(condition, what: str, process: CoordinatorProcess | None = None, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(
        f"timed out waiting for {what}" + (f"; coordinator log:\n{log_tail(process.log)}" if process else "")
    )


def test_a_coordinator_killed_at_any_moment_settles_and_publishes_every_round_once(
    coordinator_process, fresh_market, owner, coordinator, trainers, validators, digits, w3, tmp_path
):
    process, rng = coordinator_process, random.Random(KILL_SEED)
    process.start()
    market = MarketClient.connect(fresh_market.rpc_url, fresh_market.deployment)
    api = CoordinatorClient(process.url)
    store = HttpStore(process.url)
    spec = digits_spec()
    terms = task_terms(
        spec, coordinator.address, rounds=3, reveal_window=60, score_window=60, score_reveal_window=60
    )  # coordinator: the devnet key the service signs with
    posted = api.post_task(spec=spec, terms=terms, owner_key=owner.key, market=market)
    task = PostedTask(posted["task_id"], spec, terms, posted["spec_cid"])
    task_id = task.task_id
    players = [
        ScriptedTrainer(trainers[i], market, store, digits.share(300 * i, 300 * (i + 1)), seed=i)
        for i in range(3)
    ]
    # The validators read the blobs from the coordinator's directory, so they can score while it is down.
    blobs = DirectoryStore(tmp_path / "coordinator" / "blobs")
    checkers = [
        ScriptedValidator(validators[i], market, blobs, digits.validation_share(i, 2)) for i in range(2)
    ]
    for actor in (*players, *checkers):
        actor.join(task_id)

    def round_started(round_no: int) -> None:
        wait_for(
            lambda: market.task(task_id).current_round == round_no and market.phase(task_id) == RoundPhase.COMMIT,
            f"round {round_no} to start", process,
        )  # fmt: skip

    def round_published(round_no: int) -> None:
        wait_for(
            lambda: market.round(task_id, round_no).model_published, f"round {round_no}'s model", process
        )

    def prepare(group) -> None:  # pulls the round's model from the coordinator
        for player in group:
            player.prepare(task_id, spec)

    def commit(group) -> None:
        for player in group:
            player.commit(task_id)

    def upload_and_reveal(group) -> None:
        for player in group:
            player.upload()
            player.reveal(task_id)

    # Round 1: killed in the commit phase; the other commits land while it is down.
    round_started(1)
    prepare(players)
    commit(players[:1])
    process.kill()
    commit(players[1:])
    process.start()
    upload_and_reveal(players)
    send_scores(task, checkers)
    round_published(1)

    # Round 2: killed after every upload; the reveals and all the scores land while it is down,
    # so it must finalize and publish a round it never saw past its commit phase.
    round_started(2)
    prepare(players)
    commit(players)
    for player in players:
        player.upload()
    process.kill()
    for player in players:
        player.reveal(task_id)
    send_scores(task, checkers)
    assert market.phase(task_id) == RoundPhase.SETTLING
    process.start()
    round_published(2)

    # Round 3: the last trainer commits and never reveals, so the scores come after the reveal
    # deadline; then killed at random moments around settling (finalizeRound, building the
    # aggregate, publishModel), twice.
    players[2].mode = "no_reveal"
    round_started(3)
    prepare(players)
    commit(players)
    upload_and_reveal(players)
    advance_chain(w3, market.round(task_id, 3).reveal_deadline - market.chain_time() + 1)
    send_scores(task, checkers)
    crash_points = []
    for _ in range(2):
        time.sleep(rng.uniform(0.0, 0.8))
        process.kill()
        crash_points.append(crash_point(market, task_id, 3))
        process.start()
    round_published(3)
    print("killed while:", crash_points)  # which moments this seed hit (`pytest -s` shows it)
    assert market.task(task_id).status == TaskStatus.COMPLETED

    # Exactly one settlement and one publication per round, each of the right model.
    closes = [e for e in market.iter_events(task_id=task_id) if e.name in ("RoundFinalized", "RoundAborted")]
    assert Counter((e.name, e.args["round"]) for e in closes) == {("RoundFinalized", r): 1 for r in (1, 2, 3)}
    published = list(market.iter_events("ModelPublished", task_id=task_id))
    assert Counter(e.args["round"] for e in published) == {1: 1, 2: 1, 3: 1}
    slashes = list(market.iter_events("TrainerSlashed", task_id=task_id))
    assert [(e.args["round"], e.args["trainer"]) for e in slashes] == [(3, players[2].address)]
    for round_no in (1, 2, 3):
        round_info = market.round(task_id, round_no)
        report = RoundReport.from_json(blobs.get(cid_from_digest(round_info.report_hash)))
        assert report.new_model_cid == cid_from_digest(round_info.new_model_hash)
        assert report.payout == round_info.payout
        accepted = {s.trainer for s in report.accepted}
        assert accepted == set(read_round(market, task_id, round_no).aggregated())
        if round_no > 1:
            assert round_info.model_hash == market.round(task_id, round_no - 1).new_model_hash

    # Money: the market holds exactly the stakes and the unclaimed rewards; the API's earnings
    # (the index of a coordinator killed four times) are what claim pays, once.
    wait_for(lambda: api.task(task_id)["status"] == "completed", "the index to catch up", process)
    info = market.task(task_id)
    stakes = sum(market.trainer(task_id, p.address).stake for p in players) + sum(
        market.validator(task_id, c.address).stake for c in checkers
    )
    assert stakes == 3 * MIN_STAKE - MIN_STAKE * SLASH_BPS // BPS + 2 * VALIDATOR_STAKE
    assert info.unclaimed == sum(e.args["trainerPayout"] + e.args["validatorPayout"] for e in closes)
    assert market.token_balance(market.market_address) == info.pool + stakes + info.unclaimed
    for actor in (*players, *checkers):
        earned = int(api.earnings(task_id, actor.address)["earned"])
        assert earned == market.claimable(task_id, actor.address)
        if earned:
            actor.chain.claim(task_id)
            with pytest.raises(ContractRevert) as twice:
                actor.chain.claim(task_id)
            assert twice.value.name == "TaskMarketNothingToClaim"
    assert market.task(task_id).unclaimed == 0
    assert market.token_balance(market.market_address) == stakes
    api.close()
    store.close()


def crash_point(market: MarketClient, task_id: int, round_no: int) -> str:
    """Where in settling `round_no` a (dead) coordinator stopped, from the chain."""
    round_info = market.round(task_id, round_no)
    if not round_info.closed:
        return "before finalizeRound"
    return "published" if round_info.model_published else "finalized, not yet published"


# ---------------------------------------------------------------------- rebuilding the index


def api_view(coordinator, task_id: int, accounts: list[str]) -> dict:
    """Everything the API shows about a task."""
    task = coordinator.api.task(task_id)
    return {
        "tasks": coordinator.api.tasks(),
        "task": task,
        "rounds": [coordinator.api.round(task_id, r["round"]) for r in task["rounds"]],
        "earnings": [coordinator.api.earnings(task_id, account) for account in accounts],
    }


def test_deleting_the_database_and_restarting_rebuilds_the_same_api(
    start_coordinator, post_task, make_trainer, make_validator, w3, tmp_path
):
    first = start_coordinator()
    task = post_task(first, rounds=4)
    players = [make_trainer(first, 0), make_trainer(first, 1), make_trainer(first, 2, mode="garbage")]
    checkers = [make_validator(first, 0), make_validator(first, 1), make_validator(first, 2, mode="lazy")]
    for actor in (*players, *checkers):
        actor.join(task.task_id)
    assert play_round(first, task, players, checkers, w3).action == "finalized"  # garbage and lazy slashed
    assert play_round(first, task, players[:2], checkers[:1], w3).action == "aborted"  # one validator short
    late = make_validator(first, 3)
    late.join(task.task_id)
    assert play_round(first, task, players[:2], [checkers[0], late], w3).action == "finalized"
    players[0].chain.claim(task.task_id)
    checkers[1].chain.leave_validator(task.task_id)
    assert first.step(task.task_id).action == "started"  # round 4 open, one commit so far
    players[1].prepare(task.task_id, task.spec)
    players[1].commit(task.task_id)
    first.sync()
    accounts = [a.address for a in (*players, *checkers, late)]
    before = api_view(first, task.task_id, accounts)
    first.close()

    for path in (tmp_path / "coordinator").glob("coordinator.db*"):
        path.unlink()
    rebuilt = start_coordinator(data_dir=tmp_path / "coordinator")  # indexes the chain at start
    assert api_view(rebuilt, task.task_id, accounts) == before
    # What the view holds: validators in and out, every round's outcome, earnings and claims.
    assert [v["validator"] for v in before["task"]["validators"]] == [checkers[0].address, late.address]
    assert [r["status"] for r in before["rounds"]] == ["finalized", "aborted", "finalized", "started"]
    assert before["rounds"][0]["new_model_cid"] and before["rounds"][3]["submissions"][0]["outcome"] is None
    claimed = before["earnings"][0]
    assert claimed["claimed"] == claimed["earned"] != "0" and claimed["claimable"] == "0"
