"""Validators: joining (stake and data hash), leaving, committing and revealing score vectors, the
score phases' clock and early closes, and the validator quorum."""

from __future__ import annotations

import pytest

from fedmarket.consensus import HARMFUL, INVALID, MAX_SCORE, UNAVAILABLE
from fedmarket.protocol import (
    BPS,
    RoundPhase,
    TaskStatus,
    make_score_commitment,
    new_salt,
    revealed_scores_hash,
)
from testkit.contracts import (
    SCORE,
    SCORE_REVEAL_WINDOW,
    SCORE_WINDOW,
    SLASH_BPS,
    STAKE,
    VALIDATOR_STAKE,
    digest,
    error_args,
    event_names,
    events,
    reverts,
)


def block_time(chain, receipt) -> int:
    return chain.w3.eth.get_block(receipt["blockNumber"])["timestamp"]


def join_fn(chain, task_id: int, data_hash: bytes = b"\x01" * 32, stake: int = VALIDATOR_STAKE):
    return chain.market.functions.joinAsValidator(task_id, data_hash, stake)


# ------------------------------------------------------------------------------- joinAsValidator


def test_join_as_validator_stakes_and_emits_validator_joined(driver, market_chain, make_task, validators):
    task_id = make_task()
    validator = validators[0]
    before = market_chain.balance(validator.address)

    (receipt,) = driver.join_validators(
        task_id, [validator], stake=VALIDATOR_STAKE + 7, data_hash=digest("split")
    )

    assert events(market_chain, receipt, "ValidatorJoined") == [
        {
            "taskId": task_id,
            "validator": validator.address,
            "stake": VALIDATOR_STAKE + 7,
            "dataHash": digest("split"),
        }
    ]
    assert driver.get_validator(task_id, validator.address) == {
        "stake": VALIDATOR_STAKE + 7, "claimable": 0, "lastScoreCommitRound": 0, "lastScoreRevealRound": 0,
        "joined": True, "dataHash": digest("split"),
    }  # fmt: skip
    assert driver.get_state(task_id)["validatorCount"] == 1
    assert market_chain.balance(validator.address) == before - VALIDATOR_STAKE - 7
    stored = market_chain.market.functions.getScoreCommitment(task_id, validator.address).call()
    assert stored == [0, bytes(32), False]


def test_join_as_validator_below_minimum_stake_reverts_stake_too_low(
    driver, market_chain, make_task, validators
):
    task_id = make_task()
    driver.approve(validators[0], VALIDATOR_STAKE)
    error = reverts(market_chain.tx, validators[0], join_fn(market_chain, task_id, stake=VALIDATOR_STAKE - 1))
    assert error.name == "TaskMarketStakeTooLow"
    assert error_args(error) == {"taskId": task_id, "stake": VALIDATOR_STAKE - 1, "minimum": VALIDATOR_STAKE}


def test_join_as_validator_without_data_hash_reverts_invalid_data_hash(
    driver, market_chain, make_task, validators
):
    task_id = make_task()
    driver.approve(validators[0], VALIDATOR_STAKE)
    error = reverts(market_chain.tx, validators[0], join_fn(market_chain, task_id, data_hash=bytes(32)))
    assert error.name == "TaskMarketInvalidDataHash"
    assert error_args(error) == {"taskId": task_id}


def test_join_as_validator_with_a_stake_beyond_uint96_reverts_safe_cast(
    driver, market_chain, make_task, validators
):
    task_id = make_task()
    error = reverts(market_chain.tx, validators[0], join_fn(market_chain, task_id, stake=2**96))
    assert error.name == "SafeCastOverflowedUintDowncast"


def test_join_as_validator_twice_reverts_already_validator(driver, market_chain, make_task, validators):
    task_id = make_task()
    driver.join_validators(task_id, validators[:1])
    driver.approve(validators[0], VALIDATOR_STAKE)
    error = reverts(market_chain.tx, validators[0], join_fn(market_chain, task_id))
    assert error.name == "TaskMarketAlreadyValidator"
    assert error_args(error) == {"taskId": task_id, "validator": validators[0].address}


def test_join_as_validator_of_full_task_reverts_validators_full(driver, market_chain, make_task, validators):
    task_id = make_task(max_validators=2)
    driver.join_validators(task_id, validators[:2])
    driver.approve(validators[2], VALIDATOR_STAKE)
    error = reverts(market_chain.tx, validators[2], join_fn(market_chain, task_id))
    assert error.name == "TaskMarketValidatorsFull"
    assert error_args(error) == {"taskId": task_id, "maxValidators": 2}
    market_chain.tx(validators[0], market_chain.market.functions.leaveValidator(task_id))
    driver.join_validators(task_id, validators[2:3])  # a seat came free


def test_join_as_validator_of_closed_or_unknown_task_reverts(
    driver, market_chain, make_task, owner, validators
):
    task_id = make_task()
    market_chain.tx(owner, market_chain.market.functions.cancelTask(task_id))
    driver.approve(validators[0], VALIDATOR_STAKE)
    error = reverts(market_chain.tx, validators[0], join_fn(market_chain, task_id))
    assert error.name == "TaskMarketTaskNotOpen"
    assert reverts(market_chain.tx, validators[0], join_fn(market_chain, 99)).name == "TaskMarketUnknownTask"


def test_a_trainer_may_also_validate_with_two_stakes(driver, market_chain, make_task, trainers):
    task_id = make_task()
    dual = trainers[0]
    driver.join(task_id, [dual])
    driver.join_validators(task_id, [dual])
    state = driver.get_state(task_id)
    assert (state["trainerCount"], state["validatorCount"]) == (1, 1)
    assert driver.get_trainer(task_id, dual.address)["stake"] == STAKE
    assert driver.get_validator(task_id, dual.address)["stake"] == VALIDATOR_STAKE
    # leaving one role keeps the other
    market_chain.tx(dual, market_chain.market.functions.leave(task_id))
    assert driver.get_validator(task_id, dual.address)["joined"] is True


def test_rejoining_validator_stakes_again_on_a_new_data_hash(driver, market_chain, make_task, validators):
    task_id = make_task()
    validator = validators[0]
    driver.join_validators(task_id, [validator], data_hash=digest("old split"))
    market_chain.tx(validator, market_chain.market.functions.leaveValidator(task_id))
    assert driver.get_validator(task_id, validator.address)["dataHash"] == digest("old split")
    driver.join_validators(task_id, [validator], stake=VALIDATOR_STAKE * 2, data_hash=digest("new split"))
    stored = driver.get_validator(task_id, validator.address)
    assert (stored["stake"], stored["dataHash"], stored["joined"]) == (
        VALIDATOR_STAKE * 2,
        digest("new split"),
        True,
    )


# ------------------------------------------------------------------------------- leaveValidator


def test_leave_validator_returns_stake_and_emits_validator_left(
    driver, market_chain, joined_task, validators
):
    validator = validators[0]
    before = market_chain.balance(validator.address)

    receipt = market_chain.tx(validator, market_chain.market.functions.leaveValidator(joined_task))

    assert events(market_chain, receipt, "ValidatorLeft") == [
        {"taskId": joined_task, "validator": validator.address, "stake": VALIDATOR_STAKE}
    ]
    assert market_chain.balance(validator.address) == before + VALIDATOR_STAKE
    stored = driver.get_validator(joined_task, validator.address)
    assert (stored["stake"], stored["joined"]) == (0, False)
    assert driver.get_state(joined_task)["validatorCount"] == 1


def test_leave_validator_without_joining_reverts_not_validator(market_chain, joined_task, trainers):
    error = reverts(market_chain.tx, trainers[0], market_chain.market.functions.leaveValidator(joined_task))
    assert error.name == "TaskMarketNotValidator"
    assert error_args(error) == {"taskId": joined_task, "validator": trainers[0].address}


def test_leave_validator_with_open_score_commitment_reverts_open_score_commitment(
    driver, market_chain, joined_task, trainers, validators
):
    run = driver.run_round(
        joined_task, committers=trainers[:3], scorers=validators[:1], stop=RoundPhase.SCORE_COMMIT
    )
    leave = market_chain.market.functions.leaveValidator(joined_task)
    error = reverts(market_chain.tx, validators[0], leave)
    assert error.name == "TaskMarketOpenScoreCommitment"
    assert error_args(error) == {"taskId": joined_task, "validator": validators[0].address, "round": 1}
    # the other validator, which has not committed, may leave; that closes the score-commit phase
    receipt = market_chain.tx(validators[1], leave)
    now = block_time(market_chain, receipt)
    round_ = driver.get_round(joined_task, run.round_no)
    assert (round_["scoreCommitDeadline"], round_["scoreRevealDeadline"]) == (now, now + SCORE_REVEAL_WINDOW)
    assert driver.phase(joined_task) == RoundPhase.SCORE_REVEAL
    # once the round is closed, the committed validator may leave too
    driver.reveal_scores(run, validators[0])
    driver.settle(joined_task)
    market_chain.tx(validators[0], leave)


# ------------------------------------------------------------------------------- commitScores


def test_commit_scores_stores_commitment_and_emits_scores_committed(
    driver, market_chain, joined_task, trainers, validators
):
    run = driver.run_round(joined_task, committers=trainers[:3], scorers=[], stop=RoundPhase.SCORE_COMMIT)
    assert driver.phase(joined_task) == RoundPhase.SCORE_COMMIT
    scores, salt = [1, 2, 3], new_salt()
    commitment = make_score_commitment(joined_task, 1, validators[0].address, scores, salt)

    receipt = market_chain.tx(
        validators[0], market_chain.market.functions.commitScores(joined_task, commitment)
    )

    assert events(market_chain, receipt, "ScoresCommitted") == [
        {"taskId": joined_task, "round": 1, "validator": validators[0].address, "commitment": commitment}
    ]
    stored = market_chain.market.functions.getScoreCommitment(joined_task, validators[0].address).call()
    assert stored == [1, commitment, False]
    assert driver.get_validator(joined_task, validators[0].address)["lastScoreCommitRound"] == 1
    assert driver.get_round(joined_task, run.round_no)["scoreCommitCount"] == 1
    assert driver.phase(joined_task) == RoundPhase.SCORE_COMMIT


def test_commit_scores_twice_reverts_scores_already_committed(
    driver, market_chain, joined_task, trainers, validators
):
    run = driver.run_round(
        joined_task, committers=trainers[:3], scorers=validators[:1], stop=RoundPhase.SCORE_COMMIT
    )
    error = reverts(driver.commit_scores, run, validators[0], [1, 2, 3])
    assert error.name == "TaskMarketScoresAlreadyCommitted"
    assert error_args(error) == {"taskId": joined_task, "validator": validators[0].address, "round": 1}


def test_commit_scores_by_non_validator_reverts_not_validator(
    driver, market_chain, joined_task, trainers, validators
):
    run = driver.run_round(joined_task, committers=trainers[:3], scorers=[], stop=RoundPhase.SCORE_COMMIT)
    for account in (trainers[0], validators[2]):  # a trainer is no validator; not joined
        error = reverts(driver.commit_scores, run, account, [1, 2, 3])
        assert error.name == "TaskMarketNotValidator"
        assert error_args(error) == {"taskId": joined_task, "validator": account.address}


@pytest.mark.parametrize(
    "phase", [RoundPhase.NONE, RoundPhase.COMMIT, RoundPhase.REVEAL, RoundPhase.SCORE_REVEAL]
)
def test_commit_scores_outside_score_commit_phase_reverts_wrong_phase(
    driver, market_chain, joined_task, trainers, validators, phase
):
    if phase == RoundPhase.COMMIT:
        driver.start_round(joined_task)
    elif phase == RoundPhase.REVEAL:
        driver.run_round(joined_task, committers=trainers[:3], revealers=trainers[:2], stop=phase)
    elif phase == RoundPhase.SCORE_REVEAL:
        driver.run_round(
            joined_task, committers=trainers[:3], scorers=validators[:1], score_revealers=[], stop=phase
        )
    assert driver.phase(joined_task) == phase
    fn = market_chain.market.functions.commitScores(joined_task, b"\x01" * 32)
    error = reverts(market_chain.tx, validators[1], fn)
    assert error.name == "TaskMarketWrongPhase"
    assert error_args(error) == {"taskId": joined_task, "phase": phase}


def test_score_commit_phase_closes_early_when_every_joined_validator_committed(
    driver, market_chain, joined_task, trainers, validators
):
    run = driver.run_round(
        joined_task, committers=trainers[:3], scorers=validators[:1], stop=RoundPhase.SCORE_COMMIT
    )
    assert driver.phase(joined_task) == RoundPhase.SCORE_COMMIT
    receipt = driver.commit_scores(run, validators[1], [SCORE] * 3)
    now = block_time(market_chain, receipt)
    round_ = driver.get_round(joined_task, 1)
    assert (round_["scoreCommitDeadline"], round_["scoreRevealDeadline"]) == (now, now + SCORE_REVEAL_WINDOW)
    assert driver.phase(joined_task) == RoundPhase.SCORE_REVEAL
    driver.reveal_scores(run, validators[1])  # reveals are open at once


def test_validator_joining_mid_score_commit_keeps_the_phase_open_until_it_commits(
    driver, market_chain, joined_task, trainers, validators
):
    run = driver.run_round(
        joined_task, committers=trainers[:3], scorers=validators[:1], stop=RoundPhase.SCORE_COMMIT
    )
    driver.join_validators(joined_task, validators[2:3])
    driver.commit_scores(run, validators[1], [SCORE] * 3)
    assert driver.phase(joined_task) == RoundPhase.SCORE_COMMIT
    driver.commit_scores(run, validators[2], [SCORE] * 3)
    assert driver.phase(joined_task) == RoundPhase.SCORE_REVEAL


def test_score_commit_deadline_opens_score_reveal_phase(
    driver, market_chain, joined_task, trainers, validators
):
    run = driver.run_round(
        joined_task, committers=trainers[:3], scorers=validators[:1], stop=RoundPhase.SCORE_COMMIT
    )
    deadline = driver.get_round(joined_task, 1)["scoreCommitDeadline"]
    assert deadline == driver.get_round(joined_task, 1)["revealDeadline"] + SCORE_WINDOW
    market_chain.advance(deadline - market_chain.now() - 5)
    assert driver.phase(joined_task) == RoundPhase.SCORE_COMMIT
    market_chain.advance(10)
    assert driver.phase(joined_task) == RoundPhase.SCORE_REVEAL
    assert run.round_no == 1


def test_score_commits_in_a_round_nobody_committed_to_close_the_skipped_reveal_phase_too(
    driver, market_chain, joined_task, validators
):
    """No trainer committed: the reveal phase is skipped at the commit deadline, its deadline still
    ahead. When the validators close the score-commit phase early, the reveal deadline is pulled
    in to now as well, so the deadlines never run backwards."""
    run = driver.start_round(joined_task)
    driver.advance_past("commitDeadline", run)
    assert driver.phase(joined_task) == RoundPhase.SCORE_COMMIT
    assert driver.get_round(joined_task, 1)["revealDeadline"] > market_chain.now()
    driver.commit_scores(run, validators[0], [])
    receipt = driver.commit_scores(run, validators[1], [])
    now = block_time(market_chain, receipt)
    round_ = driver.get_round(joined_task, 1)
    assert (round_["revealDeadline"], round_["scoreCommitDeadline"]) == (now, now)
    assert round_["scoreRevealDeadline"] == now + SCORE_REVEAL_WINDOW
    assert driver.phase(joined_task) == RoundPhase.SCORE_REVEAL


# ------------------------------------------------------------------------------- revealScores


def test_reveal_scores_emits_the_vector_and_keeps_its_hash(
    driver, market_chain, joined_task, trainers, validators
):
    run = driver.run_round(joined_task, committers=trainers[:3], stop=RoundPhase.SCORE_COMMIT,
                           scores=lambda v, revealed: [UNAVAILABLE, 7, -3])  # fmt: skip
    receipt = driver.reveal_scores(run, validators[0])

    assert events(market_chain, receipt, "ScoresRevealed") == [
        {
            "taskId": joined_task,
            "round": 1,
            "validator": validators[0].address,
            "scores": [UNAVAILABLE, 7, -3],
        }
    ]
    stored = market_chain.market.functions.getScoreCommitment(joined_task, validators[0].address).call()
    assert stored == [1, revealed_scores_hash([UNAVAILABLE, 7, -3]), True]
    assert driver.get_validator(joined_task, validators[0].address)["lastScoreRevealRound"] == 1
    assert driver.get_round(joined_task, 1)["scoreRevealCount"] == 1
    assert driver.phase(joined_task) == RoundPhase.SCORE_REVEAL


def test_reveal_scores_during_score_commit_phase_reverts_wrong_phase(
    driver, market_chain, joined_task, trainers, validators
):
    run = driver.run_round(
        joined_task, committers=trainers[:3], scorers=validators[:1], stop=RoundPhase.SCORE_COMMIT
    )
    error = reverts(driver.reveal_scores, run, validators[0])
    assert error.name == "TaskMarketWrongPhase"
    assert error_args(error) == {"taskId": joined_task, "phase": RoundPhase.SCORE_COMMIT}


def test_reveal_scores_without_committing_reverts_scores_not_committed(
    driver, market_chain, joined_task, trainers, validators
):
    driver.run_round(
        joined_task, committers=trainers[:3], scorers=validators[:1], stop=RoundPhase.SCORE_COMMIT
    )
    driver.advance_past("scoreCommitDeadline", driver.runs[joined_task])
    fn = market_chain.market.functions.revealScores(joined_task, [1, 2, 3], new_salt())
    error = reverts(market_chain.tx, validators[1], fn)
    assert error.name == "TaskMarketScoresNotCommitted"
    assert error_args(error) == {"taskId": joined_task, "validator": validators[1].address, "round": 1}


def test_reveal_scores_twice_reverts_scores_already_revealed(
    driver, market_chain, joined_task, trainers, validators
):
    run = driver.run_round(joined_task, committers=trainers[:3], score_revealers=validators[:1],
                           stop=RoundPhase.SCORE_REVEAL)  # fmt: skip
    error = reverts(driver.reveal_scores, run, validators[0])
    assert error.name == "TaskMarketScoresAlreadyRevealed"
    assert error_args(error) == {"taskId": joined_task, "validator": validators[0].address, "round": 1}


def test_reveal_scores_with_one_entry_too_many_or_few_reverts_score_count_mismatch(
    driver, market_chain, joined_task, trainers, validators
):
    run = driver.run_round(joined_task, committers=trainers[:3], revealers=trainers[:2],
                           scores={v.address: [1, 2, 3] for v in validators[:2]}, stop=RoundPhase.SCORE_COMMIT)  # fmt: skip
    error = reverts(driver.reveal_scores, run, validators[0])
    assert error.name == "TaskMarketScoreCountMismatch"
    assert error_args(error) == {"taskId": joined_task, "given": 3, "expected": 2}
    error = reverts(driver.reveal_scores, run, validators[1], scores=[1])
    assert error_args(error) == {"taskId": joined_task, "given": 1, "expected": 2}


@pytest.mark.parametrize(
    ("entry", "accepted"),
    [
        (MAX_SCORE, True), (-MAX_SCORE, True), (0, True), (UNAVAILABLE, True), (INVALID, True), (HARMFUL, True),
        (MAX_SCORE + 1, False), (-MAX_SCORE - 1, False), (HARMFUL + 1, False), (2**255 - 1, False),
    ],
)  # fmt: skip
def test_reveal_scores_checks_every_entry_is_a_flag_or_within_max_score(
    driver, market_chain, joined_task, trainers, validators, entry, accepted
):
    run = driver.run_round(joined_task, committers=trainers[:3], stop=RoundPhase.SCORE_COMMIT,
                           scores=lambda v, revealed: [1, 2, entry])  # fmt: skip
    if accepted:
        driver.reveal_scores(run, validators[0])
        return
    error = reverts(driver.reveal_scores, run, validators[0])
    assert error.name == "TaskMarketScoreOutOfRange"
    assert error_args(error) == {"taskId": joined_task, "index": 2}


def test_reveal_scores_with_another_vector_or_salt_reverts_score_commitment_mismatch(
    driver, market_chain, joined_task, trainers, validators
):
    run = driver.run_round(joined_task, committers=trainers[:3], stop=RoundPhase.SCORE_COMMIT)
    error = reverts(driver.reveal_scores, run, validators[0], scores=[SCORE, SCORE, SCORE + 1])
    assert error.name == "TaskMarketScoreCommitmentMismatch"
    assert error_args(error) == {"taskId": joined_task, "validator": validators[0].address}
    error = reverts(driver.reveal_scores, run, validators[0], salt=new_salt())
    assert error.name == "TaskMarketScoreCommitmentMismatch"
    driver.reveal_scores(run, validators[0])  # the committed vector and salt still reveal


def test_copied_score_commitment_reverts_score_commitment_mismatch(
    driver, market_chain, joined_task, trainers, validators
):
    """A validator that copies another's commitment cannot reveal the other's vector: the
    commitment binds the validator."""
    run = driver.run_round(
        joined_task, committers=trainers[:3], scorers=validators[:1], stop=RoundPhase.SCORE_COMMIT
    )
    copied = market_chain.market.functions.getScoreCommitment(joined_task, validators[0].address).call()[1]
    market_chain.tx(validators[1], market_chain.market.functions.commitScores(joined_task, copied))
    vote = run.votes[validators[0].address]
    fn = market_chain.market.functions.revealScores(joined_task, vote.scores, vote.salt)
    assert reverts(market_chain.tx, validators[1], fn).name == "TaskMarketScoreCommitmentMismatch"


def test_score_reveal_phase_closes_early_when_every_committer_revealed(
    driver, market_chain, joined_task, trainers, validators
):
    run = driver.run_round(joined_task, committers=trainers[:3], score_revealers=validators[:1],
                           stop=RoundPhase.SCORE_REVEAL)  # fmt: skip
    assert driver.phase(joined_task) == RoundPhase.SCORE_REVEAL
    receipt = driver.reveal_scores(run, validators[1])
    assert driver.get_round(joined_task, 1)["scoreRevealDeadline"] == block_time(market_chain, receipt)
    assert driver.phase(joined_task) == RoundPhase.SETTLING


def test_score_reveal_deadline_opens_settling_phase(driver, market_chain, joined_task, trainers, validators):
    driver.run_round(
        joined_task, committers=trainers[:3], score_revealers=validators[:1], stop=RoundPhase.SCORE_REVEAL
    )
    deadline = driver.get_round(joined_task, 1)["scoreRevealDeadline"]
    market_chain.advance(deadline - market_chain.now() - 5)
    assert driver.phase(joined_task) == RoundPhase.SCORE_REVEAL
    market_chain.advance(10)
    assert driver.phase(joined_task) == RoundPhase.SETTLING


def test_round_with_no_score_commit_goes_to_settling_at_the_score_commit_deadline(
    driver, market_chain, joined_task, trainers
):
    run = driver.run_round(joined_task, committers=trainers[:3], scorers=[], stop=RoundPhase.SCORE_COMMIT)
    driver.advance_past("scoreCommitDeadline", run)
    assert driver.phase(joined_task) == RoundPhase.SETTLING


# ------------------------------------------------------------------------------- quorum


def test_finalize_below_validator_quorum_reverts_validator_quorum_not_reached(
    driver, market_chain, make_task, trainers, validators
):
    task_id = make_task(min_validators=2)
    driver.join(task_id, trainers[:2])
    driver.join_validators(task_id, validators[:2])
    driver.run_round(task_id, committers=trainers[:2], score_revealers=validators[:1])
    error = reverts(driver.finalize, task_id)
    assert error.name == "TaskMarketValidatorQuorumNotReached"
    assert error_args(error) == {"taskId": task_id, "revealed": 1, "required": 2}


def test_abort_below_validator_quorum_slashes_the_silent_validator_and_keeps_the_budget(
    driver, market_chain, make_task, trainers, validators, outsider
):
    task_id = make_task(min_validators=2)
    driver.join(task_id, trainers[:2])
    driver.join_validators(task_id, validators[:2])
    driver.run_round(task_id, committers=trainers[:2], score_revealers=validators[:1])
    burn_before = market_chain.balance(driver.market.functions.BURN_ADDRESS().call())
    slashed = VALIDATOR_STAKE * SLASH_BPS // BPS

    receipt = driver.abort(task_id, caller=outsider)

    assert event_names(market_chain, receipt) == ["ValidatorSlashed", "RoundAborted"]
    assert events(market_chain, receipt, "ValidatorSlashed") == [
        {"taskId": task_id, "round": 1, "validator": validators[1].address, "amount": slashed}
    ]
    assert events(market_chain, receipt, "RoundAborted") == [
        {"taskId": task_id, "round": 1, "slashedCount": 1, "burned": slashed}
    ]
    assert market_chain.balance(driver.market.functions.BURN_ADDRESS().call()) == burn_before + slashed
    assert driver.get_validator(task_id, validators[1].address) == {
        "stake": VALIDATOR_STAKE - slashed, "claimable": 0, "lastScoreCommitRound": 1, "lastScoreRevealRound": 0,
        "joined": False, "dataHash": digest(f"split-{validators[1].address}"),
    }  # fmt: skip
    state = driver.get_state(task_id)
    assert (state["validatorCount"], state["status"]) == (1, TaskStatus.OPEN)
    # below the validator quorum now: no next round until another validator joins
    error = reverts(
        market_chain.tx,
        driver.coordinator,
        market_chain.market.functions.startRound(task_id, state["modelHash"]),
    )
    assert error.name == "TaskMarketNotEnoughValidators"
