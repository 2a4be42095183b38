"""Aggregators against values worked out by hand on tiny deltas."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fedmarket.aggregation import (
    AggregationResult,
    aggregate,
    capped_weights,
    coordinate_median,
    fedavg,
    krum_scores,
    multi_krum,
    trim_count,
    trimmed_mean,
)
from fedmarket.spec import AggregationSettings


def delta(**tensors: list[float]) -> dict[str, torch.Tensor]:
    return {name: torch.tensor(values, dtype=torch.float32) for name, values in tensors.items()}


def assert_delta_equal(actual: dict[str, torch.Tensor], expected: dict[str, list[float]]) -> None:
    assert list(actual) == list(expected)
    for key, values in expected.items():
        torch.testing.assert_close(actual[key], torch.tensor(values, dtype=torch.float32))


# Three deltas of a 2-weight, 1-bias "model".
A = delta(w=[1.0, 2.0], b=[0.0])
B = delta(w=[3.0, 4.0], b=[1.0])
C = delta(w=[5.0, 6.0], b=[2.0])


# --- capped_weights -----------------------------------------------------------------------------


def test_weights_are_proportional_to_samples_when_no_cap_binds():
    assert capped_weights([1, 1, 2], max_share=1.0) == pytest.approx([0.25, 0.25, 0.5])


def test_cap_moves_the_excess_to_the_others_in_proportion():
    # 0.6 > 0.5 -> capped at 0.5; the freed 0.5 goes 10:30 to the others.
    assert capped_weights([10, 30, 60], max_share=0.5) == pytest.approx([0.125, 0.375, 0.5])


def test_cap_is_applied_again_when_redistribution_pushes_another_weight_over():
    # 0.05, 0.05, 0.4, 0.5 -> cap the 10 at 0.4; the rest (0.6) goes 1:1:8 -> 0.06, 0.06, 0.48,
    # which is over again -> cap the 8 at 0.4; the last 0.2 goes 1:1.
    assert capped_weights([1, 1, 8, 10], max_share=0.4) == pytest.approx([0.1, 0.1, 0.4, 0.4])


def test_a_trainer_claiming_a_huge_sample_count_gets_at_most_the_cap():
    assert capped_weights([100, 100, 10**12], max_share=0.5) == pytest.approx([0.25, 0.25, 0.5])


def test_cap_too_small_for_the_number_of_trainers_falls_back_to_equal_weights():
    assert capped_weights([1, 2, 3], max_share=0.2) == pytest.approx([1 / 3, 1 / 3, 1 / 3])


def test_all_zero_sample_counts_get_equal_weights():
    assert capped_weights([0, 0, 0, 0], max_share=1.0) == pytest.approx([0.25] * 4)


@pytest.mark.parametrize(
    ("counts", "max_share"), [([], 0.5), ([1, -1], 0.5), ([1, 2], 0.0), ([1, 2], 1.5), ([1.5, 2], 0.5)]
)
def test_capped_weights_rejects_bad_input(counts, max_share):
    with pytest.raises(ValueError):
        capped_weights(counts, max_share=max_share)


@settings(max_examples=200, deadline=None)
@given(
    counts=st.lists(st.integers(min_value=0, max_value=10**15), min_size=1, max_size=12),
    max_share=st.floats(min_value=0.01, max_value=1.0),
)
def test_capped_weights_sum_to_one_and_respect_the_cap_whenever_possible(counts, max_share):
    weights = capped_weights(counts, max_share=max_share)
    assert sum(weights) == pytest.approx(1.0)
    assert all(weight >= 0 for weight in weights)
    if max_share * len(counts) >= 1:
        assert max(weights) <= max_share + 1e-12


# --- fedavg --------------------------------------------------------------------------------------


def test_fedavg_weights_deltas_by_sample_count():
    # weights 1/4, 1/4, 1/2: w = [0.25 + 0.75 + 2.5, 0.5 + 1 + 3], b = 0 + 0.25 + 1
    assert_delta_equal(fedavg([A, B, C], [1, 1, 2], max_share=1.0), {"w": [3.5, 4.5], "b": [1.25]})


def test_fedavg_with_cap_uses_the_redistributed_weights():
    # weights 0.3, 0.3, 0.4: w = [0.3 + 0.9 + 2.0, 0.6 + 1.2 + 2.4], b = 0 + 0.3 + 0.8
    assert_delta_equal(fedavg([A, B, C], [1, 1, 2], max_share=0.4), {"w": [3.2, 4.2], "b": [1.1]})


def test_fedavg_keeps_dtype_and_key_order():
    result = fedavg([A, B], [1, 1], max_share=1.0)
    assert list(result) == ["w", "b"]
    assert all(tensor.dtype == torch.float32 for tensor in result.values())


def test_fedavg_rejects_a_sample_count_per_delta_mismatch():
    with pytest.raises(ValueError, match="2 deltas but 3 sample counts"):
        fedavg([A, B], [1, 1, 1], max_share=1.0)


# --- median and trimmed mean ---------------------------------------------------------------------


def test_median_picks_the_middle_value_per_coordinate():
    deltas = [delta(w=[1, 10, -3]), delta(w=[2, -5, 7]), delta(w=[100, 0, 0])]
    assert_delta_equal(coordinate_median(deltas), {"w": [2, 0, 0]})


def test_median_of_an_even_count_averages_the_two_middle_values():
    deltas = [delta(w=[1, 10, -3]), delta(w=[2, -5, 7]), delta(w=[100, 0, 0]), delta(w=[4, 1, 1])]
    # sorted: [1,2,4,100] -> 3; [-5,0,1,10] -> 0.5; [-3,0,1,7] -> 0.5
    assert_delta_equal(coordinate_median(deltas), {"w": [3, 0.5, 0.5]})


def test_trimmed_mean_drops_the_extremes_at_both_ends():
    deltas = [delta(w=[1, 3]), delta(w=[2, -50]), delta(w=[100, 0]), delta(w=[3, 1]), delta(w=[4, 2])]
    # trim 0.2 of 5 -> drop 1 each end: mean(2, 3, 4) = 3 and mean(0, 1, 2) = 1
    assert_delta_equal(trimmed_mean(deltas, trim_ratio=0.2), {"w": [3, 1]})


def test_trimmed_mean_with_nothing_to_trim_is_the_plain_mean():
    # floor(0.1 * 3) = 0
    assert_delta_equal(trimmed_mean([A, B, C], trim_ratio=0.1), {"w": [3, 4], "b": [1]})


def test_trim_count_floors_without_float_noise():
    assert trim_count(5, 0.39) == 1
    assert trim_count(100, 0.29) == 29  # 0.29 * 100 == 28.999999999999996 in floats
    assert trim_count(3, 0.0) == 0


def test_trimmed_mean_rejects_a_ratio_of_one_half_or_more():
    with pytest.raises(ValueError, match="trim_ratio"):
        trimmed_mean([A, B, C], trim_ratio=0.5)


# --- multi-Krum ----------------------------------------------------------------------------------

# 1-D points 0, 1, 3, 4 and an outlier at 20; f = 1 -> n - f - 2 = 2 nearest neighbours.
POINTS = [delta(w=[x]) for x in (0.0, 1.0, 3.0, 4.0, 20.0)]


def test_krum_scores_sum_squared_distances_to_the_nearest_neighbours():
    # 0: 1 + 9; 1: 1 + 4; 3: 1 + 4; 4: 1 + 9; 20: 256 + 289
    assert krum_scores(POINTS, f=1) == pytest.approx([10, 5, 5, 10, 545])


def test_multi_krum_excludes_the_outlier_and_averages_the_rest():
    result, selected = multi_krum(POINTS, f=1)
    assert selected == [0, 1, 2, 3]
    assert_delta_equal(result, {"w": [2.0]})


def test_multi_krum_with_m_one_is_krum_and_breaks_ties_by_index():
    result, selected = multi_krum(POINTS, f=1, m=1)
    assert selected == [1]
    assert_delta_equal(result, {"w": [1.0]})


def test_multi_krum_on_few_updates_still_uses_one_neighbour():
    # n = 3, f = 1 -> n - f - 2 = 0, clamped to 1: scores 1, 1, 81 -> keep 2 of 3
    deltas = [delta(w=[0.0, 0.0]), delta(w=[1.0, 0.0]), delta(w=[9.0, 0.0])]
    result, selected = multi_krum(deltas, f=1)
    assert selected == [0, 1]
    assert_delta_equal(result, {"w": [0.5, 0.0]})


def test_multi_krum_of_one_update_returns_it():
    result, selected = multi_krum([A], f=1)
    assert selected == [0]
    assert_delta_equal(result, {"w": [1.0, 2.0], "b": [0.0]})


def test_multi_krum_rejects_m_out_of_range():
    with pytest.raises(ValueError, match="between 1 and 5"):
        multi_krum(POINTS, f=1, m=6)


# --- aggregate and helpers -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "expected_w", "expected_selected"),
    [
        ("fedavg", [5.6], [0, 1, 2, 3, 4]),  # equal samples: mean(0, 1, 3, 4, 20)
        ("median", [3.0], [0, 1, 2, 3, 4]),
        ("trimmed_mean", [8 / 3], [0, 1, 2, 3, 4]),  # trim 0.2 -> mean(1, 3, 4)
        ("krum", [2.0], [0, 1, 2, 3]),
    ],
)
def test_aggregate_dispatches_on_the_method_and_reports_who_contributed(
    method, expected_w, expected_selected
):
    settings = AggregationSettings(method=method, trim_ratio=0.2, krum_f=1, max_weight_share=1.0)
    result = aggregate(POINTS, [10] * 5, settings)
    assert isinstance(result, AggregationResult)
    assert_delta_equal(result.delta, {"w": expected_w})
    assert result.selected == expected_selected


def test_aggregate_rejects_an_unknown_method():
    settings = SimpleNamespace(method="mean_of_best", trim_ratio=0.1, krum_f=1, max_weight_share=0.5)
    with pytest.raises(ValueError, match="unknown aggregation method 'mean_of_best'"):
        aggregate([A], [1], settings)


def test_deltas_with_different_tensors_are_refused():
    with pytest.raises(ValueError, match="missing \\['b'\\]"):
        coordinate_median([A, delta(w=[1.0, 2.0])])


def test_deltas_with_different_shapes_are_refused():
    with pytest.raises(ValueError, match="shape"):
        coordinate_median([A, delta(w=[1.0, 2.0, 3.0], b=[0.0])])


def test_integer_deltas_are_refused():
    with pytest.raises(ValueError, match="floating point"):
        coordinate_median([{"w": torch.tensor([1, 2])}])


def test_an_empty_list_of_deltas_is_refused():
    with pytest.raises(ValueError, match="empty"):
        trimmed_mean([], trim_ratio=0.1)
