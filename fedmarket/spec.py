"""The task spec: everything trainers and the coordinator must agree on before round 0.

A task owner publishes one spec per task. Its canonical JSON is stored as a blob, and its sha256
(:meth:`TaskSpec.spec_hash`) is the ``specHash`` in the on-chain terms, so nobody can change the
model, the training recipe or the scoring rules after trainers have staked.

The spec declares the model as a list of layers (see :mod:`fedmarket.models`); no task ever
ships code. The schema checks each field on its own; :func:`fedmarket.models.parameter_count`
checks that the layers fit together.

Every spec model forbids unknown fields (a typo must not silently fall back to a default), is
frozen, and raises :class:`~fedmarket.errors.SpecError` naming the field and the reason when
built with its constructor, :meth:`TaskSpec.from_json` or :func:`mlp_spec`. (Pydantic's own
``model_validate*`` still raise ``ValidationError``, whose message carries the same reasons.)
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Annotated, Any, Literal, cast

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fedmarket.canonical import canonical_json
from fedmarket.errors import SpecError

__all__ = [
    "AggregationSettings",
    "Conv2dLayer",
    "DataFormat",
    "DropoutLayer",
    "FlattenLayer",
    "Layer",
    "LinearLayer",
    "MaxPool2dLayer",
    "PrivacySettings",
    "ReLULayer",
    "ScoringSettings",
    "TanhLayer",
    "TaskSpec",
    "TrainingSettings",
    "mlp_spec",
]

# Bounds that no sensible task crosses; the parameter limit in fedmarket.models caps the total.
_MAX_FEATURES = 1 << 20
_MAX_CHANNELS = 4096
_MAX_WINDOW = 32  # kernel size, stride, padding
_MAX_INPUT_DIM = 65_536
_InputDim = Annotated[int, Field(ge=1, le=_MAX_INPUT_DIM)]


class _SpecModel(BaseModel):
    """Strict, immutable base of every spec model; turns validation errors into ``SpecError``."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise _spec_error(exc) from exc


# --- layers --------------------------------------------------------------------------------------


class LinearLayer(_SpecModel):
    """Fully connected layer ``torch.nn.Linear(in_features, out_features, bias)``."""

    type: Literal["linear"] = "linear"
    in_features: int = Field(ge=1, le=_MAX_FEATURES)
    out_features: int = Field(ge=1, le=_MAX_FEATURES)
    bias: bool = True


class Conv2dLayer(_SpecModel):
    """2-D convolution with a square kernel and a bias, over inputs shaped (channels, height, width)."""

    type: Literal["conv2d"] = "conv2d"
    in_channels: int = Field(ge=1, le=_MAX_CHANNELS)
    out_channels: int = Field(ge=1, le=_MAX_CHANNELS)
    kernel_size: int = Field(ge=1, le=_MAX_WINDOW)
    stride: int = Field(default=1, ge=1, le=_MAX_WINDOW)
    padding: int = Field(default=0, ge=0, le=_MAX_WINDOW)


class MaxPool2dLayer(_SpecModel):
    """2-D max pooling with a square window; ``stride`` defaults to the window, as in PyTorch."""

    type: Literal["maxpool2d"] = "maxpool2d"
    kernel_size: int = Field(ge=1, le=_MAX_WINDOW)
    stride: int | None = Field(default=None, ge=1, le=_MAX_WINDOW)


class ReLULayer(_SpecModel):
    """Rectified linear activation."""

    type: Literal["relu"] = "relu"


class TanhLayer(_SpecModel):
    """Hyperbolic tangent activation."""

    type: Literal["tanh"] = "tanh"


class FlattenLayer(_SpecModel):
    """Flattens each sample to one dimension, between convolutional and linear layers."""

    type: Literal["flatten"] = "flatten"


class DropoutLayer(_SpecModel):
    """Dropout with drop probability ``p`` (active in training only)."""

    type: Literal["dropout"] = "dropout"
    p: float = Field(ge=0.0, lt=1.0)


Layer = Annotated[
    LinearLayer | Conv2dLayer | MaxPool2dLayer | ReLULayer | TanhLayer | FlattenLayer | DropoutLayer,
    Field(discriminator="type"),
]
"""One declared layer; the ``type`` field picks which."""


# --- settings ------------------------------------------------------------------------------------


class TrainingSettings(_SpecModel):
    """The local training recipe every trainer follows each round."""

    local_epochs: int = Field(default=1, ge=1, le=1000)
    batch_size: int = Field(default=32, ge=1, le=65_536)
    optimizer: Literal["sgd", "adam"] = "sgd"
    learning_rate: float = Field(default=0.01, gt=0.0, le=10.0)
    momentum: float = Field(default=0.0, ge=0.0, lt=1.0)
    weight_decay: float = Field(default=0.0, ge=0.0, le=1.0)
    # FedProx (Li et al. 2020): adds (mu/2)·||w - w_global||² to the local loss, so skewed local
    # data cannot pull a trainer far from the round's model; 0 is plain local training.
    proximal_mu: float = Field(default=0.0, ge=0.0, le=100.0)


class AggregationSettings(_SpecModel):
    """How the coordinator combines accepted updates.

    ``trim_ratio`` is the share cut from each end for ``trimmed_mean``; ``krum_f`` the number of
    Byzantine updates ``krum`` tolerates; ``max_weight_share`` caps any one trainer's weight in
    ``fedavg`` so that claiming a huge sample count buys at most that share.

    ``server_optimizer`` turns the aggregate delta into the step the global model takes
    (:func:`fedmarket.aggregation.server_step`, Reddi et al. 2021): ``none`` adds it as it is
    (FedAvg), ``fedavgm`` with heavy-ball momentum ``server_momentum``, ``fedadam`` with Adam's
    moments (``adam_beta1``, ``adam_beta2``, adaptivity ``adam_tau``); both scale the step by
    ``server_learning_rate``, which ``none`` ignores.
    """

    method: Literal["fedavg", "median", "trimmed_mean", "krum"] = "fedavg"
    trim_ratio: float = Field(default=0.1, ge=0.0, lt=0.5)
    krum_f: int = Field(default=1, ge=0, le=1000)
    max_weight_share: float = Field(default=0.5, gt=0.0, le=1.0)
    server_optimizer: Literal["none", "fedavgm", "fedadam"] = "none"
    server_learning_rate: float = Field(default=1.0, gt=0.0, le=100.0)
    server_momentum: float = Field(default=0.9, ge=0.0, lt=1.0)
    adam_beta1: float = Field(default=0.9, ge=0.0, lt=1.0)
    adam_beta2: float = Field(default=0.99, ge=0.0, lt=1.0)
    adam_tau: float = Field(default=1e-3, gt=0.0, le=10.0)


class ScoringSettings(_SpecModel):
    """The rule each validator scores a round's updates by, on its own data (:mod:`fedmarket.scoring`).

    ``shapley`` values an update by its Shapley value over coalitions of the round's updates
    (exact up to 8 updates, else a truncated Monte-Carlo estimate of at most ``max_evaluations``
    model evaluations); ``loo`` by its leave-one-out marginal value. A validator flags an update
    scoring below ``harm_threshold`` as harmful; a stake majority of such flags gets its trainer
    slashed. The threshold cannot be positive: slashing needs evidence of harm, and an update that
    merely did not help is not that. Pay follows the consensus of the scores, in proportion to
    positive value only (see docs/protocol.md, "Consensus").
    """

    method: Literal["shapley", "loo"] = "shapley"
    # Measured on the demo (MNIST, 5 label-skewed trainers): honest updates scored down to -0.08,
    # a 4x sign-flipped one -1.2. The default leaves honest skewed data a wide margin.
    harm_threshold: float = Field(default=-0.2, ge=-1e6, le=0.0)
    # A value within this many standard errors of 0 scores 0 (0: off). It changes pay only: every
    # update the quorum neither rejects nor misses is aggregated. Off by default since the screens
    # catch noise: at 2, a round where one update happens to be significant paid it the round's
    # whole budget (measured in make attacks: a Sybil earned 15.8x the single holder at 2, 2.3x at 0).
    significance: float = Field(default=0.0, ge=0.0, le=10.0)
    # The per-round budget of model evaluations for sampled Shapley (bench/shapley_cost.py measures
    # its cost: make bench).
    max_evaluations: int = Field(default=500, ge=10, le=100_000)
    # Copies (docs/protocol.md, "Copies and outliers"): an update whose |cosine| with the previous
    # round's aggregate delta, with an update revealed in the last `copy_rounds` rounds, or with
    # another update of this round exceeds `copy_similarity` is flagged invalid, as is a zero one
    # (the global model replayed). 1 turns the check off.
    copy_similarity: float = Field(default=0.99, gt=0.0, le=1.0)
    copy_rounds: int = Field(default=2, ge=0, le=16)
    # An update whose norm per sqrt(sample) exceeds this many times the round's median of it is
    # flagged invalid (a boosted update, scaled up to outweigh the others); 0 turns it off.
    max_norm_ratio: float = Field(default=3.0, ge=0.0, le=1e6)
    # An update whose |cosine| with the validator's own update (the round's model trained on its
    # held-out data) is within signal_z / sqrt(parameters), as a random direction's is, is flagged
    # invalid: noise carries no data's signal (make fairness measures the honest rate). 0: off.
    signal_z: float = Field(default=3.0, ge=0.0, le=100.0)


class PrivacySettings(_SpecModel):
    """Differentially private local training (DP-SGD): per-sample clipping plus Gaussian noise."""

    noise_multiplier: float = Field(ge=0.0, le=100.0)
    max_grad_norm: float = Field(gt=0.0, le=1e4)
    delta: float = Field(gt=0.0, le=0.1)


class DataFormat(_SpecModel):
    """How trainers lay out their local data: ``npz`` arrays ``X``/``y`` or a CSV with a label column.

    Features are multiplied by ``feature_scale`` on load (e.g. 1/255 for 8-bit pixels), so every
    trainer feeds the model the same range.
    """

    format: Literal["npz", "csv"] = "npz"
    label_column: str = Field(default="label", min_length=1, max_length=100)
    feature_scale: float = Field(default=1.0, gt=0.0, le=1e6)


# --- the spec ------------------------------------------------------------------------------------


class TaskSpec(_SpecModel):
    """A training task: data layout, model, recipe, aggregation, scoring and update bound.

    ``input_shape`` is per sample: ``(features,)`` for tabular data, ``(channels, height,
    width)`` for images. ``norm_bound`` is the largest L2 norm an update may have; larger ones are
    refused. ``init_seed`` seeds the round-0 weights so every party can rebuild them.
    """

    name: str = Field(min_length=1, max_length=100)
    description: str = Field(default="", max_length=10_000)
    input_shape: tuple[_InputDim, ...] = Field(min_length=1, max_length=3)
    input_dtype: Literal["float32"] = "float32"
    num_classes: int = Field(ge=2, le=100_000)
    layers: tuple[Layer, ...] = Field(min_length=1, max_length=64)
    init_seed: int = Field(default=0, ge=0, lt=1 << 63)
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    aggregation: AggregationSettings = Field(default_factory=AggregationSettings)
    scoring: ScoringSettings = Field(default_factory=ScoringSettings)
    norm_bound: float = Field(gt=0.0, le=1e6)
    privacy: PrivacySettings | None = None
    data: DataFormat = Field(default_factory=DataFormat)

    def to_canonical_json(self) -> bytes:
        """The one byte string of this spec: the blob to store and the preimage of ``specHash``.

        Sorted keys, no whitespace, UTF-8, every default written out, floats in Python's shortest
        round-trip form; the same spec always gives the same bytes, whatever field order or
        spelling (``1`` or ``1.0``) it was written in.
        """
        return canonical_json(self)

    def spec_hash(self) -> bytes:
        """sha256 of the canonical JSON: the ``specHash`` of the task's on-chain terms."""
        return hashlib.sha256(self.to_canonical_json()).digest()

    @classmethod
    def from_json(cls, data: bytes | str) -> TaskSpec:
        """Parse and validate a spec from JSON (a store blob or an API body)."""
        try:
            return cls.model_validate_json(data)
        except ValidationError as exc:
            raise _spec_error(exc) from exc


def mlp_spec(
    *,
    name: str,
    input_dim: int,
    num_classes: int,
    hidden: Sequence[int] = (64,),
    activation: Literal["relu", "tanh"] = "relu",
    dropout: float = 0.0,
    norm_bound: float = 10.0,
    **fields: Any,
) -> TaskSpec:
    """A spec for a multilayer perceptron on flat features, the shape most tabular tasks need.

    ``hidden`` lists the hidden layer widths; each is followed by ``activation`` and, when
    ``dropout`` > 0, a dropout layer. Other ``TaskSpec`` fields (``training``, ``init_seed``,
    ``description``, ...) pass through ``fields``.
    """
    if activation not in ("relu", "tanh"):
        raise SpecError("activation", f"must be 'relu' or 'tanh', got {activation!r}")
    layers: list[dict[str, Any]] = []
    width = input_dim
    for size in hidden:
        layers += [{"type": "linear", "in_features": width, "out_features": size}, {"type": activation}]
        if dropout:
            layers.append({"type": "dropout", "p": dropout})
        width = size
    layers.append({"type": "linear", "in_features": width, "out_features": num_classes})
    return TaskSpec(
        name=name,
        input_shape=(input_dim,),
        num_classes=num_classes,
        layers=cast(Any, layers),  # plain dicts: the constructor validates them into layer models
        norm_bound=norm_bound,
        **fields,
    )


def _spec_error(exc: ValidationError) -> SpecError:
    """One ``SpecError`` listing every problem by dotted field path.

    Nested spec models raise ``SpecError`` from their own constructor, which pydantic wraps as a
    value error of the enclosing model; those are unfolded under their path. A "too short"
    complaint about a sequence whose items were refused is dropped: the item errors say why.
    """
    errors = exc.errors(include_url=False)
    problems: list[tuple[str, str]] = []
    for error in errors:
        loc = tuple(error["loc"])
        refused_items = any(other["loc"][: len(loc)] == loc != other["loc"] for other in errors)
        if error["type"] == "too_short" and refused_items:
            continue
        prefix = ".".join(str(part) for part in loc)
        nested = error.get("ctx", {}).get("error")
        if isinstance(nested, SpecError):
            problems += [(_join(prefix, field), reason) for field, reason in nested.problems]
        else:
            problems.append((prefix, error["msg"]))
    field, reason = problems[0]
    return SpecError(field, reason, problems=problems)


def _join(prefix: str, field: str) -> str:
    return f"{prefix}.{field}" if prefix and field else prefix or field
