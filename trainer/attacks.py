"""Adversarial trainers and validators, for demonstrating and measuring the market's defences.

A trainer started with ``--attacker MODE`` trains (honestly, or on flipped labels), then rewrites
its delta with what it can know when it commits: its own honest delta, the honest deltas of the
group it colludes with (a node alone colludes with itself: it trains one delta per shard of its
data), the previous round's public aggregate and the updates revealed in the previous round.
Commit-reveal keeps it from seeing this round's honest updates.

    sign-flip   -SIGN_FLIP_SCALE x the honest delta (the scaled sign-flipping attack)
    boost       BOOST_SCALE x the honest delta, kept under the norm bound (model replacement)
    noise       Gaussian noise NOISE_SCALE times the honest delta's norm, no signal
    zero        a zero delta: claims a share without contributing (a free rider)
    echo        the previous round's aggregate delta, replayed as its own (zero in round 1)
    copy        another trainer's update from the previous round (zero in round 1)
    alie        "A Little Is Enough" (Baruch et al. 2019): the group's mean minus z standard
                deviations per coordinate, z from the group's size, the same vector from everyone
    ipm         inner-product manipulation (Xie et al. 2020): -IPM_EPSILON x the group's mean
    label-flip  trains honestly on labels flipped to ``num_classes - 1 - y``
    sybil       honest training; the harness splits one data set across several identities
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from fedmarket.aggregation import Delta
from fedmarket.chain import MarketClient
from fedmarket.cid import cid_from_digest
from fedmarket.codec import update_norm
from fedmarket.learning import LocalData, train
from fedmarket.spec import TaskSpec
from fedmarket.store import ContentStore

SIGN_FLIP_SCALE = 4.0  # an unscaled flip is diluted by the honest majority; attackers scale it up
BOOST_SCALE = 10.0
NOISE_SCALE = 4.0
IPM_EPSILON = 0.5
NORM_BOUND_MARGIN = 0.99  # a boosted update stays just under the spec's bound, so it is not refused for it


@dataclass(frozen=True)
class AttackContext:
    """What an attacker can know when it commits in a round."""

    norm_bound: float
    trainers: int  # committed trainers in the round (public once commits are in)
    colluders: Sequence[Delta] = ()  # the group's honest deltas this round, its own first
    previous_aggregate: Delta | None = None  # last published model minus the one before
    previous_updates: Sequence[Delta] = ()  # updates revealed last round by other trainers


Rewrite = Callable[[dict[str, Tensor], AttackContext], dict[str, Tensor]]


@dataclass(frozen=True)
class Attack:
    """One attacker's behaviour: an optional change to its training data and a delta rewrite."""

    name: str
    rewrite: Rewrite
    flips_labels: bool = False  # trains on flipped labels
    colluding: bool = False  # needs the group's honest deltas (AttackContext.colluders)
    uses_history: bool = False  # needs the previous round's aggregate and updates

    def training_data(self, data: LocalData, num_classes: int) -> LocalData:
        return LocalData(data.X, num_classes - 1 - data.y) if self.flips_labels else data


def _scaled(delta: Delta, scale: float) -> dict[str, Tensor]:
    return {k: scale * v for k, v in delta.items()}


def _zeros(delta: Delta) -> dict[str, Tensor]:
    return {k: torch.zeros_like(v) for k, v in delta.items()}


def _mean(deltas: Sequence[Delta]) -> dict[str, Tensor]:
    return {k: torch.stack([d[k] for d in deltas]).mean(dim=0) for k in deltas[0]}


def alie_z(trainers: int, attackers: int) -> float:
    """Baruch et al.'s z_max: the most standard deviations the group can shift every coordinate
    while still looking closer to the majority than the honest outliers do."""
    supporters = math.floor(trainers / 2 + 1) - attackers
    share = (trainers - supporters) / trainers
    return statistics.NormalDist().inv_cdf(min(max(share, 0.5), 0.999))


def _sign_flip(delta: dict[str, Tensor], context: AttackContext) -> dict[str, Tensor]:
    return _scaled(delta, -SIGN_FLIP_SCALE)


def _boost(delta: dict[str, Tensor], context: AttackContext) -> dict[str, Tensor]:
    norm = update_norm(delta)
    cap = NORM_BOUND_MARGIN * context.norm_bound / norm if norm > 0 else BOOST_SCALE
    return _scaled(delta, min(BOOST_SCALE, cap))


def _zero(delta: dict[str, Tensor], context: AttackContext) -> dict[str, Tensor]:
    return _zeros(delta)


def _echo(delta: dict[str, Tensor], context: AttackContext) -> dict[str, Tensor]:
    if context.previous_aggregate is None:
        return _zeros(delta)
    return {k: v.clone().to(delta[k].dtype) for k, v in context.previous_aggregate.items()}


def _alie(delta: dict[str, Tensor], context: AttackContext) -> dict[str, Tensor]:
    group = list(context.colluders) or [delta]
    z = alie_z(context.trainers, len(group))
    stacked = {k: torch.stack([d[k] for d in group]) for k in delta}
    return {k: s.mean(dim=0) - z * s.std(dim=0, correction=0) for k, s in stacked.items()}


def _ipm(delta: dict[str, Tensor], context: AttackContext) -> dict[str, Tensor]:
    return _scaled(_mean(list(context.colluders) or [delta]), -IPM_EPSILON)


def _honest(delta: dict[str, Tensor], context: AttackContext) -> dict[str, Tensor]:
    return delta


def _noise(seed: int) -> Rewrite:
    generator = torch.Generator().manual_seed(seed)

    def noise(delta: dict[str, Tensor], context: AttackContext) -> dict[str, Tensor]:
        raw = {k: torch.randn(v.shape, generator=generator) for k, v in delta.items()}
        scale = NOISE_SCALE * update_norm(delta) / max(update_norm(raw), 1e-12)
        return {k: (v * scale).to(delta[k].dtype) for k, v in raw.items()}

    return noise


def _copy(seed: int) -> Rewrite:
    generator = np.random.default_rng(seed)

    def copy(delta: dict[str, Tensor], context: AttackContext) -> dict[str, Tensor]:
        if not context.previous_updates:
            return _zeros(delta)
        victim = context.previous_updates[int(generator.integers(len(context.previous_updates)))]
        return {k: v.clone().to(delta[k].dtype) for k, v in victim.items()}

    return copy


ATTACKS = (
    "sign-flip", "boost", "noise", "zero", "echo", "copy", "alie", "ipm", "label-flip", "sybil", "free-rider",
)  # fmt: skip
"""Every mode; ``free-rider`` is the older name of ``zero``."""


def attack(mode: str, *, seed: int = 0) -> Attack:
    """The attacker for `mode`; `seed` fixes its random choices (noise, the copied victim)."""
    match mode:
        case "sign-flip":
            return Attack(mode, _sign_flip)
        case "boost":
            return Attack(mode, _boost)
        case "noise":
            return Attack(mode, _noise(seed))
        case "zero" | "free-rider":
            return Attack(mode, _zero)
        case "echo":
            return Attack(mode, _echo, uses_history=True)
        case "copy":
            return Attack(mode, _copy(seed), uses_history=True)
        case "alie":
            return Attack(mode, _alie, colluding=True)
        case "ipm":
            return Attack(mode, _ipm, colluding=True)
        case "label-flip":
            return Attack(mode, _honest, flips_labels=True)
        case "sybil":
            return Attack(mode, _honest)
    raise ValueError(f"unknown attack {mode!r}; choose one of {', '.join(ATTACKS)}")


COLLUDING_SHARDS = 3  # a node alone plays a group of this many, one per shard of its data


def attack_context(
    attack: Attack,
    *,
    chain: MarketClient,
    store: ContentStore,
    spec: TaskSpec,
    task_id: int,
    round_no: int,
    global_state: Mapping[str, Tensor],
    data: LocalData,
    seed: int,
) -> AttackContext:
    """What a lone attacker node knows when it commits: the round's trainer count, the last
    aggregate and last round's revealed updates from the chain and store, and, for a colluding
    attack, one honest delta per shard of its own data (its stand-in for the group)."""
    from fedmarket.codec import decode_update, state_delta
    from fedmarket.ledger import read_round
    from fedmarket.models import build_model
    from fedmarket.rounds import fetch_model

    colluders = []
    if attack.colluding:
        for i, shard in enumerate(shards(data, COLLUDING_SHARDS)):
            model = build_model(spec)
            model.load_state_dict(global_state)
            train(model, shard, spec.training, seed=seed + i)
            colluders.append(state_delta(model.state_dict(), global_state))
    previous_aggregate, previous_updates = None, []
    if attack.uses_history and round_no > 1:
        previous = fetch_model(store, spec, chain.round(task_id, round_no - 1).model_hash)
        previous_aggregate = {k: global_state[k] - previous[k] for k in global_state}
        for trainer, update_hash in read_round(chain, task_id, round_no - 1).reveals.items():
            if trainer.lower() != chain.signer.lower():
                update = decode_update(store.get(cid_from_digest(update_hash)), model=global_state)
                previous_updates.append(update.delta)
    return AttackContext(
        norm_bound=spec.norm_bound,
        trainers=max(chain.task(task_id).trainer_count, 1),
        colluders=colluders,
        previous_aggregate=previous_aggregate,
        previous_updates=previous_updates,
    )


def shards(data: LocalData, parts: int) -> list[LocalData]:
    """`data` cut into `parts` interleaved shards: how one node plays a colluding group alone,
    and how a Sybil splits one data set across identities."""
    return [LocalData(data.X[i::parts], data.y[i::parts]) for i in range(parts)]


# ----------------------------------------------------------------------------- validators
# A validator started with ``--bad-validator MODE`` scores honestly, then rewrites its vector:
#
#     inflate  the top score of the round for one favoured trainer (the first in the round's
#              order, by a seed), every round; its other scores unchanged
#     random   a random score for every update
#     lazy     commits and never reveals (handled by the node: it skips the reveal)

BAD_VALIDATORS = ("inflate", "random", "lazy")


def bad_validator(mode: str, *, seed: int = 0):
    """The score-vector rewrite for `mode` (None for `lazy`, which the node plays by not revealing)."""
    from fedmarket.consensus import FLAGS

    if mode == "inflate":

        def inflate(trainers: list[str], vector: list[int]) -> list[int]:
            top = max([e for e in vector if e not in FLAGS] + [1])
            favoured = sorted(trainers)[seed % len(trainers)] if trainers else None
            return [top if t == favoured else e for t, e in zip(trainers, vector, strict=True)]

        return inflate
    if mode == "random":
        generator = torch.Generator().manual_seed(seed)

        def scramble(trainers: list[str], vector: list[int]) -> list[int]:
            scale = max([abs(e) for e in vector if e not in FLAGS] + [1])
            return [int(torch.randint(0, 2 * scale + 1, (1,), generator=generator)) for _ in vector]

        return scramble
    if mode == "lazy":
        return None
    raise ValueError(f"unknown bad-validator mode {mode!r}; choose one of {', '.join(BAD_VALIDATORS)}")
