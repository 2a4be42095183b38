"""Plain words for where a task stands and what a round made of an update.

The one place these sentences are written: the JSON API returns them (`status_text` of a task,
`reason` of a submission and of a slash), the dashboard shows them, a CLI prints them. Everything
they say is read from the index of chain events, except the phase, which the chain tells.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from backend.db import TaskState
from fedmarket.protocol import RoundPhase
from fedmarket.report import SubmissionOutcome

FLAGS = ("invalid", "harmful", "unavailable")  # the flag names of backend.indexer.score_entry


@dataclass(frozen=True)
class TaskProgress:
    """What the status sentence of a task is made from."""

    status: TaskState
    phase: RoundPhase | None  # None: the chain did not answer
    current_round: int
    trainers: int  # joined now
    min_trainers: int
    validators: int  # joined now
    min_validators: int
    commits: int = 0  # in the current round
    reveals: int = 0
    score_commits: int = 0
    score_reveals: int = 0
    published: bool = True  # the current round's model is published (True before round 1)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def status_text(p: TaskProgress) -> str:
    """One sentence: what the task is doing or waiting for, with the counts that decide it."""
    r = p.current_round
    if p.status == TaskState.COMPLETED:
        return "completed" if p.published else "completed; publishing the final model"
    if p.status != TaskState.OPEN:
        return p.status.value  # cancelled, expired: the pool went back to the owner
    if p.phase is None:
        return (
            f"round {r}: phase unknown (the chain did not answer)" if r else "open (the chain did not answer)"
        )
    if p.phase == RoundPhase.COMMIT:
        return f"round {r}: trainers committing ({p.commits}/{p.trainers} committed)"
    if p.phase == RoundPhase.REVEAL:
        return f"round {r}: trainers revealing ({p.reveals}/{p.commits} revealed)"
    if p.phase == RoundPhase.SCORE_COMMIT:
        return f"round {r}: validators scoring ({p.score_commits}/{p.validators} committed)"
    if p.phase == RoundPhase.SCORE_REVEAL:
        return f"round {r}: validators revealing scores ({p.score_reveals}/{p.score_commits} revealed)"
    if p.phase == RoundPhase.SETTLING:
        if p.reveals < p.min_trainers:
            return f"round {r}: too few updates revealed ({p.reveals}/{p.min_trainers}); aborting"
        if p.score_reveals < p.min_validators:
            return f"round {r}: too few score vectors ({p.score_reveals}/{p.min_validators}); aborting"
        return f"settling round {r}"
    # Between rounds: None (before round 1), Finalized or Aborted.
    if p.phase == RoundPhase.FINALIZED and not p.published:
        return f"round {r}: publishing the new model"
    missing = []
    if p.trainers < p.min_trainers:
        missing.append(
            f"{_count(p.min_trainers - p.trainers, 'more trainer')} ({p.trainers}/{p.min_trainers})"
        )
    if p.validators < p.min_validators:
        missing.append(
            f"{_count(p.min_validators - p.validators, 'more validator')} ({p.validators}/{p.min_validators})"
        )
    then = "waiting for " + " and ".join(missing) if missing else f"starting round {r + 1}"
    return f"round {r} aborted; {then}" if p.phase == RoundPhase.ABORTED else then


def submission_reason(outcome: SubmissionOutcome | str | None, entries: Sequence[str]) -> str:
    """Why a committed update got its outcome, in words. `entries`: each revealed validator's
    entry for it (a decimal score or a flag name), which say who flagged it."""
    if outcome is None:
        return "waiting for the round to settle"
    outcome = SubmissionOutcome(outcome)
    if outcome == SubmissionOutcome.ACCEPTED:
        return "valued by the validators' consensus: paid and aggregated"
    if outcome == SubmissionOutcome.WORTHLESS:
        return "no measurable value in the consensus: aggregated, not paid"
    if outcome == SubmissionOutcome.UNAVAILABLE:
        return "no validator could fetch it: neither paid nor slashed"
    if outcome == SubmissionOutcome.REJECTED:
        flagged = [f"{flag} by {entries.count(flag)} of {len(entries)}" for flag in FLAGS if flag in entries]
        return f"flagged {' and '.join(flagged) or 'by a stake majority'}: slashed and removed"
    return "committed and never revealed: slashed and removed"
