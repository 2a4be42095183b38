"""Seats: every trainer joined when a round starts is bound to it; one that does not commit loses
its seat when the round closes and is charged `slashBps` of `minStake` (burned). The lists a
settlement takes never outgrow the caps."""

from __future__ import annotations

from fedmarket.protocol import RoundPhase
from testkit.contracts import (
    BURN_ADDRESS,
    SEAT_CHARGE,
    STAKE,
    error_args,
    event_names,
    events,
    reverts,
)


def test_squatting_sybils_lose_their_seats_and_are_charged_and_honest_joiners_get_in(
    driver, market_chain, make_task, trainers, validators, outsider
):
    """The audit: maxTrainers Sybils join and never commit; honest joins reverted TaskFull, every
    round aborted and the Sybils took their whole stake back."""
    task_id = make_task(max_trainers=3)
    sybils, honest = trainers[:3], trainers[3:6]
    driver.join(task_id, sybils)
    driver.join_validators(task_id, validators[:1])
    error = reverts(driver.join, task_id, honest[:1])
    assert error.name == "TaskMarketTaskFull"
    burned_before = market_chain.balance(BURN_ADDRESS)

    run = driver.run_round(task_id, committers=[], scorers=[])
    assert driver.phase(task_id) == RoundPhase.SETTLING
    receipt = driver.abort(task_id, caller=outsider)

    assert events(market_chain, receipt, "TrainersUnseated") == [
        {"taskId": task_id, "round": run.round_no, "count": 3, "charged": 3 * SEAT_CHARGE}
    ]
    assert market_chain.balance(BURN_ADDRESS) - burned_before == 3 * SEAT_CHARGE
    assert driver.get_state(task_id)["trainerCount"] == 0
    for sybil in sybils:
        assert driver.get_trainer(task_id, sybil.address) == {
            "stake": STAKE - SEAT_CHARGE, "claimable": 0, "lastCommitRound": 0, "lastRevealRound": 0,
            "joined": False,
        }  # fmt: skip
    driver.join(task_id, honest)
    assert driver.get_state(task_id)["trainerCount"] == 3
    # a Sybil takes back what is left, and no more
    before = market_chain.balance(sybils[0].address)
    receipt = market_chain.tx(sybils[0], market_chain.market.functions.withdrawStake(task_id))
    assert market_chain.balance(sybils[0].address) - before == STAKE - SEAT_CHARGE
    assert events(market_chain, receipt, "StakeWithdrawn")[0]["amount"] == STAKE - SEAT_CHARGE


def test_a_trainer_that_lost_its_seat_cannot_commit_or_leave_and_may_join_again(
    driver, market_chain, joined_task, trainers
):
    driver.run_round(joined_task, committers=trainers[:2])
    driver.settle(joined_task)
    lost = trainers[2]
    assert driver.get_trainer(joined_task, lost.address)["joined"] is False
    assert reverts(market_chain.tx, lost, market_chain.market.functions.leave(joined_task)).name == (
        "TaskMarketNotJoined"
    )
    run = driver.start_round(joined_task)
    error = reverts(driver.commit, run, lost)
    assert error.name == "TaskMarketNotJoined"
    assert error_args(error) == {"taskId": joined_task, "trainer": lost.address}
    # joining again stakes minStake on top of what the charge left
    driver.join(joined_task, [lost])
    assert driver.get_trainer(joined_task, lost.address)["stake"] == 2 * STAKE - SEAT_CHARGE
    driver.commit(run, lost)  # joined in the commit phase: it may take part at once


def test_finalize_frees_the_seats_of_bound_trainers_that_did_not_commit(
    driver, market_chain, joined_task, trainers, outsider
):
    driver.run_round(joined_task, committers=trainers[:2])
    receipt = driver.finalize(joined_task, caller=outsider)
    assert events(market_chain, receipt, "TrainersUnseated")[0]["count"] == 1
    assert events(market_chain, receipt, "RoundFinalized")[0]["burned"] == SEAT_CHARGE
    assert driver.get_state(joined_task)["trainerCount"] == 2


def test_a_trainer_that_joins_during_a_round_is_bound_only_from_the_next(
    driver, market_chain, joined_task, trainers
):
    run = driver.run_round(joined_task, committers=trainers[:3], stop=RoundPhase.REVEAL)
    driver.join(joined_task, trainers[3:4])  # the commit phase is over: it cannot commit this round
    driver.advance_to_settling(run)  # nobody scored: the validator quorum is missed
    receipt = driver.abort(joined_task)
    assert "TrainersUnseated" not in event_names(market_chain, receipt)
    assert driver.get_trainer(joined_task, trainers[3].address)["joined"] is True


def test_leaving_is_free_during_the_commit_phase_and_charged_after_it(
    driver, market_chain, make_task, trainers, validators
):
    task_id = make_task()
    driver.join(task_id, trainers[:4])
    driver.join_validators(task_id, validators[:1])
    run = driver.start_round(task_id)
    before = market_chain.balance(trainers[3].address)
    market_chain.tx(trainers[3], market_chain.market.functions.leave(task_id))
    assert market_chain.balance(trainers[3].address) - before == STAKE
    for trainer in trainers[:2]:
        driver.commit(run, trainer)
    driver.advance_past("commitDeadline", run)
    before, burned = market_chain.balance(trainers[2].address), market_chain.balance(BURN_ADDRESS)
    receipt = market_chain.tx(trainers[2], market_chain.market.functions.leave(task_id))
    assert market_chain.balance(trainers[2].address) - before == STAKE - SEAT_CHARGE
    assert market_chain.balance(BURN_ADDRESS) - burned == SEAT_CHARGE
    assert events(market_chain, receipt, "TrainersUnseated")[0]["count"] == 1
    # both paid or went already: the closing settlement charges nobody again
    driver.advance_to_settling(run)
    receipt = driver.abort(task_id)
    assert "TrainersUnseated" not in event_names(market_chain, receipt)


def test_the_committers_of_a_round_never_outnumber_max_trainers(
    driver, market_chain, make_task, trainers, validators
):
    """Every list a settlement takes is a subset of a round's committers (or score committers):
    seats are capped at join, committers cannot leave an open round outside a pause, and the commit
    phase closes once every seat committed, so churn cannot grow them past maxTrainers."""
    task_id = make_task(max_trainers=3)
    driver.join(task_id, trainers[:3])
    driver.join_validators(task_id, validators[:1])
    run = driver.start_round(task_id)
    driver.commit(run, trainers[0])
    market_chain.tx(trainers[2], market_chain.market.functions.leave(task_id))
    driver.join(task_id, trainers[3:4])
    driver.commit(run, trainers[1])
    driver.commit(run, trainers[3])
    assert driver.phase(task_id) == RoundPhase.REVEAL  # every seat committed
    assert reverts(driver.join, task_id, trainers[4:5]).name == "TaskMarketTaskFull"
    leave = market_chain.market.functions.leave(task_id)
    assert reverts(market_chain.tx, trainers[0], leave).name == "TaskMarketOpenCommitment"
    assert driver.get_round(task_id, 1)["commitCount"] == 3
