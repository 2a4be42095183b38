"""Posting and cancelling tasks, joining and leaving them, stakes, pausing, and the plain views."""

from __future__ import annotations

import pytest
from testkit.contracts import POOL, SPEC_HASH, STAKE, error_args, events, reverts
from web3 import Web3
from web3.logs import DISCARD

from fedmarket.deploy import DEFAULT_SETTLEMENT_GRACE
from fedmarket.protocol import RoundPhase, TaskStatus

ZERO = "0x" + "00" * 20


# ------------------------------------------------------------------------------- createTask


def test_create_task_pulls_pool_and_emits_task_created(driver, market_chain, owner, coordinator):
    market_before = market_chain.balance(market_chain.market.address)
    owner_before = market_chain.balance(owner.address)
    terms = driver.terms()

    task_id, receipt = driver.create_task()

    assert task_id == 1
    assert market_chain.market.functions.taskCount().call() == 1
    assert driver.get_terms(task_id) == terms
    state = driver.get_state(task_id)
    assert state["owner"] == owner.address
    assert state["status"] == TaskStatus.OPEN
    assert (state["currentRound"], state["trainerCount"]) == (0, 0)
    assert (state["pool"], state["unclaimed"]) == (POOL, 0)
    assert state["rewardsRoot"] == bytes(32)
    assert driver.phase(task_id) == RoundPhase.NONE
    assert driver.budget(task_id) == POOL // terms.rounds
    assert market_chain.balance(market_chain.market.address) == market_before + POOL
    assert market_chain.balance(owner.address) == owner_before - POOL
    (created,) = events(market_chain, receipt, "TaskCreated")
    assert created["taskId"] == task_id
    assert created["owner"] == owner.address
    assert created["coordinator"] == coordinator.address
    assert tuple(created["terms"].values()) == terms.as_tuple()


def test_create_task_numbers_tasks_in_order(driver):
    first, _ = driver.create_task()
    second, _ = driver.create_task(spec_hash=b"\x02" * 32)
    assert (first, second) == (1, 2)
    assert driver.get_terms(second).spec_hash == b"\x02" * 32
    assert driver.get_terms(first).spec_hash == SPEC_HASH


@pytest.mark.parametrize(
    ("field", "overrides"),
    [
        ("coordinator", {"coordinator": ZERO}),
        ("rounds", {"rounds": 0}),
        ("minTrainers", {"min_trainers": 0, "max_trainers": 0}),
        ("maxTrainers", {"min_trainers": 3, "max_trainers": 2}),
        ("slashBps", {"slash_bps": 10_001}),
        ("commitWindow", {"commit_window": 0}),
        ("revealWindow", {"reveal_window": 0}),
        ("rewardPool", {"reward_pool": 0}),
        ("rewardPool", {"reward_pool": 2**96}),
        ("minStake", {"min_stake": 0}),
        ("minStake", {"min_stake": 2**96}),
    ],
)
def test_create_task_with_out_of_range_term_reverts_invalid_terms(
    driver, market_chain, owner, field, overrides
):
    terms = driver.terms(**overrides)
    driver.approve(owner, min(terms.reward_pool, 2**256 - 1))
    error = reverts(market_chain.tx, owner, market_chain.market.functions.createTask(terms.as_tuple()))
    assert error.name == "TaskMarketInvalidTerms"
    assert error.args["field"] == field


def test_create_task_accepts_boundary_terms(driver):
    task_id, _ = driver.create_task(
        slash_bps=10_000, min_trainers=1, max_trainers=1, rounds=1, reward_pool=1, min_stake=1
    )
    assert driver.get_terms(task_id).slash_bps == 10_000


def test_create_task_without_allowance_pulls_nothing(market_chain, driver, owner):
    terms = driver.terms()
    error = reverts(market_chain.tx, owner, market_chain.market.functions.createTask(terms.as_tuple()))
    assert error.name == "ERC20InsufficientAllowance"
    assert market_chain.market.functions.taskCount().call() == 0


# ------------------------------------------------------------------------------- cancelTask


def test_cancel_task_refunds_pool_and_emits_task_cancelled(driver, market_chain, make_task, owner, trainers):
    task_id = make_task()
    driver.join(task_id, trainers[:1])
    owner_before = market_chain.balance(owner.address)

    receipt = market_chain.tx(owner, market_chain.market.functions.cancelTask(task_id))

    assert events(market_chain, receipt, "TaskCancelled") == [{"taskId": task_id, "refund": POOL}]
    state = driver.get_state(task_id)
    assert state["status"] == TaskStatus.CANCELLED
    assert state["pool"] == 0
    assert market_chain.balance(owner.address) == owner_before + POOL
    assert driver.budget(task_id) == 0
    # the joined trainer keeps its stake until it withdraws it
    assert market_chain.balance(market_chain.market.address) == STAKE


def test_cancel_task_by_outsider_reverts_not_task_owner(market_chain, make_task, outsider):
    task_id = make_task()
    error = reverts(market_chain.tx, outsider, market_chain.market.functions.cancelTask(task_id))
    assert error.name == "TaskMarketNotTaskOwner"
    assert error_args(error) == {"taskId": task_id, "account": outsider.address}


def test_cancel_task_after_first_round_reverts_task_started(driver, market_chain, joined_task, owner):
    driver.start_round(joined_task)
    error = reverts(market_chain.tx, owner, market_chain.market.functions.cancelTask(joined_task))
    assert error.name == "TaskMarketTaskStarted"


def test_cancel_cancelled_task_reverts_task_not_open(market_chain, make_task, owner):
    task_id = make_task()
    market_chain.tx(owner, market_chain.market.functions.cancelTask(task_id))
    error = reverts(market_chain.tx, owner, market_chain.market.functions.cancelTask(task_id))
    assert error.name == "TaskMarketTaskNotOpen"
    assert error_args(error) == {"taskId": task_id, "status": TaskStatus.CANCELLED}


def test_cancel_unknown_task_reverts_unknown_task(market_chain, owner):
    error = reverts(market_chain.tx, owner, market_chain.market.functions.cancelTask(7))
    assert error.name == "TaskMarketUnknownTask"
    assert error_args(error) == {"taskId": 7}


def test_views_of_unknown_task_revert_unknown_task(market_chain, outsider):
    sender = market_chain.sender(outsider)
    for fn in (
        market_chain.market.functions.getTask(0),
        market_chain.market.functions.getRound(3, 1),
        market_chain.market.functions.roundPhase(3),
        market_chain.market.functions.roundBudget(3),
    ):
        assert reverts(sender.call, fn).name == "TaskMarketUnknownTask"


# ------------------------------------------------------------------------------- join


def test_join_stakes_and_emits_trainer_joined(driver, market_chain, make_task, trainers):
    task_id = make_task()
    trainer = trainers[0]
    before = market_chain.balance(trainer.address)

    (receipt,) = driver.join(task_id, [trainer])

    assert events(market_chain, receipt, "TrainerJoined") == [
        {"taskId": task_id, "trainer": trainer.address, "stake": STAKE}
    ]
    assert driver.get_trainer(task_id, trainer.address) == {
        "stake": STAKE, "claimed": 0, "lastCommitRound": 0, "lastRevealRound": 0, "joined": True,
    }  # fmt: skip
    assert driver.get_state(task_id)["trainerCount"] == 1
    assert market_chain.balance(trainer.address) == before - STAKE
    stored = market_chain.market.functions.getCommitment(task_id, trainer.address).call()
    assert stored == [0, bytes(32), False]


def test_join_twice_reverts_already_joined(driver, market_chain, make_task, trainers):
    task_id = make_task()
    driver.join(task_id, trainers[:1])
    driver.approve(trainers[0], STAKE)
    error = reverts(market_chain.tx, trainers[0], market_chain.market.functions.join(task_id))
    assert error.name == "TaskMarketAlreadyJoined"
    assert error_args(error) == {"taskId": task_id, "trainer": trainers[0].address}


def test_join_full_task_reverts_task_full(driver, market_chain, make_task, trainers):
    task_id = make_task(min_trainers=1, max_trainers=2)
    driver.join(task_id, trainers[:2])
    driver.approve(trainers[2], STAKE)
    error = reverts(market_chain.tx, trainers[2], market_chain.market.functions.join(task_id))
    assert error.name == "TaskMarketTaskFull"
    assert error_args(error) == {"taskId": task_id, "maxTrainers": 2}


def test_join_after_someone_left_a_full_task(driver, market_chain, make_task, trainers):
    task_id = make_task(min_trainers=1, max_trainers=2)
    driver.join(task_id, trainers[:2])
    market_chain.tx(trainers[0], market_chain.market.functions.leave(task_id))
    driver.join(task_id, trainers[2:3])
    assert driver.get_state(task_id)["trainerCount"] == 2


def test_join_cancelled_task_reverts_task_not_open(driver, market_chain, make_task, owner, trainers):
    task_id = make_task()
    market_chain.tx(owner, market_chain.market.functions.cancelTask(task_id))
    driver.approve(trainers[0], STAKE)
    error = reverts(market_chain.tx, trainers[0], market_chain.market.functions.join(task_id))
    assert error.name == "TaskMarketTaskNotOpen"


def test_join_unknown_task_reverts_unknown_task(driver, market_chain, trainers):
    driver.approve(trainers[0], STAKE)
    error = reverts(market_chain.tx, trainers[0], market_chain.market.functions.join(42))
    assert error.name == "TaskMarketUnknownTask"


def test_join_without_allowance_reverts_and_joins_nobody(driver, market_chain, make_task, trainers):
    task_id = make_task()
    error = reverts(market_chain.tx, trainers[0], market_chain.market.functions.join(task_id))
    assert error.name == "ERC20InsufficientAllowance"
    assert driver.get_state(task_id)["trainerCount"] == 0


# ------------------------------------------------------------------------------- leave


def test_leave_returns_stake_and_emits_trainer_left(driver, market_chain, joined_task, trainers):
    trainer = trainers[0]
    before = market_chain.balance(trainer.address)

    receipt = market_chain.tx(trainer, market_chain.market.functions.leave(joined_task))

    assert events(market_chain, receipt, "TrainerLeft") == [
        {"taskId": joined_task, "trainer": trainer.address, "stake": STAKE}
    ]
    assert market_chain.balance(trainer.address) == before + STAKE
    assert driver.get_trainer(joined_task, trainer.address)["joined"] is False
    assert driver.get_trainer(joined_task, trainer.address)["stake"] == 0
    assert driver.get_state(joined_task)["trainerCount"] == 2


def test_leave_without_joining_reverts_not_joined(market_chain, joined_task, outsider):
    error = reverts(market_chain.tx, outsider, market_chain.market.functions.leave(joined_task))
    assert error.name == "TaskMarketNotJoined"
    assert error_args(error) == {"taskId": joined_task, "trainer": outsider.address}


def test_leave_with_open_commitment_reverts_open_commitment(driver, market_chain, joined_task, trainers):
    run = driver.start_round(joined_task)
    driver.commit(run, trainers[0])
    error = reverts(market_chain.tx, trainers[0], market_chain.market.functions.leave(joined_task))
    assert error.name == "TaskMarketOpenCommitment"
    assert error_args(error) == {"taskId": joined_task, "trainer": trainers[0].address, "round": 1}


def test_leave_after_the_round_closed_returns_whole_stake(driver, market_chain, joined_task, trainers):
    driver.run_round(joined_task, committers=trainers[:3])
    driver.finalize(joined_task, earnings={trainers[0].address: 1}, payout=1)
    before = market_chain.balance(trainers[0].address)
    market_chain.tx(trainers[0], market_chain.market.functions.leave(joined_task))
    assert market_chain.balance(trainers[0].address) == before + STAKE


def test_leave_by_non_committer_mid_round_is_allowed(driver, market_chain, joined_task, trainers):
    run = driver.start_round(joined_task)
    driver.commit(run, trainers[0])
    market_chain.tx(trainers[2], market_chain.market.functions.leave(joined_task))
    assert driver.get_state(joined_task)["trainerCount"] == 2
    assert driver.phase(joined_task) == RoundPhase.COMMIT


# ------------------------------------------------------------------------------- withdrawStake


def test_withdraw_stake_while_joined_reverts_still_joined(market_chain, joined_task, trainers):
    error = reverts(market_chain.tx, trainers[0], market_chain.market.functions.withdrawStake(joined_task))
    assert error.name == "TaskMarketStillJoined"
    assert error_args(error) == {"taskId": joined_task, "trainer": trainers[0].address}


def test_withdraw_stake_without_stake_reverts_nothing_to_withdraw(market_chain, joined_task, outsider):
    error = reverts(market_chain.tx, outsider, market_chain.market.functions.withdrawStake(joined_task))
    assert error.name == "TaskMarketNothingToWithdraw"
    assert error_args(error) == {"taskId": joined_task, "trainer": outsider.address}


def test_withdraw_stake_after_leaving_reverts_nothing_to_withdraw(market_chain, joined_task, trainers):
    market_chain.tx(trainers[0], market_chain.market.functions.leave(joined_task))
    error = reverts(market_chain.tx, trainers[0], market_chain.market.functions.withdrawStake(joined_task))
    assert error.name == "TaskMarketNothingToWithdraw"


def test_withdraw_stake_after_cancel_returns_stake_and_emits_stake_withdrawn(
    driver, market_chain, joined_task, owner, trainers
):
    market_chain.tx(owner, market_chain.market.functions.cancelTask(joined_task))
    before = market_chain.balance(trainers[1].address)

    receipt = market_chain.tx(trainers[1], market_chain.market.functions.withdrawStake(joined_task))

    assert events(market_chain, receipt, "StakeWithdrawn") == [
        {"taskId": joined_task, "trainer": trainers[1].address, "amount": STAKE}
    ]
    assert market_chain.balance(trainers[1].address) == before + STAKE
    assert driver.get_trainer(joined_task, trainers[1].address)["joined"] is False
    assert driver.get_state(joined_task)["trainerCount"] == 2
    error = reverts(market_chain.tx, trainers[1], market_chain.market.functions.withdrawStake(joined_task))
    assert error.name == "TaskMarketNothingToWithdraw"


def test_withdraw_stake_on_unknown_task_reverts_unknown_task(market_chain, trainers):
    error = reverts(market_chain.tx, trainers[0], market_chain.market.functions.withdrawStake(99))
    assert error.name == "TaskMarketUnknownTask"


# ------------------------------------------------------------------------------- pause


def test_pause_by_admin_blocks_new_tasks_joins_and_rounds_with_enforced_pause(
    driver, market_chain, joined_task, deployer, owner, trainers, coordinator
):
    receipt = market_chain.tx(deployer, market_chain.market.functions.pause())
    (paused,) = market_chain.market.events.Paused().process_receipt(receipt, errors=DISCARD)
    assert paused["args"]["account"] == deployer.address
    assert market_chain.market.functions.paused().call() is True

    driver.approve(owner, POOL)
    market = market_chain.market.functions
    blocked = [
        (owner, market.createTask(driver.terms().as_tuple())),
        (trainers[3], market.join(joined_task)),
        (coordinator, market.startRound(joined_task, bytes(32))),
        (trainers[0], market.commit(joined_task, b"\x11" * 32)),
        (coordinator, market.finalizeRound(joined_task, bytes(32), bytes(32), 0, bytes(32), [])),
        (owner, market.abortRound(joined_task, [])),
    ]
    for account, fn in blocked:
        assert reverts(market_chain.tx, account, fn).name == "EnforcedPause"

    receipt = market_chain.tx(deployer, market_chain.market.functions.unpause())
    assert market_chain.market.events.Unpaused().process_receipt(receipt, errors=DISCARD)
    driver.start_round(joined_task)
    assert driver.phase(joined_task) == RoundPhase.COMMIT


def test_exits_stay_open_while_paused(
    driver, market_chain, joined_task, make_task, deployer, owner, trainers
):
    driver.run_round(joined_task, committers=trainers[:2])
    _, tree = driver.finalize(joined_task, earnings={trainers[0].address: 5}, payout=5)
    other = make_task()
    market_chain.tx(deployer, market_chain.market.functions.pause())

    driver.claim(joined_task, trainers[0], tree)
    market_chain.tx(trainers[2], market_chain.market.functions.leave(joined_task))
    market_chain.tx(owner, market_chain.market.functions.cancelTask(other))
    assert driver.get_trainer(joined_task, trainers[0].address)["claimed"] == 5
    assert driver.get_state(other)["status"] == TaskStatus.CANCELLED


def test_reveal_stays_open_while_paused_so_nobody_is_slashed_for_a_pause(
    driver, market_chain, joined_task, deployer, trainers
):
    run = driver.start_round(joined_task)
    for trainer in trainers[:3]:
        driver.commit(run, trainer)
    market_chain.tx(deployer, market_chain.market.functions.pause())
    for trainer in trainers[:3]:
        driver.reveal(run, trainer)
    assert driver.phase(joined_task) == RoundPhase.SETTLING
    assert driver.get_round(joined_task, 1)["revealCount"] == 3


def test_pause_by_outsider_reverts_ownable_unauthorized_account(market_chain, outsider, owner, deployer):
    for account in (outsider, owner):
        error = reverts(market_chain.tx, account, market_chain.market.functions.pause())
        assert error.name == "OwnableUnauthorizedAccount"
        assert error_args(error) == {"account": account.address}
    market_chain.tx(deployer, market_chain.market.functions.pause())
    error = reverts(market_chain.tx, outsider, market_chain.market.functions.unpause())
    assert error.name == "OwnableUnauthorizedAccount"
    assert market_chain.market.functions.paused().call() is True


# ------------------------------------------------------------------------------- plain views


def test_market_views_describe_the_deployment(market_chain, deployment, deployer, owner):
    market = market_chain.market.functions
    assert market.token().call() == deployment.token
    assert market.settlementGrace().call() == DEFAULT_SETTLEMENT_GRACE
    assert market.owner().call() == deployer.address
    assert market.taskCount().call() == 0
    assert market.nonces(owner.address).call() == 0
    assert market.claimedOf(1, owner.address).call() == 0
    assert market.getCommitment(1, owner.address).call() == [0, bytes(32), False]
    assert Web3.is_checksum_address(market.token().call())
