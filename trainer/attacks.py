"""Adversarial update rewrites, for demonstrating and testing the coordinator's defences.

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
