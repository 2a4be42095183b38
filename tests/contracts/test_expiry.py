"""expireTask: a pool never stays locked when the coordinator stops starting rounds."""

from __future__ import annotations

from fedmarket.protocol import RoundPhase, TaskStatus
from testkit.contracts import POOL, SETTLEMENT_GRACE, STAKE, error_args, event_names, events, reverts


def _settled_first_round(driver, task_id, trainers) -> int:
    """Round 1 finalized (not published); returns when the task may be expired."""
    driver.run_round(task_id, committers=trainers[:3])
    driver.finalize(task_id)
    return driver.get_round(task_id, 1)["closedAt"] + SETTLEMENT_GRACE


def test_expire_task_after_grace_refunds_pool_and_keeps_claims(
    driver, market_chain, make_task, trainers, validators, outsider, owner
):
    task_id = make_task(rounds=3)
    driver.join(task_id, trainers[:3])
    driver.join_validators(task_id, validators[:1])
    expires_at = _settled_first_round(driver, task_id, trainers)
    paid = driver.get_state(task_id)["unclaimed"]
    market_chain.advance(expires_at - market_chain.now() + 1)
    owner_before = market_chain.balance(owner.address)

    receipt = market_chain.tx(outsider, market_chain.market.functions.expireTask(task_id))

    assert event_names(market_chain, receipt) == ["TaskExpired"]
    assert events(market_chain, receipt, "TaskExpired")[0]["refund"] == POOL - paid
    assert market_chain.balance(owner.address) - owner_before == POOL - paid
    state = driver.get_state(task_id)
    assert (state["status"], state["pool"], state["unclaimed"]) == (TaskStatus.EXPIRED, 0, paid)
    # What was earned stays claimable, and stakes come back.
    for account in [*trainers[:3], validators[0]]:
        driver.claim(task_id, account)
    market_chain.tx(trainers[1], market_chain.market.functions.withdrawStake(task_id))
    market_chain.tx(validators[0], market_chain.market.functions.withdrawStake(task_id))
    assert driver.get_trainer(task_id, trainers[1].address)["stake"] == 0
    assert market_chain.balance(market_chain.market.address) == 2 * STAKE  # trainers[0] and [2] still joined


def test_expire_task_before_grace_reverts_not_expired(
    driver, market_chain, make_task, trainers, validators, outsider
):
    task_id = make_task(rounds=3)
    driver.join(task_id, trainers[:3])
    driver.join_validators(task_id, validators[:1])
    expires_at = _settled_first_round(driver, task_id, trainers)
    error = reverts(market_chain.tx, outsider, market_chain.market.functions.expireTask(task_id))
    assert error.name == "TaskMarketNotExpired"
    assert error_args(error) == {"taskId": task_id, "expiresAt": expires_at}
    driver.publish(task_id)
    driver.start_round(task_id)  # the coordinator is still in time


def test_expiry_counts_from_when_the_round_closed(driver, market_chain, joined_task, trainers, outsider):
    """A round settled late (long after its reveals) still gives the coordinator the whole grace."""
    run = driver.run_round(joined_task, committers=trainers[:3])
    market_chain.advance(SETTLEMENT_GRACE * 2)
    driver.finalize(joined_task)
    closed_at = driver.get_round(joined_task, 1)["closedAt"]
    assert closed_at > driver.get_round(joined_task, 1)["scoreRevealDeadline"] + SETTLEMENT_GRACE
    error = reverts(market_chain.tx, outsider, market_chain.market.functions.expireTask(joined_task))
    assert error_args(error) == {"taskId": joined_task, "expiresAt": closed_at + SETTLEMENT_GRACE}
    assert run.round_no == 1


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


def test_expire_completed_task_reverts_task_not_open(
    driver, market_chain, make_task, trainers, validators, outsider
):
    task_id = make_task(rounds=1)
    driver.join(task_id, trainers[:2])
    driver.join_validators(task_id, validators[:1])
    driver.run_round(task_id, committers=trainers[:2])
    driver.finalize(task_id)
    market_chain.advance(SETTLEMENT_GRACE * 2)
    error = reverts(market_chain.tx, outsider, market_chain.market.functions.expireTask(task_id))
    assert error.name == "TaskMarketTaskNotOpen"
    assert error_args(error)["status"] == TaskStatus.COMPLETED


def test_publishing_after_expiry_reverts_task_not_open(driver, market_chain, joined_task, trainers, outsider):
    expires_at = _settled_first_round(driver, joined_task, trainers)
    market_chain.advance(expires_at - market_chain.now() + 1)
    market_chain.tx(outsider, market_chain.market.functions.expireTask(joined_task))
    error = reverts(driver.publish, joined_task)
    assert error.name == "TaskMarketTaskNotOpen"
    assert error_args(error)["status"] == TaskStatus.EXPIRED


def test_expiry_waits_a_whole_grace_after_an_unpause(
    driver, market_chain, joined_task, trainers, deployer, outsider
):
    """A pause stops startRound, so a pause longer than the grace must not let anyone expire the
    task while it lasts or right after it ends."""
    _settled_first_round(driver, joined_task, trainers)
    driver.publish(joined_task)
    market_chain.tx(deployer, market_chain.market.functions.pause())
    market_chain.advance(SETTLEMENT_GRACE * 2)
    expire = market_chain.market.functions.expireTask(joined_task)
    assert reverts(market_chain.tx, outsider, expire).name == "EnforcedPause"
    receipt = market_chain.tx(deployer, market_chain.market.functions.unpause())
    unpaused_at = market_chain.w3.eth.get_block(receipt["blockNumber"])["timestamp"]
    error = reverts(market_chain.tx, outsider, expire)
    assert error.name == "TaskMarketNotExpired"
    assert error_args(error) == {"taskId": joined_task, "expiresAt": unpaused_at + SETTLEMENT_GRACE}
    driver.start_round(joined_task)  # the coordinator is still in time
