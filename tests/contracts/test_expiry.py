"""expireTask: a pool never stays locked when the coordinator stops starting rounds."""

from __future__ import annotations

from testkit.contracts import POOL, SETTLEMENT_GRACE, STAKE, error_args, event_names, events, reverts

from fedmarket.protocol import RoundPhase, TaskStatus


def _settled_first_round(driver, task_id, trainers, payout):
    """Round 1 settled (paying `payout` to trainers[0]); returns (expiry time, rewards tree)."""
    driver.run_round(task_id, committers=trainers[:3])
    _, tree = driver.finalize(task_id, earnings={trainers[0].address: payout} if payout else {}, payout=payout)
    return driver.get_round(task_id, 1)["revealDeadline"] + SETTLEMENT_GRACE, tree


def test_expire_task_after_grace_refunds_pool_and_keeps_claims(driver, market_chain, make_task, trainers, outsider, owner):
    task_id = make_task(rounds=3)
    driver.join(task_id, trainers[:3])
    payout = POOL // 3
    expires_at, tree = _settled_first_round(driver, task_id, trainers, payout)
    market_chain.advance(expires_at - market_chain.now() + 1)
    owner_before = market_chain.balance(owner.address)

    receipt = market_chain.tx(outsider, market_chain.market.functions.expireTask(task_id))

    assert event_names(market_chain, receipt) == ["TaskExpired"]
    assert events(market_chain, receipt, "TaskExpired")[0]["refund"] == POOL - payout
    assert market_chain.balance(owner.address) - owner_before == POOL - payout
    state = driver.get_state(task_id)
    assert (state["status"], state["pool"], state["unclaimed"]) == (TaskStatus.EXPIRED, 0, payout)
    # What was earned stays claimable, and stakes come back.
    driver.claim(task_id, trainers[0], tree)
    market_chain.tx(trainers[1], market_chain.market.functions.withdrawStake(task_id))
    assert driver.get_trainer(task_id, trainers[1].address)["stake"] == 0
    assert market_chain.balance(market_chain.market.address) == sum(
        driver.get_trainer(task_id, t.address)["stake"] for t in trainers[:3]
    ) == 2 * STAKE


def test_expire_task_before_grace_reverts_not_expired(driver, market_chain, make_task, trainers, outsider):
    task_id = make_task(rounds=3)
    driver.join(task_id, trainers[:3])
    expires_at, _ = _settled_first_round(driver, task_id, trainers, 0)
    error = reverts(market_chain.tx, outsider, market_chain.market.functions.expireTask(task_id))
    assert error.name == "TaskMarketNotExpired"
    assert error_args(error) == {"taskId": task_id, "expiresAt": expires_at}
    driver.start_round(task_id)  # the coordinator is still in time


def test_expire_task_with_a_round_open_reverts_wrong_phase(driver, market_chain, joined_task, outsider):
    driver.start_round(joined_task)
    market_chain.advance(SETTLEMENT_GRACE * 3)
    error = reverts(market_chain.tx, outsider, market_chain.market.functions.expireTask(joined_task))
    assert error.name == "TaskMarketWrongPhase"
    assert error_args(error)["phase"] == RoundPhase.SETTLING


def test_expire_task_before_first_round_reverts_wrong_phase(market_chain, joined_task, outsider):
    """Before the first round the owner cancels; nobody else can end the task."""
    market_chain.advance(SETTLEMENT_GRACE * 3)
    error = reverts(market_chain.tx, outsider, market_chain.market.functions.expireTask(joined_task))
    assert error.name == "TaskMarketWrongPhase"
    assert error_args(error)["phase"] == RoundPhase.NONE


def test_expire_completed_task_reverts_task_not_open(driver, market_chain, make_task, trainers, outsider):
    task_id = make_task(rounds=1)
    driver.join(task_id, trainers[:2])
    driver.run_round(task_id, committers=trainers[:2])
    driver.finalize(task_id, earnings={}, payout=0)
    market_chain.advance(SETTLEMENT_GRACE * 2)
    error = reverts(market_chain.tx, outsider, market_chain.market.functions.expireTask(task_id))
    assert error.name == "TaskMarketTaskNotOpen"
    assert error_args(error)["status"] == TaskStatus.COMPLETED
