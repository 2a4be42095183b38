"""Declared models: a task spec's layer list becomes a ``torch.nn.Sequential``.

Shapes are propagated through the declared layers before anything is allocated, so a spec whose
layers do not fit together, or whose model is too large, is refused with a message that names
the layer; a task posted to the market can be checked without building it.

Weights are initialised from ``spec.init_seed`` inside a forked RNG: every party that builds the
model gets the identical round-0 weights, and the caller's global random state is untouched.

Layers are numbered from 0 in messages, as in ``spec.layers``.

Batch normalisation is left out by design: its running mean and variance are state, not
weights, and averaging per-trainer deltas of those statistics (FedAvg) gives numbers that
describe no one's data. Layers carry weights and biases only, so a model's ``state_dict`` is
exactly what an update changes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from fedmarket.errors import ModelBuildError
from fedmarket.spec import (
    Conv2dLayer,
    DropoutLayer,
    FlattenLayer,
    Layer,
    LinearLayer,
    MaxPool2dLayer,
    ReLULayer,
    TanhLayer,
    TaskSpec,
)

__all__ = ["MAX_PARAMETERS", "build_model", "output_shape", "parameter_count"]

MAX_PARAMETERS = 5_000_000
"""Largest model a task may declare: 20 MB of float32 per update, so every trainer can download,
train and upload it each round on ordinary hardware and it fits the store's blob limit."""

Shape = tuple[int, ...]


@dataclass(frozen=True)
class _Step:
    """One declared layer with the per-sample shape it receives and the parameters it owns."""

    index: int
    layer: Layer
    input_shape: Shape
    output_shape: Shape
    parameters: int


def parameter_count(spec: TaskSpec) -> int:
    """Number of trainable parameters the spec declares, after checking that its layers fit."""
    return sum(step.parameters for step in _plan(spec))


def output_shape(spec: TaskSpec) -> Shape:
    """Per-sample output shape of the declared model (``(num_classes,)`` for a valid spec)."""
    return _plan(spec)[-1].output_shape


def build_model(spec: TaskSpec, *, max_parameters: int = MAX_PARAMETERS) -> nn.Sequential:
    """The round-0 model of a task: float32, seeded from ``spec.init_seed``, on the CPU.

    Raises ``ModelBuildError`` when the layers do not fit together, the output is not
    ``num_classes`` wide, or the model has more than ``max_parameters`` parameters; all checked
    before any weight is allocated.
    """
    steps = _plan(spec)
    total = sum(step.parameters for step in steps)
    if total > max_parameters:
        raise ModelBuildError(
            f"the declared model has {total:,} parameters, more than the limit of {max_parameters:,}: "
            "use narrower or fewer layers"
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.init_seed)
        return nn.Sequential(*(_module(step.layer) for step in steps))


def _plan(spec: TaskSpec) -> list[_Step]:
    """Propagate the per-sample shape through the layers; raise on the first layer that cannot take it."""
    steps: list[_Step] = []
    shape: Shape = tuple(spec.input_shape)
    for index, layer in enumerate(spec.layers):
        output, parameters = _propagate(index, layer, shape)
        steps.append(_Step(index, layer, shape, output, parameters))
        shape = output
    if shape != (spec.num_classes,):
        raise ModelBuildError(
            f"the model outputs shape {shape} per sample, but the task has {spec.num_classes} classes: "
            f"end with a layer of {spec.num_classes} outputs (e.g. linear out_features={spec.num_classes})"
        )
    return steps


def _propagate(index: int, layer: Layer, shape: Shape) -> tuple[Shape, int]:
    """Output shape and parameter count of ``layer`` when it receives ``shape``."""
    where = f"layer {index} ({layer.type})"
    match layer:
        case LinearLayer():
            if len(shape) != 1:
                raise ModelBuildError(
                    f"{where} expects flat input (features,), gets shape {shape}: "
                    "add a flatten layer before it"
                )
            if shape[0] != layer.in_features:
                raise ModelBuildError(f"{where} expects {layer.in_features} input features, gets {shape[0]}")
            weights = layer.in_features * layer.out_features
            return (layer.out_features,), weights + (layer.out_features if layer.bias else 0)
        case Conv2dLayer():
            channels, height, width = _image(where, shape)
            if channels != layer.in_channels:
                raise ModelBuildError(f"{where} expects {layer.in_channels} input channels, gets {channels}")
            out = _window(
                where, (height, width), kernel=layer.kernel_size, stride=layer.stride, padding=layer.padding
            )
            weights = layer.out_channels * layer.in_channels * layer.kernel_size**2
            return (layer.out_channels, *out), weights + layer.out_channels
        case MaxPool2dLayer():
            channels, height, width = _image(where, shape)
            stride = layer.stride or layer.kernel_size
            out = _window(where, (height, width), kernel=layer.kernel_size, stride=stride, padding=0)
            return (channels, *out), 0
        case FlattenLayer():
            return (math.prod(shape),), 0
        case ReLULayer() | TanhLayer() | DropoutLayer():
            return shape, 0
    raise ModelBuildError(f"{where} is not a layer this SDK knows how to build")


def _image(where: str, shape: Shape) -> Shape:
    if len(shape) != 3:
        raise ModelBuildError(f"{where} expects input shaped (channels, height, width), gets shape {shape}")
    return shape


def _window(where: str, size: Shape, *, kernel: int, stride: int, padding: int) -> Shape:
    """Spatial output size of a sliding window (convolution or pooling), as PyTorch computes it."""
    out = tuple((extent + 2 * padding - kernel) // stride + 1 for extent in size)
    if min(out) < 1:
        raise ModelBuildError(
            f"{where} has a {kernel}x{kernel} window that does not fit its {size[0]}x{size[1]} input "
            f"(padding {padding}): use a smaller kernel or more padding"
        )
    return out


def _module(layer: Layer) -> nn.Module:
    """The PyTorch module of one checked layer, float32 whatever the global default dtype."""
    match layer:
        case LinearLayer():
            return nn.Linear(layer.in_features, layer.out_features, bias=layer.bias, dtype=torch.float32)
        case Conv2dLayer():
            return nn.Conv2d(
                layer.in_channels,
                layer.out_channels,
                layer.kernel_size,
                stride=layer.stride,
                padding=layer.padding,
                dtype=torch.float32,
            )
        case MaxPool2dLayer():
            return nn.MaxPool2d(layer.kernel_size, stride=layer.stride)
        case ReLULayer():
            return nn.ReLU()
        case TanhLayer():
            return nn.Tanh()
        case FlattenLayer():
            return nn.Flatten()
        case DropoutLayer():
            return nn.Dropout(layer.p)
    raise ModelBuildError(f"{layer.type} is not a layer this SDK knows how to build")
