"""On the devnet the chain's clock moves without traffic (interval blocks besides instant mining),
so a round whose committer never reveals moves on by itself once its reveal deadline passes: the
validators see the score phase open and score, and the round settles. With instant mining alone
the clock only moves when someone sends a transaction: such a round waited, after its deadline,
until somebody happened to (issue: "devnet time stands still")."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from web3 import Web3

from backend.orchestrator import StepAction
from fedmarket.devnet import Anvil
from fedmarket.protocol import RoundPhase
from testkit.coordinator import send_updates
from testkit.market import MarketEnv, market_env

BLOCK_TIME = 1.0


@pytest.fixture
def fresh_market(artifacts, deployer, owner, outsider, trainers, validators, tmp_path) -> Iterator[MarketEnv]:
    """Overrides the conftest's market: this one lives on an Anvil of its own with a block time."""
    recipients = [owner.address, outsider.address, *(a.address for a in (*trainers, *validators))]
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
    coordinator_app, post_task, make_trainer, make_validator
):
    task = post_task(
        coordinator_app, commit_window=8, reveal_window=2, score_window=30, score_reveal_window=30
    )
    honest = [make_trainer(coordinator_app, i) for i in (0, 1)]
    silent = make_trainer(coordinator_app, 2, mode="no_reveal")
    validators = [make_validator(coordinator_app, i) for i in (0, 1)]
    for actor in (*honest, silent, *validators):
        actor.join(task.task_id)
    assert coordinator_app.step(task.task_id).action == StepAction.STARTED
    send_updates(task, [*honest, silent])

    # Nobody sends anything now: only the devnet's own blocks can carry the clock past the deadline.
    # The coordinator and the validators only read the chain until its phase moves on.
    market = coordinator_app.market
    reveal_deadline = market.round(task.task_id).reveal_deadline
    assert market.chain_time() < reveal_deadline
    give_up = time.monotonic() + (reveal_deadline - market.chain_time()) + 20 * BLOCK_TIME
    scored_in: set = set()
    while (result := coordinator_app.step(task.task_id)).action == StepAction.WAITING:
        assert time.monotonic() < give_up, f"chain time {market.chain_time()} never passed {reveal_deadline}"
        acted = {validator.step(task.task_id, task.spec) for validator in validators} - {None}
        scored_in |= acted
        if not acted:
            time.sleep(BLOCK_TIME / 2)
    assert scored_in == {RoundPhase.SCORE_COMMIT, RoundPhase.SCORE_REVEAL}
    assert result.action == StepAction.FINALIZED, result
    assert coordinator_app.step(task.task_id).action == StepAction.PUBLISHED
    coordinator_app.sync()
    outcomes = {s["trainer"]: s["outcome"] for s in coordinator_app.api.round(task.task_id, 1)["submissions"]}
    assert outcomes == {silent.address: "no_reveal", **{t.address: "accepted" for t in honest}}
    assert market.round(task.task_id, 1).model_published
