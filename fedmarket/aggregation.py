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

Server optimizers (Reddi et al. 2021, "Adaptive Federated Optimization") then turn the aggregate
delta, a pseudo-gradient, into the step the global model takes; each is pure too, and every input
it needs beyond the round's delta is public (docs/protocol.md, "Server optimizers"):

- :func:`fedavgm`: server momentum (Hsu et al. 2019), from the previous published step alone;
- :func:`fedadam`: Adam on the server, whose moments travel as a store blob
  (:func:`encode_adam_state`, :func:`decode_adam_state`);
- :func:`server_step`: dispatches on ``AggregationSettings.server_optimizer``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction

import torch
from torch import Tensor

from fedmarket.codec import decode_model, encode_model
from fedmarket.spec import AggregationSettings

__all__ = [
    "AdamState",
    "AggregationResult",
    "Delta",
    "ServerStep",
    "aggregate",
    "capped_weights",
    "coordinate_median",
    "decode_adam_state",
    "encode_adam_state",
    "fedadam",
    "fedavg",
    "fedavgm",
    "krum_scores",
    "multi_krum",
    "server_step",
    "trim_count",
    "trimmed_mean",
]

Delta = Mapping[str, Tensor]
"""A weight delta: ``state_dict`` key -> tensor."""

METHODS = ("fedavg", "median", "trimmed_mean", "krum")
SERVER_OPTIMIZERS = ("none", "fedavgm", "fedadam")


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


# --- server optimizers ---------------------------------------------------------------------------


@dataclass(frozen=True)
class AdamState:
    """FedAdam's first and second moments ``m``, ``v``: one tensor per ``state_dict`` key each."""

    m: dict[str, Tensor]
    v: dict[str, Tensor]


@dataclass(frozen=True)
class ServerStep:
    """The step to add to the global model (``codec.apply_delta``) and FedAdam's state after it
    (``None`` for the optimizers that keep none)."""

    step: dict[str, Tensor]
    state: AdamState | None = None


def fedavgm(
    delta: Delta, last_step: Delta | None, *, learning_rate: float, momentum: float
) -> dict[str, Tensor]:
    """Server momentum (FedAvgM): the step ``eta * v_t`` with ``v_t = beta * v_(t-1) + delta``.

    Written as heavy ball, ``eta * delta + beta * last_step``, because the previous step
    ``x_t - x_(t-1)`` *is* ``eta * v_(t-1)``: the buffer never has to be stored, anyone rebuilds it
    from the last two published models. ``last_step`` is ``None`` (zero) before the first step.
    With ``momentum`` 0 and ``learning_rate`` 1 the step is ``delta`` itself, bit for bit: FedAvg.
    """
    keys = _check_deltas([delta] if last_step is None else [delta, last_step])
    result = {}
    for key in keys:
        step = delta[key].detach().to(torch.float64) * learning_rate
        if momentum and last_step is not None:  # skipped at 0, so that -0.0 stays -0.0
            step = step + momentum * last_step[key].detach().to(torch.float64)
        result[key] = _like(delta[key], step)
    return result


def fedadam(
    delta: Delta,
    state: AdamState | None,
    *,
    learning_rate: float,
    beta1: float,
    beta2: float,
    tau: float,
) -> ServerStep:
    """FedAdam (Reddi et al. 2021, Algorithm 2): ``m = b1*m + (1-b1)*d``, ``v = b2*v + (1-b2)*d**2``,
    step ``eta * m / (sqrt(v) + tau)``.

    ``state`` ``None`` starts from ``m = 0`` and ``v = tau**2`` (the paper's ``v_-1 >= tau**2``). As
    in the paper there is no bias correction: ``tau`` bounds the first steps instead. The moments
    are computed in float64 and returned in the delta's dtype; the next round must start from the
    returned (stored) values, not from anything finer, so that every party computes the same step.
    """
    keys = _check_deltas([delta])
    step, m_new, v_new = {}, {}, {}
    for key in keys:
        d = delta[key].detach().to(torch.float64)
        if state is None:
            m, v = torch.zeros_like(d), torch.full_like(d, tau * tau)
        else:
            m, v = state.m[key].detach().to(torch.float64), state.v[key].detach().to(torch.float64)
        m = beta1 * m + (1 - beta1) * d
        v = beta2 * v + (1 - beta2) * d * d
        step[key] = _like(delta[key], learning_rate * m / (v.sqrt() + tau))
        m_new[key], v_new[key] = _like(delta[key], m), _like(delta[key], v)
    return ServerStep(step, AdamState(m_new, v_new))


def server_step(
    delta: Delta,
    settings: AggregationSettings,
    *,
    last_step: Delta | None = None,
    state: AdamState | None = None,
) -> ServerStep:
    """The global model's step from the round's aggregate ``delta`` under the task's server optimizer.

    ``none`` returns ``delta`` unchanged (FedAvg; ``server_learning_rate`` is ignored, so old
    specs keep their models); ``fedavgm`` needs ``last_step``, the previous published step;
    ``fedadam`` needs ``state``, the previous round's :class:`AdamState` (``None`` for the first).
    """
    match settings.server_optimizer:
        case "none":
            return ServerStep({key: tensor.detach().clone() for key, tensor in delta.items()})
        case "fedavgm":
            return ServerStep(
                fedavgm(
                    delta,
                    last_step,
                    learning_rate=settings.server_learning_rate,
                    momentum=settings.server_momentum,
                )
            )
        case "fedadam":
            return fedadam(
                delta,
                state,
                learning_rate=settings.server_learning_rate,
                beta1=settings.adam_beta1,
                beta2=settings.adam_beta2,
                tau=settings.adam_tau,
            )
    raise ValueError(
        f"unknown server optimizer {settings.server_optimizer!r}; expected one of {', '.join(SERVER_OPTIMIZERS)}"
    )


_ADAM_PREFIXES = ("m/", "v/")


def encode_adam_state(state: AdamState) -> bytes:
    """FedAdam's state as a safetensors blob (``m/<key>``, ``v/<key>``; float32, never pickle)."""
    tensors = {f"m/{key}": value for key, value in state.m.items()}
    tensors |= {f"v/{key}": value for key, value in state.v.items()}
    return encode_model(tensors, metadata={"content": "fedadam-state"})


def decode_adam_state(data: bytes, *, model: Mapping[str, Tensor]) -> AdamState:
    """The :class:`AdamState` in a blob, checked against the layout of ``model`` (a ``state_dict``):
    exactly one ``m`` and one ``v`` tensor of each parameter's shape, float32 and finite."""
    layout = {prefix + key: tensor for prefix in _ADAM_PREFIXES for key, tensor in model.items()}
    tensors = decode_model(data, model=layout)
    m, v = ({key: tensors[prefix + key] for key in model} for prefix in _ADAM_PREFIXES)
    return AdamState(m, v)
