"""decide_round on hand-made deltas of a tiny linear model, with a quadratic validation "loss".

No chain, no store: the round's inputs are bytes and numbers, as the orchestrator hands them in.
The loss is ``||weights - TARGET||^2`` over every tensor, so a delta that moves the global model
(all zeros) toward TARGET helps, and its leave-one-out value can be worked out by hand.
"""

from __future__ import annotations

import struct

import pytest
import torch
from eth_utils import to_checksum_address

from backend.aggregation import coordinate_median, fedavg, trimmed_mean
from backend.scoring import leave_one_out_values, split_payouts
from backend.settlement import Revealed, decide_round
from fedmarket.cid import digest_of
from fedmarket.codec import encode_update
from fedmarket.spec import mlp_spec

TASK, ROUND = 7, 3
A, B, C, D, E, F, G, H = (f"0x{i:040x}" for i in range(0xA1, 0xA9))  # lower-case, not checksummed
SPEC = mlp_spec(
    name="tiny", input_dim=2, num_classes=2, hidden=(), norm_bound=5.0,
    aggregation={"method": "fedavg", "max_weight_share": 1.0},
    scoring={"base_share": 0.2, "harm_threshold": -0.5},
)  # fmt: skip
GLOBAL = {"0.weight": torch.zeros(2, 2), "0.bias": torch.zeros(2)}
TARGET = {"0.weight": torch.ones(2, 2), "0.bias": torch.ones(2)}  # loss of GLOBAL: 6


def loss_of_state(state) -> float:
    return float(sum(((state[k] - TARGET[k]) ** 2).sum() for k in TARGET))


def evaluate_state(state) -> tuple[float, float]:
    loss = loss_of_state(state)
    return loss, 1.0 / (1.0 + loss)  # an "accuracy" that rises as the loss falls


def delta(value: float) -> dict[str, torch.Tensor]:
    return {"0.weight": torch.full((2, 2), value), "0.bias": torch.full((2,), value)}


def update(author: str, value: float, *, samples: int = 10, **metadata) -> bytes:
    """`author`'s update moving every weight by `value`; `metadata` overrides what it says."""
    fields = {"task_id": TASK, "round": ROUND, "trainer": author, "num_samples": samples, **metadata}
    return encode_update(delta(value), **fields)


def revealed(trainer: str, data: bytes | None, *, update_hash: bytes | None = None) -> Revealed:
    return Revealed(trainer, update_hash or digest_of(data), data)


def decide(committers, reveals, *, budget: int = 1000, spec=SPEC, budget_for=None):
    return decide_round(
        spec=spec, task_id=TASK, round_no=ROUND, global_state=GLOBAL, committers=committers, revealed=reveals,
        budget_for=budget_for or (lambda rejected: budget), evaluate_state=evaluate_state,
    )  # fmt: skip


def by_trainer(decision) -> dict:
    return {v.trainer.lower(): v for v in decision.verdicts}


def with_nan(data: bytes, value: float) -> bytes:
    """`data` with the first float32 equal to `value` replaced by NaN (encode_update refuses NaN)."""
    needle = struct.pack("<f", value)
    assert needle in data
    return data.replace(needle, struct.pack("<f", float("nan")), 1)


# ---------------------------------------------------------------------- accepted updates


def test_honest_updates_are_aggregated_scored_and_paid_by_their_value():
    # A moves every weight by 0.5 (10 samples), B by 0.4 (30 samples).
    decision = decide([A, B], [revealed(A, update(A, 0.5)), revealed(B, update(B, 0.4, samples=30))])
    verdicts = by_trainer(decision)
    assert all(v.accepted and v.reason is None for v in verdicts.values())
    assert verdicts[A.lower()].num_samples == 10 and verdicts[B.lower()].num_samples == 30
    assert verdicts[A.lower()].norm == pytest.approx(0.5 * 6**0.5)

    # FedAvg by samples: 0.25 * 0.5 + 0.75 * 0.4 = 0.425 on every weight.
    expected = fedavg([delta(0.5), delta(0.4)], [10, 30], max_share=1.0)
    for key in GLOBAL:
        torch.testing.assert_close(decision.new_state[key], GLOBAL[key] + expected[key])
    # Loss 6 * (1 - 0.425)^2 with both; without A: 6 * 0.6^2; without B: 6 * 0.5^2.
    all_loss = 6 * 0.575**2
    assert verdicts[A.lower()].score == pytest.approx(6 * 0.6**2 - all_loss)
    assert verdicts[B.lower()].score == pytest.approx(6 * 0.5**2 - all_loss)  # < 0: B dilutes A's bigger step
    assert decision.metrics.loss == pytest.approx(all_loss) and decision.metrics.previous_loss == 6.0
    assert decision.metrics.accepted == 2 and decision.metrics.rejected == 0
    # B's value is negative but above the harm threshold: accepted, paid the base share only.
    assert decision.payouts == {verdicts[A.lower()].trainer: 900, verdicts[B.lower()].trainer: 100}
    assert decision.total_payout == decision.budget == 1000
    assert decision.rejected == []


def test_verdicts_name_trainers_checksummed_whatever_case_they_came_in():
    decision = decide(
        [A.upper().replace("0X", "0x"), B],
        [revealed(A.upper().replace("0X", "0x"), update(A, 0.5)), revealed(B, update(B, 0.5))],
    )
    assert {v.trainer for v in decision.verdicts} == {to_checksum_address(A), to_checksum_address(B)}
    assert all(v.accepted for v in decision.verdicts)
    assert set(decision.payouts) == {to_checksum_address(A), to_checksum_address(B)}


def test_a_single_update_is_valued_against_the_unchanged_model():
    decision = decide([A], [revealed(A, update(A, 0.5))])
    [verdict] = decision.verdicts
    assert verdict.score == pytest.approx(6.0 - 6 * 0.5**2)
    assert decision.payouts == {verdict.trainer: 1000}  # base and rest both go to the only trainer


def test_a_zero_update_is_accepted_but_earns_only_the_base_share():
    reveals = [
        revealed(A, update(A, 0.5)),
        revealed(B, update(B, 0.5, samples=20)),
        revealed(C, update(C, 0.0, samples=2)),
    ]
    decision = decide([A, B, C], reveals)
    verdicts = by_trainer(decision)
    assert verdicts[C.lower()].accepted and verdicts[C.lower()].norm == 0.0
    assert verdicts[C.lower()].score < 0  # it dilutes the others
    assert verdicts[C.lower()].payout == 1000 * 2 // 10 // 3
    assert verdicts[A.lower()].payout > verdicts[C.lower()].payout


# ---------------------------------------------------------------------- refusals


def test_every_refusal_reason_and_the_budget_counts_every_rejected_trainer():
    honest_a, honest_b = update(A, 0.5), update(B, 0.5, samples=20)
    reveals = [
        revealed(A, honest_a),
        revealed(B, honest_b),
        revealed(C, None, update_hash=digest_of(b"never uploaded")),  # not in the store
        revealed(D, b"\x00garbage"),
        revealed(E, honest_a),  # A's exact bytes
        revealed(F, update(F, 0.5, round=ROUND + 1)),  # made for another round
        revealed(G, update(G, 3.0)),  # norm 3 * sqrt(6) > 5
        revealed(H, with_nan(update(H, 0.125), 0.125)),
    ]
    asked = []

    def budget_for(rejected):
        asked.append(sorted(rejected))
        return 1000 + 50 * len(rejected)  # each slash adds to the pool

    silent = "0x" + "b0" * 20
    decision = decide([A, B, C, D, E, F, G, H, silent], reveals, budget_for=budget_for)
    reasons = {trainer: v.reason for trainer, v in by_trainer(decision).items()}
    assert reasons == {
        A.lower(): None, B.lower(): None, C.lower(): "not_uploaded", D.lower(): "invalid", E.lower(): "duplicate",
        F.lower(): "wrong_metadata", G.lower(): "norm_bound", H.lower(): "invalid", silent: "no_reveal",
    }  # fmt: skip
    assert all(v.detail for v in decision.verdicts if not v.accepted)
    assert all(v.payout == 0 for v in decision.verdicts if not v.accepted)
    assert sorted(t.lower() for t in decision.rejected) == sorted([C, D, E, F, G, H, silent])
    assert asked == [sorted(decision.rejected)]
    assert decision.budget == 1000 + 50 * 7
    assert decision.total_payout <= decision.budget
    assert decision.metrics.accepted == 2 and decision.metrics.rejected == 7


@pytest.mark.parametrize(
    ("metadata", "reason"),
    [
        ({"task_id": TASK + 1}, "wrong_metadata"),
        ({"trainer": A}, "wrong_metadata"),
        ({"round": ROUND - 1}, "wrong_metadata"),
    ],
)
def test_an_update_made_for_another_task_round_or_trainer_is_a_replay(metadata, reason):
    decision = decide([A, B], [revealed(A, update(A, 0.5)), revealed(B, update(B, 0.4, **metadata))])
    verdict = by_trainer(decision)[B.lower()]
    assert (verdict.accepted, verdict.reason) == (False, reason)


def test_of_two_identical_updates_the_first_revealed_keeps_its_place():
    data = update(A, 0.5)
    decision = decide([A, B, C], [revealed(A, data), revealed(C, update(C, 0.25)), revealed(B, data)])
    assert by_trainer(decision)[A.lower()].accepted
    assert by_trainer(decision)[B.lower()].reason == "duplicate"


def test_an_update_for_another_model_is_invalid():
    wrong_shape = encode_update(
        {"0.weight": torch.zeros(3, 2), "0.bias": torch.zeros(2)},
        task_id=TASK,
        round=ROUND,
        trainer=B,
        num_samples=1,
    )
    extra = encode_update(
        {**delta(0.1), "1.weight": torch.zeros(1)}, task_id=TASK, round=ROUND, trainer=C, num_samples=1
    )
    decision = decide([A, B, C], [revealed(A, update(A, 0.5)), revealed(B, wrong_shape), revealed(C, extra)])
    assert by_trainer(decision)[B.lower()].reason == "invalid"
    assert by_trainer(decision)[C.lower()].reason == "invalid"


def test_a_harmful_update_is_rejected_and_the_others_are_scored_again_without_it():
    reveals = [
        revealed(A, update(A, 0.5)),
        revealed(B, update(B, 0.5, samples=20)),
        revealed(C, update(C, -1.5)),
    ]
    decision = decide([A, B, C], reveals)
    verdicts = by_trainer(decision)
    assert (verdicts[C.lower()].accepted, verdicts[C.lower()].reason) == (False, "harmful")
    assert verdicts[C.lower()].score < SPEC.scoring.harm_threshold and verdicts[C.lower()].payout == 0
    # The honest scores are those of a round without C.
    expected = leave_one_out_values(
        [delta(0.5), delta(0.5)], [10, 20], settings=SPEC.aggregation,
        loss_of=lambda d: loss_of_state({k: GLOBAL[k] + d[k] for k in GLOBAL}),
    )  # fmt: skip
    assert [verdicts[A.lower()].score, verdicts[B.lower()].score] == pytest.approx(expected)
    torch.testing.assert_close(decision.new_state["0.bias"], torch.full((2,), 0.5))


def test_when_every_update_is_refused_the_model_stays_and_nothing_is_paid():
    decision = decide([A, B, C], [revealed(A, b"junk"), revealed(B, update(B, 40.0))])
    assert decision.payouts == {} and decision.total_payout == 0
    for key in GLOBAL:
        torch.testing.assert_close(decision.new_state[key], GLOBAL[key])
        assert decision.new_state[key] is not GLOBAL[key]  # a copy: the caller's state is not aliased
    assert decision.metrics.loss == decision.metrics.previous_loss == 6.0
    assert decision.metrics.accepted == 0 and decision.metrics.rejected == 3


def test_a_robust_aggregator_decides_the_new_model():
    spec = SPEC.model_copy(
        update={
            "aggregation": SPEC.aggregation.model_copy(update={"method": "median"}),
            "scoring": SPEC.scoring.model_copy(update={"harm_threshold": -100.0}),  # keep all three
        }
    )
    reveals = [revealed(t, update(t, v)) for t, v in ((A, 0.25), (B, 0.5), (C, 0.75))]
    decision = decide([A, B, C], reveals, spec=spec)
    torch.testing.assert_close(decision.new_state["0.weight"], torch.full((2, 2), 0.5))


# ---------------------------------------------------------------------- scoring and aggregation edges


def test_leave_one_out_of_no_updates_is_empty():
    assert leave_one_out_values([], [], settings=SPEC.aggregation, loss_of=lambda d: 0.0) == []


@pytest.mark.parametrize(
    ("base_share", "expected"),
    [(1.0, {"0xa": 500, "0xb": 500}), (0.0, {"0xa": 750, "0xb": 250}), (0.5, {"0xa": 625, "0xb": 375})],
)
def test_the_base_share_moves_pay_between_equal_and_proportional(base_share, expected):
    assert split_payouts(1000, {"0xa": 3.0, "0xb": 1.0}, base_share=base_share) == expected


def test_a_zero_budget_pays_nothing_to_anyone():
    assert split_payouts(0, {"0xa": 3.0, "0xb": -1.0}, base_share=0.2) == {"0xa": 0, "0xb": 0}


def test_aggregators_keep_float64_deltas_in_float64():
    deltas = [
        {"w": torch.tensor([1.0, 2.0], dtype=torch.float64)},
        {"w": torch.tensor([3.0, 4.0], dtype=torch.float64)},
    ]
    for result in (
        fedavg(deltas, [1, 1], max_share=1.0),
        coordinate_median(deltas),
        trimmed_mean(deltas, trim_ratio=0.0),
    ):
        assert result["w"].dtype == torch.float64
        torch.testing.assert_close(result["w"], torch.tensor([2.0, 3.0], dtype=torch.float64))
