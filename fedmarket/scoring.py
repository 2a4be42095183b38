"""A validator's scoring rule: one score-vector entry per revealed update, on the validator's own data.

Pure: from the task spec, the round, the global model, the revealed updates (with their blobs,
or None when a blob could not be fetched) and a loss function over the validator's data, to
entries. Anyone holding the same data computes the same vector, and the contract turns the
validators' vectors into the round's consensus (:mod:`fedmarket.consensus`). Other rules plug in
with the same signature (:data:`ScoringRule`).

The default rule, leave-one-out (LOO): an update's value is the validation loss of the round's
aggregate with that update's delta replaced by zeros (same aggregation weight) minus the loss with
it (positive: it helped), averaged over the validator's samples. With a positive
``spec.scoring.significance``, a value within that many standard errors of zero (paired
per-sample differences) is scored 0, so that an update that changes nothing measurable is not
paid for luck (off by default: see the measurement next to the setting). Zeroing rather than dropping it values what the update *says*, not what
its weight does: dropping an update also enlarges the others' step, so a zero or pure-noise update
that merely shrinks an overshooting step would look helpful (measured on the demo: a free rider
and a noise attacker were paid ~150 FMT each with dropping). A zero update is worth exactly 0.
Entries:
- a score: the value in units of :data:`SCORE_UNIT` loss, rounded to an integer;
- ``UNAVAILABLE``: the blob could not be fetched or did not match its revealed hash;
- ``INVALID``: it does not decode for the model, was made for another task/round/trainer,
  exceeds the spec's norm bound, or copies an earlier revealer's update;
- ``HARMFUL``: its value is below the spec's ``scoring.harm_threshold``. Harmful updates are left
  out and the others scored again without them, so one bad update does not inflate the rest.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from eth_utils import to_checksum_address
from torch import Tensor, nn

from fedmarket.aggregation import Delta, aggregate
from fedmarket.codec import apply_delta, decode_update, update_norm
from fedmarket.consensus import HARMFUL, INVALID, MAX_SCORE, UNAVAILABLE
from fedmarket.errors import CodecError
from fedmarket.learning import LocalData, sample_losses
from fedmarket.report import RejectionReason
from fedmarket.spec import AggregationSettings, TaskSpec

SCORE_UNIT = 1e-9  # a score of 1 is a validation-loss improvement of 1e-9

LossesFn = Callable[[Mapping[str, Tensor]], np.ndarray]  # per-sample losses on the validator's data


@dataclass(frozen=True)
class Value:
    """An update's mean per-sample loss improvement and its standard error."""

    mean: float
    stderr: float

    def significant(self, z: float) -> bool:
        return abs(self.mean) > z * self.stderr


@dataclass(frozen=True)
class Revealed:
    """A revealed update as a validator sees it: `data` is the verified blob, None if unavailable."""

    trainer: str
    update_hash: bytes
    data: bytes | None


@dataclass(frozen=True)
class ScoredUpdate:
    """One entry of a validator's vector, with the reason behind a flag."""

    trainer: str
    entry: int  # a score, or UNAVAILABLE / INVALID / HARMFUL
    reason: RejectionReason | None = None
    detail: str | None = None
    value: float | None = None  # LOO value in loss units, for scored and harmful updates
    stderr: float | None = None  # its standard error over the validator's samples
    num_samples: int = 0
    norm: float | None = None


ScoringRule = Callable[..., dict[str, ScoredUpdate]]


def losses_on(model: nn.Module, data: LocalData) -> LossesFn:
    """The `losses_of_state` of a validator holding `data`: loads a state into `model` (reused,
    so a round builds one model) and returns each sample's loss."""

    def losses_of_state(state: Mapping[str, Tensor]) -> np.ndarray:
        model.load_state_dict(state)
        return sample_losses(model, data)

    return losses_of_state


def leave_one_out_values(
    deltas: Sequence[Delta], num_samples: Sequence[int], *, settings: AggregationSettings, losses_of: LossesFn
) -> list[Value]:
    """Per update: the per-sample losses of the aggregate with that update zeroed minus those of
    the aggregate of all, the weights unchanged (see the module docstring), as mean and standard
    error. Calls ``losses_of`` ``n + 1`` times."""
    if not deltas:
        return []
    full = np.asarray(losses_of(aggregate(deltas, num_samples, settings).delta), dtype=np.float64)
    values = []
    for zeroed in range(len(deltas)):
        silenced = [
            {key: torch.zeros_like(t) for key, t in delta.items()} if i == zeroed else delta
            for i, delta in enumerate(deltas)
        ]
        paired = (
            np.asarray(losses_of(aggregate(silenced, num_samples, settings).delta), dtype=np.float64) - full
        )
        stderr = float(paired.std(ddof=1) / math.sqrt(len(paired))) if len(paired) > 1 else 0.0
        values.append(Value(float(paired.mean()), stderr))
    return values


def to_entry(value: float) -> int:
    """A value in loss units as a score entry, clipped to the contract's range."""
    return max(-MAX_SCORE, min(MAX_SCORE, round(value / SCORE_UNIT)))


def check_update(
    item: Revealed,
    *,
    spec: TaskSpec,
    task_id: int,
    round_no: int,
    global_state: Mapping[str, Tensor],
    seen: set[bytes],
) -> tuple[ScoredUpdate | None, dict[str, Tensor] | None, int, float | None]:
    """A flag for an update that cannot be scored, else its float32 delta, samples and norm."""
    trainer = to_checksum_address(item.trainer)
    if item.data is None:
        return (
            ScoredUpdate(trainer, UNAVAILABLE, RejectionReason.NOT_UPLOADED, "blob not fetched"),
            None,
            0,
            None,
        )
    if item.update_hash in seen:
        flag = ScoredUpdate(
            trainer, INVALID, RejectionReason.DUPLICATE, "an earlier revealer sent the same update"
        )
        return flag, None, 0, None
    seen.add(item.update_hash)
    try:
        update = decode_update(item.data, model=global_state)
    except CodecError as exc:
        return ScoredUpdate(trainer, INVALID, RejectionReason.INVALID, str(exc)[:180]), None, 0, None
    if (update.task_id, update.round) != (task_id, round_no) or update.trainer.lower() != trainer.lower():
        detail = f"update is for task {update.task_id} round {update.round} trainer {update.trainer}"
        return ScoredUpdate(trainer, INVALID, RejectionReason.WRONG_METADATA, detail), None, 0, None
    norm = update_norm(update.delta)
    if norm > spec.norm_bound:
        detail = f"norm {norm:.3f} > bound {spec.norm_bound}"
        flag = ScoredUpdate(trainer, INVALID, RejectionReason.NORM_BOUND, detail, norm=norm)
        return flag, None, update.num_samples, norm
    delta = {name: t.to(torch.float32) for name, t in update.delta.items()}
    return None, delta, update.num_samples, norm


def score_leave_one_out(
    *,
    spec: TaskSpec,
    task_id: int,
    round_no: int,
    global_state: Mapping[str, Tensor],
    revealed: Sequence[Revealed],
    losses_of_state: LossesFn,
) -> dict[str, ScoredUpdate]:
    """Entries by trainer (checksummed). `revealed` in reveal (chain) order: of two identical
    updates the first keeps its place. `losses_of_state(state)`: per-sample losses on the
    validator's data."""
    seen: set[bytes] = set()
    results: dict[str, ScoredUpdate] = {}
    candidates: list[tuple[str, dict[str, Tensor], int, float | None]] = []
    for item in revealed:
        flag, delta, samples, norm = check_update(
            item, spec=spec, task_id=task_id, round_no=round_no, global_state=global_state, seen=seen
        )
        if flag is not None:
            results[flag.trainer] = flag
        else:
            assert delta is not None
            candidates.append((to_checksum_address(item.trainer), delta, samples, norm))

    def losses_of(delta: Mapping[str, Tensor]) -> np.ndarray:
        return losses_of_state(apply_delta(global_state, delta))

    threshold, z = spec.scoring.harm_threshold, spec.scoring.significance
    while candidates:  # terminates: each pass with a harmful update removes it
        values = leave_one_out_values(
            [c[1] for c in candidates],
            [c[2] for c in candidates],
            settings=spec.aggregation,
            losses_of=losses_of,
        )
        harmful = {c[0] for c, value in zip(candidates, values, strict=True) if value.mean < threshold}
        for (trainer, _, samples, norm), value in zip(candidates, values, strict=True):
            if trainer in harmful:
                detail = f"leave-one-out value {value.mean:.4f} < harm threshold {threshold}"
                results[trainer] = ScoredUpdate(
                    trainer, HARMFUL, RejectionReason.HARMFUL, detail, value.mean, value.stderr, samples, norm
                )
            elif not harmful:
                entry = to_entry(value.mean) if value.significant(z) else 0
                results[trainer] = ScoredUpdate(
                    trainer, entry, None, None, value.mean, value.stderr, samples, norm
                )
        if not harmful:
            break
        candidates = [c for c in candidates if c[0] not in harmful]
    return results


RULES: dict[str, ScoringRule] = {"loo": score_leave_one_out}
