"""A round's consensus, as `TaskMarket.finalizeRound` computes it, in exact integer arithmetic.

The contract is the authority; this mirror exists so that anyone (the coordinator choosing what to
aggregate, `fedmarket verify`, the dashboard, a validator checking its own agreement) can recompute
a round from its public inputs: the revealers, the validators' revealed vectors and stakes, and the
round's budget. A test checks it against the contract on random rounds. The rule is written out in
`contracts/ITaskMarket.sol` and in docs/protocol.md ("Consensus").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from fedmarket.protocol import BPS, Outcome

SCALE = 10**18  # fixed point of normalized scores, consensus values and agreement
MIN_AGREEMENT = SCALE // 2  # a validator below this agreement earns nothing that round
MAX_SCORE = 2**128 - 1  # a score entry lies within +-MAX_SCORE unless it is a flag

# Flags: entries that are not scores. The smallest int256 values, so none is a plausible score.
UNAVAILABLE = -(2**255)  # the validator could not fetch the blob, or it did not match its hash
INVALID = UNAVAILABLE + 1  # the blob does not decode or does not fit the task's model
HARMFUL = UNAVAILABLE + 2  # the update makes the model worse beyond the task's harm threshold
FLAGS = frozenset({UNAVAILABLE, INVALID, HARMFUL})


def is_valid_entry(entry: int) -> bool:
    return entry in FLAGS or -MAX_SCORE <= entry <= MAX_SCORE


@dataclass(frozen=True)
class TrainerResult:
    trainer: str
    outcome: Outcome
    consensus: int  # c[i], SCALE = the whole round's value
    payout: int


@dataclass(frozen=True)
class ValidatorResult:
    validator: str
    agreement: int  # a[v], SCALE = full agreement
    payout: int


@dataclass(frozen=True)
class Consensus:
    trainers: tuple[TrainerResult, ...]
    validators: tuple[ValidatorResult, ...]

    @property
    def trainer_payout(self) -> int:
        return sum(t.payout for t in self.trainers)

    @property
    def validator_payout(self) -> int:
        return sum(v.payout for v in self.validators)

    def aggregated(self) -> list[str]:
        """The trainers whose updates go into the round's aggregate (:attr:`Outcome.aggregated`)."""
        return [t.trainer for t in self.trainers if t.outcome.aggregated]

    def by_trainer(self) -> dict[str, TrainerResult]:
        return {t.trainer: t for t in self.trainers}


def _weighted_median(values: list[tuple[int, int]], total_weight: int) -> int:
    """The smallest value whose cumulative weight reaches half of `total_weight` (lower median)."""
    cumulative = 0
    for value, weight in sorted(values, key=lambda pair: pair[0]):
        cumulative += weight
        if 2 * cumulative >= total_weight:
            return value
    return 0  # unreachable while weights sum to total_weight > 0


def normalized_scores(
    *, trainers: Sequence[str], validators: Sequence[str], scores: Sequence[Sequence[int]]
) -> list[list[int]]:
    """n[v][i]: validator v's positive scores scaled to sum to SCALE, its entry for itself and
    flags counted as 0. The consensus of trainer i lies within the n[v][i] of the validators
    that did not flag it unavailable (the median's guarantee)."""
    keys = [t.lower() for t in trainers]
    normalized = []
    for validator, vector in zip(validators, scores, strict=True):
        own = validator.lower()
        positive = [max(e, 0) if e not in FLAGS and keys[i] != own else 0 for i, e in enumerate(vector)]
        total = sum(positive)
        normalized.append([p * SCALE // total if total else 0 for p in positive])
    return normalized


def compute_consensus(
    *,
    trainers: Sequence[str],
    validators: Sequence[str],
    stakes: Sequence[int],
    scores: Sequence[Sequence[int]],
    budget: int,
    validator_share_bps: int,
) -> Consensus:
    """The contract's consensus for one round.

    `trainers` and `validators` are the revealers in ascending address order (as the contract
    requires them); `scores[v][i]` is validator v's entry for trainer i; `stakes[v]` its stake at
    settlement; `budget` the round budget (`roundBudget` just before `finalizeRound`).
    """
    if len(stakes) != len(validators) or len(scores) != len(validators):
        raise ValueError("one stake and one score vector per validator")
    if any(len(vector) != len(trainers) for vector in scores):
        raise ValueError("one score entry per trainer in every vector")
    keys = [t.lower() for t in trainers]
    owners = [v.lower() for v in validators]

    def own(v: int, i: int) -> bool:
        return owners[v] == keys[i]

    normalized = normalized_scores(trainers=trainers, validators=validators, scores=scores)

    outcomes: list[Outcome] = []
    values: list[int] = []
    for i in range(len(trainers)):
        total_stake = flagged = available = 0
        entries: list[tuple[int, int]] = []
        for v in range(len(validators)):
            if own(v, i):
                continue
            entry, weight = scores[v][i], stakes[v]
            total_stake += weight
            if entry == UNAVAILABLE:
                continue
            available += weight
            if entry in (INVALID, HARMFUL):
                flagged += weight
            entries.append((normalized[v][i], weight))
        if available == 0:
            outcomes.append(Outcome.UNAVAILABLE)
            values.append(0)
        elif 2 * flagged > total_stake:
            outcomes.append(Outcome.REJECTED)
            values.append(0)
        else:
            value = _weighted_median(entries, available)
            outcomes.append(Outcome.ACCEPTED if value > 0 else Outcome.WORTHLESS)
            values.append(value)

    validator_budget = budget * validator_share_bps // BPS
    trainer_budget = budget - validator_budget
    total_value = sum(values)
    trainer_results = tuple(
        TrainerResult(
            trainer=trainers[i],
            outcome=outcomes[i],
            consensus=values[i],
            payout=trainer_budget * values[i] // total_value if total_value else 0,
        )
        for i in range(len(trainers))
    )

    agreements = []
    for v in range(len(validators)):
        clipped = covered = 0
        for i in range(len(trainers)):
            if own(v, i):
                continue
            covered += values[i]
            if scores[v][i] != UNAVAILABLE:
                clipped += min(normalized[v][i], values[i])
        agreements.append(clipped * SCALE // covered if covered else SCALE)
    eligible = sum(a for a in agreements if a >= MIN_AGREEMENT)
    validator_results = tuple(
        ValidatorResult(
            validator=validators[v],
            agreement=agreements[v],
            payout=validator_budget * agreements[v] // eligible
            if eligible and agreements[v] >= MIN_AGREEMENT
            else 0,
        )
        for v in range(len(validators))
    )
    return Consensus(trainer_results, validator_results)
