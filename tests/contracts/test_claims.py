"""Claims against the cumulative rewards tree: one proof pays everything earned so far, once."""

from __future__ import annotations

from testkit.contracts import POOL, error_args, events, reverts

from fedmarket.merkle import RewardsTree


def settle_round(driver, task_id, trainers, *, earnings, payout):
    driver.run_round(task_id, committers=trainers)
    _, tree = driver.finalize(task_id, earnings={t.address: v for t, v in earnings.items()}, payout=payout)
    return tree


def test_claim_after_one_round_pays_allocation_and_emits_rewards_claimed(
    driver, market_chain, joined_task, trainers
):
    earnings = {trainers[0]: 100, trainers[1]: 200}
    tree = settle_round(driver, joined_task, trainers[:3], earnings=earnings, payout=300)
    before = market_chain.balance(trainers[0].address)
    market_before = market_chain.balance(market_chain.market.address)

    receipt = driver.claim(joined_task, trainers[0], tree)

    assert events(market_chain, receipt, "RewardsClaimed") == [
        {"taskId": joined_task, "account": trainers[0].address, "amount": 100, "cumulativeAmount": 100}
    ]
    assert market_chain.balance(trainers[0].address) == before + 100
    assert market_chain.balance(market_chain.market.address) == market_before - 100
    assert market_chain.market.functions.claimedOf(joined_task, trainers[0].address).call() == 100
    assert driver.get_trainer(joined_task, trainers[0].address)["claimed"] == 100
    assert driver.get_state(joined_task)["unclaimed"] == 200


def test_claim_after_three_rounds_pays_every_round_at_once(driver, market_chain, joined_task, trainers):
    t0, t1 = trainers[0], trainers[1]
    settle_round(driver, joined_task, trainers[:3], earnings={t0: 100, t1: 50}, payout=150)
    settle_round(driver, joined_task, trainers[:3], earnings={t0: 300, t1: 50}, payout=200)
    tree = settle_round(driver, joined_task, trainers[:3], earnings={t0: 360, t1: 90}, payout=100)
    before = market_chain.balance(t0.address)

    receipt = driver.claim(joined_task, t0, tree)

    assert events(market_chain, receipt, "RewardsClaimed")[0]["amount"] == 360
    assert market_chain.balance(t0.address) == before + 360
    driver.claim(joined_task, t1, tree)
    assert driver.get_state(joined_task)["unclaimed"] == 0
    # the task is over; claiming again finds nothing
    error = reverts(driver.claim, joined_task, t0, tree)
    assert error.name == "TaskMarketNothingToClaim"
    assert error_args(error) == {"taskId": joined_task, "account": t0.address}


def test_claims_across_rounds_pay_only_the_difference(driver, market_chain, joined_task, trainers):
    t0, t1 = trainers[0], trainers[1]
    tree = settle_round(driver, joined_task, trainers[:3], earnings={t0: 100}, payout=100)
    driver.claim(joined_task, t0, tree)
    tree = settle_round(driver, joined_task, trainers[:3], earnings={t0: 250, t1: 40}, payout=190)
    before = market_chain.balance(t0.address)

    receipt = driver.claim(joined_task, t0, tree)

    assert events(market_chain, receipt, "RewardsClaimed") == [
        {"taskId": joined_task, "account": t0.address, "amount": 150, "cumulativeAmount": 250}
    ]
    assert market_chain.balance(t0.address) == before + 150
    assert market_chain.market.functions.claimedOf(joined_task, t0.address).call() == 250
    # a round in which t0 earned nothing more leaves it nothing to claim
    tree = settle_round(driver, joined_task, trainers[:3], earnings={t0: 250, t1: 100}, payout=60)
    assert reverts(driver.claim, joined_task, t0, tree).name == "TaskMarketNothingToClaim"
    driver.claim(joined_task, t1, tree)
    assert driver.get_state(joined_task)["unclaimed"] == 0


def test_claim_twice_reverts_nothing_to_claim(driver, market_chain, joined_task, trainers):
    tree = settle_round(driver, joined_task, trainers[:3], earnings={trainers[0]: 100}, payout=100)
    driver.claim(joined_task, trainers[0], tree)
    error = reverts(driver.claim, joined_task, trainers[0], tree)
    assert error.name == "TaskMarketNothingToClaim"
    assert market_chain.market.functions.claimedOf(joined_task, trainers[0].address).call() == 100


def test_claim_with_wrong_proof_reverts_invalid_proof(driver, market_chain, joined_task, trainers, outsider):
    t0, t1 = trainers[0], trainers[1]
    earnings = {t0: 100, t1: 200, trainers[2]: 1}
    tree = settle_round(driver, joined_task, trainers[:3], earnings=earnings, payout=301)
    claim = market_chain.market.functions.claim
    attempts = [
        (t0, claim(joined_task, 101, tree.proof(t0.address))),  # more than earned
        (t0, claim(joined_task, 100, tree.proof(t1.address))),  # someone else's proof
        (t0, claim(joined_task, 100, [])),  # no proof
        (outsider, claim(joined_task, 100, tree.proof(t0.address))),  # someone else's leaf
    ]
    for account, fn in attempts:
        error = reverts(market_chain.tx, account, fn)
        assert error.name == "TaskMarketInvalidProof"
        assert error_args(error)["account"] == account.address
    error = reverts(market_chain.tx, t0, attempts[0][1])
    assert error_args(error) == {"taskId": joined_task, "account": t0.address, "cumulativeAmount": 101}
    assert driver.get_state(joined_task)["unclaimed"] == 301


def test_claim_before_any_rewards_reverts_invalid_proof(driver, market_chain, joined_task, trainers):
    fn = market_chain.market.functions.claim(joined_task, 0, [])
    assert reverts(market_chain.tx, trainers[0], fn).name == "TaskMarketInvalidProof"


def test_claim_with_proof_from_another_task_reverts_invalid_proof(driver, market_chain, make_task, trainers):
    first, second = make_task(), make_task()
    driver.join(first, trainers[:2])
    driver.join(second, trainers[:2])
    tree = settle_round(driver, first, trainers[:2], earnings={trainers[0]: 100}, payout=100)
    settle_round(driver, second, trainers[:2], earnings={trainers[1]: 5}, payout=5)
    fn = market_chain.market.functions.claim(second, 100, tree.proof(trainers[0].address))
    error = reverts(market_chain.tx, trainers[0], fn)
    assert error.name == "TaskMarketInvalidProof"


def test_claim_on_unknown_task_reverts_unknown_task(market_chain, trainers):
    error = reverts(market_chain.tx, trainers[0], market_chain.market.functions.claim(9, 1, []))
    assert error.name == "TaskMarketUnknownTask"


def test_root_allocating_more_than_payout_reverts_claim_exceeds_allocation(
    driver, market_chain, joined_task, trainers
):
    """A rewards root cannot pay out more than the coordinator allocated: the tree says 500, the
    round allocated 100, and the claim is refused rather than paid from other money."""
    tree = settle_round(driver, joined_task, trainers[:3], earnings={trainers[0]: 500}, payout=100)
    market_before = market_chain.balance(market_chain.market.address)
    error = reverts(driver.claim, joined_task, trainers[0], tree)
    assert error.name == "TaskMarketClaimExceedsAllocation"
    assert error_args(error) == {"taskId": joined_task, "amount": 500, "unclaimed": 100}
    assert market_chain.balance(market_chain.market.address) == market_before


def test_over_allocated_tree_pays_first_claimants_up_to_allocation_only(
    driver, market_chain, joined_task, trainers
):
    earnings = {trainers[0]: 80, trainers[1]: 80}
    tree = settle_round(driver, joined_task, trainers[:3], earnings=earnings, payout=100)
    driver.claim(joined_task, trainers[0], tree)
    error = reverts(driver.claim, joined_task, trainers[1], tree)
    assert error.name == "TaskMarketClaimExceedsAllocation"
    assert error_args(error) == {"taskId": joined_task, "amount": 80, "unclaimed": 20}
    # the next round's allocation makes up for it
    tree = settle_round(driver, joined_task, trainers[:3], earnings=earnings, payout=60)
    driver.claim(joined_task, trainers[1], tree)
    assert driver.get_state(joined_task)["unclaimed"] == 0


def test_claims_never_pay_more_than_the_pool(driver, market_chain, make_task, trainers):
    task_id = make_task(rounds=1)
    driver.join(task_id, trainers[:2])
    earnings = {trainers[0]: POOL // 2, trainers[1]: POOL // 2}
    tree = settle_round(driver, task_id, trainers[:2], earnings=earnings, payout=POOL)
    for trainer in trainers[:2]:
        driver.claim(task_id, trainer, tree)
    state = driver.get_state(task_id)
    assert (state["pool"], state["unclaimed"]) == (0, 0)
    assert market_chain.balance(market_chain.market.address) == sum(
        driver.get_trainer(task_id, t.address)["stake"] for t in trainers[:2]
    )


def test_trainer_that_left_still_claims_what_it_earned(driver, market_chain, joined_task, trainers):
    tree = settle_round(driver, joined_task, trainers[:3], earnings={trainers[2]: 42}, payout=42)
    market_chain.tx(trainers[2], market_chain.market.functions.leave(joined_task))
    receipt = driver.claim(joined_task, trainers[2], tree)
    assert events(market_chain, receipt, "RewardsClaimed")[0]["amount"] == 42


def test_python_tree_proofs_verify_on_chain_for_many_accounts(driver, market_chain, joined_task, trainers):
    """The Python RewardsTree (odd leaf counts included) produces proofs the contract accepts."""
    earnings = {t.address: 10 + i for i, t in enumerate(trainers[:7])}
    tree = RewardsTree(earnings)
    driver.run_round(joined_task, committers=trainers[:3])
    market_chain.tx(
        driver.coordinator,
        market_chain.market.functions.finalizeRound(
            joined_task, bytes(32), tree.root, sum(earnings.values()), bytes(32), []
        ),
    )
    for trainer in trainers[:7]:
        driver.claim(joined_task, trainer, tree)
    assert driver.get_state(joined_task)["unclaimed"] == 0
