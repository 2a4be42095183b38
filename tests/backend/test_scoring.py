"""Leave-one-out values on a toy quadratic loss, and integer payouts worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from backend.scoring import find_harmful, leave_one_out_values, split_payouts
from fedmarket.spec import AggregationSettings

FEDAVG = AggregationSettings(method="fedavg", max_weight_share=1.0)
TARGET = torch.tensor([1.0, 1.0])


def quadratic_loss(aggregate: dict[str, torch.Tensor]) -> float:
    """Validation loss of global model 0 plus the aggregate, when the best model is (1, 1)."""
    return float(((aggregate["w"] - TARGET) ** 2).sum())


def w(*values: float) -> dict[str, torch.Tensor]:
    return {"w": torch.tensor(values, dtype=torch.float32)}


# --- leave-one-out -------------------------------------------------------------------------------


def test_an_update_pointing_the_wrong_way_gets_a_negative_value():
    deltas = [w(1, 1), w(1, 1), w(-1, -1)]
    # all: mean (1/3, 1/3), loss 8/9. Without a good one: mean (0, 0), loss 2 -> 2 - 8/9 = 10/9.
    # Without the bad one: mean (1, 1), loss 0 -> 0 - 8/9 = -8/9.
    values = leave_one_out_values(deltas, [5, 5, 5], settings=FEDAVG, loss_of=quadratic_loss)
    assert values == pytest.approx([10 / 9, 10 / 9, -8 / 9])


def test_a_single_update_is_valued_against_the_unchanged_model():
    # loss(zero delta) = 2, loss(with it) = 0
    values = leave_one_out_values([w(1, 1)], [3], settings=FEDAVG, loss_of=quadratic_loss)
    assert values == pytest.approx([2.0])


def test_leave_one_out_uses_the_tasks_aggregator():
    deltas = [w(1, 1), w(1, 1), w(1.2, 1.2), w(-5, -5)]
    # Median: (1, 1) with all four, and (1, 1) whichever one is left out -> every value is 0; the
    # robust rule already ignores the outlier, so leaving it out changes nothing.
    median = AggregationSettings(method="median")
    median_values = leave_one_out_values(deltas, [1] * 4, settings=median, loss_of=quadratic_loss)
    assert median_values == pytest.approx([0.0] * 4)
    # FedAvg lets the outlier pull the mean to (-0.45, -0.45): leaving it out helps a lot.
    fedavg_values = leave_one_out_values(deltas, [1] * 4, settings=FEDAVG, loss_of=quadratic_loss)
    all_loss = 2 * 1.45**2
    without_outlier = 2 * (3.2 / 3 - 1) ** 2  # mean of the three honest ones: 3.2 / 3
    assert fedavg_values[3] == pytest.approx(without_outlier - all_loss)
    assert fedavg_values[3] < 0


def test_leave_one_out_evaluates_the_loss_once_per_update_plus_once():
    calls = []

    def loss_of(aggregate):
        calls.append(aggregate)
        return quadratic_loss(aggregate)

    leave_one_out_values([w(1, 1), w(0, 1), w(1, 0)], [1, 1, 1], settings=FEDAVG, loss_of=loss_of)
    assert len(calls) == 4


# --- payouts -------------------------------------------------------------------------------------


def test_payouts_split_base_share_equally_and_the_rest_by_positive_value():
    # base 400 -> 133 each (1 dust); rest 600 -> 3:1 between a and b -> 450, 150; c only base.
    payouts = split_payouts(1000, {"0xa": 3.0, "0xb": 1.0, "0xc": 0.0}, base_share=0.4)
    assert payouts == {"0xa": 583, "0xb": 283, "0xc": 133}
    assert sum(payouts.values()) == 999


def test_a_trainer_with_negative_value_gets_exactly_the_base_share():
    assert split_payouts(100, {"0xa": -1.0, "0xb": 2.0}, base_share=0.2) == {"0xa": 10, "0xb": 90}


def test_when_no_value_is_positive_only_the_base_share_is_paid():
    payouts = split_payouts(100, {"0xa": -1.0, "0xb": 0.0}, base_share=0.2)
    assert payouts == {"0xa": 10, "0xb": 10}  # the other 80 stays in the pool


def test_payouts_of_a_1e20_budget_are_exact_integers_and_the_dust_is_not_paid():
    payouts = split_payouts(10**20, {"0xa": 1.0, "0xb": 1.0, "0xc": 1.0}, base_share=0.2)
    # base pool exactly 2e19 (0.2 read as 1/5) -> 6666666666666666666 each, dust 2;
    # rest 8e19 / 3 -> 26666666666666666666 each, dust 2.
    assert payouts == dict.fromkeys(("0xa", "0xb", "0xc"), 33333333333333333332)
    assert 10**20 - sum(payouts.values()) == 4


def test_payouts_do_not_depend_on_the_order_of_values_and_list_accounts_sorted():
    values = {"0xc": 0.3, "0xa": 0.1, "0xb": 0.7}
    forward = split_payouts(10**18 + 7, values, base_share=0.25)
    backward = split_payouts(10**18 + 7, dict(reversed(list(values.items()))), base_share=0.25)
    assert forward == backward
    assert list(forward) == ["0xa", "0xb", "0xc"]


def test_no_accepted_accounts_get_nothing():
    assert split_payouts(1000, {}, base_share=0.2) == {}


@pytest.mark.parametrize(
    ("budget", "values", "base_share", "match"),
    [
        (-1, {"0xa": 1.0}, 0.2, "budget"),
        (10.0, {"0xa": 1.0}, 0.2, "budget"),
        (10, {"0xa": 1.0}, 1.5, "base_share"),
        (10, {"0xa": math.nan}, 0.2, "finite"),
        (10, {"0xa": math.inf}, 0.2, "finite"),
    ],
)
def test_split_payouts_rejects_bad_input(budget, values, base_share, match):
    with pytest.raises(ValueError, match=match):
        split_payouts(budget, values, base_share=base_share)


@settings(max_examples=200, deadline=None)
@given(
    budget=st.integers(min_value=0, max_value=10**24),
    values=st.dictionaries(
        st.text(alphabet="0123456789abcdef", min_size=1, max_size=6),
        st.floats(min_value=-1e6, max_value=1e6, allow_nan=False),
        max_size=8,
    ),
    base_share=st.floats(min_value=0.0, max_value=1.0),
)
def test_payouts_never_exceed_the_budget_and_everyone_gets_the_base(budget, values, base_share):
    payouts = split_payouts(budget, values, base_share=base_share)
    assert sum(payouts.values()) <= budget
    assert all(isinstance(amount, int) and amount >= 0 for amount in payouts.values())
    if values:
        base_each = min(payouts.values())
        assert all(payouts[account] == base_each for account, value in values.items() if value <= 0)


def test_find_harmful_lists_accounts_below_the_threshold_sorted():
    values = {"0xc": -0.2, "0xa": -0.05, "0xb": 0.3, "0xd": -0.06}
    assert find_harmful(values, harm_threshold=-0.05) == ["0xc", "0xd"]
