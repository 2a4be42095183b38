"""Settling rounds: finalizeRound (its inputs, payouts, budgets, slashing and burning, completion),
abortRound, and publishModel. The consensus arithmetic itself is in test_consensus.py."""

from __future__ import annotations

import pytest
import rlp
from web3 import Web3
from web3.logs import DISCARD

from fedmarket.consensus import INVALID
from fedmarket.protocol import BPS, Outcome, RoundPhase, TaskStatus
from testkit.contracts import (
    BURN_ADDRESS,
    POOL,
    SCORE,
    SEAT_CHARGE,
    SLASH_BPS,
    STAKE,
    VALIDATOR_SHARE_BPS,
    VALIDATOR_STAKE,
    by_address,
    digest,
    error_args,
    event_names,
    events,
    reverts,
)

SLASHED = STAKE * SLASH_BPS // BPS
VALIDATOR_SLASHED = VALIDATOR_STAKE * SLASH_BPS // BPS


def market_holdings(driver, task_ids, accounts) -> int:
    """What the views say the market owes: pools + unclaimed rewards + both roles' stakes."""
    total = 0
    for task_id in task_ids:
        state = driver.get_state(task_id)
        total += state["pool"] + state["unclaimed"]
        total += sum(driver.get_trainer(task_id, a.address)["stake"] for a in accounts)
        total += sum(driver.get_validator(task_id, a.address)["stake"] for a in accounts)
    return total


def rejecting(*rejected):
    """Score vectors: every validator flags the `rejected` trainers INVALID and scores the rest SCORE."""
    addresses = {t.address for t in rejected}
    return lambda validator, revealers: [INVALID if t in addresses else SCORE for t in revealers]


def replace_at(settlement: tuple, index: int, value) -> tuple:
    return (*settlement[:index], value, *settlement[index + 1 :])


def reach(driver, task_id, phase, trainers, validators) -> None:
    """Plays the task's first round into `phase` (one trainer and one validator stay silent)."""
    if phase == RoundPhase.COMMIT:
        driver.start_round(task_id)
    elif phase != RoundPhase.NONE:
        driver.run_round(task_id, committers=trainers[:3], revealers=trainers[:2], scorers=validators[:1],
                         score_revealers=[], stop=phase)  # fmt: skip
    assert driver.phase(task_id) == phase


def token_transfers(chain, receipt) -> list[tuple[str, int]]:
    return [
        (t["args"]["to"], t["args"]["value"])
        for t in chain.token.events.Transfer().process_receipt(receipt, errors=DISCARD)
    ]


# ------------------------------------------------------------------------------- finalizeRound


def test_finalize_pays_consensus_shares_and_emits_settlement_events(
    driver, market_chain, joined_task, trainers, validators
):
    run = driver.run_round(joined_task, committers=trainers[:3])
    market_before = market_chain.balance(market_chain.market.address)
    budget = driver.budget(joined_task)
    assert budget == POOL // 3
    expected = driver.expected(run)

    receipt = driver.finalize(joined_task)

    names = event_names(market_chain, receipt)
    assert names == ["TrainerSettled"] * 3 + ["ValidatorSettled"] * 2 + ["RoundFinalized"]
    validator_budget = budget * VALIDATOR_SHARE_BPS // BPS
    trainer_share = (budget - validator_budget) // 3  # equal scores: equal thirds
    settled = events(market_chain, receipt, "TrainerSettled")
    assert settled == [
        {"taskId": joined_task, "round": 1, "trainer": t, "outcome": Outcome.ACCEPTED,
         "consensus": 333_333_333_333_333_333, "payout": trainer_share}
        for t in by_address([t.address for t in trainers[:3]])
    ]  # fmt: skip
    assert events(market_chain, receipt, "ValidatorSettled") == [
        {
            "taskId": joined_task,
            "round": 1,
            "validator": v,
            "agreement": 10**18,
            "payout": validator_budget // 2,
        }
        for v in by_address([v.address for v in validators[:2]])
    ]
    payout = 3 * trainer_share + validator_budget // 2 * 2
    assert events(market_chain, receipt, "RoundFinalized") == [
        {"taskId": joined_task, "round": 1, "trainerPayout": 3 * trainer_share,
         "validatorPayout": validator_budget // 2 * 2, "burned": 0}
    ]  # fmt: skip
    assert payout == expected.trainer_payout + expected.validator_payout
    state = driver.get_state(joined_task)
    assert (state["pool"], state["unclaimed"], state["status"]) == (POOL - payout, payout, TaskStatus.OPEN)
    assert (state["trainerCount"], state["validatorCount"]) == (3, 2)
    round_ = driver.get_round(joined_task, 1)
    assert (round_["closed"], round_["aborted"], round_["payout"], round_["modelPublished"]) == (
        True, False, payout, False,
    )  # fmt: skip
    assert round_["closedAt"] == market_chain.w3.eth.get_block(receipt["blockNumber"])["timestamp"]
    assert driver.phase(joined_task) == RoundPhase.FINALIZED
    assert driver.budget(joined_task) == (POOL - payout) // 2
    assert driver.get_trainer(joined_task, trainers[0].address)["claimable"] == trainer_share
    assert driver.get_validator(joined_task, validators[0].address)["claimable"] == validator_budget // 2
    # allocation moves tokens between the market's books, never out of it
    assert market_chain.balance(market_chain.market.address) == market_before


def test_finalize_is_permissionless(driver, market_chain, joined_task, trainers, outsider):
    driver.run_round(joined_task, committers=trainers[:3])
    driver.finalize(joined_task, caller=outsider)
    assert driver.phase(joined_task) == RoundPhase.FINALIZED


@pytest.mark.parametrize(
    "phase",
    [RoundPhase.NONE, RoundPhase.COMMIT, RoundPhase.REVEAL, RoundPhase.SCORE_COMMIT, RoundPhase.SCORE_REVEAL,
     RoundPhase.FINALIZED],
)  # fmt: skip
def test_finalize_outside_settling_phase_reverts_wrong_phase(
    driver, market_chain, joined_task, trainers, validators, phase
):
    if phase == RoundPhase.FINALIZED:
        driver.run_round(joined_task, committers=trainers[:3])
        driver.finalize(joined_task)
    else:
        reach(driver, joined_task, phase, trainers, validators)
    error = reverts(driver.finalize, joined_task, ([], [], [], [], []))
    assert error.name == "TaskMarketWrongPhase"
    assert error_args(error) == {"taskId": joined_task, "phase": phase}


def test_finalize_without_trainer_quorum_reverts_quorum_not_reached(
    driver, market_chain, joined_task, trainers
):
    driver.run_round(joined_task, committers=trainers[:3], revealers=trainers[:1])
    error = reverts(driver.finalize, joined_task)
    assert error.name == "TaskMarketQuorumNotReached"
    assert error_args(error) == {"taskId": joined_task, "revealed": 1, "required": 2}


def test_finalize_on_completed_task_reverts_task_not_open(
    driver, market_chain, make_task, trainers, validators
):
    task_id = make_task(rounds=1)
    driver.join(task_id, trainers[:2])
    driver.join_validators(task_id, validators[:1])
    driver.run_round(task_id, committers=trainers[:2])
    settlement = driver.settlement(task_id)
    driver.finalize(task_id, settlement)
    error = reverts(driver.finalize, task_id, settlement)
    assert error.name == "TaskMarketTaskNotOpen"
    assert error_args(error) == {"taskId": task_id, "status": TaskStatus.COMPLETED}


# ---------------------------------------------------------------- settlement inputs


def test_finalize_with_revealers_out_of_order_reverts_unsorted(driver, market_chain, joined_task, trainers):
    run = driver.run_round(joined_task, committers=trainers[:3])
    good = driver.settlement(run)
    for bad in (list(reversed(good[0])), [good[0][0], good[0][0], good[0][1]]):
        error = reverts(driver.finalize, joined_task, replace_at(good, 0, bad))
        assert error.name == "TaskMarketUnsorted"
        assert error_args(error) == {"taskId": joined_task, "list": "trainers"}


def test_finalize_listing_a_trainer_that_did_not_reveal_reverts_not_a_revealer(
    driver, market_chain, joined_task, trainers, outsider
):
    run = driver.run_round(joined_task, committers=trainers[:3], revealers=trainers[:2])
    good = driver.settlement(run)
    for stranger in (trainers[2].address, outsider.address):  # silent committer; never joined
        listed = by_address([*good[0], stranger])
        error = reverts(driver.finalize, joined_task, replace_at(good, 0, listed))
        assert error.name == "TaskMarketNotARevealer"
        assert error_args(error) == {"taskId": joined_task, "trainer": stranger}


def test_finalize_leaving_out_a_revealer_reverts_revealers_mismatch(
    driver, market_chain, joined_task, trainers
):
    run = driver.run_round(joined_task, committers=trainers[:3])
    good = driver.settlement(run)
    error = reverts(driver.finalize, joined_task, replace_at(good, 0, good[0][1:]))
    assert error.name == "TaskMarketRevealersMismatch"
    assert error_args(error) == {"taskId": joined_task, "listed": 2, "expected": 3}


def test_finalize_with_validators_out_of_order_reverts_unsorted(driver, market_chain, joined_task, trainers):
    run = driver.run_round(joined_task, committers=trainers[:3])
    trainers_, missing, validators_, scores, silent = driver.settlement(run)
    bad = (trainers_, missing, list(reversed(validators_)), list(reversed(scores)), silent)
    error = reverts(driver.finalize, joined_task, bad)
    assert error.name == "TaskMarketUnsorted"
    assert error_args(error) == {"taskId": joined_task, "list": "validators"}


def test_finalize_with_a_vector_other_than_the_revealed_one_reverts_scores_mismatch(
    driver, market_chain, joined_task, trainers, validators
):
    run = driver.run_round(joined_task, committers=trainers[:3], score_revealers=validators[:1])
    good = driver.settlement(run)
    # a changed entry
    scores = [list(good[3][0]), *good[3][1:]]
    scores[0][0] += 1
    error = reverts(driver.finalize, joined_task, replace_at(good, 3, scores))
    assert error.name == "TaskMarketScoresMismatch"
    assert error_args(error) == {"taskId": joined_task, "validator": good[2][0]}
    # a validator that committed but never revealed, listed with the vector it committed to
    silent = validators[1].address
    listed = by_address([validators[0].address, silent])
    vectors = {validators[0].address: good[3][0], silent: run.votes[silent].scores}
    bad = (good[0], good[1], listed, [vectors[v] for v in listed], [])
    error = reverts(driver.finalize, joined_task, bad)
    assert error.name == "TaskMarketScoresMismatch"
    assert error_args(error) == {"taskId": joined_task, "validator": silent}


def test_finalize_leaving_out_a_score_revealer_reverts_score_revealers_mismatch(
    driver, market_chain, joined_task, trainers
):
    run = driver.run_round(joined_task, committers=trainers[:3])
    trainers_, missing, validators_, scores, silent = driver.settlement(run)
    error = reverts(driver.finalize, joined_task, (trainers_, missing, validators_[1:], scores[1:], silent))
    assert error.name == "TaskMarketScoreRevealersMismatch"
    assert error_args(error) == {"taskId": joined_task, "listed": 1, "expected": 2}


def test_finalize_with_one_vector_per_validator_missing_reverts_score_count_mismatch(
    driver, market_chain, joined_task, trainers
):
    run = driver.run_round(joined_task, committers=trainers[:3])
    good = driver.settlement(run)
    error = reverts(driver.finalize, joined_task, replace_at(good, 3, good[3][:1]))
    assert error.name == "TaskMarketScoreCountMismatch"
    assert error_args(error) == {"taskId": joined_task, "given": 1, "expected": 2}


def test_finalize_without_listing_a_non_revealer_reverts_non_revealers_mismatch(
    driver, market_chain, joined_task, trainers
):
    run = driver.run_round(joined_task, committers=trainers[:3], revealers=trainers[:2])
    good = driver.settlement(run)
    assert good[1] == [trainers[2].address]
    error = reverts(driver.finalize, joined_task, replace_at(good, 1, []))
    assert error.name == "TaskMarketNonRevealersMismatch"
    assert error_args(error) == {"taskId": joined_task, "listed": 0, "expected": 1}


def test_finalize_listing_a_revealer_as_non_revealer_reverts_revealed(
    driver, market_chain, joined_task, trainers
):
    run = driver.run_round(joined_task, committers=trainers[:3], revealers=trainers[:2])
    good = driver.settlement(run)
    error = reverts(driver.finalize, joined_task, replace_at(good, 1, [*good[1], trainers[0].address]))
    assert error.name == "TaskMarketRevealed"
    assert error_args(error) == {"taskId": joined_task, "trainer": trainers[0].address}


def test_finalize_listing_a_non_revealer_twice_reverts_already_rejected(
    driver, market_chain, joined_task, trainers
):
    run = driver.run_round(joined_task, committers=trainers[:3], revealers=trainers[:2])
    good = driver.settlement(run)
    error = reverts(driver.finalize, joined_task, replace_at(good, 1, good[1] * 2))
    assert error.name == "TaskMarketAlreadyRejected"
    assert error_args(error) == {"taskId": joined_task, "trainer": trainers[2].address}


def test_finalize_listing_a_non_committer_reverts_not_committed(driver, market_chain, joined_task, trainers):
    run = driver.run_round(joined_task, committers=trainers[:2])
    good = driver.settlement(run)
    error = reverts(driver.finalize, joined_task, replace_at(good, 1, [trainers[2].address]))
    assert error.name == "TaskMarketNotCommitted"
    assert error_args(error) == {"taskId": joined_task, "trainer": trainers[2].address, "round": 1}


def test_finalize_without_listing_a_silent_validator_reverts_silent_validators_mismatch(
    driver, market_chain, joined_task, trainers, validators
):
    run = driver.run_round(joined_task, committers=trainers[:3], score_revealers=validators[:1])
    good = driver.settlement(run)
    assert good[4] == [validators[1].address]
    error = reverts(driver.finalize, joined_task, replace_at(good, 4, []))
    assert error.name == "TaskMarketSilentValidatorsMismatch"
    assert error_args(error) == {"taskId": joined_task, "listed": 0, "expected": 1}


def test_finalize_listing_a_validator_that_is_not_silent_reverts_not_silent(
    driver, market_chain, joined_task, trainers, validators
):
    driver.join_validators(joined_task, validators[2:3])
    run = driver.run_round(
        joined_task, committers=trainers[:3], scorers=validators[:2], score_revealers=validators[:1]
    )
    good = driver.settlement(run)
    # one that revealed, one that never committed, the silent one twice
    for extra in (validators[0], validators[2], validators[1]):
        error = reverts(driver.finalize, joined_task, replace_at(good, 4, [*good[4], extra.address]))
        assert error.name == "TaskMarketNotSilent"
        assert error_args(error) == {"taskId": joined_task, "validator": extra.address}


# ---------------------------------------------------------------- slashing and burning


def test_finalize_slashes_a_rejected_trainer_burns_the_cut_and_removes_it(
    driver, market_chain, joined_task, trainers
):
    poisoner = trainers[2]
    run = driver.run_round(joined_task, committers=trainers[:3], scores=rejecting(poisoner))
    expected = driver.expected(run)
    burn_before = market_chain.balance(BURN_ADDRESS)
    market_before = market_chain.balance(market_chain.market.address)

    receipt = driver.finalize(joined_task)

    names = event_names(market_chain, receipt)
    assert names == ["TrainerSettled"] * 3 + ["ValidatorSettled"] * 2 + ["TrainerSlashed", "RoundFinalized"]
    rejected = {e["trainer"]: e for e in events(market_chain, receipt, "TrainerSettled")}[poisoner.address]
    assert (rejected["outcome"], rejected["consensus"], rejected["payout"]) == (Outcome.REJECTED, 0, 0)
    assert events(market_chain, receipt, "TrainerSlashed") == [
        {"taskId": joined_task, "round": 1, "trainer": poisoner.address, "amount": SLASHED}
    ]
    assert events(market_chain, receipt, "RoundFinalized")[0]["burned"] == SLASHED
    assert market_chain.balance(BURN_ADDRESS) == burn_before + SLASHED
    assert market_chain.balance(market_chain.market.address) == market_before - SLASHED
    assert driver.get_trainer(joined_task, poisoner.address) == {
        "stake": STAKE - SLASHED, "claimable": 0, "lastCommitRound": 1, "lastRevealRound": 1, "joined": False,
    }  # fmt: skip
    state = driver.get_state(joined_task)
    assert state["trainerCount"] == 2
    assert state["pool"] == POOL - expected.trainer_payout - expected.validator_payout

    # the rejected trainer takes back what is left of its stake, and cannot take part any more
    before = market_chain.balance(poisoner.address)
    receipt = market_chain.tx(poisoner, market_chain.market.functions.withdrawStake(joined_task))
    assert events(market_chain, receipt, "StakeWithdrawn")[0]["amount"] == STAKE - SLASHED
    assert market_chain.balance(poisoner.address) == before + STAKE - SLASHED
    driver.publish(joined_task)
    run = driver.start_round(joined_task)
    assert reverts(driver.commit, run, poisoner).name == "TaskMarketNotJoined"


def test_finalize_slashes_non_revealers_and_silent_validators_and_burns_it_all_at_once(
    driver, market_chain, joined_task, trainers, validators
):
    driver.run_round(
        joined_task, committers=trainers[:3], revealers=trainers[:2], score_revealers=validators[:1]
    )
    burn_before = market_chain.balance(BURN_ADDRESS)

    receipt = driver.finalize(joined_task)

    names = event_names(market_chain, receipt)
    assert names[-3:] == ["TrainerSlashed", "ValidatorSlashed", "RoundFinalized"]
    assert events(market_chain, receipt, "TrainerSlashed")[0]["trainer"] == trainers[2].address
    assert events(market_chain, receipt, "ValidatorSlashed") == [
        {"taskId": joined_task, "round": 1, "validator": validators[1].address, "amount": VALIDATOR_SLASHED}
    ]
    burned = SLASHED + VALIDATOR_SLASHED
    assert events(market_chain, receipt, "RoundFinalized")[0]["burned"] == burned
    assert market_chain.balance(BURN_ADDRESS) == burn_before + burned
    assert token_transfers(market_chain, receipt) == [(BURN_ADDRESS, burned)]
    state = driver.get_state(joined_task)
    assert (state["trainerCount"], state["validatorCount"]) == (2, 1)
    assert driver.get_validator(joined_task, validators[1].address)["joined"] is False


def test_a_rejected_trainer_keeps_its_validator_seat_and_a_silent_validator_its_trainer_seat(
    driver, market_chain, joined_task, trainers
):
    rejected_trainer, silent_validator = trainers[0], trainers[1]
    driver.join_validators(joined_task, [rejected_trainer, silent_validator])
    run = driver.run_round(
        joined_task,
        committers=trainers[:3],
        scores=rejecting(rejected_trainer),
        score_revealers=[v for v in driver.joined_validators(joined_task) if v != silent_validator],
    )
    receipt = driver.finalize(joined_task)

    assert [e["trainer"] for e in events(market_chain, receipt, "TrainerSlashed")] == [
        rejected_trainer.address
    ]
    assert [e["validator"] for e in events(market_chain, receipt, "ValidatorSlashed")] == [
        silent_validator.address
    ]
    assert driver.get_trainer(joined_task, rejected_trainer.address)["joined"] is False
    assert driver.get_validator(joined_task, rejected_trainer.address)["joined"] is True
    assert driver.get_validator(joined_task, silent_validator.address)["joined"] is False
    assert driver.get_trainer(joined_task, silent_validator.address)["joined"] is True
    assert run.round_no == 1


def test_round_budget_is_taken_before_slashes_which_never_add_to_it(
    driver, market_chain, joined_task, trainers
):
    run = driver.run_round(joined_task, committers=trainers[:3], scores=rejecting(trainers[2]))
    budget = driver.budget(joined_task)
    assert budget == POOL // 3
    expected = driver.expected(run)
    receipt = driver.finalize(joined_task)
    (finalized,) = events(market_chain, receipt, "RoundFinalized")
    assert finalized["trainerPayout"] + finalized["validatorPayout"] <= budget
    assert finalized["trainerPayout"] == expected.trainer_payout
    assert driver.get_state(joined_task)["pool"] == POOL - expected.trainer_payout - expected.validator_payout


def test_what_nobody_earns_stays_in_the_pool(driver, market_chain, joined_task, trainers):
    """Every update worthless (scored 0): no trainer is paid; validators agree fully (nothing to
    clip) and are paid their share."""
    driver.run_round(joined_task, committers=trainers[:3], scores=lambda v, revealers: [0] * len(revealers))
    receipt = driver.finalize(joined_task)
    settled = events(market_chain, receipt, "TrainerSettled")
    assert {(e["outcome"], e["payout"]) for e in settled} == {(Outcome.WORTHLESS, 0)}
    (finalized,) = events(market_chain, receipt, "RoundFinalized")
    validator_payout = POOL // 3 * VALIDATOR_SHARE_BPS // BPS // 2 * 2  # two validators, full agreement
    assert (finalized["trainerPayout"], finalized["validatorPayout"]) == (0, validator_payout)
    assert driver.get_state(joined_task)["pool"] == POOL - validator_payout


def test_round_budget_is_pool_over_rounds_left(driver, market_chain, joined_task, trainers):
    assert driver.budget(joined_task) == POOL // 3
    driver.run_round(joined_task, committers=trainers[:3])
    driver.settle(joined_task)
    paid = POOL - driver.get_state(joined_task)["pool"]
    assert driver.budget(joined_task) == (POOL - paid) // 2
    driver.run_round(joined_task, committers=trainers[:3])
    assert driver.budget(joined_task) == (POOL - paid) // 2  # the open round counts as left
    driver.settle(joined_task)
    left = driver.get_state(joined_task)["pool"]
    assert driver.budget(joined_task) == left
    driver.run_round(joined_task, committers=trainers[:3])
    driver.settle(joined_task)
    assert driver.budget(joined_task) == 0
    assert driver.get_state(joined_task)["status"] == TaskStatus.COMPLETED


def test_last_round_refunds_leftover_to_owner_and_emits_task_completed(
    driver, market_chain, make_task, owner, trainers, validators
):
    task_id = make_task(rounds=2)
    driver.join(task_id, trainers[:3])
    driver.join_validators(task_id, validators[:2])
    driver.run_round(task_id, committers=trainers[:3])
    driver.settle(task_id)
    run = driver.run_round(task_id, committers=trainers[:3], scores=rejecting(trainers[2]))
    expected = driver.expected(run)
    pool = driver.get_state(task_id)["pool"]
    owner_before = market_chain.balance(owner.address)

    receipt = driver.finalize(task_id)

    refund = pool - expected.trainer_payout - expected.validator_payout
    assert event_names(market_chain, receipt)[-3:] == ["TrainerSlashed", "RoundFinalized", "TaskCompleted"]
    assert events(market_chain, receipt, "TaskCompleted") == [{"taskId": task_id, "refund": refund}]
    assert market_chain.balance(owner.address) == owner_before + refund
    state = driver.get_state(task_id)
    assert (state["status"], state["pool"]) == (TaskStatus.COMPLETED, 0)
    assert driver.budget(task_id) == 0
    assert driver.phase(task_id) == RoundPhase.FINALIZED
    everyone = [*trainers[:3], *validators[:2]]
    held = market_chain.balance(market_chain.market.address)
    assert held == market_holdings(driver, [task_id], everyone)

    # trainers and validators still joined take their whole stake back once the task is over
    for account in [*trainers[:2], *validators[:2]]:
        receipt = market_chain.tx(account, market_chain.market.functions.withdrawStake(task_id))
        assert events(market_chain, receipt, "StakeWithdrawn")[0]["amount"] in (STAKE, VALIDATOR_STAKE)
    assert (driver.get_state(task_id)["trainerCount"], driver.get_state(task_id)["validatorCount"]) == (0, 0)
    market_chain.tx(trainers[2], market_chain.market.functions.withdrawStake(task_id))
    assert market_chain.balance(market_chain.market.address) == driver.get_state(task_id)["unclaimed"]


# ------------------------------------------------------------------------------- abortRound


def test_abort_without_quorum_by_anyone_slashes_non_revealers_and_keeps_budget_in_pool(
    driver, market_chain, joined_task, trainers, outsider
):
    driver.run_round(joined_task, committers=trainers[:3], revealers=trainers[:1])
    silent = by_address([trainers[1].address, trainers[2].address])
    burn_before = market_chain.balance(BURN_ADDRESS)

    receipt = driver.abort(joined_task, caller=outsider)

    assert event_names(market_chain, receipt) == ["TrainerSlashed", "TrainerSlashed", "RoundAborted"]
    assert [e["trainer"] for e in events(market_chain, receipt, "TrainerSlashed")] == silent
    assert all(e["amount"] == SLASHED for e in events(market_chain, receipt, "TrainerSlashed"))
    assert events(market_chain, receipt, "RoundAborted") == [
        {"taskId": joined_task, "round": 1, "slashedCount": 2, "burned": 2 * SLASHED}
    ]
    assert market_chain.balance(BURN_ADDRESS) == burn_before + 2 * SLASHED
    state = driver.get_state(joined_task)
    assert (state["pool"], state["unclaimed"]) == (POOL, 0)
    assert state["trainerCount"] == 1
    assert state["status"] == TaskStatus.OPEN
    round_ = driver.get_round(joined_task, 1)
    assert (round_["closed"], round_["aborted"], round_["payout"]) == (True, True, 0)
    assert round_["closedAt"] == market_chain.w3.eth.get_block(receipt["blockNumber"])["timestamp"]
    assert driver.phase(joined_task) == RoundPhase.ABORTED
    assert driver.budget(joined_task) == POOL // 2  # the round was used up
    for address in silent:
        assert driver.get_trainer(joined_task, address) == {
            "stake": STAKE - SLASHED, "claimable": 0, "lastCommitRound": 1, "lastRevealRound": 0, "joined": False,
        }  # fmt: skip


def test_abort_with_both_quorums_reverts_abort_not_allowed(
    driver, market_chain, joined_task, trainers, outsider
):
    driver.run_round(joined_task, committers=trainers[:3], revealers=trainers[:2])
    for caller in (outsider, driver.coordinator):
        error = reverts(driver.abort, joined_task, caller=caller)
        assert error.name == "TaskMarketAbortNotAllowed"
        assert error_args(error) == {"taskId": joined_task}
    driver.finalize(joined_task)


@pytest.mark.parametrize(
    "phase",
    [RoundPhase.NONE, RoundPhase.COMMIT, RoundPhase.REVEAL, RoundPhase.SCORE_COMMIT, RoundPhase.SCORE_REVEAL,
     RoundPhase.ABORTED],
)  # fmt: skip
def test_abort_outside_settling_phase_reverts_wrong_phase(
    driver, market_chain, joined_task, trainers, validators, outsider, phase
):
    if phase == RoundPhase.ABORTED:
        driver.run_round(joined_task, committers=trainers[:1])
        driver.abort(joined_task)
    else:
        reach(driver, joined_task, phase, trainers, validators)
    assert driver.phase(joined_task) == phase
    error = reverts(market_chain.tx, outsider, market_chain.market.functions.abortRound(joined_task, [], []))
    assert error.name == "TaskMarketWrongPhase"
    assert error_args(error) == {"taskId": joined_task, "phase": phase}


def test_abort_listing_a_revealer_reverts_revealed(driver, market_chain, joined_task, trainers, outsider):
    driver.run_round(joined_task, committers=trainers[:3], revealers=trainers[:1])
    listed = [trainers[1].address, trainers[2].address, trainers[0].address]
    error = reverts(driver.abort, joined_task, non_revealers=listed, caller=outsider)
    assert error.name == "TaskMarketRevealed"
    assert error_args(error) == {"taskId": joined_task, "trainer": trainers[0].address}


def test_abort_missing_a_non_revealer_reverts_non_revealers_mismatch(
    driver, market_chain, joined_task, trainers, outsider
):
    driver.run_round(joined_task, committers=trainers[:3], revealers=trainers[:1])
    error = reverts(driver.abort, joined_task, non_revealers=[trainers[1].address], caller=outsider)
    assert error.name == "TaskMarketNonRevealersMismatch"
    assert error_args(error) == {"taskId": joined_task, "listed": 1, "expected": 2}


def test_abort_listing_a_non_revealer_twice_reverts_already_rejected(
    driver, market_chain, joined_task, trainers, outsider
):
    driver.run_round(joined_task, committers=trainers[:2], revealers=trainers[:1])
    error = reverts(driver.abort, joined_task, non_revealers=[trainers[1].address] * 2, caller=outsider)
    assert error.name == "TaskMarketAlreadyRejected"


def test_abort_listing_a_non_committer_reverts_not_committed(
    driver, market_chain, joined_task, trainers, outsider
):
    driver.run_round(joined_task, committers=trainers[:1])
    error = reverts(driver.abort, joined_task, non_revealers=[trainers[2].address], caller=outsider)
    assert error.name == "TaskMarketNotCommitted"


def test_abort_without_listing_a_silent_validator_reverts_silent_validators_mismatch(
    driver, market_chain, joined_task, trainers, validators, outsider
):
    driver.run_round(joined_task, committers=trainers[:1], score_revealers=validators[:1])
    error = reverts(driver.abort, joined_task, silent=[], caller=outsider)
    assert error.name == "TaskMarketSilentValidatorsMismatch"
    assert error_args(error) == {"taskId": joined_task, "listed": 0, "expected": 1}
    receipt = driver.abort(joined_task, caller=outsider)
    # trainers[1:3] did not commit: their seat charges burn with the slash
    assert events(market_chain, receipt, "RoundAborted")[0]["burned"] == VALIDATOR_SLASHED + 2 * SEAT_CHARGE


def test_abort_of_a_round_nobody_committed_to(driver, market_chain, joined_task, outsider, trainers):
    """Every joined trainer was bound to the round and sat it out: all three seats go, each charged."""
    run = driver.start_round(joined_task)
    driver.advance_past("scoreCommitDeadline", run)
    assert driver.phase(joined_task) == RoundPhase.SETTLING
    receipt = driver.abort(joined_task, caller=outsider)
    assert event_names(market_chain, receipt) == ["TrainersUnseated", "RoundAborted"]
    assert events(market_chain, receipt, "TrainersUnseated") == [
        {"taskId": joined_task, "round": 1, "count": 3, "charged": 3 * SEAT_CHARGE}
    ]
    assert events(market_chain, receipt, "RoundAborted") == [
        {"taskId": joined_task, "round": 1, "slashedCount": 0, "burned": 3 * SEAT_CHARGE}
    ]
    assert driver.get_state(joined_task)["pool"] == POOL
    assert driver.get_state(joined_task)["trainerCount"] == 0
    assert token_transfers(market_chain, receipt) == [(BURN_ADDRESS, 3 * SEAT_CHARGE)]
    assert driver.get_trainer(joined_task, trainers[0].address)["stake"] == STAKE - SEAT_CHARGE


def test_abort_of_last_round_refunds_the_pool(
    driver, market_chain, make_task, owner, trainers, validators, outsider
):
    task_id = make_task(rounds=1)
    driver.join(task_id, trainers[:3])
    driver.join_validators(task_id, validators[:1])
    driver.run_round(task_id, committers=trainers[:3], revealers=trainers[:1])
    owner_before = market_chain.balance(owner.address)

    receipt = driver.abort(task_id, caller=outsider)

    assert event_names(market_chain, receipt) == [
        "TrainerSlashed", "TrainerSlashed", "RoundAborted", "TaskCompleted",
    ]  # fmt: skip
    assert events(market_chain, receipt, "TaskCompleted") == [{"taskId": task_id, "refund": POOL}]
    assert market_chain.balance(owner.address) == owner_before + POOL
    assert driver.get_state(task_id)["status"] == TaskStatus.COMPLETED


def test_full_slash_leaves_nothing_to_withdraw(
    driver, market_chain, make_task, trainers, validators, outsider
):
    task_id = make_task(slash_bps=10_000)
    driver.join(task_id, trainers[:3])
    driver.join_validators(task_id, validators[:1])
    driver.run_round(task_id, committers=trainers[:3], revealers=trainers[:1])
    receipt = driver.abort(task_id, caller=outsider)
    assert events(market_chain, receipt, "RoundAborted")[0]["burned"] == 2 * STAKE
    assert driver.get_state(task_id)["pool"] == POOL
    error = reverts(market_chain.tx, trainers[1], market_chain.market.functions.withdrawStake(task_id))
    assert error.name == "TaskMarketNothingToWithdraw"


# ------------------------------------------------------------------------------- publishModel


def test_publish_model_records_the_aggregate_and_emits_model_published(
    driver, market_chain, joined_task, trainers
):
    driver.run_round(joined_task, committers=trainers[:3])
    driver.finalize(joined_task)

    receipt = driver.publish(joined_task, model=digest("aggregate-1"), report=digest("report-1"))

    assert events(market_chain, receipt, "ModelPublished") == [
        {
            "taskId": joined_task,
            "round": 1,
            "modelHash": digest("aggregate-1"),
            "reportHash": digest("report-1"),
        }
    ]
    round_ = driver.get_round(joined_task, 1)
    assert (round_["modelPublished"], round_["newModelHash"], round_["reportHash"]) == (
        True, digest("aggregate-1"), digest("report-1"),
    )  # fmt: skip
    assert driver.get_state(joined_task)["modelHash"] == digest("aggregate-1")


def test_publish_model_by_outsider_reverts_not_coordinator(
    driver, market_chain, joined_task, trainers, outsider
):
    driver.run_round(joined_task, committers=trainers[:3])
    driver.finalize(joined_task)
    fn = market_chain.market.functions.publishModel(joined_task, digest("m"), digest("r"))
    error = reverts(market_chain.tx, outsider, fn)
    assert error.name == "TaskMarketNotCoordinator"
    assert error_args(error) == {"taskId": joined_task, "account": outsider.address}


def test_publish_model_twice_reverts_model_already_published(driver, market_chain, joined_task, trainers):
    driver.run_round(joined_task, committers=trainers[:3])
    driver.settle(joined_task)
    error = reverts(driver.publish, joined_task)
    assert error.name == "TaskMarketModelAlreadyPublished"
    assert error_args(error) == {"taskId": joined_task, "round": 1}


def test_publish_model_of_an_open_or_aborted_round_reverts_wrong_phase(
    driver, market_chain, joined_task, trainers
):
    error = reverts(driver.publish, joined_task)
    assert error_args(error) == {"taskId": joined_task, "phase": RoundPhase.NONE}
    driver.run_round(joined_task, committers=trainers[:3])
    error = reverts(driver.publish, joined_task)
    assert error.name == "TaskMarketWrongPhase"
    assert error_args(error) == {"taskId": joined_task, "phase": RoundPhase.SETTLING}
    driver.finalize(joined_task)
    driver.publish(joined_task)
    driver.run_round(joined_task, committers=trainers[:1])
    driver.abort(joined_task)
    error = reverts(driver.publish, joined_task)
    assert error_args(error) == {"taskId": joined_task, "phase": RoundPhase.ABORTED}


def test_publish_model_after_the_last_round_completed_the_task(
    driver, market_chain, make_task, trainers, validators
):
    task_id = make_task(rounds=1)
    driver.join(task_id, trainers[:2])
    driver.join_validators(task_id, validators[:1])
    driver.run_round(task_id, committers=trainers[:2])
    driver.finalize(task_id)
    assert driver.get_state(task_id)["status"] == TaskStatus.COMPLETED
    driver.publish(task_id, model=digest("final"))
    assert driver.get_state(task_id)["modelHash"] == digest("final")


# ------------------------------------------------------------------------------- the settlement module


def test_settlement_module_called_directly_sees_no_task(
    driver, market_chain, joined_task, trainers, outsider
):
    """finalizeRound and abortRound run in TaskMarketSettlement (deployed by the market's
    constructor, its first creation) by delegatecall. Called directly, it works on its own storage,
    which holds no task."""
    driver.run_round(joined_task, committers=trainers[:3])
    market = bytes.fromhex(market_chain.market.address[2:])
    module = Web3.to_checksum_address(Web3.keccak(rlp.encode([market, 1]))[12:])
    assert len(market_chain.w3.eth.get_code(module)) > 0
    direct = market_chain.w3.eth.contract(address=module, abi=market_chain.market.abi)
    for fn in (
        direct.functions.finalizeRound(joined_task, driver.settlement(joined_task)),
        direct.functions.abortRound(joined_task, [], []),
    ):
        error = reverts(market_chain.tx, outsider, fn)
        assert error.name == "TaskMarketUnknownTask"
    assert driver.phase(joined_task) == RoundPhase.SETTLING
    driver.finalize(joined_task)  # through the market, it settles
