"""The validators' scoring rules (leave-one-out and Shapley) on hand-made deltas of a tiny linear model.

No chain, no store: the inputs are bytes and numbers, as a validator node hands them in. The
validator's "loss" is ``||weights - TARGET||^2`` over every tensor, so a delta moving the global
model (all zeros) toward TARGET helps, and its leave-one-out or Shapley value can be worked out by hand.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest
import torch
from eth_utils import to_checksum_address

from fedmarket.cid import digest_of
from fedmarket.codec import encode_update
from fedmarket.consensus import HARMFUL, INVALID, MAX_SCORE, UNAVAILABLE
from fedmarket.report import RejectionReason
from fedmarket.scoring import (
    EXACT_SHAPLEY_MAX,
    SCORE_UNIT,
    Coalitions,
    Reference,
    Revealed,
    leave_one_out_values,
    score_round,
    screen_updates,
    shapley_values,
    to_entry,
)
from fedmarket.spec import AggregationSettings, mlp_spec

TASK, ROUND = 7, 3
A, B, C, D = (f"0x{i:040x}" for i in range(0xA1, 0xA5))  # lower-case, not checksummed
SPEC = mlp_spec(
    name="tiny", input_dim=2, num_classes=2, hidden=(), norm_bound=5.0,
    aggregation={"method": "fedavg", "max_weight_share": 1.0},
    # These hand-made deltas are all multiples of one vector: copy, norm and signal screening (tested below,
    # on SCREENED) would flag them, so it is off here.
    scoring={"method": "loo", "harm_threshold": -0.5, "copy_similarity": 1.0, "max_norm_ratio": 0, "signal_z": 0},
)  # fmt: skip
SHAPLEY = SPEC.model_copy(update={"scoring": SPEC.scoring.model_copy(update={"method": "shapley"})})
GLOBAL = {"0.weight": torch.zeros(2, 2), "0.bias": torch.zeros(2)}
TARGET = {"0.weight": torch.ones(2, 2), "0.bias": torch.ones(2)}  # loss of GLOBAL: 6
FEDAVG = AggregationSettings(method="fedavg", max_weight_share=1.0)


def loss_of_state(state) -> np.ndarray:
    """One "sample": the distance to TARGET (with one sample there is no standard error)."""
    return np.array([float(sum(((state[k] - TARGET[k]) ** 2).sum() for k in TARGET))])


def delta(value: float) -> dict[str, torch.Tensor]:
    return {"0.weight": torch.full((2, 2), value), "0.bias": torch.full((2,), value)}


def update(author: str, value: float, *, samples: int = 10, **metadata) -> bytes:
    fields = {"task_id": TASK, "round": ROUND, "trainer": author, "num_samples": samples, **metadata}
    return encode_update(delta(value), **fields)


def revealed(trainer: str, data: bytes | None, *, update_hash: bytes | None = None) -> Revealed:
    return Revealed(trainer, update_hash or digest_of(data or b""), data)


def score(reveals, spec=SPEC):
    return score_round(
        spec=spec,
        task_id=TASK,
        round_no=ROUND,
        global_state=GLOBAL,
        revealed=reveals,
        losses_of_state=loss_of_state,
    )


def test_honest_updates_get_the_value_of_their_content_in_score_units():
    # Both (equal samples): weights 0.75, loss 6 * 0.25**2 = 0.375. A zeroed (weight kept): 0.25,
    # loss 3.375, so A's value is 3.0. B zeroed: 0.5, loss 1.5, so B's value is 1.125: its content
    # helps, even though dropping it altogether would let A's step grow (and look better).
    entries = score([revealed(A, update(A, 1.0)), revealed(B, update(B, 0.5))])
    a, b = entries[to_checksum_address(A)], entries[to_checksum_address(B)]
    assert a.value == pytest.approx(3.0) and a.entry == round(a.value / SCORE_UNIT)
    assert b.value == pytest.approx(1.125) and b.entry == round(b.value / SCORE_UNIT)


def test_a_zero_update_is_worth_exactly_nothing_even_when_it_shrinks_an_overshooting_step():
    # A overshoots (2.0 where 1.0 is best): a zero update halves the step and the loss drops to 0,
    # yet its content adds nothing, so its value is 0 (dropping it would have credited it 6.0).
    entries = score([revealed(A, update(A, 2.0)), revealed(B, update(B, 0.0))])
    assert entries[to_checksum_address(B)].value == 0.0 and entries[to_checksum_address(B)].entry == 0


def test_entries_are_keyed_by_checksummed_address():
    entries = score([revealed(A, update(A, 1.0))])
    assert list(entries) == [to_checksum_address(A)]


def test_a_single_update_is_valued_against_the_unchanged_model():
    entries = score([revealed(A, update(A, 1.0))])
    assert entries[to_checksum_address(A)].value == pytest.approx(6.0)


def test_a_missing_blob_is_unavailable_not_invalid():
    entries = score([revealed(A, None, update_hash=b"\x01" * 32), revealed(B, update(B, 1.0))])
    flagged = entries[to_checksum_address(A)]
    assert (flagged.entry, flagged.reason) == (UNAVAILABLE, RejectionReason.NOT_UPLOADED)


@pytest.mark.parametrize(
    ("metadata", "reason"),
    [
        ({"task_id": TASK + 1}, RejectionReason.WRONG_METADATA),
        ({"round": ROUND - 1}, RejectionReason.WRONG_METADATA),
    ],
)
def test_an_update_made_for_another_task_or_round_is_invalid(metadata, reason):
    entries = score([revealed(A, update(A, 1.0, **metadata)), revealed(B, update(B, 1.0))])
    assert (entries[to_checksum_address(A)].entry, entries[to_checksum_address(A)].reason) == (
        INVALID,
        reason,
    )


def test_another_trainers_update_replayed_is_invalid():
    entries = score([revealed(A, update(B, 1.0)), revealed(B, update(B, 0.5))])
    assert entries[to_checksum_address(A)].reason == RejectionReason.WRONG_METADATA


def test_of_two_identical_updates_the_first_revealed_keeps_its_place():
    blob = update(A, 1.0)
    entries = score([revealed(A, blob), revealed(B, blob)])
    assert entries[to_checksum_address(A)].entry > 0
    assert entries[to_checksum_address(B)].reason == RejectionReason.DUPLICATE


def test_garbage_and_an_update_over_the_norm_bound_are_invalid():
    garbage = struct.pack("<Q", 8) + b"{}" + b"\x00" * 6
    entries = score([revealed(A, garbage), revealed(B, update(B, 10.0)), revealed(C, update(C, 1.0))])
    assert entries[to_checksum_address(A)].reason == RejectionReason.INVALID
    assert entries[to_checksum_address(B)].reason == RejectionReason.NORM_BOUND
    assert all(entries[to_checksum_address(t)].entry == INVALID for t in (A, B))


def test_a_harmful_update_is_flagged_and_the_others_are_scored_again_without_it():
    entries = score([revealed(A, update(A, 1.0)), revealed(B, update(B, 1.0)), revealed(C, update(C, -2.0))])
    assert entries[to_checksum_address(C)].entry == HARMFUL
    # Scored again without C: A and B both at 1.0, loss 0; either zeroed: 0.5, loss 1.5.
    assert entries[to_checksum_address(A)].value == pytest.approx(1.5)


def test_scores_are_clipped_to_the_contracts_range():
    assert to_entry(1e40) == MAX_SCORE and to_entry(-1e40) == -MAX_SCORE


@pytest.mark.parametrize("values_of", [leave_one_out_values, shapley_values])
def test_no_updates_have_no_values(values_of):
    coalitions = Coalitions([], [], settings=FEDAVG, losses_of=lambda d: np.zeros(1))
    assert values_of(coalitions, spec=SPEC, seed=0) == []


def test_a_value_within_the_noise_of_the_validators_data_scores_zero():
    # Two "samples" that disagree: the improvement averages 0.05 with a standard error of 0.95.
    def noisy_losses(state) -> np.ndarray:
        shift = float(state["0.bias"][0])
        return np.array([1.0 - shift, 1.0 + 0.9 * shift])

    def entry_with(significance: float) -> tuple:
        spec = mlp_spec(
            name="tiny", input_dim=2, num_classes=2, hidden=(), norm_bound=5.0,
            scoring={"method": "loo", "harm_threshold": -0.5, "significance": significance},
        )  # fmt: skip
        entries = score_round(
            spec=spec, task_id=TASK, round_no=ROUND, global_state=GLOBAL,
            revealed=[revealed(A, update(A, 1.0))], losses_of_state=noisy_losses,
        )  # fmt: skip
        scored = entries[to_checksum_address(A)]
        return scored.value, scored.stderr, scored.entry

    value, stderr, entry = entry_with(2.0)
    assert value == pytest.approx(0.05) and stderr == pytest.approx(0.95)
    assert entry == 0  # not significant: paid nothing, flagged nothing
    assert entry_with(0.0)[2] == round(0.05 / SCORE_UNIT)  # off: every value counts


# --- Shapley ---------------------------------------------------------------------------------------


def test_shapley_splits_the_rounds_value_by_hand():
    # Coalition values (loss improvement from 6): {A} 4.5, {B} 2.625, {A, B} 5.625 (see the LOO
    # test for the weights). A: (4.5 + (5.625 - 2.625)) / 2 = 3.75; B: (2.625 + 1.125) / 2 = 1.875.
    entries = score([revealed(A, update(A, 1.0)), revealed(B, update(B, 0.5))], spec=SHAPLEY)
    assert entries[to_checksum_address(A)].value == pytest.approx(3.75)
    assert entries[to_checksum_address(B)].value == pytest.approx(1.875)


def test_shapley_values_add_up_to_the_rounds_value_and_a_zero_update_gets_nothing():
    values = [0.3, -0.1, 0.0, 0.45, 0.2]
    trainers = [f"0x{i:040x}" for i in range(0xB1, 0xB1 + len(values))]
    entries = score([revealed(t, update(t, v)) for t, v in zip(trainers, values, strict=True)], spec=SHAPLEY)
    everyone = (
        loss_of_state(GLOBAL)[0] - loss_of_state({k: torch.full_like(t, 0.17) for k, t in GLOBAL.items()})[0]
    )
    assert sum(entries[to_checksum_address(t)].value for t in trainers) == pytest.approx(everyone)
    assert entries[to_checksum_address(trainers[2])].value == 0.0  # the null player


def sampled_coalitions(n: int):
    deltas = [delta(0.1 + 0.02 * i) for i in range(n)]
    settings = AggregationSettings(method="fedavg", max_weight_share=1.0)
    losses_of = lambda d: loss_of_state({k: GLOBAL[k] + d[k] for k in GLOBAL})  # noqa: E731
    return Coalitions(deltas, [10] * n, settings=settings, losses_of=losses_of)


def test_sampled_shapley_is_seeded_bounded_and_adds_up_within_its_truncation():
    n = EXACT_SHAPLEY_MAX + 4
    spec = SHAPLEY.model_copy(update={"scoring": SHAPLEY.scoring.model_copy(update={"max_evaluations": 200})})
    first, coalitions = shapley_values(sampled_coalitions(n), spec=spec, seed=42), sampled_coalitions(n)
    again = shapley_values(coalitions, spec=spec, seed=42)
    assert [v.mean for v in first] == [v.mean for v in again]  # every validator draws the same permutations
    assert coalitions.evaluations <= 200 + n  # the budget, plus the last permutation begun
    everyone = float(coalitions.losses(frozenset()).mean() - coalitions.losses(frozenset(range(n))).mean())
    assert sum(v.mean for v in first) == pytest.approx(everyone, rel=0.02)
    assert first[-1].mean > first[0].mean > 0  # the larger step toward the target is worth more


# --- copies and outliers -------------------------------------------------------------------------
# Screening runs on SCREENED (the default thresholds) with deltas in different directions.

SCREENED = mlp_spec(
    name="tiny", input_dim=2, num_classes=2, hidden=(), norm_bound=50.0,
    aggregation={"method": "fedavg", "max_weight_share": 1.0}, scoring={"method": "loo", "harm_threshold": -1e6},
)  # fmt: skip
DIRECTIONS = {  # pairwise |cosine| well below the 0.99 default
    A: ([1.0, 0.2, 0.1, 0.0], [0.3, 0.1]),
    B: ([0.1, 1.0, 0.0, 0.3], [0.0, 0.4]),
    C: ([0.0, 0.2, 1.0, 0.1], [0.5, 0.0]),
    D: ([0.2, 0.0, 0.3, 1.0], [0.1, 0.6]),
}


def directed(trainer: str, scale: float = 1.0) -> dict[str, torch.Tensor]:
    weight, bias = DIRECTIONS[trainer]
    return {"0.weight": scale * torch.tensor(weight).reshape(2, 2), "0.bias": scale * torch.tensor(bias)}


def screened(deltas: dict[str, dict[str, torch.Tensor]], references=(), spec=SCREENED):
    reveals = [
        revealed(t, encode_update(d, task_id=TASK, round=ROUND, trainer=t, num_samples=10))
        for t, d in deltas.items()
    ]
    return score_round(
        spec=spec, task_id=TASK, round_no=ROUND, global_state=GLOBAL, revealed=reveals,
        losses_of_state=loss_of_state, references=list(references),
    )  # fmt: skip


def reason_of(entries, trainer: str):
    return entries[to_checksum_address(trainer)].entry, entries[to_checksum_address(trainer)].reason


def test_updates_in_different_directions_pass_the_screen():
    entries = screened({t: directed(t) for t in (A, B, C)})
    assert all(reason_of(entries, t)[1] is None for t in (A, B, C))


def test_a_zero_update_is_flagged_as_a_copy_of_the_global_model():
    entries = screened(
        {A: directed(A), B: directed(B), C: {k: torch.zeros_like(v) for k, v in GLOBAL.items()}}
    )
    assert reason_of(entries, C) == (INVALID, RejectionReason.COPY)
    assert "zero update" in entries[to_checksum_address(C)].detail
    assert reason_of(entries, A)[1] is None


def test_an_echo_of_the_last_aggregate_and_its_negation_are_copies():
    last = Reference("the previous round's aggregate", directed(D, 0.7))
    echo = {k: v + 1e-4 for k, v in directed(D, 0.7).items()}  # near-equal, not equal
    replay = directed(D, -0.7)  # minus the last aggregate: the previous model replayed
    entries = screened({A: directed(A), B: echo, C: replay}, references=[last])
    assert reason_of(entries, B) == (INVALID, RejectionReason.COPY)
    assert reason_of(entries, C) == (INVALID, RejectionReason.COPY)
    assert "the previous round's aggregate" in entries[to_checksum_address(B)].detail
    assert reason_of(entries, A)[1] is None


def test_a_replay_of_an_earlier_update_is_a_copy_even_of_the_trainers_own():
    earlier = Reference(f"{to_checksum_address(A)}'s round {ROUND - 1} update", directed(A))
    entries = screened({A: directed(A, 1.01), B: directed(B), C: directed(C)}, references=[earlier])
    assert reason_of(entries, A) == (INVALID, RejectionReason.COPY)
    assert reason_of(entries, B)[1] is None


def test_the_same_update_from_two_trainers_in_one_round_flags_both():
    # Commit-reveal rules out an honest same-round copy, so identical vectors mean collusion (ALIE, IPM).
    entries = screened({A: directed(A), B: directed(C), C: directed(C, 1.001)})
    assert reason_of(entries, B) == (INVALID, RejectionReason.COPY)
    assert reason_of(entries, C) == (INVALID, RejectionReason.COPY)
    assert reason_of(entries, A)[1] is None


def test_an_update_far_above_the_rounds_median_norm_is_an_outlier():
    entries = screened({A: directed(A), B: directed(B), C: directed(C), D: directed(D, 10.0)})
    assert reason_of(entries, D) == (INVALID, RejectionReason.NORM_OUTLIER)
    assert all(reason_of(entries, t)[1] is None for t in (A, B, C))
    off = SCREENED.model_copy(update={"scoring": SCREENED.scoring.model_copy(update={"max_norm_ratio": 0})})
    assert reason_of(screened({A: directed(A), B: directed(B), D: directed(D, 10.0)}, spec=off), D)[1] is None


def test_copy_similarity_one_turns_copy_screening_off():
    off = SCREENED.model_copy(
        update={"scoring": SCREENED.scoring.model_copy(update={"copy_similarity": 1.0})}
    )
    entries = screened({A: directed(A), B: directed(C), C: directed(C, 1.001)}, spec=off)
    assert all(reason_of(entries, t)[1] is None for t in (A, B, C))


def test_an_update_as_orthogonal_to_the_validators_own_as_noise_carries_no_signal():
    # Six parameters: with signal_z 0.05 the noise band is |cosine| <= 0.05 / sqrt(6) = 0.020, and
    # the screen runs while the round's median |cosine| is 10 bands or more (here 0.28). The
    # validator's own update points along A; an orthogonal update is flagged, while a flipped one
    # (|cosine| 0.28, a signal, only a harmful one) is left to the harm rule.
    spec = SCREENED.model_copy(update={"scoring": SCREENED.scoring.model_copy(update={"signal_z": 0.05})})
    orthogonal = {"0.weight": torch.tensor([[0.0, 0.0], [0.0, 1.0]]), "0.bias": torch.tensor([0.0, 0.0])}
    reveals = {A: directed(A), B: directed(B, -1.0), C: orthogonal}
    entries = score_round(
        spec=spec, task_id=TASK, round_no=ROUND, global_state=GLOBAL, losses_of_state=loss_of_state,
        revealed=[
            revealed(t, encode_update(d, task_id=TASK, round=ROUND, trainer=t, num_samples=10))
            for t, d in reveals.items()
        ],
        validator_update=directed(A, 0.5),
    )  # fmt: skip
    assert reason_of(entries, C) == (INVALID, RejectionReason.NO_SIGNAL)
    assert reason_of(entries, A)[1] is None and reason_of(entries, B)[1] is None


def test_the_signal_screen_rests_once_honest_updates_fall_into_the_noise_band():
    # Near convergence every update is nearly orthogonal to the validator's own: none is flagged.
    spec = SCREENED.model_copy(update={"scoring": SCREENED.scoring.model_copy(update={"signal_z": 0.05})})
    tilted = {"0.weight": torch.tensor([[0.01, 0.0], [0.0, 1.0]]), "0.bias": torch.tensor([0.0, 0.0])}
    other = {"0.weight": torch.tensor([[0.0, 0.0], [1.0, 0.01]]), "0.bias": torch.tensor([0.0, 0.0])}
    flags = screen_updates([A, B], [tilted, other], [], spec=spec, own_update=directed(A, 0.5))
    assert flags == {}
