"""Aggregators: pure functions that combine trainers' weight deltas into one.

A delta maps each ``state_dict`` key of the task's model to a tensor (trained weights minus the
round's global weights). Every function here takes deltas with the same keys, shapes and dtypes
(the coordinator has already refused any update that does not match), keeps no state, and
returns new tensors in the first delta's key order and dtype. Arithmetic runs in float64 so the
result does not depend on summation order more than float32 rounding allows.

- :func:`fedavg`: sample-weighted mean, each trainer's weight capped (:func:`capped_weights`),
  because sample counts are self-reported.
- :func:`coordinate_median`: per-coordinate median; ignores any minority of outliers.
- :func:`trimmed_mean`: per-coordinate mean after dropping the extremes at both ends.
- :func:`multi_krum`: Blanchard et al. 2017; keeps the updates closest to their neighbours.
- :func:`aggregate`: dispatches on ``AggregationSettings.method`` and says who contributed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction

import torch
from torch import Tensor

from fedmarket.spec import AggregationSettings

__all__ = [
    "AggregationResult",
    "Delta",
    "aggregate",
    "capped_weights",
    "coordinate_median",
    "fedavg",
    "krum_scores",
    "multi_krum",
    "trim_count",
    "trimmed_mean",
]

Delta = Mapping[str, Tensor]
"""A weight delta: ``state_dict`` key -> tensor."""

METHODS = ("fedavg", "median", "trimmed_mean", "krum")


@dataclass(frozen=True)
class AggregationResult:
    """The aggregate delta and the indices (into the input list) of the updates that shaped it.

    ``selected`` is every index for FedAvg, median and trimmed mean (each update takes part, even
    if a robust rule then ignores its value at some coordinates); for multi-Krum it is the
    updates Krum kept, in increasing order.
    """

    delta: dict[str, Tensor]
    selected: list[int]


# --- helpers -------------------------------------------------------------------------------------


def _check_deltas(deltas: Sequence[Delta]) -> list[str]:
    """The shared key order; raises ``ValueError`` unless all deltas have the same keys and shapes,
    and the first (whose dtypes the result takes) holds floating point tensors."""
    if not deltas:
        raise ValueError("nothing to aggregate: the list of deltas is empty")
    keys = list(deltas[0].keys())
    for key, tensor in deltas[0].items():
        if not tensor.is_floating_point():
            raise ValueError(
                f"delta 0 has {key} of dtype {tensor.dtype}; deltas must be floating point tensors"
            )
    for index, delta in enumerate(deltas[1:], start=1):
        if set(delta.keys()) != set(keys):
            missing = sorted(set(keys) - set(delta.keys()))
            extra = sorted(set(delta.keys()) - set(keys))
            raise ValueError(
                f"delta {index} has different tensors than delta 0 (missing {missing}, extra {extra})"
            )
        for key in keys:
            if tuple(delta[key].shape) != tuple(deltas[0][key].shape):
                raise ValueError(
                    f"delta {index} has {key} of shape {tuple(delta[key].shape)}, "
                    f"delta 0 has {tuple(deltas[0][key].shape)}"
                )
    return keys


def _stack(deltas: Sequence[Delta], key: str) -> Tensor:
    """The ``key`` tensors of all deltas stacked along a new first dimension, in float64."""
    return torch.stack([delta[key].detach().to(torch.float64) for delta in deltas])


def _like(template: Tensor, value: Tensor) -> Tensor:
    return value.to(dtype=template.dtype, device=template.device)


# --- weights -------------------------------------------------------------------------------------


def capped_weights(num_samples: Sequence[int], *, max_share: float) -> list[float]:
    """Sample-proportional weights that sum to 1, none above ``max_share``.

    Sample counts are self-reported, so a trainer claiming a huge count must not dominate the
    aggregate. Weights start proportional to ``num_samples``; any weight above the cap is set to
    the cap and the excess is shared among the uncapped trainers in proportion to their counts,
    repeated until no weight is over the cap (water-filling). The result is exact: computed with
    fractions, then converted to floats.

    Degenerate cases, each giving the fairest weights that still sum to 1:

    - ``max_share * n < 1``: no weights can sum to 1 under the cap, so every trainer gets ``1/n``;
    - every (uncapped) count is zero: the remaining mass is split equally among them.

    Raises ``ValueError`` for an empty list, a negative count, or ``max_share`` outside (0, 1].
    """
    n = len(num_samples)
    if n == 0:
        raise ValueError("no sample counts given: need at least one trainer to weight")
    if any(int(count) != count or count < 0 for count in num_samples):
        raise ValueError(f"sample counts must be non-negative integers, got {list(num_samples)}")
    if not 0.0 < max_share <= 1.0:
        raise ValueError(f"max_share must be in (0, 1], got {max_share}")
    cap = Fraction(max_share)
    if cap * n < 1:
        return [1.0 / n] * n
    counts = [int(count) for count in num_samples]
    capped: set[int] = set()
    while True:
        free = [i for i in range(n) if i not in capped]
        mass = 1 - cap * len(capped)
        free_total = sum(counts[i] for i in free)
        weights = [cap] * n
        for i in free:
            weights[i] = mass * counts[i] / free_total if free_total else mass / len(free)
        over = [i for i in free if weights[i] > cap]
        if not over:
            return [float(weight) for weight in weights]
        capped.update(over)


# --- aggregators ---------------------------------------------------------------------------------


def fedavg(deltas: Sequence[Delta], num_samples: Sequence[int], *, max_share: float) -> dict[str, Tensor]:
    """Weighted mean of the deltas with :func:`capped_weights` (pass ``max_share=1.0`` for plain FedAvg)."""
    keys = _check_deltas(deltas)
    if len(num_samples) != len(deltas):
        raise ValueError(f"got {len(deltas)} deltas but {len(num_samples)} sample counts")
    weights = capped_weights(num_samples, max_share=max_share)
    result = {}
    for key in keys:
        # Accumulated one delta at a time (not stacked): memory stays at one float64 copy per key.
        mixed = torch.zeros(deltas[0][key].shape, dtype=torch.float64)
        for weight, delta in zip(weights, deltas, strict=True):
            mixed.add_(delta[key].detach().to(torch.float64), alpha=weight)
        result[key] = _like(deltas[0][key], mixed)
    return result


def coordinate_median(deltas: Sequence[Delta]) -> dict[str, Tensor]:
    """Per-coordinate median; for an even count, the mean of the two middle values.

    (``torch.median`` would return the lower middle value, which biases the result downwards.)
    """
    keys = _check_deltas(deltas)
    n = len(deltas)
    result = {}
    for key in keys:
        ordered = _stack(deltas, key).sort(dim=0).values
        middle = ordered[n // 2] if n % 2 else (ordered[n // 2 - 1] + ordered[n // 2]) / 2
        result[key] = _like(deltas[0][key], middle)
    return result


def trim_count(n: int, trim_ratio: float) -> int:
    """How many values :func:`trimmed_mean` drops at each end: ``floor(trim_ratio * n)``.

    A tolerance of 1e-9 keeps float noise from flooring an exact product down (``0.29 * 100``
    is ``28.999999999999996`` in floats, but means 29).
    """
    return math.floor(trim_ratio * n + 1e-9)


def trimmed_mean(deltas: Sequence[Delta], *, trim_ratio: float) -> dict[str, Tensor]:
    """Per-coordinate mean after dropping the ``floor(trim_ratio * n)`` lowest and highest values.

    ``trim_ratio`` must lie in [0, 0.5), so at least one value always remains; 0 is the plain mean.
    """
    if not 0.0 <= trim_ratio < 0.5:
        raise ValueError(f"trim_ratio must be in [0, 0.5), got {trim_ratio}")
    keys = _check_deltas(deltas)
    n = len(deltas)
    k = trim_count(n, trim_ratio)
    result = {}
    for key in keys:
        ordered = _stack(deltas, key).sort(dim=0).values
        result[key] = _like(deltas[0][key], ordered[k : n - k].mean(dim=0))
    return result


def krum_scores(deltas: Sequence[Delta], *, f: int) -> list[float]:
    """Krum score of each delta: sum of squared distances to its ``n - f - 2`` nearest others.

    The neighbour count is clamped to [1, n - 1] so that small rounds (n <= f + 2) still rank
    updates by their distance to the closest others; with one delta the score is 0.
    """
    keys = _check_deltas(deltas)
    if f < 0:
        raise ValueError(f"f (the number of Byzantine updates tolerated) must be >= 0, got {f}")
    n = len(deltas)
    if n == 1:
        return [0.0]
    # Pairwise squared distances summed key by key, so only one tensor's worth is stacked at a time.
    distances = torch.zeros((n, n), dtype=torch.float64)
    for key in keys:
        stacked = _stack(deltas, key).reshape(n, -1)
        for i in range(n):
            distances[i] += ((stacked - stacked[i]) ** 2).sum(dim=1)
    neighbours = min(max(n - f - 2, 1), n - 1)
    scores = []
    for i in range(n):
        others = torch.cat([distances[i, :i], distances[i, i + 1 :]])
        scores.append(float(others.sort().values[:neighbours].sum()))
    return scores


def multi_krum(
    deltas: Sequence[Delta], *, f: int, m: int | None = None
) -> tuple[dict[str, Tensor], list[int]]:
    """Multi-Krum (Blanchard et al., 2017): the plain mean of the ``m`` deltas with the lowest Krum score.

    ``f`` is the number of Byzantine updates to tolerate; ``m`` defaults to ``n - f`` (at least 1).
    Ties in score go to the lower index, so the choice is deterministic. Returns the aggregate
    and the selected indices in increasing order.
    """
    n = len(deltas)
    scores = krum_scores(deltas, f=f)
    if m is None:
        m = max(n - f, 1)
    if not 1 <= m <= n:
        raise ValueError(f"m (updates to keep) must be between 1 and {n}, got {m}")
    ranked = sorted(range(n), key=lambda i: (scores[i], i))
    selected = sorted(ranked[:m])
    chosen = [deltas[i] for i in selected]
    result = {key: _like(deltas[0][key], _stack(chosen, key).mean(dim=0)) for key in deltas[0]}
    return result, selected


def aggregate(
    deltas: Sequence[Delta], num_samples: Sequence[int], settings: AggregationSettings
) -> AggregationResult:
    """Combine deltas with the method the task's ``AggregationSettings`` names.

    ``fedavg`` uses ``max_weight_share``; ``trimmed_mean`` uses ``trim_ratio``; ``krum`` is
    multi-Krum with ``f = krum_f`` and the default ``m = n - f``; ``median`` has no parameter.
    """
    if len(num_samples) != len(deltas):
        raise ValueError(f"got {len(deltas)} deltas but {len(num_samples)} sample counts")
    every = list(range(len(deltas)))
    match settings.method:
        case "fedavg":
            return AggregationResult(fedavg(deltas, num_samples, max_share=settings.max_weight_share), every)
        case "median":
            return AggregationResult(coordinate_median(deltas), every)
        case "trimmed_mean":
            return AggregationResult(trimmed_mean(deltas, trim_ratio=settings.trim_ratio), every)
        case "krum":
            delta, selected = multi_krum(deltas, f=settings.krum_f)
            return AggregationResult(delta, selected)
    raise ValueError(f"unknown aggregation method {settings.method!r}; expected one of {', '.join(METHODS)}")
