"""Scoring and payouts: pure functions from updates and validation losses to token amounts.

An update's value is its leave-one-out marginal contribution: the owner's validation loss of the
round's aggregate without it, minus the loss with it. Positive means the update helped, negative
that the round would have been better off without it.

A round's budget is then split into a base share, paid equally to every accepted trainer (a
reward for taking part, which also pays trainers whose honest data happened not to move this
round's loss), and the rest, paid in proportion to positive values only. Amounts are integer base
units of the token (budgets are around 1e20, beyond float precision), computed with exact
fractions and rounded down; the rounding dust, like the rest when no update helped, is not paid
and stays in the task's pool.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from fractions import Fraction

import torch
from torch import Tensor

from backend.aggregation import Delta, aggregate
from fedmarket.spec import AggregationSettings

__all__ = ["find_harmful", "leave_one_out_values", "split_payouts"]


def leave_one_out_values(
    deltas: Sequence[Delta],
    num_samples: Sequence[int],
    *,
    settings: AggregationSettings,
    loss_of: Callable[[dict[str, Tensor]], float],
) -> list[float]:
    """Marginal value of each update: ``loss_of(aggregate without it) - loss_of(aggregate of all)``.

    Aggregates use :func:`backend.aggregation.aggregate` with the task's settings, so a robust
    rule that already ignores an update gives it a value near zero. ``loss_of`` maps an aggregate
    delta to the validation loss of the global model plus that delta; it is called ``n + 1``
    times. With a single update, the "without" aggregate is the zero delta (the model unchanged).
    """
    if not deltas:
        return []
    full = aggregate(deltas, num_samples, settings).delta
    full_loss = float(loss_of(full))
    if len(deltas) == 1:
        zero = {key: torch.zeros_like(tensor) for key, tensor in full.items()}
        return [float(loss_of(zero)) - full_loss]
    values = []
    for left_out in range(len(deltas)):
        others = [delta for i, delta in enumerate(deltas) if i != left_out]
        counts = [count for i, count in enumerate(num_samples) if i != left_out]
        without = aggregate(others, counts, settings).delta
        values.append(float(loss_of(without)) - full_loss)
    return values


def find_harmful(values: Mapping[str, float], *, harm_threshold: float) -> list[str]:
    """Accounts whose value is below ``harm_threshold`` (the spec's ``scoring.harm_threshold``), sorted.

    These are the updates the round rejects as harmful; the rest are the accepted accounts whose
    values go to :func:`split_payouts`.
    """
    return sorted(account for account, value in values.items() if value < harm_threshold)


def split_payouts(budget: int, values: Mapping[str, float], *, base_share: float) -> dict[str, int]:
    """Split a round's ``budget`` (integer base units) among the accepted accounts, the keys of ``values``.

    - ``floor(base_share * budget)`` is split equally among all accounts, whatever their value;
    - the rest is split in proportion to the positive values; accounts with zero or negative
      value get the base share only. If no value is positive, the rest is not paid;
    - each amount is rounded down, so the total never exceeds ``budget``; the dust stays unpaid.

    ``base_share`` is read as the decimal it prints as (``0.2`` is exactly 1/5), so a budget of
    ``10**20`` gives a base pool of exactly ``2 * 10**19``. Amounts do not depend on the order of
    ``values``; the result lists accounts sorted. Raises ``ValueError`` for a negative budget,
    ``base_share`` outside [0, 1], or a value that is NaN or infinite.
    """
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 0:
        raise ValueError(f"budget must be a non-negative integer number of base units, got {budget!r}")
    if not 0.0 <= base_share <= 1.0:
        raise ValueError(f"base_share must be in [0, 1], got {base_share}")
    for account, value in values.items():
        if not math.isfinite(value):
            raise ValueError(f"value of {account} is {value}: scores must be finite numbers")
    accounts = sorted(values)
    if not accounts:
        return {}
    share = Fraction(str(float(base_share)))
    base_pool = budget * share.numerator // share.denominator
    base_each = base_pool // len(accounts)
    rest = budget - base_pool
    positive = {account: Fraction(values[account]) for account in accounts if values[account] > 0}
    total = sum(positive.values(), Fraction(0))
    payouts = {}
    for account in accounts:
        bonus = math.floor(rest * positive[account] / total) if account in positive else 0
        payouts[account] = base_each + bonus
    return payouts
