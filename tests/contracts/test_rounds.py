"""Starting rounds, trainers' commit and reveal, and the phase clock (deadlines and early closes).
The validators' phases are in test_validators.py."""

from __future__ import annotations

from fedmarket.protocol import RoundPhase, make_commitment, new_salt
from testkit.contracts import (
    COMMIT_WINDOW,
    MODEL_0,
    REVEAL_WINDOW,
    SCORE_REVEAL_WINDOW,
    SCORE_WINDOW,
    digest,
    error_args,
    events,
    reverts,
)


def block_time(chain, receipt) -> int:
    return chain.w3.eth.get_block(receipt["blockNumber"])["timestamp"]


def deadlines_from(commit_deadline: int) -> dict:
    """The four deadlines, back to back from a commit deadline."""
    reveal = commit_deadline + REVEAL_WINDOW
    score_commit = reveal + SCORE_WINDOW
    return {
        "commitDeadline": commit_deadline,
        "revealDeadline": reveal,
        "scoreCommitDeadline": score_commit,
        "scoreRevealDeadline": score_commit + SCORE_REVEAL_WINDOW,
    }


def deadlines(driver, task_id: int, round_no: int = 1) -> dict:
    round_ = driver.get_round(task_id, round_no)
    return {key: round_[key] for key in deadlines_from(0)}


# ------------------------------------------------------------------------------- startRound


def test_start_round_opens_commit_phase_and_emits_round_started(driver, market_chain, joined_task):
    run = driver.start_round(joined_task, MODEL_0)

    started_at = block_time(market_chain, run.start_receipt)
    (started,) = events(market_chain, run.start_receipt, "RoundStarted")
    assert started == {
        "taskId": joined_task,
        "round": 1,
        "modelHash": MODEL_0,
        "commitDeadline": started_at + COMMIT_WINDOW,
        "revealDeadline": started_at + COMMIT_WINDOW + REVEAL_WINDOW,
    }
    assert driver.get_round(joined_task, 1) == {
        **deadlines_from(started_at + COMMIT_WINDOW),
        "commitCount": 0, "revealCount": 0, "scoreCommitCount": 0, "scoreRevealCount": 0,
        "closed": False, "aborted": False, "modelPublished": False, "closedAt": 0, "payout": 0,
        "modelHash": MODEL_0, "newModelHash": bytes(32), "reportHash": bytes(32),
    }  # fmt: skip
    state = driver.get_state(joined_task)
    assert (state["currentRound"], state["modelHash"]) == (1, MODEL_0)
    assert driver.phase(joined_task) == RoundPhase.COMMIT


def test_start_round_by_outsider_reverts_not_coordinator(market_chain, joined_task, outsider):
    error = reverts(market_chain.tx, outsider, market_chain.market.functions.startRound(joined_task, MODEL_0))
    assert error.name == "TaskMarketNotCoordinator"
    assert error_args(error) == {"taskId": joined_task, "account": outsider.address}


def test_start_round_below_quorum_of_trainers_reverts_not_enough_trainers(
    driver, market_chain, make_task, trainers, validators
):
    task_id = make_task(min_trainers=3)
    driver.join(task_id, trainers[:2])
    driver.join_validators(task_id, validators[:1])
    start = market_chain.market.functions.startRound(task_id, MODEL_0)
    error = reverts(market_chain.tx, driver.coordinator, start)
    assert error.name == "TaskMarketNotEnoughTrainers"
    assert error_args(error) == {"taskId": task_id, "joined": 2, "required": 3}


def test_start_round_below_quorum_of_validators_reverts_not_enough_validators(
    driver, market_chain, make_task, trainers, validators
):
    task_id = make_task(min_validators=2)
    driver.join(task_id, trainers[:2])
    driver.join_validators(task_id, validators[:1])
    start = market_chain.market.functions.startRound(task_id, MODEL_0)
    error = reverts(market_chain.tx, driver.coordinator, start)
    assert error.name == "TaskMarketNotEnoughValidators"
    assert error_args(error) == {"taskId": task_id, "joined": 1, "required": 2}
    driver.join_validators(task_id, validators[1:2])
    driver.start_round(task_id)


def test_start_round_while_a_round_is_open_reverts_wrong_phase(driver, market_chain, joined_task):
    driver.start_round(joined_task)
    start = market_chain.market.functions.startRound(joined_task, MODEL_0)
    error = reverts(market_chain.tx, driver.coordinator, start)
    assert error.name == "TaskMarketWrongPhase"
    assert error_args(error) == {"taskId": joined_task, "phase": RoundPhase.COMMIT}


def test_start_round_after_the_last_round_reverts_task_not_open(
    driver, market_chain, make_task, trainers, validators
):
    """The last round completes the task, so a task with no rounds left is never open."""
    task_id = make_task(rounds=1)
    driver.join(task_id, trainers[:2])
    driver.join_validators(task_id, validators[:1])
    driver.run_round(task_id, committers=trainers[:2])
    driver.settle(task_id)
    start = market_chain.market.functions.startRound(task_id, MODEL_0)
    error = reverts(market_chain.tx, driver.coordinator, start)
    assert error.name == "TaskMarketTaskNotOpen"


def test_start_round_on_unknown_task_reverts_unknown_task(market_chain, coordinator):
    error = reverts(market_chain.tx, coordinator, market_chain.market.functions.startRound(5, MODEL_0))
    assert error.name == "TaskMarketUnknownTask"


def test_next_round_starts_on_the_published_model(driver, market_chain, joined_task, trainers):
    driver.run_round(joined_task, committers=trainers[:3])
    driver.finalize(joined_task)
    driver.publish(joined_task, model=digest("model-1"))
    assert driver.get_state(joined_task)["modelHash"] == digest("model-1")
    run = driver.start_round(joined_task, digest("model-1"))
    assert run.round_no == 2
    assert driver.get_round(joined_task, 2)["modelHash"] == digest("model-1")
    assert driver.phase(joined_task) == RoundPhase.COMMIT


def test_next_round_before_the_model_is_published_reverts_model_not_published(
    driver, market_chain, joined_task, trainers
):
    driver.run_round(joined_task, committers=trainers[:3])
    driver.finalize(joined_task)
    start = market_chain.market.functions.startRound(joined_task, MODEL_0)
    error = reverts(market_chain.tx, driver.coordinator, start)
    assert error.name == "TaskMarketModelNotPublished"
    assert error_args(error) == {"taskId": joined_task, "round": 1}


def test_next_round_on_another_model_reverts_model_mismatch(driver, market_chain, joined_task, trainers):
    driver.run_round(joined_task, committers=trainers[:3])
    driver.settle(joined_task)
    published = driver.get_state(joined_task)["modelHash"]
    start = market_chain.market.functions.startRound(joined_task, MODEL_0)
    error = reverts(market_chain.tx, driver.coordinator, start)
    assert error.name == "TaskMarketModelMismatch"
    assert error_args(error) == {
        "taskId": joined_task,
        "expected": "0x" + published.hex(),
        "given": "0x" + MODEL_0.hex(),
    }


def test_next_round_after_an_abort_trains_on_the_same_model(driver, market_chain, joined_task, trainers):
    driver.run_round(joined_task, committers=trainers[:1], model_hash=digest("first"))
    driver.abort(joined_task)
    assert driver.get_state(joined_task)["modelHash"] == digest("first")
    driver.join(joined_task, trainers[1:3])  # they did not commit: their seats went with the round
    start = market_chain.market.functions.startRound(joined_task, digest("other"))
    assert reverts(market_chain.tx, driver.coordinator, start).name == "TaskMarketModelMismatch"
    assert driver.start_round(joined_task, digest("first")).round_no == 2


# ------------------------------------------------------------------------------- commit


def test_commit_stores_commitment_and_emits_committed(driver, market_chain, joined_task, trainers):
    run = driver.start_round(joined_task)
    trainer = trainers[0]
    update, salt = digest("update"), new_salt()
    commitment = make_commitment(joined_task, 1, trainer.address, update, salt)

    receipt = market_chain.tx(trainer, market_chain.market.functions.commit(joined_task, commitment))

    assert events(market_chain, receipt, "Committed") == [
        {"taskId": joined_task, "round": 1, "trainer": trainer.address, "commitment": commitment}
    ]
    stored = market_chain.market.functions.getCommitment(joined_task, trainer.address).call()
    assert stored == [1, commitment, False]
    assert driver.get_trainer(joined_task, trainer.address)["lastCommitRound"] == 1
    assert driver.get_round(joined_task, run.round_no)["commitCount"] == 1
    assert driver.phase(joined_task) == RoundPhase.COMMIT


def test_commit_twice_reverts_already_committed(driver, market_chain, joined_task, trainers):
    run = driver.start_round(joined_task)
    driver.commit(run, trainers[0])
    error = reverts(driver.commit, run, trainers[0])
    assert error.name == "TaskMarketAlreadyCommitted"
    assert error_args(error) == {"taskId": joined_task, "trainer": trainers[0].address, "round": 1}


def test_commit_by_non_member_reverts_not_joined(driver, market_chain, joined_task, trainers, validators):
    run = driver.start_round(joined_task)
    for account in (trainers[5], validators[0]):  # a validator is no trainer
        error = reverts(driver.commit, run, account)
        assert error.name == "TaskMarketNotJoined"
        assert error_args(error) == {"taskId": joined_task, "trainer": account.address}


def test_commit_before_any_round_reverts_wrong_phase(market_chain, joined_task, trainers):
    fn = market_chain.market.functions.commit(joined_task, b"\x01" * 32)
    error = reverts(market_chain.tx, trainers[0], fn)
    assert error.name == "TaskMarketWrongPhase"
    assert error_args(error) == {"taskId": joined_task, "phase": RoundPhase.NONE}


def test_commit_after_commit_deadline_reverts_wrong_phase(driver, market_chain, joined_task, trainers):
    run = driver.start_round(joined_task)
    driver.commit(run, trainers[0])
    driver.advance_past("commitDeadline", run)
    error = reverts(driver.commit, run, trainers[1])
    assert error.name == "TaskMarketWrongPhase"
    assert error_args(error) == {"taskId": joined_task, "phase": RoundPhase.REVEAL}


def test_commit_on_unknown_task_reverts_unknown_task(market_chain, trainers):
    error = reverts(market_chain.tx, trainers[0], market_chain.market.functions.commit(77, b"\x01" * 32))
    assert error.name == "TaskMarketUnknownTask"


def test_commit_deadline_opens_reveal_phase(driver, market_chain, joined_task, trainers):
    run = driver.start_round(joined_task)
    driver.commit(run, trainers[0])
    deadline = driver.get_round(joined_task, 1)["commitDeadline"]
    market_chain.advance(deadline - market_chain.now() - 5)
    assert driver.phase(joined_task) == RoundPhase.COMMIT
    market_chain.advance(10)
    assert driver.phase(joined_task) == RoundPhase.REVEAL
    # the deadlines did not move: they are still where startRound put them
    assert deadlines(driver, joined_task) == deadlines_from(deadline)
    assert run.round_no == 1


def test_commit_phase_closes_early_when_every_joined_trainer_committed(
    driver, market_chain, joined_task, trainers
):
    run = driver.start_round(joined_task)
    driver.commit(run, trainers[0])
    driver.commit(run, trainers[1])
    assert driver.phase(joined_task) == RoundPhase.COMMIT
    receipt = driver.commit(run, trainers[2])

    # the commit deadline is now, and every later deadline moves up with it
    assert deadlines(driver, joined_task) == deadlines_from(block_time(market_chain, receipt))
    assert driver.phase(joined_task) == RoundPhase.REVEAL
    driver.reveal(run, trainers[2])  # reveals are open at once


def test_last_non_committer_leaving_opens_reveal_phase(driver, market_chain, joined_task, trainers):
    run = driver.start_round(joined_task)
    driver.commit(run, trainers[0])
    driver.commit(run, trainers[1])
    receipt = market_chain.tx(trainers[2], market_chain.market.functions.leave(joined_task))
    assert deadlines(driver, joined_task) == deadlines_from(block_time(market_chain, receipt))
    assert driver.phase(joined_task) == RoundPhase.REVEAL
    assert run.round_no == 1


def test_trainer_joining_mid_round_keeps_commit_phase_open_until_it_commits(
    driver, market_chain, joined_task, trainers
):
    run = driver.start_round(joined_task)
    for trainer in trainers[:2]:
        driver.commit(run, trainer)
    driver.join(joined_task, trainers[3:4])
    driver.commit(run, trainers[2])
    assert driver.phase(joined_task) == RoundPhase.COMMIT
    driver.commit(run, trainers[3])
    assert driver.phase(joined_task) == RoundPhase.REVEAL


def test_trainer_joining_after_the_commit_phase_closed_early_does_not_reopen_it(
    driver, market_chain, joined_task, trainers
):
    run = driver.start_round(joined_task)
    for trainer in trainers[:3]:
        driver.commit(run, trainer)
    driver.join(joined_task, trainers[3:4])
    assert driver.phase(joined_task) == RoundPhase.REVEAL
    assert reverts(driver.commit, run, trainers[3]).name == "TaskMarketWrongPhase"


# ------------------------------------------------------------------------------- reveal


def test_reveal_matching_commitment_emits_revealed(driver, market_chain, joined_task, trainers):
    run = driver.run_round(joined_task, committers=trainers[:3], revealers=[], stop=RoundPhase.REVEAL)
    receipt = driver.reveal(run, trainers[0])

    update = run.updates[trainers[0].address]
    assert events(market_chain, receipt, "Revealed") == [
        {"taskId": joined_task, "round": 1, "trainer": trainers[0].address, "updateHash": update.update_hash}
    ]
    stored = market_chain.market.functions.getCommitment(joined_task, trainers[0].address).call()
    round_no, commitment, revealed = stored
    assert (round_no, revealed) == (1, True)
    assert commitment == make_commitment(joined_task, 1, trainers[0].address, update.update_hash, update.salt)
    assert driver.get_trainer(joined_task, trainers[0].address)["lastRevealRound"] == 1
    assert driver.get_round(joined_task, 1)["revealCount"] == 1
    assert driver.phase(joined_task) == RoundPhase.REVEAL


def test_reveal_during_commit_phase_reverts_wrong_phase(driver, market_chain, joined_task, trainers):
    run = driver.start_round(joined_task)
    driver.commit(run, trainers[0])
    error = reverts(driver.reveal, run, trainers[0])
    assert error.name == "TaskMarketWrongPhase"
    assert error_args(error) == {"taskId": joined_task, "phase": RoundPhase.COMMIT}


def test_reveal_after_deadline_reverts_wrong_phase(driver, market_chain, joined_task, trainers):
    run = driver.run_round(
        joined_task, committers=trainers[:3], revealers=trainers[:2], scorers=[], stop=RoundPhase.SCORE_COMMIT
    )
    assert driver.phase(joined_task) == RoundPhase.SCORE_COMMIT
    error = reverts(driver.reveal, run, trainers[2])
    assert error.name == "TaskMarketWrongPhase"
    assert error_args(error) == {"taskId": joined_task, "phase": RoundPhase.SCORE_COMMIT}


def test_reveal_with_wrong_salt_reverts_commitment_mismatch(driver, market_chain, joined_task, trainers):
    run = driver.run_round(joined_task, committers=trainers[:3], revealers=[], stop=RoundPhase.REVEAL)
    error = reverts(driver.reveal, run, trainers[0], salt=new_salt())
    assert error.name == "TaskMarketCommitmentMismatch"
    assert error_args(error) == {"taskId": joined_task, "trainer": trainers[0].address}
    driver.reveal(run, trainers[0])  # the right salt still works


def test_reveal_with_wrong_hash_reverts_commitment_mismatch(driver, market_chain, joined_task, trainers):
    run = driver.run_round(joined_task, committers=trainers[:3], revealers=[], stop=RoundPhase.REVEAL)
    error = reverts(driver.reveal, run, trainers[0], update_hash=digest("another update"))
    assert error.name == "TaskMarketCommitmentMismatch"


def test_copied_commitment_reverts_commitment_mismatch(driver, market_chain, joined_task, trainers):
    """A trainer that copies another's commitment cannot reveal it: the commitment binds the trainer."""
    run = driver.start_round(joined_task)
    driver.commit(run, trainers[0])
    copied = market_chain.market.functions.getCommitment(joined_task, trainers[0].address).call()[1]
    market_chain.tx(trainers[1], market_chain.market.functions.commit(joined_task, copied))
    driver.commit(run, trainers[2])
    original = run.updates[trainers[0].address]
    fn = market_chain.market.functions.reveal(joined_task, original.update_hash, original.salt)
    error = reverts(market_chain.tx, trainers[1], fn)
    assert error.name == "TaskMarketCommitmentMismatch"


def test_commitment_from_previous_round_reverts_commitment_mismatch(
    driver, market_chain, joined_task, trainers
):
    """A commitment binds the round: replaying last round's commitment and salt does not reveal."""
    first = driver.run_round(joined_task, committers=trainers[:3])
    driver.settle(joined_task)
    old = first.updates[trainers[0].address]
    run = driver.start_round(joined_task)
    old_commitment = make_commitment(joined_task, 1, trainers[0].address, old.update_hash, old.salt)
    market_chain.tx(trainers[0], market_chain.market.functions.commit(joined_task, old_commitment))
    driver.commit(run, trainers[1])
    driver.commit(run, trainers[2])
    fn = market_chain.market.functions.reveal(joined_task, old.update_hash, old.salt)
    assert reverts(market_chain.tx, trainers[0], fn).name == "TaskMarketCommitmentMismatch"


def test_reveal_twice_reverts_already_revealed(driver, market_chain, joined_task, trainers):
    run = driver.run_round(
        joined_task, committers=trainers[:3], revealers=trainers[:1], stop=RoundPhase.REVEAL
    )
    error = reverts(driver.reveal, run, trainers[0])
    assert error.name == "TaskMarketAlreadyRevealed"
    assert error_args(error) == {"taskId": joined_task, "trainer": trainers[0].address, "round": 1}


def test_reveal_by_non_committer_reverts_not_committed(driver, market_chain, joined_task, trainers, outsider):
    run = driver.start_round(joined_task)
    driver.commit(run, trainers[0])
    driver.commit(run, trainers[1])
    driver.advance_past("commitDeadline", run)
    fn = market_chain.market.functions.reveal(joined_task, digest("update"), new_salt())
    for account in (trainers[2], outsider):  # joined but silent; never joined
        error = reverts(market_chain.tx, account, fn)
        assert error.name == "TaskMarketNotCommitted"
        assert error_args(error) == {"taskId": joined_task, "trainer": account.address, "round": 1}


def test_reveal_phase_closes_early_when_every_committer_revealed(driver, market_chain, joined_task, trainers):
    run = driver.run_round(
        joined_task, committers=trainers[:3], revealers=trainers[:2], stop=RoundPhase.REVEAL
    )
    assert driver.phase(joined_task) == RoundPhase.REVEAL
    commit_deadline = driver.get_round(joined_task, 1)["commitDeadline"]
    receipt = driver.reveal(run, trainers[2])

    now = block_time(market_chain, receipt)
    expected = {"commitDeadline": commit_deadline, "revealDeadline": now}
    expected["scoreCommitDeadline"] = now + SCORE_WINDOW
    expected["scoreRevealDeadline"] = now + SCORE_WINDOW + SCORE_REVEAL_WINDOW
    assert deadlines(driver, joined_task) == expected
    assert driver.phase(joined_task) == RoundPhase.SCORE_COMMIT


def test_reveal_deadline_opens_score_commit_phase(driver, market_chain, joined_task, trainers):
    run = driver.run_round(
        joined_task, committers=trainers[:3], revealers=trainers[:2], stop=RoundPhase.REVEAL
    )
    deadline = driver.get_round(joined_task, 1)["revealDeadline"]
    market_chain.advance(deadline - market_chain.now() - 5)
    assert driver.phase(joined_task) == RoundPhase.REVEAL
    market_chain.advance(10)
    assert driver.phase(joined_task) == RoundPhase.SCORE_COMMIT
    assert run.round_no == 1


def test_round_with_no_commit_skips_the_reveal_phase(driver, market_chain, joined_task):
    """Nobody to reveal: at the commit deadline the validators' phase opens (with nothing to score,
    and no trainer quorum), and Settling follows at the score-commit deadline."""
    run = driver.start_round(joined_task)
    driver.advance_past("commitDeadline", run)
    assert driver.phase(joined_task) == RoundPhase.SCORE_COMMIT
    driver.advance_past("scoreCommitDeadline", run)
    assert driver.phase(joined_task) == RoundPhase.SETTLING
