"""The consensus rule's guarantees, on the pure mirror (tests/contracts check it equals the contract)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from fedmarket.consensus import HARMFUL, INVALID, MIN_AGREEMENT, SCALE, UNAVAILABLE, compute_consensus
from fedmarket.protocol import Outcome

T1, T2, T3 = (f"0x{i:040x}" for i in (0x11, 0x22, 0x33))
V1, V2, V3 = (f"0x{i:040x}" for i in (0x44, 0x55, 0x66))
BUDGET = 1_000_000


def run(scores, stakes=(1, 1, 1), trainers=(T1, T2, T3), validators=(V1, V2, V3), share=1_000):
    return compute_consensus(
        trainers=list(trainers), validators=list(validators[: len(scores)]), stakes=list(stakes[: len(scores)]),
        scores=scores, budget=BUDGET, validator_share_bps=share,
    )  # fmt: skip


def test_a_minority_inflating_validator_moves_nobody_and_earns_least():
    honest = [60, 30, 10]
    result = run([honest, honest, [0, 0, 1_000]])  # V3 gives all the value to T3
    by = result.by_trainer()
    assert [by[t].consensus for t in (T1, T2, T3)] == [6 * SCALE // 10, 3 * SCALE // 10, SCALE // 10]
    agreements = [v.agreement for v in result.validators]
    assert agreements[0] == agreements[1] == SCALE and agreements[2] == SCALE // 10
    assert result.validators[2].payout == 0  # below MIN_AGREEMENT
    assert result.validators[0].payout == result.validators[1].payout == BUDGET // 10 // 2


def test_trainers_share_the_trainer_budget_by_consensus_and_nothing_for_zero():
    result = run([[3, 1, 0], [3, 1, 0], [3, 1, 0]])
    by = result.by_trainer()
    assert by[T1].payout == 900_000 * 3 // 4 and by[T2].payout == 900_000 // 4
    assert (by[T3].outcome, by[T3].payout) == (Outcome.WORTHLESS, 0)


def test_a_stake_majority_of_flags_rejects_and_a_minority_does_not():
    flagged_by_two = run([[5, 5, INVALID], [5, 5, HARMFUL], [5, 5, 5]]).by_trainer()[T3]
    assert (flagged_by_two.outcome, flagged_by_two.payout) == (Outcome.REJECTED, 0)
    flagged_by_one = run([[5, 5, INVALID], [5, 5, 5], [5, 5, 5]]).by_trainer()[T3]
    assert flagged_by_one.outcome == Outcome.ACCEPTED
    heavy_flagger = run([[5, 5, INVALID], [5, 5, 5], [5, 5, 5]], stakes=(3, 1, 1)).by_trainer()[T3]
    assert heavy_flagger.outcome == Outcome.REJECTED


def test_an_update_nobody_could_fetch_is_neither_paid_nor_rejected():
    result = run([[5, UNAVAILABLE], [5, UNAVAILABLE]], trainers=(T1, T2))
    assert result.by_trainer()[T2].outcome == Outcome.UNAVAILABLE and result.by_trainer()[T2].payout == 0


def test_a_validators_score_for_itself_is_ignored():
    # V1 is also trainer T1; whatever it says of itself changes nothing.
    modest = run([[0, 5, 5], [5, 5, 5], [5, 5, 5]], validators=(T1, V2, V3))
    boastful = run([[10**30, 5, 5], [5, 5, 5], [5, 5, 5]], validators=(T1, V2, V3))
    assert modest == boastful


def test_a_validator_marking_everything_unavailable_earns_nothing():
    result = run([[5, 5, 5], [5, 5, 5], [UNAVAILABLE] * 3])
    assert result.validators[2].agreement == 0 and result.validators[2].payout == 0


entries = st.one_of(st.integers(-(10**12), 10**12), st.sampled_from([UNAVAILABLE, INVALID, HARMFUL]))


@settings(max_examples=300, deadline=None)
@given(
    data=st.data(),
    n_trainers=st.integers(1, 6),
    n_validators=st.integers(1, 5),
    budget=st.integers(0, 10**24),
    share=st.integers(0, 10_000),
)
def test_consensus_stays_within_the_validators_range_and_pays_at_most_the_budget(
    data, n_trainers, n_validators, budget, share
):
    trainers = [f"0x{i:040x}" for i in range(1, n_trainers + 1)]
    validators = [f"0x{i:040x}" for i in range(100, 100 + n_validators)]
    stakes = data.draw(st.lists(st.integers(1, 10**21), min_size=n_validators, max_size=n_validators))
    scores = data.draw(
        st.lists(
            st.lists(entries, min_size=n_trainers, max_size=n_trainers),
            min_size=n_validators,
            max_size=n_validators,
        )
    )
    result = compute_consensus(
        trainers=trainers,
        validators=validators,
        stakes=stakes,
        scores=scores,
        budget=budget,
        validator_share_bps=share,
    )
    assert result.trainer_payout + result.validator_payout <= budget
    assert result.validator_payout <= budget * share // 10_000
    for i, trainer in enumerate(result.trainers):
        if trainer.outcome in (Outcome.REJECTED, Outcome.UNAVAILABLE):
            assert trainer.consensus == 0 and trainer.payout == 0
            continue
        # The median's guarantee: the consensus is one of the available validators' normalized scores.
        normalized = []
        for vector in scores:
            if vector[i] == UNAVAILABLE:
                continue
            total = sum(max(e, 0) for e in vector if e not in (UNAVAILABLE, INVALID, HARMFUL))
            value = vector[i] if vector[i] not in (INVALID, HARMFUL) else 0
            normalized.append(max(value, 0) * SCALE // total if total else 0)
        assert min(normalized) <= trainer.consensus <= max(normalized)
        if trainer.consensus == 0:
            assert trainer.payout == 0
    for validator in result.validators:
        assert 0 <= validator.agreement <= SCALE
        if validator.agreement < MIN_AGREEMENT:
            assert validator.payout == 0
