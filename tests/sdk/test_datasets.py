"""Bundled data sets and the splits the demo gives its simulated trainers."""

from __future__ import annotations

import numpy as np
import pytest

from fedmarket.datasets import dirichlet_split, load_dataset, save_npz, train_test_split


def test_digits_are_1797_samples_of_64_features_in_unit_range():
    X, y = load_dataset("digits")
    assert X.shape == (1797, 64) and X.dtype == np.float32
    assert y.shape == (1797,) and y.dtype == np.int64
    assert X.min() == 0.0 and X.max() == 1.0
    assert set(np.unique(y)) == set(range(10))


def test_mnist_subset_is_5000_images_500_per_class_in_unit_range():
    X, y = load_dataset("mnist")
    assert X.shape == (5000, 784) and X.dtype == np.float32
    assert X.min() == 0.0 and X.max() == 1.0
    assert np.bincount(y).tolist() == [500] * 10


def test_load_dataset_returns_copies_the_caller_may_modify():
    X, _ = load_dataset("digits")
    X[:] = -1
    assert load_dataset("digits")[0].min() == 0.0


def test_unknown_dataset_names_the_bundled_ones():
    with pytest.raises(ValueError, match="digits, mnist"):
        load_dataset("cifar10")


def test_train_test_split_is_stratified_and_seeded():
    X, y = load_dataset("digits")
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_fraction=0.2, seed=0)
    assert len(X_train) + len(X_test) == len(X) and len(y_test) == len(X_test)
    assert len(X_test) == pytest.approx(0.2 * len(X), abs=1)
    # every class keeps its share (within one sample) in the test part
    np.testing.assert_allclose(np.bincount(y_test, minlength=10), 0.2 * np.bincount(y), atol=1)
    again = train_test_split(X, y, test_fraction=0.2, seed=0)
    np.testing.assert_array_equal(again[3], y_test)
    np.testing.assert_array_equal(again[1], X_test)


def test_dirichlet_split_covers_every_index_exactly_once():
    _, y = load_dataset("digits")
    parts = dirichlet_split(y, parts=5, alpha=0.5, seed=1)
    assert len(parts) == 5
    joined = np.concatenate(parts)
    assert np.array_equal(np.sort(joined), np.arange(len(y)))
    assert all(part.dtype == np.int64 and np.all(np.diff(part) > 0) for part in parts)


def test_dirichlet_split_is_deterministic_for_a_seed():
    _, y = load_dataset("digits")
    first = dirichlet_split(y, parts=4, alpha=0.3, seed=7)
    again = dirichlet_split(y, parts=4, alpha=0.3, seed=7)
    other = dirichlet_split(y, parts=4, alpha=0.3, seed=8)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert any(not np.array_equal(a, b) for a, b in zip(first, other, strict=True))


def test_dirichlet_split_gives_every_part_at_least_min_size():
    _, y = load_dataset("digits")
    parts = dirichlet_split(y, parts=8, alpha=0.1, seed=0, min_size=40)
    assert min(len(part) for part in parts) >= 40


def test_small_alpha_skews_labels_more_than_large_alpha():
    _, y = load_dataset("digits")

    def mean_top_class_share(alpha: float) -> float:
        parts = dirichlet_split(y, parts=5, alpha=alpha, seed=2)
        return float(np.mean([np.bincount(y[part]).max() / len(part) for part in parts]))

    assert mean_top_class_share(0.1) > 0.3 > mean_top_class_share(100.0)


def test_dirichlet_split_refuses_an_impossible_min_size():
    with pytest.raises(ValueError, match="cannot give 5 parts 10 samples each out of 40"):
        dirichlet_split(np.arange(40) % 4, parts=5, alpha=1.0, seed=0)


def test_save_npz_writes_exactly_the_path_given(tmp_path):
    X, y = np.ones((3, 2), dtype=np.float32), np.array([0, 1, 0])
    path = save_npz(tmp_path / "shares" / "trainer-0.data", X, y)
    assert path == tmp_path / "shares" / "trainer-0.data" and path.is_file()
    with np.load(path, allow_pickle=False) as archive:
        np.testing.assert_array_equal(archive["X"], X)
        np.testing.assert_array_equal(archive["y"], y)
