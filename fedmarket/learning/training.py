"""Local training and evaluation: plain PyTorch, no knowledge of chains, stores or HTTP.

:func:`train` runs the task's recipe (``TrainingSettings``) on a trainer's local data, optionally
with differential privacy (DP-SGD through Opacus) and optionally FedProx's proximal term
(:func:`proximal_term`); :func:`evaluate` measures loss and accuracy.
Both work in place on an ``nn.Module`` (normally ``fedmarket.models.build_model(spec)`` loaded
with the round's global weights); the node takes the weight delta afterwards.

Training is reproducible: the same model, data, settings and seed give bit-identical weights on
the same machine, and the caller's global random state is left as it was.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fedmarket.spec import PrivacySettings, TrainingSettings

__all__ = [
    "EvalResult",
    "LocalData",
    "TrainResult",
    "evaluate",
    "make_optimizer",
    "proximal_term",
    "sample_losses",
    "train",
]


@dataclass
class LocalData:
    """Local samples: features ``X`` (float32, ``(n, *input_shape)``), labels ``y`` (int64, ``(n,)``)."""

    X: np.ndarray
    y: np.ndarray

    def __post_init__(self) -> None:
        if len(self.X) != len(self.y):
            raise ValueError(f"X has {len(self.X)} samples but y has {len(self.y)} labels")

    def __len__(self) -> int:
        return len(self.y)

    def canonical_hash(self) -> bytes:
        """sha256 of the samples in one fixed layout, whatever file they came from: what a
        validator commits to at join (`dataHash`), so its split can never change unseen.
        Layout: b"fedmarket-data-v1", the shape of X as little-endian uint64s, X as little-endian
        float32, y as little-endian int64, all C order."""
        features = np.ascontiguousarray(self.X, dtype="<f4")
        labels = np.ascontiguousarray(self.y, dtype="<i8")
        digest = hashlib.sha256(b"fedmarket-data-v1")
        digest.update(np.asarray([features.ndim, *features.shape], dtype="<u8").tobytes())
        digest.update(features.tobytes())
        digest.update(labels.tobytes())
        return digest.digest()

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``X`` as float32 and ``y`` as int64 tensors (sharing memory where the dtypes already fit)."""
        features = torch.from_numpy(np.ascontiguousarray(self.X, dtype=np.float32))
        labels = torch.from_numpy(np.ascontiguousarray(self.y, dtype=np.int64))
        return features, labels


@dataclass(frozen=True)
class TrainResult:
    """What a local training run reports.

    ``num_samples`` is the number of local samples (the update's weight in FedAvg); ``loss`` the
    mean training loss of the last epoch; ``epsilon`` the privacy spent by this run at the task's
    ``delta`` when trained with DP-SGD (``inf`` with zero noise), else ``None``.
    """

    num_samples: int
    loss: float
    epsilon: float | None = None


@dataclass(frozen=True)
class EvalResult:
    """Mean cross-entropy loss and accuracy (fraction of samples classified right) on a data set."""

    loss: float
    accuracy: float


def make_optimizer(parameters, settings: TrainingSettings) -> torch.optim.Optimizer:
    """SGD (with momentum and weight decay) or Adam (with weight decay), at the settings' learning rate."""
    match settings.optimizer:
        case "sgd":
            return torch.optim.SGD(
                parameters,
                lr=settings.learning_rate,
                momentum=settings.momentum,
                weight_decay=settings.weight_decay,
            )
        case "adam":
            return torch.optim.Adam(parameters, lr=settings.learning_rate, weight_decay=settings.weight_decay)
    raise ValueError(f"unknown optimizer {settings.optimizer!r}; expected 'sgd' or 'adam'")


def proximal_term(model: nn.Module, anchor: Mapping[str, torch.Tensor], mu: float) -> torch.Tensor:
    """FedProx's ``(mu / 2) * ||w - w_global||**2`` over the model's parameters (Li et al. 2020).

    Added to the local loss, its gradient ``mu * (w - w_global)`` pulls the weights back toward the
    round's model, so a trainer with skewed data drifts less far in its local epochs. ``anchor``
    maps parameter names to the global weights; buffers are not parameters and take no part.
    """
    total = torch.zeros((), device=_device_of(model))
    for name, parameter in model.named_parameters():
        total = total + ((parameter - anchor[name].to(parameter.device)) ** 2).sum()
    return 0.5 * mu * total


def train(
    model: nn.Module,
    data: LocalData,
    settings: TrainingSettings,
    *,
    seed: int,
    privacy: PrivacySettings | None = None,
    on_epoch: Callable[[int, float], None] | None = None,
) -> TrainResult:
    """Train ``model`` in place for ``settings.local_epochs`` epochs of cross-entropy on ``data``.

    ``seed`` fixes the batch order, dropout and (with privacy) the sampling and the noise, inside
    a forked RNG so the caller's global random state is untouched. ``on_epoch(epoch, mean_loss)``
    is called after each epoch, ``epoch`` counting from 1.

    With ``privacy``, training is DP-SGD (Opacus): Poisson-sampled batches of expected size
    ``batch_size``, each sample's gradient clipped to ``max_grad_norm``, Gaussian noise of
    ``noise_multiplier * max_grad_norm`` added; the result carries the epsilon spent at
    ``privacy.delta`` (RDP accountant, this run only). Anyone who knows the seed can replay the
    noise, so a node should draw the seed from a secure source (``secrets.randbits(63)``) when
    training privately. Either way ``model`` ends up holding the trained weights under its
    original ``state_dict`` keys, with no Opacus hooks or attributes left on it.

    ``settings.proximal_mu`` > 0 adds :func:`proximal_term` around the weights ``model`` starts
    with (the round's global model) to every batch's loss; the reported loss stays the data loss.
    DP-SGD does not take it (Opacus clips per-sample gradients and would drop it silently), so
    privacy with a proximal term is refused.
    """
    if len(data) == 0:
        raise ValueError("no local samples to train on")
    if settings.local_epochs < 1 or settings.batch_size < 1:
        raise ValueError(
            "need local_epochs >= 1 and batch_size >= 1, "
            f"got {settings.local_epochs} and {settings.batch_size}"
        )
    if privacy is not None and settings.proximal_mu:
        raise ValueError("DP-SGD training does not support a proximal term: set training.proximal_mu to 0")
    device = _device_of(model)
    regularizer = None
    if settings.proximal_mu:
        anchor = {name: parameter.detach().clone() for name, parameter in model.named_parameters()}
        regularizer = partial(proximal_term, model, anchor, settings.proximal_mu)
    features, labels = data.tensors()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        loader = DataLoader(
            TensorDataset(features, labels), batch_size=settings.batch_size, shuffle=True, generator=generator
        )
        optimizer = make_optimizer(model.parameters(), settings)
        model.train()
        if privacy is None:
            loss = _run_epochs(
                model, loader, optimizer, epochs=settings.local_epochs, device=device, on_epoch=on_epoch,
                regularizer=regularizer,
            )  # fmt: skip
            epsilon = None
        else:
            loss, epsilon = _train_private(
                model, loader, optimizer, settings, privacy, device=device, on_epoch=on_epoch
            )
    model.zero_grad(set_to_none=True)
    return TrainResult(num_samples=len(data), loss=loss, epsilon=epsilon)


def _train_private(
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    settings: TrainingSettings,
    privacy: PrivacySettings,
    *,
    device: torch.device,
    on_epoch: Callable[[int, float], None] | None,
) -> tuple[float, float]:
    """DP-SGD epochs through Opacus; returns (last epoch's mean loss, epsilon spent)."""
    from opacus import PrivacyEngine  # imported here: slow to import, and only DP tasks need it

    with warnings.catch_warnings():
        # Opacus warns that its RNG is not cryptographically secure (secure_mode needs torchcsprng,
        # which is not installed); the docstring of `train` says how to pick the seed instead.
        warnings.filterwarnings("ignore", message="Secure RNG turned off")
        engine = PrivacyEngine(accountant="rdp")
    # GradSampleModule wraps the model without copying it: the parameters it trains are the
    # model's own, so the caller's module holds the trained weights under its original keys.
    private_model, private_optimizer, private_loader = engine.make_private(
        module=model,
        optimizer=optimizer,
        data_loader=loader,
        noise_multiplier=privacy.noise_multiplier,
        max_grad_norm=privacy.max_grad_norm,
        poisson_sampling=True,
    )
    try:
        with warnings.catch_warnings():
            # Opacus's per-sample-gradient hooks sit on modules whose inputs need no gradient
            # (the first layer); PyTorch warns about that on every backward, harmlessly.
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            loss = _run_epochs(
                private_model,
                private_loader,
                private_optimizer,
                epochs=settings.local_epochs,
                device=device,
                on_epoch=on_epoch,
            )
    finally:
        private_model._close()  # removes Opacus's hooks and per-parameter attributes from `model`
    if privacy.noise_multiplier == 0:
        return loss, math.inf
    return loss, float(engine.accountant.get_epsilon(delta=privacy.delta))


def _run_epochs(
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    *,
    epochs: int,
    device: torch.device,
    on_epoch: Callable[[int, float], None] | None,
    regularizer: Callable[[], torch.Tensor] | None = None,
) -> float:
    """Plain training epochs; returns the last epoch's mean data loss per sample (NaN if it saw
    none). ``regularizer()``, when given, is added to each batch's loss before the backward pass."""
    criterion = nn.CrossEntropyLoss()
    mean_loss = math.nan
    for epoch in range(1, epochs + 1):
        total, seen = 0.0, 0
        for batch_x, batch_y in loader:
            batch_x, batch_y = batch_x.to(device), batch_y.to(device)
            optimizer.zero_grad(set_to_none=True)
            loss = criterion(model(batch_x), batch_y)
            # A Poisson-sampled batch may be empty; it still takes a (pure noise) DP step, which
            # the accountant counts, so it must go through backward and step like the others.
            (loss if regularizer is None else loss + regularizer()).backward()
            optimizer.step()
            if len(batch_y):
                total += float(loss.detach()) * len(batch_y)
                seen += len(batch_y)
        mean_loss = total / seen if seen else math.nan
        if on_epoch is not None:
            on_epoch(epoch, mean_loss)
    return mean_loss


def evaluate(model: nn.Module, data: LocalData, *, batch_size: int = 1024) -> EvalResult:
    """Mean cross-entropy loss and accuracy of ``model`` on ``data``, in eval mode, without gradients.

    The model's training/eval mode is restored afterwards.
    """
    losses, correct = _per_sample(model, data, batch_size=batch_size)
    return EvalResult(loss=float(losses.mean()), accuracy=float(correct.mean()))


def sample_losses(model: nn.Module, data: LocalData, *, batch_size: int = 1024) -> np.ndarray:
    """Each sample's cross-entropy (float64): what a validator needs to tell a real improvement
    from noise (paired differences, see :mod:`fedmarket.scoring`)."""
    return _per_sample(model, data, batch_size=batch_size)[0]


@torch.no_grad()
def _per_sample(model: nn.Module, data: LocalData, *, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    if len(data) == 0:
        raise ValueError("no samples to evaluate on")
    device = _device_of(model)
    features, labels = data.tensors()
    was_training = model.training
    model.eval()
    losses, correct = [], []
    try:
        for start in range(0, len(labels), batch_size):
            batch_x = features[start : start + batch_size].to(device)
            batch_y = labels[start : start + batch_size].to(device)
            logits = model(batch_x)
            losses.append(
                nn.functional.cross_entropy(logits, batch_y, reduction="none").double().cpu().numpy()
            )
            correct.append((logits.argmax(dim=1) == batch_y).cpu().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(losses), np.concatenate(correct)


def _device_of(model: nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")
