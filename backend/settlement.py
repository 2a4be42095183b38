"""Decide a round: verify the revealed updates, filter, aggregate, evaluate, score and pay.

No chain and no store here: :func:`decide_round` takes bytes and numbers and returns a
:class:`RoundDecision`; the orchestrator fetches the inputs and sends the result on-chain.

Every refused committer is slashed; the reasons are :class:`fedmarket.report.RejectionReason`
(no_reveal, not_uploaded, invalid, wrong_metadata, norm_bound, duplicate, harmful), and the
verdicts become the round report's submissions. See ``docs/protocol.md`` (settlement).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from eth_utils import to_checksum_address
from torch import Tensor

from backend.aggregation import aggregate
from backend.scoring import find_harmful, leave_one_out_values, split_payouts
from fedmarket.codec import apply_delta, decode_update, update_norm
from fedmarket.errors import CodecError
from fedmarket.report import RejectionReason, RoundMetrics
from fedmarket.spec import TaskSpec


@dataclass(frozen=True)
class Revealed:
    """A revealed submission: `data` is the blob (None when it is not in the store)."""

    trainer: str
    update_hash: bytes
    data: bytes | None


@dataclass
class Verdict:
    trainer: str
    update_hash: bytes | None
    accepted: bool
    reason: RejectionReason | None = None
    detail: str | None = None
    num_samples: int = 0
    norm: float | None = None
    score: float | None = None
    payout: int = 0


@dataclass
class RoundDecision:
    verdicts: list[Verdict]
    new_state: dict[str, Tensor]
    payouts: dict[str, int]
    metrics: RoundMetrics
    budget: int
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def rejected(self) -> list[str]:
        return [v.trainer for v in self.verdicts if not v.accepted]

    @property
    def total_payout(self) -> int:
        return sum(self.payouts.values())


LossFn = Callable[[Mapping[str, Tensor]], float]


def decide_round(
    *,
    spec: TaskSpec,
    task_id: int,
    round_no: int,
    global_state: Mapping[str, Tensor],
    committers: list[str],
    revealed: list[Revealed],
    budget_for: Callable[[list[str]], int],
    evaluate_state: Callable[[Mapping[str, Tensor]], tuple[float, float]],
) -> RoundDecision:
    """`evaluate_state(state) -> (loss, accuracy)` on the owner's validation split;
    `budget_for(rejected)` is the round budget once `rejected` are slashed (slashes join the pool).

    `revealed` must be in reveal order (chain order): the first of two identical updates keeps
    its place, later copies are duplicates.
    """
    timings: dict[str, float] = {}
    started = time.perf_counter()
    revealed_by = {to_checksum_address(r.trainer): r for r in revealed}
    verdicts: list[Verdict] = [
        Verdict(
            to_checksum_address(t), None, False, RejectionReason.NO_REVEAL, "committed but did not reveal"
        )
        for t in committers
        if to_checksum_address(t) not in revealed_by
    ]
    seen_hashes: set[bytes] = set()
    candidates: list[tuple[Verdict, dict[str, Tensor]]] = []
    for item in revealed:
        verdict, delta = _verify(
            item, spec=spec, task_id=task_id, round_no=round_no, global_state=global_state, seen=seen_hashes
        )
        verdicts.append(verdict)
        if delta is not None:
            candidates.append((verdict, delta))
    timings["verify"] = time.perf_counter() - started

    def loss_of(delta: Mapping[str, Tensor]) -> float:
        return evaluate_state(apply_delta(global_state, delta))[0]

    # Score, reject harmful updates, and score the rest again without them.
    started = time.perf_counter()
    scores: dict[str, float] = {}
    while candidates:
        values = leave_one_out_values(
            [delta for _, delta in candidates], [v.num_samples for v, _ in candidates],
            settings=spec.aggregation, loss_of=loss_of,
        )  # fmt: skip
        scores = {verdict.trainer: value for (verdict, _), value in zip(candidates, values, strict=True)}
        harmful = set(find_harmful(scores, harm_threshold=spec.scoring.harm_threshold))
        if not harmful:
            break  # terminates: each pass removes at least one candidate
        for verdict, _ in candidates:
            if verdict.trainer in harmful:
                verdict.accepted, verdict.reason, verdict.score = (
                    False,
                    RejectionReason.HARMFUL,
                    scores[verdict.trainer],
                )
                verdict.detail = f"leave-one-out value {scores[verdict.trainer]:.4f} < harm threshold {spec.scoring.harm_threshold}"
        candidates = [c for c in candidates if c[0].trainer not in harmful]
        scores = {}
    timings["scoring"] = time.perf_counter() - started

    started = time.perf_counter()
    if candidates:
        result = aggregate(
            [d for _, d in candidates], [v.num_samples for v, _ in candidates], spec.aggregation
        )
        new_state = apply_delta(global_state, result.delta)
    else:
        new_state = {name: tensor.clone() for name, tensor in global_state.items()}
    timings["aggregation"] = time.perf_counter() - started

    started = time.perf_counter()
    before_loss, before_accuracy = evaluate_state(global_state)
    after_loss, after_accuracy = evaluate_state(new_state)
    timings["evaluation"] = time.perf_counter() - started

    rejected = [v.trainer for v in verdicts if not v.accepted]
    budget = budget_for(rejected)
    payouts = split_payouts(budget, scores, base_share=spec.scoring.base_share) if scores else {}
    for verdict, _ in candidates:
        verdict.score = scores[verdict.trainer]
        verdict.payout = payouts.get(verdict.trainer, 0)
    metrics = RoundMetrics(
        loss=after_loss, accuracy=after_accuracy, previous_loss=before_loss, previous_accuracy=before_accuracy,
        accepted=len(candidates), rejected=sum(1 for v in verdicts if not v.accepted),
    )  # fmt: skip
    return RoundDecision(verdicts, new_state, payouts, metrics, budget, timings)


def _verify(
    item: Revealed,
    *,
    spec: TaskSpec,
    task_id: int,
    round_no: int,
    global_state: Mapping[str, Tensor],
    seen: set[bytes],
) -> tuple[Verdict, dict[str, Tensor] | None]:
    trainer = to_checksum_address(item.trainer)
    verdict = Verdict(trainer, item.update_hash, False)
    if item.data is None:
        verdict.reason, verdict.detail = (
            RejectionReason.NOT_UPLOADED,
            "the revealed update is not in the store",
        )
        return verdict, None
    if item.update_hash in seen:
        verdict.reason, verdict.detail = (
            RejectionReason.DUPLICATE,
            "an earlier revealer submitted the same update",
        )
        return verdict, None
    seen.add(item.update_hash)
    try:
        update = decode_update(item.data, model=global_state)
    except CodecError as exc:
        verdict.reason, verdict.detail = RejectionReason.INVALID, str(exc)[:180]
        return verdict, None
    if (update.task_id, update.round) != (task_id, round_no) or update.trainer.lower() != trainer.lower():
        verdict.reason = RejectionReason.WRONG_METADATA
        verdict.detail = f"update is for task {update.task_id} round {update.round} trainer {update.trainer}"
        return verdict, None
    verdict.num_samples = update.num_samples
    verdict.norm = update_norm(update.delta)
    if verdict.norm > spec.norm_bound:
        verdict.reason, verdict.detail = (
            RejectionReason.NORM_BOUND,
            f"norm {verdict.norm:.3f} > bound {spec.norm_bound}",
        )
        return verdict, None
    verdict.accepted = True
    return verdict, {name: t.to(torch.float32) for name, t in update.delta.items()}
