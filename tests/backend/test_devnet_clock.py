"""On the devnet the chain's clock moves without traffic (interval blocks besides instant mining),
so a round whose committer never reveals settles by itself once its reveal deadline passes. With
instant mining alone the clock only moves when someone sends a transaction: such a round waited,
after its deadline, until somebody happened to (issue: "devnet time stands still")."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from web3 import Web3

from backend.orchestrator import StepAction
from fedmarket.devnet import Anvil
from fedmarket.report import RejectionReason
from testkit.coordinator import send_updates
from testkit.market import MarketEnv, market_env

BLOCK_TIME = 1.0


@pytest.fixture
def fresh_market(artifacts, deployer, owner, outsider, trainers, tmp_path) -> Iterator[MarketEnv]:
    """Overrides the conftest's market: this one lives on an Anvil of its own with a block time."""
    recipients = [owner.address, outsider.address, *(t.address for t in trainers)]
    with Anvil(block_time=BLOCK_TIME) as node:
        yield market_env(
            node.url, tmp_path / "deployments", artifacts=artifacts, deployer=deployer, recipients=recipients
        )


def test_the_chain_clock_ticks_without_traffic(fresh_market):
    w3 = Web3(Web3.HTTPProvider(fresh_market.rpc_url))
    first = w3.eth.get_block("latest")
    time.sleep(3 * BLOCK_TIME)
    later = w3.eth.get_block("latest")
    assert later["number"] > first["number"] and later["timestamp"] > first["timestamp"]


def test_a_round_with_a_silent_committer_settles_with_no_other_traffic(
    coordinator_app, post_task, make_trainer
):
    task = post_task(coordinator_app, commit_window=8, reveal_window=2)
    honest = [make_trainer(coordinator_app, i) for i in (0, 1)]
    silent = make_trainer(coordinator_app, 2, mode="no_reveal")
    for trainer in (*honest, silent):
        trainer.join(task.task_id)
    assert coordinator_app.step(task.task_id).action == StepAction.STARTED
    send_updates(task, [*honest, silent])

    # Nobody sends anything now: only the devnet's own blocks can carry the clock past the deadline.
    market = coordinator_app.market
    reveal_deadline = market.round(task.task_id).reveal_deadline
    assert market.chain_time() < reveal_deadline
    give_up = time.monotonic() + (reveal_deadline - market.chain_time()) + 20 * BLOCK_TIME
    while (result := coordinator_app.step(task.task_id)).action == StepAction.WAITING:
        assert time.monotonic() < give_up, f"chain time {market.chain_time()} never passed {reveal_deadline}"
        time.sleep(BLOCK_TIME / 2)
    assert result.action == StepAction.FINALIZED, result
    report_hash = market.round(task.task_id, 1).report_hash
    coordinator_app.sync()
    verdicts = {s["trainer"]: s for s in coordinator_app.api.round(task.task_id, 1)["submissions"]}
    assert verdicts[silent.address]["reason"] == RejectionReason.NO_REVEAL
    assert all(verdicts[t.address]["accepted"] for t in honest)
    assert report_hash != bytes(32)
