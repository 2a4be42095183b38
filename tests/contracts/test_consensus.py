"""finalizeRound's consensus: a worked example by hand, a differential test against
fedmarket.consensus on random rounds, and the cost of a settlement at the caps."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from web3 import Web3

from fedmarket.consensus import HARMFUL, INVALID, MAX_SCORE, MIN_AGREEMENT, SCALE, UNAVAILABLE
from fedmarket.deploy import ONE_TOKEN, deploy_market
from fedmarket.devnet import Anvil
from fedmarket.protocol import BPS, Outcome, RoundPhase
from scripts.gas_report import TARGETS, GasBench, worst_case_settlements
from testkit.contracts import (
    SCORE,
    VALIDATOR_STAKE,
    MarketDriver,
    by_address,
    event_names,
    events,
)

# --------------------------------------------------------------------------- worked example
#
# Three trainers T1 < T2 < T3 (address order) and three validators A < B < C staking 50, 30 and
# 20 tokens. A and B score honestly; C inflates T3 (say, its own second account):
#
#            T1   T2   T3   sum    normalized n[v][i] (SCALE = 1e18 = 1.0)
#     A(50)   6    3    1    10    0.6  0.3  0.1
#     B(30)   5    4    1    10    0.5  0.4  0.1
#     C(20)   1    1    8    10    0.1  0.1  0.8
#
# Consensus c[i] is the stake-weighted lower median: sort the entries, add up the stakes until
# they reach half (50 of 100).
#     T1: C 0.1 (20), B 0.5 (50)          -> c1 = 0.5
#     T2: C 0.1 (20), A 0.3 (70)          -> c2 = 0.3
#     T3: A 0.1 (50)                      -> c3 = 0.1   (C's 0.8 does not move it)
# sum c = 0.9. One round, a 1,000-token pool, validatorShareBps 1,000: trainers share 900 tokens
# in proportion to c (500, 300, 100); validators share 100.
# Agreement a[v] = sum_i min(n[v][i], c[i]) / sum c (Yuma clipping):
#     A: (0.5 + 0.3 + 0.1) / 0.9 = 1.0
#     B: (0.5 + 0.3 + 0.1) / 0.9 = 1.0
#     C: (0.1 + 0.1 + 0.1) / 0.9 = 0.333...   below MIN_AGREEMENT (0.5): paid nothing
# A and B split the 100 tokens in proportion to their agreement: 50 each. C's inflation bought T3
# nothing and cost C its share.

EXAMPLE_SCORES = {"A": [6, 3, 1], "B": [5, 4, 1], "C": [1, 1, 8]}
EXAMPLE_STAKES = {"A": 50 * ONE_TOKEN, "B": 30 * ONE_TOKEN, "C": 20 * ONE_TOKEN}


def test_worked_example_median_clipping_agreement_and_payouts(
    driver, market_chain, make_task, trainers, validators
):
    task_id = make_task(rounds=1, min_trainers=3, reward_pool=1_000 * ONE_TOKEN, validator_share_bps=1_000)
    t1, t2, t3 = sorted(trainers[:3], key=lambda t: int(t.address, 16))
    a, b, c = sorted(validators, key=lambda v: int(v.address, 16))
    names = {a.address: "A", b.address: "B", c.address: "C"}
    driver.join(task_id, [t1, t2, t3])
    driver.join_validators(task_id, [a, b, c], stake=[EXAMPLE_STAKES[names[v.address]] for v in (a, b, c)])
    run = driver.run_round(task_id, committers=[t1, t2, t3], scores=lambda v, _: EXAMPLE_SCORES[names[v]])

    expected = driver.expected(run)
    receipt = driver.finalize(task_id)

    tenth = SCALE // 10
    assert events(market_chain, receipt, "TrainerSettled") == [
        {"taskId": task_id, "round": 1, "trainer": t.address, "outcome": Outcome.ACCEPTED,
         "consensus": value, "payout": tokens * ONE_TOKEN}
        for t, value, tokens in [(t1, 5 * tenth, 500), (t2, 3 * tenth, 300), (t3, tenth, 100)]
    ]  # fmt: skip
    assert events(market_chain, receipt, "ValidatorSettled") == [
        {"taskId": task_id, "round": 1, "validator": v.address, "agreement": agreement, "payout": payout}
        for v, agreement, payout in [
            (a, SCALE, 50 * ONE_TOKEN), (b, SCALE, 50 * ONE_TOKEN), (c, 333_333_333_333_333_333, 0),
        ]
    ]  # fmt: skip
    assert 333_333_333_333_333_333 < MIN_AGREEMENT
    assert events(market_chain, receipt, "RoundFinalized") == [
        {"taskId": task_id, "round": 1, "trainerPayout": 900 * ONE_TOKEN, "validatorPayout": 100 * ONE_TOKEN,
         "burned": 0}
    ]  # fmt: skip
    # the Python mirror agrees, entry for entry
    assert [(r.outcome, r.consensus, r.payout) for r in expected.trainers] == [
        (Outcome.ACCEPTED, 5 * tenth, 500 * ONE_TOKEN),
        (Outcome.ACCEPTED, 3 * tenth, 300 * ONE_TOKEN),
        (Outcome.ACCEPTED, tenth, 100 * ONE_TOKEN),
    ]
    assert [(r.agreement, r.payout) for r in expected.validators] == [
        (SCALE, 50 * ONE_TOKEN), (SCALE, 50 * ONE_TOKEN), (333_333_333_333_333_333, 0),
    ]  # fmt: skip
    # the whole pool went to claimable balances; nothing was left to refund
    assert driver.get_trainer(task_id, t1.address)["claimable"] == 500 * ONE_TOKEN
    assert driver.get_validator(task_id, c.address)["claimable"] == 0
    assert driver.get_state(task_id)["unclaimed"] == 1_000 * ONE_TOKEN
    assert events(market_chain, receipt, "TaskCompleted") == [{"taskId": task_id, "refund": 0}]


# --------------------------------------------------------------------------- differential

FLAGS = st.sampled_from([UNAVAILABLE, INVALID, HARMFUL])
ENTRIES = st.one_of(
    st.integers(1, 10 * SCORE),
    st.integers(1, 10 * SCORE),
    st.integers(1, 10 * SCORE),
    st.sampled_from([0, 1, MAX_SCORE, -1, -MAX_SCORE]),
    st.integers(-MAX_SCORE, MAX_SCORE),
    FLAGS,
)


@st.composite
def rounds(draw):
    """One random round: who takes part, stakes, budget and every score entry."""
    trainer_count = draw(st.integers(2, 6), label="trainers")
    validator_count = draw(st.integers(1, 5), label="validators")
    return {
        "trainers": trainer_count,
        "validators": validator_count,
        # one of the trainers also validates (its own entry is ignored)
        "dual": draw(st.one_of(st.none(), st.integers(0, trainer_count - 1)), label="dual"),
        "stakes": draw(
            st.lists(st.integers(VALIDATOR_STAKE, 5_000 * ONE_TOKEN), min_size=5, max_size=5), label="stakes"
        ),
        "silent_trainer": draw(st.booleans(), label="a committer stays silent"),
        "silent_validator": draw(st.booleans(), label="a score committer stays silent"),
        "entries": draw(
            st.lists(st.lists(ENTRIES, min_size=6, max_size=6), min_size=5, max_size=5), label="entries"
        ),
        "pool": draw(st.sampled_from([1_000 * ONE_TOKEN, 10**18 + 7, 999, 12_345_678_901_234_567_891])),
        "rounds": draw(st.integers(1, 3), label="rounds"),
        "share_bps": draw(st.sampled_from([0, 1, 1_000, 3_333, BPS]), label="validator share"),
    }


@pytest.fixture
def unlimited_allowances(market_chain, owner, trainers, validators):
    """Every account that stakes here approves the market once, before the examples run."""
    for account in [owner, *trainers, *validators]:
        market_chain.tx(
            account, market_chain.token.functions.approve(market_chain.market.address, 2**256 - 1)
        )


@settings(
    max_examples=10,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(spec=rounds())
def test_random_rounds_settle_exactly_as_fedmarket_consensus(
    market_chain, owner, coordinator, trainers, validators, unlimited_allowances, spec
):
    """Each example in its own snapshot, with fresh senders (the revert forgets its nonces)."""
    w3 = market_chain.w3
    snapshot = w3.provider.make_request("evm_snapshot", [])["result"]
    try:
        chain = type(market_chain)(w3, market_chain.deployment)
        _check_round(MarketDriver(chain, owner, coordinator), chain, trainers, validators, spec)
    finally:
        assert w3.provider.make_request("evm_revert", [snapshot])["result"] is True


def _check_round(driver, chain, trainers, validators, spec) -> None:
    members = trainers[: spec["trainers"]]
    pool = [*validators, trainers[8], trainers[7]][: spec["validators"]]
    if spec["dual"] is not None:
        pool = [members[spec["dual"]], *pool][:5]
    task_id, _ = driver.create_task(
        rounds=spec["rounds"], min_trainers=1, max_trainers=6, max_validators=5,
        reward_pool=spec["pool"], validator_share_bps=spec["share_bps"],
    )  # fmt: skip
    driver.join(task_id, members)
    driver.join_validators(task_id, pool, stake=spec["stakes"][: len(pool)])
    revealers = members[:-1] if spec["silent_trainer"] else members
    score_revealers = pool[:-1] if spec["silent_validator"] and len(pool) > 1 else pool
    entries = {v.address: row for v, row in zip(pool, spec["entries"], strict=False)}
    run = driver.run_round(
        task_id,
        committers=members,
        revealers=revealers,
        scores=lambda v, revealed: entries[v][: len(revealed)],
        scorers=pool,
        score_revealers=score_revealers,
    )
    assert driver.phase(task_id) == RoundPhase.SETTLING
    settlement = driver.settlement(run)
    expected = driver.expected(run, settlement)
    pool_before = driver.get_state(task_id)["pool"]
    stakes_before = {t.address: driver.get_trainer(task_id, t.address)["stake"] for t in members}

    receipt = driver.finalize(task_id, settlement)

    settled = events(chain, receipt, "TrainerSettled")
    assert [(e["trainer"], e["outcome"], e["consensus"], e["payout"]) for e in settled] == [
        (r.trainer, r.outcome, r.consensus, r.payout) for r in expected.trainers
    ]
    scored = events(chain, receipt, "ValidatorSettled")
    assert [(e["validator"], e["agreement"], e["payout"]) for e in scored] == [
        (r.validator, r.agreement, r.payout) for r in expected.validators
    ]
    (finalized,) = events(chain, receipt, "RoundFinalized")
    assert (finalized["trainerPayout"], finalized["validatorPayout"]) == (
        expected.trainer_payout,
        expected.validator_payout,
    )
    # the payouts moved from the pool to claimable balances; slashes were burned
    slash_bps = driver.get_terms(task_id).slash_bps
    slashed = [r.trainer for r in expected.trainers if r.outcome == Outcome.REJECTED] + settlement[1]
    burned = sum(stakes_before[t] * slash_bps // BPS for t in slashed)
    burned += sum(e["amount"] for e in events(chain, receipt, "ValidatorSlashed"))
    assert finalized["burned"] == burned
    state = driver.get_state(task_id)
    refund = sum(e["refund"] for e in events(chain, receipt, "TaskCompleted"))
    assert state["pool"] == pool_before - expected.trainer_payout - expected.validator_payout - refund
    for result in expected.trainers:
        trainer = driver.get_trainer(task_id, result.trainer)
        assert trainer["claimable"] == result.payout
        assert trainer["joined"] is (result.outcome != Outcome.REJECTED)
    for result in expected.validators:
        assert driver.get_validator(task_id, result.validator)["claimable"] == result.payout


def test_a_validator_that_also_trains_is_not_counted_on_its_own_update(
    driver, market_chain, make_task, trainers, validators
):
    """trainers[0] scores itself 100x the others; its own entry is ignored: the other validator's
    scores alone decide its value, and its agreement covers only the other trainers."""
    task_id = make_task(min_trainers=2)
    dual, other = trainers[0], trainers[1]
    driver.join(task_id, [dual, other])
    driver.join_validators(task_id, [dual, validators[0]])
    order = by_address([dual.address, other.address])

    def scores(validator, revealed):
        if validator == dual.address:
            return [100 * SCORE if t == dual.address else SCORE for t in revealed]
        return [SCORE, 3 * SCORE] if order[0] == dual.address else [3 * SCORE, SCORE]

    run = driver.run_round(task_id, committers=[dual, other], scores=scores)
    expected = driver.expected(run)
    receipt = driver.finalize(task_id)

    by_trainer = {e["trainer"]: e for e in events(market_chain, receipt, "TrainerSettled")}
    # only validators[0] scores the dual trainer: 1/4 of its mass; the other trainer gets the
    # weighted median of 3/4 (validators[0]) and 1 (dual's, the only other entry in its vector)
    assert by_trainer[dual.address]["consensus"] == SCALE // 4
    assert by_trainer[other.address]["consensus"] == 3 * SCALE // 4
    by_validator = {e["validator"]: e for e in events(market_chain, receipt, "ValidatorSettled")}
    assert by_validator[dual.address]["agreement"] == SCALE  # min(1, 3/4) / (3/4)
    assert by_validator[validators[0].address]["agreement"] == SCALE
    assert [r.consensus for r in expected.trainers] == [by_trainer[t]["consensus"] for t in order]


def test_flags_unavailable_rejected_and_worthless_outcomes(
    driver, market_chain, make_task, trainers, validators
):
    """Four updates, two validators (stakes 60 and 40): one nobody could fetch, one a stake
    majority flagged (slashed and removed), one scored 0 by both (neither paid nor slashed), one
    paid. A lone INVALID from the minority does not reject."""
    task_id = make_task(min_trainers=4, max_trainers=5)
    members = sorted(trainers[:4], key=lambda t: int(t.address, 16))
    driver.join(task_id, members)
    big, small = validators[:2]
    driver.join_validators(task_id, [big, small], stake=[60 * ONE_TOKEN, 40 * ONE_TOKEN])
    vectors = {
        big.address: [UNAVAILABLE, HARMFUL, 0, SCORE],
        small.address: [UNAVAILABLE, SCORE, 0, INVALID],
    }
    run = driver.run_round(task_id, committers=members, scores=vectors)
    expected = driver.expected(run)
    receipt = driver.finalize(task_id)

    settled = events(market_chain, receipt, "TrainerSettled")
    assert [(e["outcome"], e["consensus"]) for e in settled] == [
        (Outcome.UNAVAILABLE, 0), (Outcome.REJECTED, 0), (Outcome.WORTHLESS, 0), (Outcome.ACCEPTED, SCALE),
    ]  # fmt: skip
    assert [r.outcome for r in expected.trainers] == [e["outcome"] for e in settled]
    assert event_names(market_chain, receipt).count("TrainerSlashed") == 1
    (slash,) = events(market_chain, receipt, "TrainerSlashed")
    assert slash["trainer"] == members[1].address
    assert driver.get_trainer(task_id, members[1].address)["joined"] is False
    assert driver.get_state(task_id)["trainerCount"] == 3
    budget = sum(e["payout"] for e in settled)
    assert settled[3]["payout"] == budget > 0


# --------------------------------------------------------------------------- cost at the caps


@pytest.fixture(scope="module")
def caps_bench(artifacts, deployer, owner, coordinator):
    """A market on its own Anvil (one that keeps no state history on disk: a round at the caps
    mines a few thousand blocks over hundreds of accounts)."""
    with Anvil() as anvil:
        w3 = Web3(Web3.HTTPProvider(anvil.url, request_kwargs={"timeout": 60}))
        deployment = deploy_market(w3, deployer, token=artifacts["FMToken"], market=artifacts["TaskMarket"])
        bench = GasBench(w3, deployment, deployer, coordinator)
        bench.all([(deployer, bench.token.functions.transfer(owner.address, 10**6 * ONE_TOKEN))])
        yield bench


def test_settlement_at_the_caps_fits_half_a_block(caps_bench, owner):
    """MAX_TRAINERS revealers and MAX_VALIDATORS score revealers: all rejected, all accepted (with
    scores of full 128-bit width, the dearest calldata), or all committers but one silent."""
    gas = worst_case_settlements(caps_bench, owner)
    print("finalizeRound at the caps:", {k: f"{v:,}" for k, v in gas.items()})
    assert gas["finalizeRound_worst"] < TARGETS["finalizeRound_worst"] == 15_000_000
