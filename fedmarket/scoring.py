"""A validator's scoring rule: one score-vector entry per revealed update, on the validator's own data.

Pure: from the task spec, the round, the global model, the revealed updates (with their blobs,
or None when a blob could not be fetched) and a loss function over the validator's data, to
entries. Anyone holding the same data computes the same vector, and the contract turns the
validators' vectors into the round's consensus (:mod:`fedmarket.consensus`). Other rules plug in
with the same signature (:data:`ScoringRule`).

Two rules (``spec.scoring.method``) value an update by what it *says*: a coalition of updates is
the round's aggregate with every other update's delta replaced by zeros at its unchanged
aggregation weight, so that a zero update is worth exactly 0 and a pure-noise one cannot look
helpful by shrinking an overshooting step (measured on the demo with dropping instead: a free
rider and a noise attacker were paid ~150 FMT each). A coalition's value is the mean per-sample
validation-loss improvement over the round's global model.
- ``loo`` (leave-one-out): the loss of all updates but this one minus the loss of all; ``n + 1``
  evaluations. Cheap, but an update whose information others also carry gets about 0.
- ``shapley`` (the default): the Shapley value over coalitions, exact (all ``2^n`` coalitions)
  for up to :data:`EXACT_SHAPLEY_MAX` updates and otherwise a truncated Monte-Carlo estimate over
  permutations (TMC-Shapley, Ghorbani & Zou 2019) seeded by the task and round and bounded by
  ``spec.scoring.max_evaluations``. It splits the round's value fairly between updates that
  carry the same information, and honest validators agree on it more than on LOO (measured, see
  docs/protocol.md).
Both are linear in the per-sample losses, so each value comes with its standard error over the
validator's samples; a value within ``spec.scoring.significance`` standard errors of zero scores
0, so that an update that changes nothing measurable is not paid for luck.
Entries:
- a score: the value in units of :data:`SCORE_UNIT` loss, rounded to an integer;
- ``UNAVAILABLE``: the blob could not be fetched or did not match its revealed hash;
- ``INVALID``: it does not decode for the model, was made for another task/round/trainer,
  exceeds the spec's norm bound, is zero or a copy (of the last aggregate, of an update revealed
  in the last ``scoring.copy_rounds`` rounds, or of another update of this round), or its norm
  is far above the round's median (:func:`screen_updates`);
- ``HARMFUL``: its value is below the spec's ``scoring.harm_threshold``. Harmful updates are left
  out and the others scored again without them, so one bad update does not inflate the rest.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from eth_utils import to_checksum_address
from torch import Tensor, nn

from fedmarket.aggregation import Delta, aggregate, capped_weights
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
    value: float | None = None  # the rule's value in loss units, for scored and harmful updates
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


EXACT_SHAPLEY_MAX = 8  # 2^8 = 256 coalition evaluations; beyond that, sample permutations
TRUNCATION = (
    0.01  # TMC: a permutation stops once its prefix is this close (share of the round's value) to all
)


def _value(paired: np.ndarray) -> Value:
    """Mean and standard error of per-sample loss improvements."""
    stderr = float(paired.std(ddof=1) / math.sqrt(len(paired))) if len(paired) > 1 else 0.0
    return Value(float(paired.mean()), stderr)


class Coalitions:
    """Per-sample losses of coalitions of a round's updates, each evaluated once.

    A coalition keeps its members' deltas and zeroes the rest, the aggregation weights unchanged.
    """

    def __init__(
        self,
        deltas: Sequence[Delta],
        num_samples: Sequence[int],
        *,
        settings: AggregationSettings,
        losses_of: LossesFn,
    ) -> None:
        self._deltas, self._num_samples, self._settings, self._losses_of = (
            deltas,
            num_samples,
            settings,
            losses_of,
        )
        self._zeros = [{key: torch.zeros_like(t) for key, t in delta.items()} for delta in deltas]
        self._cache: dict[frozenset[int], np.ndarray] = {}
        self.size = len(deltas)
        # FedAvg is linear: a coalition's aggregate is the sum of its members' weighted deltas (the
        # weights of everyone, as `aggregate` would give them), with no per-coalition re-weighting.
        self._weighted: list[dict[str, Tensor]] | None = None
        if settings.method == "fedavg" and deltas:
            weights = capped_weights(num_samples, max_share=settings.max_weight_share)
            self._weighted = [
                {key: weight * t.to(torch.float64) for key, t in delta.items()}
                for weight, delta in zip(weights, deltas, strict=True)
            ]

    def _aggregate(self, members: frozenset[int]) -> dict[str, Tensor]:
        if self._weighted is None:
            kept = [d if i in members else self._zeros[i] for i, d in enumerate(self._deltas)]
            return aggregate(kept, self._num_samples, self._settings).delta
        ordered = sorted(members)
        return {
            key: sum((self._weighted[i][key] for i in ordered[1:]), self._weighted[ordered[0]][key]).to(
                template.dtype
            )
            for key, template in self._deltas[0].items()
        }

    @property
    def evaluations(self) -> int:
        return len(self._cache)

    def losses(self, members: frozenset[int]) -> np.ndarray:
        if members not in self._cache:
            delta = self._aggregate(members) if members else self._zeros[0]
            self._cache[members] = np.asarray(self._losses_of(delta), dtype=np.float64)
        return self._cache[members]


def leave_one_out_values(coalitions: Coalitions, *, spec: TaskSpec, seed: int) -> list[Value]:
    """Per update: the loss without it minus the loss with all. ``n + 1`` evaluations."""
    if not coalitions.size:
        return []
    everyone = frozenset(range(coalitions.size))
    full = coalitions.losses(everyone)
    return [_value(coalitions.losses(everyone - {i}) - full) for i in range(coalitions.size)]


def shapley_values(coalitions: Coalitions, *, spec: TaskSpec, seed: int) -> list[Value]:
    """Per update: its Shapley value, exact up to :data:`EXACT_SHAPLEY_MAX` updates, else TMC."""
    n = coalitions.size
    if not n:
        return []
    if n <= EXACT_SHAPLEY_MAX:
        return _exact_shapley(coalitions)
    return _truncated_monte_carlo_shapley(coalitions, seed=seed, max_evaluations=spec.scoring.max_evaluations)


def _exact_shapley(coalitions: Coalitions) -> list[Value]:
    n = coalitions.size
    weight = [math.factorial(k) * math.factorial(n - k - 1) / math.factorial(n) for k in range(n)]
    marginals = [np.zeros_like(coalitions.losses(frozenset())) for _ in range(n)]
    for mask in range(2**n):
        members = frozenset(i for i in range(n) if mask >> i & 1)
        without = coalitions.losses(members)
        for i in range(n):
            if i not in members:
                marginals[i] += weight[len(members)] * (without - coalitions.losses(members | {i}))
    return [_value(m) for m in marginals]


def _truncated_monte_carlo_shapley(coalitions: Coalitions, *, seed: int, max_evaluations: int) -> list[Value]:
    """Average marginals over seeded random permutations (TMC-Shapley, Ghorbani & Zou 2019, with
    GTG-Shapley's guided first positions); within a permutation, once the prefix's loss is within
    :data:`TRUNCATION` of the whole round's improvement of the full set's loss, the remaining
    updates' marginals count as 0. Stops when ``max_evaluations`` coalitions have been evaluated."""
    n = coalitions.size
    generator = np.random.default_rng(seed)
    empty, everyone = coalitions.losses(frozenset()), coalitions.losses(frozenset(range(n)))
    tolerance = TRUNCATION * abs(float(empty.mean() - everyone.mean()))
    sums = [np.zeros_like(empty) for _ in range(n)]
    permutations = 0
    while permutations < max_evaluations and (permutations == 0 or coalitions.evaluations < max_evaluations):
        prefix: frozenset[int] = frozenset()
        before = empty
        order = generator.permutation(n)
        # GTG-Shapley's guided sampling (Liu et al. 2022): permutation k puts update k mod n first,
        # so every update's marginal is measured at least once before truncation can hide it.
        first = permutations % n
        order = np.concatenate(([first], order[order != first]))
        for i in order:
            if abs(float(before.mean() - everyone.mean())) <= tolerance:
                break  # truncated: the rest add nothing measurable
            prefix = prefix | {int(i)}
            after = coalitions.losses(prefix)
            sums[int(i)] += before - after
            before = after
        permutations += 1
    return [_value(total / permutations) for total in sums]


ValuesFn = Callable[..., list[Value]]
VALUES: dict[str, ValuesFn] = {"loo": leave_one_out_values, "shapley": shapley_values}


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


@dataclass(frozen=True)
class Reference:
    """An earlier update that a new one must not copy, with what it was (for the flag's detail)."""

    label: str  # e.g. "the previous round's aggregate", "0xAbC…'s round 3 update"
    delta: Delta


NEAR_ZERO = 1e-3  # a delta below this share of the round's median norm carries nothing: a zero update
SIGNAL_ACTIVE = 10  # the signal screen runs while the round's median |cosine| is this many noise bands


def _flat(delta: Delta) -> Tensor:
    """One float64 vector, tensors in key order, so deltas decoded in any order line up."""
    return torch.cat([delta[key].reshape(-1).to(torch.float64) for key in sorted(delta)])


def _cosines(rows: Tensor, columns: Tensor) -> Tensor:
    """|cosine| of every row with every column vector (rows of `columns`), at most 1; 0 against a
    zero vector."""
    norms = rows.norm(dim=1, keepdim=True).clamp_min(1e-300) * columns.norm(dim=1).clamp_min(1e-300)
    return (rows @ columns.T / norms).abs().clamp_max(1.0)


def screen_updates(
    trainers: Sequence[str],
    deltas: Sequence[Delta],
    references: Sequence[Reference],
    *,
    spec: TaskSpec,
    num_samples: Sequence[int] | None = None,
    own_update: Delta | None = None,
) -> dict[int, ScoredUpdate]:
    """INVALID flags, by index, for updates that carry nothing of their own or try to outweigh the
    rest: a zero update; one (nearly) a multiple of a reference (an echo of the last aggregate, a
    replay of an earlier update, anyone's, the trainer's own included) or of another update of
    this round (commit-reveal makes an honest same-round copy impossible, so both are collusion);
    one whose norm per square root of its sample count exceeds ``max_norm_ratio`` times the
    round's median of that (a boost; an honest trainer with more data takes more steps, and its
    norm grows about as the square root of its samples: measured on the demo); and one
    that is as orthogonal to the validator's `own_update` as a random direction would be (|cosine|
    within ``signal_z / sqrt(parameters)``; the validator trains the round's model on its own
    clean data, :func:`own_update`, as FLTrust's server does, Cao et al. 2021): noise, which
    carries no signal of any data. Only |cosine| near 0 counts: late in training an honest
    skewed update's cosine with any other falls toward 0.02 (measured on the demo model), so a
    positive threshold would flag honest trainers, and the screen runs only while the round's
    median |cosine| is :data:`SIGNAL_ACTIVE` bands or more; a flipped update is left to the harm
    and norm rules.
    |cosine| counts a negated copy too: "minus the last aggregate" replays the previous model."""
    settings = spec.scoring
    if not deltas:
        return {}
    copies = settings.copy_similarity < 1.0  # 1: off
    flat = torch.stack([_flat(d) for d in deltas])
    norms = flat.norm(dim=1)
    median = float(norms.median()) if len(deltas) > 2 else float(norms.max())
    flags: dict[int, ScoredUpdate] = {}

    def flag(i: int, reason: RejectionReason, detail: str) -> None:
        flags.setdefault(i, ScoredUpdate(trainers[i], INVALID, reason, detail, norm=float(norms[i])))

    threshold = settings.copy_similarity
    for i in range(len(deltas) if copies else 0):
        if float(norms[i]) <= NEAR_ZERO * median:
            flag(
                i,
                RejectionReason.COPY,
                f"zero update (norm {float(norms[i]):.2e}): the global model replayed",
            )
    if copies and references:
        against = _cosines(flat, torch.stack([_flat(r.delta) for r in references]))
        for i, j in (against > threshold).nonzero().tolist():
            detail = f"copies {references[j].label} (|cosine| {float(against[i, j]):.4f})"
            flag(i, RejectionReason.COPY, detail)
    if copies and len(deltas) > 1:
        among = _cosines(flat, flat).fill_diagonal_(0.0)
        for i, j in (among > threshold).nonzero().tolist():
            detail = f"the same update as {trainers[j]}'s this round (|cosine| {float(among[i, j]):.4f})"
            flag(i, RejectionReason.COPY, detail)
    if settings.signal_z > 0 and own_update is not None:
        own = _flat(own_update)
        signal = (flat @ own) / (norms * own.norm()).clamp_min(1e-300)
        band = settings.signal_z / math.sqrt(own.numel())  # |cosine| of a random direction: ~1/sqrt(d)
        # Only while the round's updates clearly share the validator's direction: near convergence
        # honest updates fall into the noise band too (measured on the demo model from round ~5).
        carries_signal = float(signal.abs().median()) >= SIGNAL_ACTIVE * band
        for i in range(len(deltas) if carries_signal else 0):
            if abs(float(signal[i])) <= band:
                detail = (
                    f"|cosine| {abs(float(signal[i])):.4f} with the validator's own update is within "
                    f"{settings.signal_z} / sqrt({own.numel()}) = {band:.4f}: indistinguishable from noise"
                )
                flag(i, RejectionReason.NO_SIGNAL, detail)
    if settings.max_norm_ratio > 0 and len(deltas) > 2:
        counts = torch.tensor(
            [max(int(n), 1) for n in (num_samples or [1] * len(deltas))], dtype=torch.float64
        )
        per_step = norms / counts.sqrt()
        typical = float(per_step.median())
        for i in range(len(deltas)):
            if float(per_step[i]) > settings.max_norm_ratio * typical:
                detail = (
                    f"norm {float(norms[i]):.3f} for {int(counts[i])} samples: {float(per_step[i]):.4f} per "
                    f"sqrt(sample) > {settings.max_norm_ratio} x the round's median {typical:.4f}"
                )
                flag(i, RejectionReason.NORM_OUTLIER, detail)
    return flags


def own_update(
    spec: TaskSpec, global_state: Mapping[str, Tensor], data: LocalData, *, seed: int
) -> dict[str, Tensor]:
    """The update the validator would send itself: the round's model trained on its own held-out
    data with the task's training settings and the round's public seed, so every validator
    holding the same data gets the same one (the reference of the signal screen)."""
    from fedmarket.codec import state_delta
    from fedmarket.learning import train
    from fedmarket.models import build_model

    model = build_model(spec)
    model.load_state_dict(global_state)
    train(model, data, spec.training, seed=seed)
    return state_delta(model.state_dict(), global_state)


def round_seed(task_id: int, round_no: int) -> int:
    """The public seed of a round's sampled scoring: every validator draws the same permutations."""
    return int.from_bytes(
        hashlib.sha256(f"fedmarket/scoring/{task_id}/{round_no}".encode()).digest()[:8], "big"
    )


def score_round(
    *,
    spec: TaskSpec,
    task_id: int,
    round_no: int,
    global_state: Mapping[str, Tensor],
    revealed: Sequence[Revealed],
    losses_of_state: LossesFn,
    references: Sequence[Reference] = (),
    validator_update: Delta | None = None,
) -> dict[str, ScoredUpdate]:
    """Entries by trainer (checksummed) under ``spec.scoring.method``. `revealed` in reveal (chain)
    order: of two identical blobs the first keeps its place. `losses_of_state(state)`:
    per-sample losses on the validator's data. `references`: the earlier updates no update may
    copy (:func:`screen_updates`; :func:`fedmarket.rounds.copy_references` reads them);
    `validator_update`: the validator's :func:`own_update` for the signal screen (None: off)."""
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
    screened = screen_updates(
        [c[0] for c in candidates],
        [c[1] for c in candidates],
        references,
        spec=spec,
        num_samples=[c[2] for c in candidates],
        own_update=validator_update,
    )
    for index, flag in screened.items():
        results[flag.trainer] = replace(flag, num_samples=candidates[index][2])
    candidates = [c for i, c in enumerate(candidates) if i not in screened]

    def losses_of(delta: Mapping[str, Tensor]) -> np.ndarray:
        return losses_of_state(apply_delta(global_state, delta))

    values_of = VALUES[spec.scoring.method]
    threshold, z = spec.scoring.harm_threshold, spec.scoring.significance
    while candidates:  # terminates: each pass with a harmful update removes it
        coalitions = Coalitions(
            [c[1] for c in candidates],
            [c[2] for c in candidates],
            settings=spec.aggregation,
            losses_of=losses_of,
        )
        values = values_of(coalitions, spec=spec, seed=round_seed(task_id, round_no))
        harmful = {c[0] for c, value in zip(candidates, values, strict=True) if value.mean < threshold}
        for (trainer, _, samples, norm), value in zip(candidates, values, strict=True):
            if trainer in harmful:
                detail = f"{spec.scoring.method} value {value.mean:.4f} < harm threshold {threshold}"
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


RULES: dict[str, ScoringRule] = {method: score_round for method in VALUES}
