"""Claims: finalizeRound credits each paid trainer and validator a claimable balance; `claim`
pays everything the caller earned in a task, in both roles, however many rounds it earned in."""

from __future__ import annotations

from fedmarket.consensus import INVALID
from testkit.contracts import SCORE, error_args, events, reverts


def settle_round(driver, task_id, trainers, **round_args):
    run = driver.run_round(task_id, committers=trainers, **round_args)
    expected = driver.expected(run)
    driver.settle(task_id)
    return expected


def test_claim_pays_the_trainers_balance_and_emits_rewards_claimed(
    driver, market_chain, joined_task, trainers
):
    expected = settle_round(driver, joined_task, trainers[:3])
    earned = expected.by_trainer()[trainers[0].address].payout
    assert earned > 0
    unclaimed = driver.get_state(joined_task)["unclaimed"]
    before = market_chain.balance(trainers[0].address)
    market_before = market_chain.balance(market_chain.market.address)

    receipt = driver.claim(joined_task, trainers[0])

    assert events(market_chain, receipt, "RewardsClaimed") == [
        {"taskId": joined_task, "account": trainers[0].address, "amount": earned}
    ]
    assert market_chain.balance(trainers[0].address) == before + earned
    assert market_chain.balance(market_chain.market.address) == market_before - earned
    assert driver.get_trainer(joined_task, trainers[0].address)["claimable"] == 0
    assert driver.get_state(joined_task)["unclaimed"] == unclaimed - earned


def test_claim_pays_the_validators_balance(driver, market_chain, joined_task, trainers, validators):
    expected = settle_round(driver, joined_task, trainers[:3])
    earned = {v.validator: v.payout for v in expected.validators}[validators[0].address]
    assert earned > 0
    before = market_chain.balance(validators[0].address)
    receipt = driver.claim(joined_task, validators[0])
    assert events(market_chain, receipt, "RewardsClaimed")[0]["amount"] == earned
    assert market_chain.balance(validators[0].address) == before + earned
    assert driver.get_validator(joined_task, validators[0].address)["claimable"] == 0


def test_claim_pays_both_roles_at_once(driver, market_chain, joined_task, trainers):
    dual = trainers[0]
    driver.join_validators(joined_task, [dual])
    expected = settle_round(driver, joined_task, trainers[:3])
    as_trainer = expected.by_trainer()[dual.address].payout
    as_validator = {v.validator: v.payout for v in expected.validators}[dual.address]
    assert as_trainer > 0 and as_validator > 0

    receipt = driver.claim(joined_task, dual)

    assert events(market_chain, receipt, "RewardsClaimed")[0]["amount"] == as_trainer + as_validator
    assert driver.get_trainer(joined_task, dual.address)["claimable"] == 0
    assert driver.get_validator(joined_task, dual.address)["claimable"] == 0


def test_claim_after_three_rounds_pays_every_round_at_once(driver, market_chain, joined_task, trainers):
    earned = sum(
        settle_round(driver, joined_task, trainers[:3]).by_trainer()[trainers[0].address].payout
        for _ in range(3)
    )
    assert driver.get_trainer(joined_task, trainers[0].address)["claimable"] == earned
    before = market_chain.balance(trainers[0].address)

    receipt = driver.claim(joined_task, trainers[0])

    assert events(market_chain, receipt, "RewardsClaimed")[0]["amount"] == earned
    assert market_chain.balance(trainers[0].address) == before + earned


def test_claims_between_rounds_pay_only_what_was_earned_since(driver, market_chain, joined_task, trainers):
    first = settle_round(driver, joined_task, trainers[:3]).by_trainer()[trainers[0].address].payout
    driver.claim(joined_task, trainers[0])
    second = settle_round(driver, joined_task, trainers[:3]).by_trainer()[trainers[0].address].payout
    receipt = driver.claim(joined_task, trainers[0])
    assert events(market_chain, receipt, "RewardsClaimed")[0]["amount"] == second
    assert first > 0 and second > 0


def test_claim_twice_reverts_nothing_to_claim(driver, market_chain, joined_task, trainers):
    settle_round(driver, joined_task, trainers[:3])
    driver.claim(joined_task, trainers[0])
    error = reverts(driver.claim, joined_task, trainers[0])
    assert error.name == "TaskMarketNothingToClaim"
    assert error_args(error) == {"taskId": joined_task, "account": trainers[0].address}


def test_claim_with_nothing_earned_reverts_nothing_to_claim(
    driver, market_chain, joined_task, trainers, validators, outsider
):
    error = reverts(driver.claim, joined_task, trainers[0])  # before any round
    assert error.name == "TaskMarketNothingToClaim"
    # a worthless update and a validator below MIN_AGREEMENT earn nothing either
    scores = {validators[0].address: [SCORE, SCORE, 0], validators[1].address: [SCORE, SCORE, 0]}
    driver.join_validators(joined_task, validators[2:3])
    revealers_order = None

    def vectors(validator, revealers):
        nonlocal revealers_order
        revealers_order = revealers
        if validator == validators[2].address:  # scores only the last revealer: disagrees
            return [0, 0, SCORE]
        return scores[validator]

    expected = settle_round(driver, joined_task, trainers[:3], scores=vectors)
    worthless = revealers_order[2]
    assert expected.by_trainer()[worthless].payout == 0
    assert {v.validator: v.payout for v in expected.validators}[validators[2].address] == 0
    for account in (outsider, next(t for t in trainers if t.address == worthless), validators[2]):
        assert reverts(driver.claim, joined_task, account).name == "TaskMarketNothingToClaim"


def test_claim_on_unknown_task_reverts_unknown_task(market_chain, trainers):
    error = reverts(market_chain.tx, trainers[0], market_chain.market.functions.claim(9))
    assert error.name == "TaskMarketUnknownTask"


def test_earnings_are_kept_per_task(driver, market_chain, make_task, trainers, validators):
    first, second = make_task(), make_task()
    for task_id in (first, second):
        driver.join(task_id, trainers[:2])
        driver.join_validators(task_id, validators[:1])
    settle_round(driver, first, trainers[:2])
    assert reverts(driver.claim, second, trainers[0]).name == "TaskMarketNothingToClaim"
    driver.claim(first, trainers[0])


def test_a_trainer_that_left_or_was_rejected_still_claims_what_it_earned(
    driver, market_chain, joined_task, trainers
):
    earned = settle_round(driver, joined_task, trainers[:3]).by_trainer()
    market_chain.tx(trainers[2], market_chain.market.functions.leave(joined_task))
    # round 2 rejects trainers[1]: its round-1 earnings stay claimable
    settle_round(
        driver, joined_task, trainers[:2],
        scores=lambda v, revealers: [INVALID if t == trainers[1].address else SCORE for t in revealers],
    )  # fmt: skip
    assert driver.get_trainer(joined_task, trainers[1].address)["joined"] is False
    for trainer in trainers[1:3]:
        receipt = driver.claim(joined_task, trainer)
        assert events(market_chain, receipt, "RewardsClaimed")[0]["amount"] == earned[trainer.address].payout


def test_claims_never_pay_more_than_the_pool(driver, market_chain, make_task, trainers, validators):
    task_id = make_task(rounds=1)
    driver.join(task_id, trainers[:2])
    driver.join_validators(task_id, validators[:2])
    settle_round(driver, task_id, trainers[:2])
    for account in [*trainers[:2], *validators[:2]]:
        driver.claim(task_id, account)
    state = driver.get_state(task_id)
    assert (state["pool"], state["unclaimed"]) == (0, 0)
    stakes = sum(driver.get_trainer(task_id, t.address)["stake"] for t in trainers[:2])
    stakes += sum(driver.get_validator(task_id, v.address)["stake"] for v in validators[:2])
    assert market_chain.balance(market_chain.market.address) == stakes
