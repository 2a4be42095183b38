"""Small task specs for data and model tests (no chain involved)."""

from __future__ import annotations

from typing import Any

from fedmarket.spec import TaskSpec


def image_spec(input_shape: tuple[int, ...] = (1, 2, 2), **fields: Any) -> TaskSpec:
    """Three classes over 4-pixel images of `input_shape`: flatten, then one linear layer."""
    layers: Any = [{"type": "flatten"}, {"type": "linear", "in_features": 4, "out_features": 3}]
    return TaskSpec(
        name="images", input_shape=input_shape, num_classes=3, layers=layers, norm_bound=10.0, **fields
    )
