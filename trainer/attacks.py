"""Adversarial update and score rewrites, for demonstrating and testing the market's defences.

A node started with ``--attacker MODE`` trains honestly, then rewrites its delta:

    sign-flip   -SIGN_FLIP_SCALE x the honest delta (the scaled sign-flipping attack)
    noise       Gaussian noise NOISE_SCALE times the honest delta's norm, no signal
    free-rider  a zero delta: claims a share without contributing
"""

from __future__ import annotations

import torch
from torch import Tensor

from fedmarket.codec import update_norm

SIGN_FLIP_SCALE = 4.0  # an unscaled flip is diluted by the honest majority; attackers scale it up
NOISE_SCALE = 4.0
ATTACKS = ("sign-flip", "noise", "free-rider")


def attack(mode: str, *, seed: int = 0):
    """The delta rewrite for `mode`."""
    if mode == "sign-flip":
        return lambda delta: {k: -SIGN_FLIP_SCALE * v for k, v in delta.items()}
    if mode == "noise":
        generator = torch.Generator().manual_seed(seed)

        def noise(delta: dict[str, Tensor]) -> dict[str, Tensor]:
            raw = {k: torch.randn(v.shape, generator=generator) for k, v in delta.items()}
            scale = NOISE_SCALE * update_norm(delta) / max(update_norm(raw), 1e-12)
            return {k: v * scale for k, v in raw.items()}

        return noise
    if mode == "free-rider":
        return lambda delta: {k: torch.zeros_like(v) for k, v in delta.items()}
    raise ValueError(f"unknown attack {mode!r}; choose one of {', '.join(ATTACKS)}")


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
