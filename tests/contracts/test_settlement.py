"""Settling rounds: finalizeRound (payouts, budgets, slashing, completion) and abortRound."""

from __future__ import annotations

import pytest
from testkit.contracts import (
    POOL,
    SETTLEMENT_GRACE,
    SLASH_BPS,
    STAKE,
    digest,
    error_args,
    event_names,
    events,
    reverts,
)

from fedmarket.protocol import BPS, RoundPhase, TaskStatus

SLASHED = STAKE * SLASH_BPS // BPS


def market_holdings(driver, task_ids, accounts) -> int:
    """What the views say the market owes: pools + unclaimed rewards + stakes."""
    total = 0
    for task_id in task_ids:
        state = driver.get_state(task_id)
        total += state["pool"] + state["unclaimed"]
        total += sum(driver.get_trainer(task_id, a.address)["stake"] for a in accounts)
    return total


# ------------------------------------------------------------------------------- finalizeRound


def test_finalize_allocates_payout_and_emits_round_finalized(driver, market_chain, joined_task, trainers):
    driver.run_round(joined_task, committers=trainers[:3])
    market_before = market_chain.balance(market_chain.market.address)
    earnings = {trainers[0].address: 100, trainers[1].address: 200}

    receipt, tree = driver.finalize(
        joined_task, earnings=earnings, payout=300, new_model=digest("model-1"), report=digest("report-1")
    )

    assert event_names(market_chain, receipt) == ["RoundFinalized"]
    (finalized,) = events(market_chain, receipt, "RoundFinalized")
    assert finalized == {
        "taskId": joined_task,
        "round": 1,
        "newModelHash": digest("model-1"),
        "rewardsRoot": tree.root,
        "payout": 300,
        "reportHash": digest("report-1"),
        "rejectedCount": 0,
    }
    state = driver.get_state(joined_task)
    assert (state["pool"], state["unclaimed"]) == (POOL - 300, 300)
    assert (state["modelHash"], state["rewardsRoot"]) == (digest("model-1"), tree.root)
    assert state["status"] == TaskStatus.OPEN
    assert state["trainerCount"] == 3
    round_ = driver.get_round(joined_task, 1)
    assert (round_["closed"], round_["aborted"]) == (True, False)
    assert (round_["reportHash"], round_["payout"]) == (digest("report-1"), 300)
    assert driver.phase(joined_task) == RoundPhase.FINALIZED
    assert driver.budget(joined_task) == (POOL - 300) // 2
    # allocation moves tokens between the market's books, never out of it
    assert market_chain.balance(market_chain.market.address) == market_before


def test_finalize_by_outsider_reverts_not_coordinator(driver, market_chain, joined_task, trainers, outsider):
    driver.run_round(joined_task, committers=trainers[:3])
    fn = market_chain.market.functions.finalizeRound(joined_task, bytes(32), bytes(32), 0, bytes(32), [])
    error = reverts(market_chain.tx, outsider, fn)
    assert error.name == "TaskMarketNotCoordinator"
    assert error_args(error) == {"taskId": joined_task, "account": outsider.address}


@pytest.mark.parametrize(
    "phase", [RoundPhase.NONE, RoundPhase.COMMIT, RoundPhase.REVEAL, RoundPhase.FINALIZED]
)
def test_finalize_outside_settling_phase_reverts_wrong_phase(
    driver, market_chain, joined_task, trainers, phase
):
    if phase == RoundPhase.FINALIZED:
        driver.run_round(joined_task, committers=trainers[:3])
        driver.finalize(joined_task, earnings={}, payout=0)
    elif phase == RoundPhase.REVEAL:
        driver.run_round(joined_task, committers=trainers[:3], revealers=trainers[:2], to_settling=False)
    elif phase == RoundPhase.COMMIT:
        driver.start_round(joined_task)
    assert driver.phase(joined_task) == phase
    error = reverts(driver.finalize, joined_task, earnings={}, payout=0)
    assert error.name == "TaskMarketWrongPhase"
    assert error_args(error) == {"taskId": joined_task, "phase": phase}


def test_finalize_without_quorum_reverts_quorum_not_reached(driver, market_chain, joined_task, trainers):
    driver.run_round(joined_task, committers=trainers[:3], revealers=trainers[:1])
    silent = [t.address for t in trainers[1:3]]
    error = reverts(driver.finalize, joined_task, earnings={}, payout=0, rejected=silent)
    assert error.name == "TaskMarketQuorumNotReached"
    assert error_args(error) == {"taskId": joined_task, "revealed": 1, "required": 2}


def test_finalize_above_budget_reverts_payout_exceeds_budget(driver, market_chain, joined_task, trainers):
    driver.run_round(joined_task, committers=trainers[:3])
    budget = POOL // 3
    assert driver.budget(joined_task) == budget
    earnings = {trainers[0].address: budget + 1}
    error = reverts(driver.finalize, joined_task, earnings=earnings, payout=budget + 1)
    assert error.name == "TaskMarketPayoutExceedsBudget"
    assert error_args(error) == {"taskId": joined_task, "payout": budget + 1, "budget": budget}
    driver.finalize(joined_task, earnings={trainers[0].address: budget}, payout=budget)
    assert driver.get_state(joined_task)["unclaimed"] == budget


def test_finalize_slashes_rejected_trainer_exactly_and_removes_it(
    driver, market_chain, joined_task, trainers
):
    driver.run_round(joined_task, committers=trainers[:3])
    poisoner = trainers[2]

    earnings = {trainers[0].address: 7}
    receipt, _ = driver.finalize(joined_task, earnings=earnings, payout=7, rejected=[poisoner.address])

    assert event_names(market_chain, receipt) == ["TrainerSlashed", "RoundFinalized"]
    assert events(market_chain, receipt, "TrainerSlashed") == [
        {"taskId": joined_task, "round": 1, "trainer": poisoner.address, "amount": SLASHED}
    ]
    assert events(market_chain, receipt, "RoundFinalized")[0]["rejectedCount"] == 1
    assert SLASHED == STAKE // 4
    assert driver.get_trainer(joined_task, poisoner.address)["stake"] == STAKE - SLASHED
    assert driver.get_trainer(joined_task, poisoner.address)["joined"] is False
    state = driver.get_state(joined_task)
    assert state["trainerCount"] == 2
    assert state["pool"] == POOL + SLASHED - 7

    # the rejected trainer takes back what is left of its stake, and cannot take part any more
    before = market_chain.balance(poisoner.address)
    receipt = market_chain.tx(poisoner, market_chain.market.functions.withdrawStake(joined_task))
    assert events(market_chain, receipt, "StakeWithdrawn")[0]["amount"] == STAKE - SLASHED
    assert market_chain.balance(poisoner.address) == before + STAKE - SLASHED
    run = driver.start_round(joined_task)
    assert reverts(driver.commit, run, poisoner).name == "TaskMarketNotJoined"


def test_round_budget_includes_this_rounds_slashes(driver, market_chain, joined_task, trainers):
    driver.run_round(joined_task, committers=trainers[:3])
    assert driver.budget(joined_task) == POOL // 3  # before its slashes
    budget = (POOL + SLASHED) // 3
    rejected = [trainers[2].address]
    error = reverts(driver.finalize, joined_task, earnings={}, payout=budget + 1, rejected=rejected)
    assert error.name == "TaskMarketPayoutExceedsBudget"
    assert error_args(error)["budget"] == budget
    driver.finalize(joined_task, earnings={trainers[0].address: budget}, payout=budget, rejected=rejected)
    assert driver.get_state(joined_task)["pool"] == POOL + SLASHED - budget


def test_finalize_without_listing_a_non_revealer_reverts_non_revealers_mismatch(
    driver, market_chain, joined_task, trainers
):
    driver.run_round(joined_task, committers=trainers[:3], revealers=trainers[:2])
    error = reverts(driver.finalize, joined_task, earnings={}, payout=0)
    assert error.name == "TaskMarketNonRevealersMismatch"
    assert error_args(error) == {"taskId": joined_task, "listed": 0, "expected": 1}
    # rejecting someone else does not make up for it
    error = reverts(driver.finalize, joined_task, earnings={}, payout=0, rejected=[trainers[0].address])
    assert error.name == "TaskMarketNonRevealersMismatch"
    assert error_args(error) == {"taskId": joined_task, "listed": 0, "expected": 1}


def test_finalize_listing_the_non_revealer_slashes_it(driver, market_chain, joined_task, trainers):
    driver.run_round(joined_task, committers=trainers[:3], revealers=trainers[:2])
    receipt, _ = driver.finalize(joined_task, earnings={}, payout=0, rejected=[trainers[2].address])
    assert events(market_chain, receipt, "TrainerSlashed")[0]["trainer"] == trainers[2].address
    assert driver.get_state(joined_task)["pool"] == POOL + SLASHED


def test_finalize_rejecting_a_non_committer_reverts_not_committed(
    driver, market_chain, joined_task, trainers
):
    driver.run_round(joined_task, committers=trainers[:2])
    error = reverts(driver.finalize, joined_task, earnings={}, payout=0, rejected=[trainers[2].address])
    assert error.name == "TaskMarketNotCommitted"
    assert error_args(error) == {"taskId": joined_task, "trainer": trainers[2].address, "round": 1}


def test_finalize_rejecting_a_trainer_twice_reverts_already_rejected(
    driver, market_chain, joined_task, trainers
):
    driver.run_round(joined_task, committers=trainers[:3])
    rejected = [trainers[2].address, trainers[2].address]
    error = reverts(driver.finalize, joined_task, earnings={}, payout=0, rejected=rejected)
    assert error.name == "TaskMarketAlreadyRejected"
    assert error_args(error) == {"taskId": joined_task, "trainer": trainers[2].address}


def test_round_budget_is_pool_over_rounds_left(driver, market_chain, joined_task, trainers):
    assert driver.budget(joined_task) == POOL // 3
    driver.run_round(joined_task, committers=trainers[:3])
    driver.finalize(joined_task, earnings={trainers[0].address: 100}, payout=100)
    assert driver.budget(joined_task) == (POOL - 100) // 2
    driver.run_round(joined_task, committers=trainers[:3])
    assert driver.budget(joined_task) == (POOL - 100) // 2  # the open round counts as left
    driver.finalize(joined_task, earnings={trainers[0].address: 300}, payout=200)
    assert driver.budget(joined_task) == POOL - 300
    driver.run_round(joined_task, committers=trainers[:3])
    driver.finalize(joined_task, earnings={trainers[0].address: POOL}, payout=POOL - 300)
    assert driver.get_state(joined_task)["unclaimed"] == POOL
    assert driver.budget(joined_task) == 0


def test_last_round_refunds_leftover_to_owner_and_emits_task_completed(
    driver, market_chain, make_task, owner, trainers
):
    task_id = make_task(rounds=2)
    driver.join(task_id, trainers[:3])
    driver.run_round(task_id, committers=trainers[:3])
    driver.finalize(task_id, earnings={trainers[0].address: 100}, payout=100)
    driver.run_round(task_id, committers=trainers[:3])
    owner_before = market_chain.balance(owner.address)

    receipt, _ = driver.finalize(
        task_id,
        earnings={trainers[0].address: 100, trainers[1].address: 50},
        payout=50,
        rejected=[trainers[2].address],
    )

    refund = POOL + SLASHED - 150
    assert event_names(market_chain, receipt) == ["TrainerSlashed", "RoundFinalized", "TaskCompleted"]
    assert events(market_chain, receipt, "TaskCompleted") == [{"taskId": task_id, "refund": refund}]
    assert market_chain.balance(owner.address) == owner_before + refund
    state = driver.get_state(task_id)
    assert (state["status"], state["pool"], state["unclaimed"]) == (TaskStatus.COMPLETED, 0, 150)
    assert driver.budget(task_id) == 0
    assert driver.phase(task_id) == RoundPhase.FINALIZED
    held = market_chain.balance(market_chain.market.address)
    assert held == market_holdings(driver, [task_id], trainers[:3])

    # trainers still joined take their whole stake back once the task is over
    for trainer in trainers[:2]:
        receipt = market_chain.tx(trainer, market_chain.market.functions.withdrawStake(task_id))
        assert events(market_chain, receipt, "StakeWithdrawn")[0]["amount"] == STAKE
    assert driver.get_state(task_id)["trainerCount"] == 0
    market_chain.tx(trainers[2], market_chain.market.functions.withdrawStake(task_id))
    assert market_chain.balance(market_chain.market.address) == 150


def test_last_round_paying_the_whole_pool_refunds_nothing(driver, market_chain, make_task, owner, trainers):
    task_id = make_task(rounds=1)
    driver.join(task_id, trainers[:2])
    driver.run_round(task_id, committers=trainers[:2])
    owner_before = market_chain.balance(owner.address)
    receipt, _ = driver.finalize(task_id, earnings={trainers[0].address: POOL}, payout=POOL)
    assert events(market_chain, receipt, "TaskCompleted") == [{"taskId": task_id, "refund": 0}]
    assert market_chain.balance(owner.address) == owner_before


def test_finalize_on_completed_task_reverts_task_not_open(driver, market_chain, make_task, trainers):
    task_id = make_task(rounds=1)
    driver.join(task_id, trainers[:2])
    driver.run_round(task_id, committers=trainers[:2])
    driver.finalize(task_id, earnings={}, payout=0)
    error = reverts(driver.finalize, task_id, earnings={}, payout=0)
    assert error.name == "TaskMarketTaskNotOpen"
    assert error_args(error) == {"taskId": task_id, "status": TaskStatus.COMPLETED}


def test_finalize_after_grace_is_still_allowed_until_someone_aborts(
    driver, market_chain, joined_task, trainers
):
    driver.run_round(joined_task, committers=trainers[:3])
    market_chain.advance(SETTLEMENT_GRACE + 60)
    driver.finalize(joined_task, earnings={}, payout=0)
    assert driver.phase(joined_task) == RoundPhase.FINALIZED


# ------------------------------------------------------------------------------- abortRound


def test_abort_without_quorum_by_anyone_slashes_non_revealers_and_keeps_budget_in_pool(
    driver, market_chain, joined_task, trainers, outsider
):
    driver.run_round(joined_task, committers=trainers[:3], revealers=trainers[:1])
    silent = [trainers[1].address, trainers[2].address]

    receipt = market_chain.tx(outsider, market_chain.market.functions.abortRound(joined_task, silent))

    assert event_names(market_chain, receipt) == ["TrainerSlashed", "TrainerSlashed", "RoundAborted"]
    assert [e["trainer"] for e in events(market_chain, receipt, "TrainerSlashed")] == silent
    assert all(e["amount"] == SLASHED for e in events(market_chain, receipt, "TrainerSlashed"))
    assert events(market_chain, receipt, "RoundAborted") == [
        {"taskId": joined_task, "round": 1, "slashedCount": 2}
    ]
    state = driver.get_state(joined_task)
    assert (state["pool"], state["unclaimed"]) == (POOL + 2 * SLASHED, 0)
    assert state["trainerCount"] == 1
    assert state["status"] == TaskStatus.OPEN
    round_ = driver.get_round(joined_task, 1)
    assert (round_["closed"], round_["aborted"], round_["payout"]) == (True, True, 0)
    assert driver.phase(joined_task) == RoundPhase.ABORTED
    assert driver.budget(joined_task) == (POOL + 2 * SLASHED) // 2  # the round was used up
    for address in silent:
        assert driver.get_trainer(joined_task, address) == {
            "stake": STAKE - SLASHED,
            "claimed": 0,
            "lastCommitRound": 1,
            "lastRevealRound": 0,
            "joined": False,
        }


def test_abort_when_coordinator_is_silent_past_settlement_grace(
    driver, market_chain, joined_task, trainers, outsider
):
    driver.run_round(joined_task, committers=trainers[:3])
    allowed_at = driver.get_round(joined_task, 1)["revealDeadline"] + SETTLEMENT_GRACE
    abort = market_chain.market.functions.abortRound(joined_task, [])
    market_chain.advance(allowed_at - market_chain.now() - 10)
    assert reverts(market_chain.tx, outsider, abort).name == "TaskMarketAbortNotAllowed"
    market_chain.advance(20)

    receipt = market_chain.tx(outsider, abort)

    assert event_names(market_chain, receipt) == ["RoundAborted"]
    assert events(market_chain, receipt, "RoundAborted")[0]["slashedCount"] == 0
    assert driver.get_state(joined_task)["pool"] == POOL
    assert driver.get_state(joined_task)["trainerCount"] == 3
    assert driver.phase(joined_task) == RoundPhase.ABORTED
    driver.start_round(joined_task)  # the task goes on with the next round


def test_abort_with_quorum_before_grace_reverts_abort_not_allowed(
    driver, market_chain, joined_task, trainers, outsider
):
    driver.run_round(joined_task, committers=trainers[:3], revealers=trainers[:2])
    fn = market_chain.market.functions.abortRound(joined_task, [trainers[2].address])
    error = reverts(market_chain.tx, outsider, fn)
    assert error.name == "TaskMarketAbortNotAllowed"
    reveal_deadline = driver.get_round(joined_task, 1)["revealDeadline"]
    assert error_args(error) == {"taskId": joined_task, "allowedAt": reveal_deadline + SETTLEMENT_GRACE}
    # the coordinator too must settle rather than abort
    assert reverts(market_chain.tx, driver.coordinator, fn).name == "TaskMarketAbortNotAllowed"


@pytest.mark.parametrize("phase", [RoundPhase.NONE, RoundPhase.COMMIT, RoundPhase.REVEAL, RoundPhase.ABORTED])
def test_abort_outside_settling_phase_reverts_wrong_phase(
    driver, market_chain, joined_task, trainers, outsider, phase
):
    if phase == RoundPhase.ABORTED:
        driver.run_round(joined_task, committers=trainers[:1])
        market_chain.tx(outsider, market_chain.market.functions.abortRound(joined_task, []))
    elif phase == RoundPhase.REVEAL:
        driver.run_round(joined_task, committers=trainers[:3], revealers=[], to_settling=False)
    elif phase == RoundPhase.COMMIT:
        driver.start_round(joined_task)
    error = reverts(market_chain.tx, outsider, market_chain.market.functions.abortRound(joined_task, []))
    assert error.name == "TaskMarketWrongPhase"
    assert error_args(error) == {"taskId": joined_task, "phase": phase}


def test_abort_listing_a_revealer_reverts_revealed(driver, market_chain, joined_task, trainers, outsider):
    driver.run_round(joined_task, committers=trainers[:3], revealers=trainers[:1])
    listed = [trainers[1].address, trainers[2].address, trainers[0].address]
    error = reverts(market_chain.tx, outsider, market_chain.market.functions.abortRound(joined_task, listed))
    assert error.name == "TaskMarketRevealed"
    assert error_args(error) == {"taskId": joined_task, "trainer": trainers[0].address}


def test_abort_missing_a_non_revealer_reverts_non_revealers_mismatch(
    driver, market_chain, joined_task, trainers, outsider
):
    driver.run_round(joined_task, committers=trainers[:3], revealers=trainers[:1])
    fn = market_chain.market.functions.abortRound(joined_task, [trainers[1].address])
    error = reverts(market_chain.tx, outsider, fn)
    assert error.name == "TaskMarketNonRevealersMismatch"
    assert error_args(error) == {"taskId": joined_task, "listed": 1, "expected": 2}


def test_abort_listing_a_non_revealer_twice_reverts_already_rejected(
    driver, market_chain, joined_task, trainers, outsider
):
    driver.run_round(joined_task, committers=trainers[:2], revealers=trainers[:1])
    fn = market_chain.market.functions.abortRound(joined_task, [trainers[1].address] * 2)
    assert reverts(market_chain.tx, outsider, fn).name == "TaskMarketAlreadyRejected"


def test_abort_listing_a_non_committer_reverts_not_committed(
    driver, market_chain, joined_task, trainers, outsider
):
    driver.run_round(joined_task, committers=trainers[:1])
    fn = market_chain.market.functions.abortRound(joined_task, [trainers[2].address])
    error = reverts(market_chain.tx, outsider, fn)
    assert error.name == "TaskMarketNotCommitted"


def test_abort_of_a_round_nobody_committed_to(driver, market_chain, joined_task, outsider):
    run = driver.start_round(joined_task)
    driver.advance_past("commitDeadline", run)
    receipt = market_chain.tx(outsider, market_chain.market.functions.abortRound(joined_task, []))
    assert events(market_chain, receipt, "RoundAborted") == [
        {"taskId": joined_task, "round": 1, "slashedCount": 0}
    ]
    assert driver.get_state(joined_task)["pool"] == POOL


def test_abort_of_last_round_refunds_pool_with_slashes(
    driver, market_chain, make_task, owner, trainers, outsider
):
    task_id = make_task(rounds=1)
    driver.join(task_id, trainers[:3])
    driver.run_round(task_id, committers=trainers[:3], revealers=trainers[:1])
    owner_before = market_chain.balance(owner.address)
    silent = [trainers[1].address, trainers[2].address]

    receipt = market_chain.tx(outsider, market_chain.market.functions.abortRound(task_id, silent))

    assert event_names(market_chain, receipt) == [
        "TrainerSlashed", "TrainerSlashed", "RoundAborted", "TaskCompleted",
    ]  # fmt: skip
    refund = POOL + 2 * SLASHED
    assert events(market_chain, receipt, "TaskCompleted") == [{"taskId": task_id, "refund": refund}]
    assert market_chain.balance(owner.address) == owner_before + POOL + 2 * SLASHED
    assert driver.get_state(task_id)["status"] == TaskStatus.COMPLETED


def test_full_slash_leaves_nothing_to_withdraw(driver, market_chain, make_task, trainers, outsider):
    task_id = make_task(slash_bps=10_000)
    driver.join(task_id, trainers[:3])
    driver.run_round(task_id, committers=trainers[:3], revealers=trainers[:1])
    silent = [trainers[1].address, trainers[2].address]
    market_chain.tx(outsider, market_chain.market.functions.abortRound(task_id, silent))
    assert driver.get_state(task_id)["pool"] == POOL + 2 * STAKE
    error = reverts(market_chain.tx, trainers[1], market_chain.market.functions.withdrawStake(task_id))
    assert error.name == "TaskMarketNothingToWithdraw"
