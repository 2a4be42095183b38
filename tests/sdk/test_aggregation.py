"""Aggregators against values worked out by hand on tiny deltas."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fedmarket.aggregation import (
    AdamState,
    AggregationResult,
    aggregate,
    capped_weights,
    coordinate_median,
    decode_adam_state,
    encode_adam_state,
    fedadam,
    fedavg,
    fedavgm,
    krum_scores,
    multi_krum,
    server_step,
    trim_count,
    trimmed_mean,
)
from fedmarket.chain import RoundInfo
from fedmarket.cid import cid_from_digest, digest_of
from fedmarket.codec import Update, apply_delta, encode_model, state_delta
from fedmarket.errors import FedmarketError, UpdateMismatchError
from fedmarket.ledger import RoundLedger
from fedmarket.models import build_model
from fedmarket.report import RoundReport
from fedmarket.spec import AggregationSettings, mlp_spec
from fedmarket.store import MemoryStore
from fedmarket.verify import NextModel, _check_report, next_global_model


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


# --- server optimizers --------------------------------------------------------------------------


def random_delta(seed: int, scale: float = 1.0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {
        "w": torch.randn(4, 3, generator=generator) * scale,
        "b": torch.randn(3, generator=generator) * scale,
    }


@given(seed=st.integers(0, 2**31 - 1))
@settings(max_examples=25, deadline=None)
def test_fedavgm_with_momentum_zero_and_lr_one_is_fedavg_bit_for_bit(seed):
    weights, last_step = random_delta(seed), random_delta(seed + 1)
    deltas = [random_delta(seed + 2 + i, scale=1e-3) for i in range(3)]
    deltas[0]["b"][0] = -0.0  # a signed zero survives too
    plain = fedavg(deltas, [10, 20, 30], max_share=0.5)
    settings_m0 = AggregationSettings(
        server_optimizer="fedavgm", server_momentum=0.0, server_learning_rate=1.0
    )
    stepped = server_step(plain, settings_m0, last_step=last_step)
    assert stepped.state is None
    assert encode_model(apply_delta(weights, stepped.step)) == encode_model(apply_delta(weights, plain))
    none = server_step(plain, AggregationSettings(server_learning_rate=0.5), last_step=last_step)
    assert encode_model(apply_delta(weights, none.step)) == encode_model(apply_delta(weights, plain))


def test_fedavgm_matches_two_steps_worked_out_by_hand():
    # v1 = d1 = [1, -2]; x1 = x0 + 0.5 * v1 = [0.5, -1].
    # v2 = 0.9 * v1 + d2 = [1.4, -0.8]; x2 = x1 + 0.5 * v2 = [1.2, -1.4].
    # The second step only sees x1 - x0 (= 0.5 * v1), as anyone reading the published models does.
    x0, d1, d2 = delta(w=[0.0, 0.0]), delta(w=[1.0, -2.0]), delta(w=[0.5, 1.0])
    x1 = apply_delta(x0, fedavgm(d1, None, learning_rate=0.5, momentum=0.9))
    assert_delta_equal(x1, {"w": [0.5, -1.0]})
    x2 = apply_delta(x1, fedavgm(d2, state_delta(x1, x0), learning_rate=0.5, momentum=0.9))
    assert_delta_equal(x2, {"w": [1.2, -1.4]})


def test_fedadam_matches_two_steps_worked_out_by_hand():
    lr, b1, b2, tau = 0.1, 0.9, 0.99, 0.01
    d1, d2 = delta(w=[0.5, -2.0]), delta(w=[0.5, 1.0])
    # Step 1 from m = 0, v = tau**2: m = 0.1 * d, v = 0.99e-4 + 0.01 * d**2.
    m1, v1 = [0.05, -0.2], [0.99e-4 + 0.0025, 0.99e-4 + 0.04]
    first = fedadam(d1, None, learning_rate=lr, beta1=b1, beta2=b2, tau=tau)
    assert_delta_equal(first.state.m, {"w": m1})
    assert_delta_equal(first.state.v, {"w": v1})
    assert_delta_equal(
        first.step, {"w": [lr * m / (math.sqrt(v) + tau) for m, v in zip(m1, v1, strict=True)]}
    )
    # Step 2 from the stored moments: m = 0.9 * m1 + 0.1 * d2, v = 0.99 * v1 + 0.01 * d2**2.
    m2 = [0.9 * 0.05 + 0.05, 0.9 * -0.2 + 0.1]
    v2 = [0.99 * v1[0] + 0.01 * 0.25, 0.99 * v1[1] + 0.01 * 1.0]
    second = fedadam(d2, first.state, learning_rate=lr, beta1=b1, beta2=b2, tau=tau)
    assert_delta_equal(second.state.m, {"w": m2})
    assert_delta_equal(second.state.v, {"w": v2})
    assert_delta_equal(
        second.step, {"w": [lr * m / (math.sqrt(v) + tau) for m, v in zip(m2, v2, strict=True)]}
    )
    assert second.step["w"].dtype == torch.float32


def test_server_step_dispatches_on_the_server_optimizer():
    d, last = delta(w=[1.0, 2.0]), delta(w=[4.0, 8.0])
    momentum = AggregationSettings(server_optimizer="fedavgm", server_momentum=0.5, server_learning_rate=2.0)
    assert_delta_equal(server_step(d, momentum, last_step=last).step, {"w": [4.0, 8.0]})  # 2 * d + 0.5 * last
    adam = AggregationSettings(server_optimizer="fedadam", server_learning_rate=0.1, adam_tau=0.01)
    stepped = server_step(d, adam)
    assert isinstance(stepped.state, AdamState)
    with pytest.raises(ValueError, match="unknown server optimizer 'sgd'"):
        server_step(d, SimpleNamespace(server_optimizer="sgd"))


def test_adam_state_round_trips_through_the_store_as_safetensors():
    state = fedadam(random_delta(3), None, learning_rate=0.1, beta1=0.9, beta2=0.99, tau=1e-3).state
    store = MemoryStore()
    cid = store.put(encode_adam_state(state))
    blob = store.get(cid)
    assert blob[8:].lstrip().startswith(b"{")  # a safetensors JSON header, no pickle
    again = decode_adam_state(blob, model=random_delta(0))
    for name in ("m", "v"):
        assert all(torch.equal(getattr(again, name)[k], getattr(state, name)[k]) for k in ("w", "b"))
    assert encode_adam_state(again) == blob  # deterministic bytes: the same state, the same CID


def test_adam_state_that_does_not_fit_the_model_is_refused():
    state = fedadam(random_delta(3), None, learning_rate=0.1, beta1=0.9, beta2=0.99, tau=1e-3).state
    with pytest.raises(UpdateMismatchError):
        decode_adam_state(encode_adam_state(state), model={"w": torch.zeros(4, 3)})
    with pytest.raises(UpdateMismatchError):  # a model blob is not a state blob
        decode_adam_state(encode_model(random_delta(0)), model=random_delta(0))


# --- the published model from public data alone (fedmarket.verify.next_global_model) ----------------


class RecordedChain:
    """The two things next_global_model reads from a chain: each earlier round's RoundInfo."""

    def __init__(self) -> None:
        self.rounds: dict[int, RoundInfo] = {}

    def round(self, task_id: int, round_no: int) -> RoundInfo:
        return self.rounds[round_no]

    def record(self, round_no: int, *, model: bytes, new_model: bytes = b"", report: bytes = b"") -> None:
        self.rounds[round_no] = RoundInfo(
            task_id=1, round_no=round_no, commit_deadline=0, reveal_deadline=0, score_commit_deadline=0,
            score_reveal_deadline=0, commit_count=0, reveal_count=0, score_commit_count=0,
            score_reveal_count=0, closed=True, aborted=not new_model, model_published=bool(new_model),
            closed_at=0, payout=0, model_hash=model, new_model_hash=new_model, report_hash=report,
        )  # fmt: skip


def publish(store: MemoryStore, chain: RecordedChain, round_no: int, model: bytes, result: NextModel) -> None:
    """What the coordinator stores and publishes for a round: model, state, the report naming both."""
    store.put(result.model_blob)
    if result.state_blob is not None:
        store.put(result.state_blob)
    report = RoundReport(
        task_id=1, round=round_no, model_cid=cid_from_digest(model), new_model_cid=cid_from_digest(result.model_hash),
        aggregation="fedavg", budget=0, payout=0, submissions=(), validators=(), timings={},
        server_state_cid=result.state_cid,
    )  # fmt: skip
    chain.record(round_no, model=model, new_model=result.model_hash, report=put_report(store, report))


def put_report(store: MemoryStore, report: RoundReport) -> bytes:
    """Stores the report; returns its hash (the on-chain reportHash)."""
    store.put(report.to_canonical_json())
    return report.report_hash()


@pytest.mark.parametrize(
    "aggregation",
    [
        {"server_optimizer": "fedavgm", "server_momentum": 0.9, "server_learning_rate": 0.7},
        {"server_optimizer": "fedadam", "server_learning_rate": 0.05},
    ],
)
def test_every_round_recomputed_from_public_data_is_the_uninterrupted_run(aggregation):
    """What `fedmarket verify` and a restarted coordinator compute, round by round, from the chain and
    the store alone, equals one process stepping the optimizer with its state in memory; an aborted
    round (3) and a round with nothing to aggregate (4) step nothing."""
    spec = mlp_spec(name="tiny", input_dim=4, num_classes=3, hidden=(3,), aggregation=aggregation)
    store, chain = MemoryStore(), RecordedChain()
    weights = {k: v.detach().clone() for k, v in build_model(spec).state_dict().items()}
    blob = encode_model(weights)
    store.put(blob)
    model = digest_of(blob)
    last_step, adam = None, None  # the uninterrupted run's memory
    for round_no in range(1, 7):
        if round_no == 3:
            chain.record(round_no, model=model)  # aborted: the model stays, and so does the state
            continue
        count = 0 if round_no == 4 else 3
        deltas = [
            {k: torch.randn(v.shape, generator=torch.Generator().manual_seed(10 * round_no + i)) * 0.1
             for k, v in weights.items()}
            for i in range(count)
        ]  # fmt: skip
        updates = [
            Update(d, task_id=1, round=round_no, trainer="0x" + "a1" * 20, num_samples=5 + i)
            for i, d in enumerate(deltas)
        ]
        ledger = RoundLedger(task_id=1, round_no=round_no, model_hash=model)
        result = next_global_model(chain, store, spec, ledger, weights, updates)
        if deltas:
            aggregated = aggregate(deltas, [u.num_samples for u in updates], spec.aggregation).delta
            step = server_step(aggregated, spec.aggregation, last_step=last_step, state=adam)
            expected = apply_delta(weights, step.step)
            adam = step.state
        else:
            expected = weights
        last_step = state_delta(expected, weights)
        assert result.model_hash == digest_of(encode_model(expected)), f"round {round_no}"
        assert result.state_blob == (encode_adam_state(adam) if adam is not None else None)
        publish(store, chain, round_no, model, result)
        weights, model = expected, result.model_hash


def test_a_round_training_a_model_the_previous_round_did_not_publish_cannot_be_recomputed():
    spec = mlp_spec(
        name="tiny", input_dim=4, num_classes=3, hidden=(3,), aggregation={"server_optimizer": "fedavgm"}
    )
    chain = RecordedChain()
    chain.record(1, model=b"\x01" * 32, new_model=b"\x02" * 32)
    ledger = RoundLedger(task_id=1, round_no=2, model_hash=b"\x03" * 32)
    weights = build_model(spec).state_dict()
    with pytest.raises(FedmarketError, match="which round 1 did not publish"):
        next_global_model(chain, MemoryStore(), spec, ledger, weights, [])


def test_verify_names_a_report_whose_server_state_is_not_the_recomputed_one():
    store = MemoryStore()
    report = RoundReport(
        task_id=1, round=1, model_cid="bafkreia", new_model_cid=cid_from_digest(b"\x02" * 32), aggregation="fedavg",
        budget=0, payout=0, submissions=(), validators=(), timings={}, server_state_cid="bafkreiwrong",
    )  # fmt: skip
    round_info = SimpleNamespace(report_hash=put_report(store, report), new_model_hash=b"\x02" * 32)
    ledger = RoundLedger(task_id=1, round_no=1)
    consensus = SimpleNamespace(by_trainer=dict)
    right = NextModel(model_blob=b"", state_blob=b"the recomputed state")
    findings = list(_check_report(store, ledger, round_info, consensus, right))
    assert [f.what for f in findings] == ["report"]
    assert "server optimizer state bafkreiwrong" in findings[0].detail
    assert not list(_check_report(store, ledger, round_info, consensus, None))  # no recomputation, no claim
