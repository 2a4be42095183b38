"""Posting and cancelling tasks, joining and leaving them, stakes, pausing, and the plain views."""

from __future__ import annotations

import pytest
from web3 import Web3
from web3.logs import DISCARD

from fedmarket.consensus import HARMFUL, INVALID, MAX_SCORE, MIN_AGREEMENT, UNAVAILABLE
from fedmarket.deploy import DEFAULT_SETTLEMENT_GRACE
from fedmarket.protocol import BPS, MAX_WINDOW, RoundPhase, TaskStatus
from testkit.contracts import (
    BURN_ADDRESS,
    MAX_TRAINERS,
    MAX_VALIDATORS,
    POOL,
    SETTLEMENT_GRACE,
    SLASH_BPS,
    SPEC_HASH,
    STAKE,
    VALIDATOR_STAKE,
    error_args,
    events,
    reverts,
)

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
    assert driver.get_state(task_id) == {
        "owner": owner.address, "status": TaskStatus.OPEN, "currentRound": 0, "trainerCount": 0,
        "validatorCount": 0, "pool": POOL, "unclaimed": 0, "modelHash": bytes(32),
    }  # fmt: skip
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
        ("maxTrainers", {"max_trainers": MAX_TRAINERS + 1}),
        ("slashBps", {"slash_bps": 10_001}),
        ("commitWindow", {"commit_window": 0}),
        ("revealWindow", {"reveal_window": 0}),
        ("rewardPool", {"reward_pool": 0}),
        ("rewardPool", {"reward_pool": 2**96}),
        ("minStake", {"min_stake": 0}),
        ("minStake", {"min_stake": 2**96}),
        ("minValidators", {"min_validators": 0}),
        ("minValidators", {"min_validators": 3, "max_validators": 2}),
        ("maxValidators", {"max_validators": MAX_VALIDATORS + 1}),
        ("validatorShareBps", {"validator_share_bps": 10_001}),
        ("scoreWindow", {"score_window": 0}),
        ("scoreRevealWindow", {"score_reveal_window": 0}),
        ("minValidatorStake", {"min_validator_stake": 0}),
        ("minValidatorStake", {"min_validator_stake": 2**96}),
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


@pytest.mark.parametrize("field", ["commitWindow", "revealWindow", "scoreWindow", "scoreRevealWindow"])
def test_create_task_with_a_window_over_the_maximum_reverts_window_too_long(
    driver, market_chain, owner, field
):
    """The audit posted windows up to 2**32 s (136 years): a round could hold stakes that long."""
    snake = {"commitWindow": "commit_window", "revealWindow": "reveal_window", "scoreWindow": "score_window",
             "scoreRevealWindow": "score_reveal_window"}[field]  # fmt: skip
    terms = driver.terms(**{snake: 2**32 - 1})
    driver.approve(owner, terms.reward_pool)
    error = reverts(market_chain.tx, owner, market_chain.market.functions.createTask(terms.as_tuple()))
    assert error.name == "TaskMarketWindowTooLong"
    assert error_args(error) == {"field": field, "window": 2**32 - 1, "maximum": MAX_WINDOW}
    task_id, _ = driver.create_task(**{snake: MAX_WINDOW})
    assert getattr(driver.get_terms(task_id), snake) == MAX_WINDOW


def test_create_task_accepts_boundary_terms(driver):
    task_id, _ = driver.create_task(
        slash_bps=10_000, min_trainers=1, max_trainers=1, rounds=1, reward_pool=1, min_stake=1,
        min_validators=1, max_validators=1, validator_share_bps=0, min_validator_stake=1,
    )  # fmt: skip
    assert driver.get_terms(task_id).slash_bps == 10_000
    task_id, _ = driver.create_task(
        max_trainers=MAX_TRAINERS, min_validators=MAX_VALIDATORS, max_validators=MAX_VALIDATORS,
        validator_share_bps=10_000, min_validator_stake=2**96 - 1, min_stake=2**96 - 1,
    )  # fmt: skip
    terms = driver.get_terms(task_id)
    assert (terms.max_trainers, terms.max_validators) == (MAX_TRAINERS, MAX_VALIDATORS)
    assert terms.min_validator_stake == terms.min_stake == 2**96 - 1


def test_create_task_without_allowance_pulls_nothing(market_chain, driver, owner):
    terms = driver.terms()
    error = reverts(market_chain.tx, owner, market_chain.market.functions.createTask(terms.as_tuple()))
    assert error.name == "ERC20InsufficientAllowance"
    assert market_chain.market.functions.taskCount().call() == 0


# ------------------------------------------------------------------------------- cancelTask


def test_cancel_task_refunds_pool_and_emits_task_cancelled(
    driver, market_chain, make_task, owner, trainers, validators
):
    task_id = make_task()
    driver.join(task_id, trainers[:1])
    driver.join_validators(task_id, validators[:1])
    owner_before = market_chain.balance(owner.address)

    receipt = market_chain.tx(owner, market_chain.market.functions.cancelTask(task_id))

    assert events(market_chain, receipt, "TaskCancelled") == [{"taskId": task_id, "refund": POOL}]
    state = driver.get_state(task_id)
    assert state["status"] == TaskStatus.CANCELLED
    assert state["pool"] == 0
    assert market_chain.balance(owner.address) == owner_before + POOL
    assert driver.budget(task_id) == 0
    # the joined trainer and validator keep their stakes until they withdraw them
    assert market_chain.balance(market_chain.market.address) == STAKE + VALIDATOR_STAKE


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
        "stake": STAKE, "claimable": 0, "lastCommitRound": 0, "lastRevealRound": 0, "joined": True,
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
    # nor in the later phases of the same round
    driver.commit(run, trainers[1])
    driver.commit(run, trainers[2])
    driver.reveal(run, trainers[0])
    driver.advance_past("revealDeadline", run)
    assert driver.phase(joined_task) == RoundPhase.SCORE_COMMIT
    assert reverts(market_chain.tx, trainers[0], market_chain.market.functions.leave(joined_task)).name == (
        "TaskMarketOpenCommitment"
    )


def test_leave_after_the_round_closed_returns_whole_stake(driver, market_chain, joined_task, trainers):
    driver.run_round(joined_task, committers=trainers[:3])
    driver.finalize(joined_task)
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


def test_withdraw_stake_while_joined_reverts_still_joined(market_chain, joined_task, trainers, validators):
    for account in (trainers[0], validators[0]):
        error = reverts(market_chain.tx, account, market_chain.market.functions.withdrawStake(joined_task))
        assert error.name == "TaskMarketStillJoined"
        assert error_args(error) == {"taskId": joined_task, "account": account.address}


def test_withdraw_stake_without_stake_reverts_nothing_to_withdraw(market_chain, joined_task, outsider):
    error = reverts(market_chain.tx, outsider, market_chain.market.functions.withdrawStake(joined_task))
    assert error.name == "TaskMarketNothingToWithdraw"
    assert error_args(error) == {"taskId": joined_task, "account": outsider.address}


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
        {"taskId": joined_task, "account": trainers[1].address, "amount": STAKE}
    ]
    assert market_chain.balance(trainers[1].address) == before + STAKE
    assert driver.get_trainer(joined_task, trainers[1].address)["joined"] is False
    assert driver.get_state(joined_task)["trainerCount"] == 2
    error = reverts(market_chain.tx, trainers[1], market_chain.market.functions.withdrawStake(joined_task))
    assert error.name == "TaskMarketNothingToWithdraw"


def test_withdraw_stake_after_cancel_returns_both_roles_stakes_at_once(
    driver, market_chain, joined_task, owner, trainers
):
    """A trainer that also validates gets both stakes back in one withdrawal, and leaves both roles."""
    dual = trainers[0]
    driver.join_validators(joined_task, [dual], stake=VALIDATOR_STAKE + 5)
    market_chain.tx(owner, market_chain.market.functions.cancelTask(joined_task))
    before = market_chain.balance(dual.address)

    receipt = market_chain.tx(dual, market_chain.market.functions.withdrawStake(joined_task))

    assert events(market_chain, receipt, "StakeWithdrawn") == [
        {"taskId": joined_task, "account": dual.address, "amount": STAKE + VALIDATOR_STAKE + 5}
    ]
    assert market_chain.balance(dual.address) == before + STAKE + VALIDATOR_STAKE + 5
    assert driver.get_validator(joined_task, dual.address)["joined"] is False
    state = driver.get_state(joined_task)
    assert (state["trainerCount"], state["validatorCount"]) == (2, 2)


def test_withdraw_stake_on_unknown_task_reverts_unknown_task(market_chain, trainers):
    error = reverts(market_chain.tx, trainers[0], market_chain.market.functions.withdrawStake(99))
    assert error.name == "TaskMarketUnknownTask"


# ------------------------------------------------------------------------------- pause


def test_pause_by_admin_blocks_new_tasks_joins_rounds_settlement_and_expiry_with_enforced_pause(
    driver, market_chain, joined_task, deployer, owner, trainers, validators, coordinator
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
        (validators[2], market.joinAsValidator(joined_task, b"\x01" * 32, VALIDATOR_STAKE)),
        (coordinator, market.startRound(joined_task, bytes(32))),
        (coordinator, market.finalizeRound(joined_task, ([], [], [], [], []))),
        (owner, market.abortRound(joined_task, [], [])),
        (owner, market.expireTask(joined_task)),
    ]
    for account, fn in blocked:
        assert reverts(market_chain.tx, account, fn).name == "EnforcedPause"

    receipt = market_chain.tx(deployer, market_chain.market.functions.unpause())
    assert market_chain.market.events.Unpaused().process_receipt(receipt, errors=DISCARD)
    driver.start_round(joined_task)
    assert driver.phase(joined_task) == RoundPhase.COMMIT


def test_exits_stay_open_while_paused(
    driver, market_chain, joined_task, make_task, deployer, owner, trainers, validators
):
    driver.run_round(joined_task, committers=trainers[:3])
    driver.settle(joined_task)
    other = make_task()
    market_chain.tx(deployer, market_chain.market.functions.pause())

    claimable = driver.get_trainer(joined_task, trainers[0].address)["claimable"]
    assert claimable > 0
    driver.claim(joined_task, trainers[0])
    market_chain.tx(trainers[2], market_chain.market.functions.leave(joined_task))
    market_chain.tx(validators[1], market_chain.market.functions.leaveValidator(joined_task))
    market_chain.tx(owner, market_chain.market.functions.cancelTask(other))
    assert driver.get_trainer(joined_task, trainers[0].address)["claimable"] == 0
    assert driver.get_validator(joined_task, validators[1].address)["joined"] is False
    assert driver.get_state(other)["status"] == TaskStatus.CANCELLED


def test_reveals_stay_open_while_paused_so_nobody_is_slashed_for_a_pause(
    driver, market_chain, joined_task, deployer, trainers, validators
):
    run = driver.start_round(joined_task)
    for trainer in trainers[:3]:
        driver.commit(run, trainer)
    market_chain.tx(deployer, market_chain.market.functions.pause())
    for trainer in trainers[:3]:
        driver.reveal(run, trainer)
    assert driver.phase(joined_task) == RoundPhase.SCORE_COMMIT
    assert driver.get_round(joined_task, 1)["revealCount"] == 3
    market_chain.tx(deployer, market_chain.market.functions.unpause())
    for validator in validators[:2]:
        driver.commit_scores(run, validator, [1, 2, 3])
    market_chain.tx(deployer, market_chain.market.functions.pause())
    for validator in validators[:2]:
        driver.reveal_scores(run, validator)
    assert driver.phase(joined_task) == RoundPhase.SETTLING
    assert driver.get_round(joined_task, 1)["scoreRevealCount"] == 2


def test_commits_stay_open_while_paused_so_nobody_loses_a_seat_to_a_pause(
    driver, market_chain, joined_task, deployer, trainers, validators
):
    run = driver.start_round(joined_task)
    market_chain.tx(deployer, market_chain.market.functions.pause())
    for trainer in trainers[:3]:
        driver.commit(run, trainer)
    for trainer in trainers[:3]:
        driver.reveal(run, trainer)
    for validator in validators[:2]:
        driver.commit_scores(run, validator, [1, 2, 3])
    assert driver.phase(joined_task) == RoundPhase.SCORE_REVEAL
    assert driver.get_round(joined_task, 1)["scoreCommitCount"] == 2


def pause(market_chain, deployer) -> None:
    market_chain.tx(deployer, market_chain.market.functions.pause())


def unpause(market_chain, deployer) -> int:
    """Unpauses; returns the time of the unpause."""
    receipt = market_chain.tx(deployer, market_chain.market.functions.unpause())
    return market_chain.w3.eth.get_block(receipt["blockNumber"])["timestamp"]


def test_a_committer_may_leave_while_paused_leaving_what_a_slash_could_take(
    driver, market_chain, joined_task, deployer, trainers, validators, outsider
):
    """The audit: committers of an open round could not leave while paused, though settlement
    (which frees their stake) is stopped. Now they go, and the round still settles them."""
    run = driver.run_round(
        joined_task, committers=trainers[:3], revealers=trainers[:2], stop=RoundPhase.REVEAL
    )
    pause(market_chain, deployer)
    kept = STAKE * SLASH_BPS // BPS
    before = market_chain.balance(trainers[2].address)
    receipt = market_chain.tx(trainers[2], market_chain.market.functions.leave(joined_task))
    assert events(market_chain, receipt, "TrainerLeft")[0]["stake"] == STAKE - kept
    assert market_chain.balance(trainers[2].address) - before == STAKE - kept
    assert driver.get_trainer(joined_task, trainers[2].address)["stake"] == kept
    # still in the round until it closes: it cannot rejoin nor take the rest
    unpause(market_chain, deployer)
    rejoin = reverts(market_chain.tx, trainers[2], market_chain.market.functions.join(joined_task))
    assert rejoin.name == "TaskMarketOpenCommitment"
    withdraw = reverts(market_chain.tx, trainers[2], market_chain.market.functions.withdrawStake(joined_task))
    assert withdraw.name == "TaskMarketOpenCommitment"
    # it never revealed: the settlement burns exactly what it left behind
    driver.advance_past("revealDeadline", run)
    for validator in validators[:2]:
        driver.commit_scores(run, validator, [1, 2])
    for validator in validators[:2]:
        driver.reveal_scores(run, validator)
    receipt = driver.finalize(joined_task, caller=outsider)
    assert events(market_chain, receipt, "TrainerSlashed") == [
        {"taskId": joined_task, "round": 1, "trainer": trainers[2].address, "amount": kept}
    ]
    assert driver.get_state(joined_task)["trainerCount"] == 2
    assert driver.get_trainer(joined_task, trainers[2].address)["stake"] == 0


def test_a_revealed_committer_that_left_while_paused_is_paid_and_takes_the_rest_after(
    driver, market_chain, joined_task, deployer, trainers, validators, outsider
):
    run = driver.run_round(joined_task, committers=trainers[:3], stop=RoundPhase.REVEAL)
    assert driver.phase(joined_task) == RoundPhase.SCORE_COMMIT
    pause(market_chain, deployer)
    market_chain.tx(trainers[0], market_chain.market.functions.leave(joined_task))
    for validator in validators[:2]:
        driver.commit_scores(run, validator, [1, 1, 1])
    for validator in validators[:2]:
        driver.reveal_scores(run, validator)
    unpause(market_chain, deployer)
    driver.finalize(joined_task, caller=outsider)
    assert driver.get_trainer(joined_task, trainers[0].address)["claimable"] > 0
    before = market_chain.balance(trainers[0].address)
    market_chain.tx(trainers[0], market_chain.market.functions.withdrawStake(joined_task))
    assert market_chain.balance(trainers[0].address) - before == STAKE * SLASH_BPS // BPS


def test_a_score_committer_may_leave_while_paused(
    driver, market_chain, joined_task, deployer, trainers, validators, outsider
):
    run = driver.run_round(
        joined_task, committers=trainers[:3], scorers=validators[:2], stop=RoundPhase.SCORE_COMMIT
    )
    assert driver.phase(joined_task) == RoundPhase.SCORE_REVEAL
    pause(market_chain, deployer)
    kept = VALIDATOR_STAKE * SLASH_BPS // BPS
    receipt = market_chain.tx(validators[1], market_chain.market.functions.leaveValidator(joined_task))
    assert events(market_chain, receipt, "ValidatorLeft")[0]["stake"] == VALIDATOR_STAKE - kept
    assert driver.get_validator(joined_task, validators[1].address)["stake"] == kept
    driver.reveal_scores(run, validators[0])
    unpause(market_chain, deployer)
    rejoin = market_chain.market.functions.joinAsValidator(joined_task, b"\x02" * 32, VALIDATOR_STAKE)
    assert reverts(market_chain.tx, validators[1], rejoin).name == "TaskMarketOpenScoreCommitment"
    driver.advance_to_settling(run)
    receipt = driver.finalize(joined_task, caller=outsider)
    assert events(market_chain, receipt, "ValidatorSlashed")[0]["amount"] == kept
    assert driver.get_state(joined_task)["validatorCount"] == 1


def test_abort_right_after_a_long_pause_waits_a_grace_for_the_coordinator(
    driver, market_chain, joined_task, deployer, trainers, coordinator, outsider
):
    """The audit: a pause longer than the grace let anyone abort right after the unpause."""
    driver.run_round(joined_task, committers=trainers[:3], revealers=trainers[:1], stop=RoundPhase.REVEAL)
    pause(market_chain, deployer)
    market_chain.advance(SETTLEMENT_GRACE * 2)
    assert driver.phase(joined_task) == RoundPhase.SETTLING  # quorum missed: one reveal of two
    unpaused_at = unpause(market_chain, deployer)
    error = reverts(driver.abort, joined_task, caller=outsider)
    assert error.name == "TaskMarketAbortTooEarly"
    assert error_args(error) == {"taskId": joined_task, "allowedAt": unpaused_at + SETTLEMENT_GRACE}
    market_chain.advance(SETTLEMENT_GRACE)
    driver.abort(joined_task, caller=outsider)
    assert driver.phase(joined_task) == RoundPhase.ABORTED


def test_the_coordinator_may_abort_within_the_grace_after_an_unpause(
    driver, market_chain, joined_task, deployer, trainers, coordinator
):
    driver.run_round(joined_task, committers=trainers[:3], revealers=trainers[:1], stop=RoundPhase.REVEAL)
    pause(market_chain, deployer)
    market_chain.advance(SETTLEMENT_GRACE * 2)
    unpause(market_chain, deployer)
    driver.abort(joined_task, caller=coordinator)
    assert driver.phase(joined_task) == RoundPhase.ABORTED


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
    assert market.getCommitment(1, owner.address).call() == [0, bytes(32), False]
    assert market.getScoreCommitment(1, owner.address).call() == [0, bytes(32), False]
    assert tuple(market.getValidator(1, owner.address).call()) == (0, 0, 0, 0, False, bytes(32))
    assert Web3.is_checksum_address(market.token().call())


def test_market_constants_match_the_python_mirror(market_chain):
    market = market_chain.market.functions
    assert (market.MAX_TRAINERS().call(), market.MAX_VALIDATORS().call()) == (MAX_TRAINERS, MAX_VALIDATORS)
    assert (market.MAX_SCORE().call(), market.MIN_AGREEMENT().call()) == (MAX_SCORE, MIN_AGREEMENT)
    flags = (market.SCORE_UNAVAILABLE().call(), market.SCORE_INVALID().call(), market.SCORE_HARMFUL().call())
    assert flags == (UNAVAILABLE, INVALID, HARMFUL)
    assert market.BURN_ADDRESS().call() == BURN_ADDRESS
    assert market.MAX_WINDOW().call() == MAX_WINDOW
