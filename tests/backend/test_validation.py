"""The owner's validation split on the coordinator: checked and read by the trainers' rule, kept
private, replaced atomically and picked up again when the owner uploads a new one."""

from __future__ import annotations

import io
import os
import stat

import numpy as np
import pytest

from backend.validation import ValidationStore
from fedmarket.errors import DataMismatchError
from fedmarket.spec import DataFormat, mlp_spec
from testkit.specs import image_spec

SPEC = mlp_spec(name="tabular", input_dim=4, num_classes=3)
IMAGE_SPEC = image_spec(data=DataFormat(feature_scale=0.5))


def npz(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def test_a_split_is_written_private_and_loaded(tmp_path):
    store = ValidationStore(tmp_path)
    assert store.load(7, SPEC) is None and not store.has(7)
    store.write(7, npz(X=np.zeros((3, 4)), y=np.array([0, 1, 2])))
    assert store.has(7)
    assert stat.S_IMODE(store.path(7).stat().st_mode) == 0o600
    assert store.load(7, SPEC).y.tolist() == [0, 1, 2]


def test_a_replaced_split_is_used_from_then_on(tmp_path):
    store = ValidationStore(tmp_path)
    store.write(7, npz(X=np.zeros((3, 4)), y=np.array([0, 1, 2])))
    assert store.load(7, SPEC).y.tolist() == [0, 1, 2]
    store.write(7, npz(X=np.ones((2, 4)), y=np.array([2, 2])))
    path = store.path(7)
    stat_ = path.stat()
    os.utime(path, ns=(stat_.st_atime_ns, stat_.st_mtime_ns + 1_000_000))  # coarse clocks: a new version
    assert store.load(7, SPEC).y.tolist() == [2, 2]


def test_the_split_is_read_by_the_trainers_rule_scaled_and_reshaped(tmp_path):
    """feature_scale and the flat-to-input_shape reshape apply to validation data as to training data."""
    store = ValidationStore(tmp_path)
    body = npz(X=np.full((2, 4), 8, dtype=np.uint8), y=np.array([0, 1]))
    assert store.check(body, IMAGE_SPEC).X.shape == (2, 1, 2, 2)
    store.write(3, body)
    data = store.load(3, IMAGE_SPEC)
    assert data.X.shape == (2, 1, 2, 2) and data.X.dtype == np.float32
    assert np.all(data.X == 4.0)  # 8 * feature_scale 0.5


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"not a zip", "not a readable npz"),
        (npz(X=np.zeros((2, 5)), y=np.array([0, 1])), "shape"),
        (npz(X=np.zeros((2, 4)), y=np.array([0, 3])), "outside [0, 3)"),
        (npz(X=np.full((2, 4), np.nan), y=np.array([0, 1])), "NaN"),
        (npz(features=np.zeros((2, 4)), y=np.array([0, 1])), "features 'X'"),
    ],
)
def test_a_split_that_does_not_fit_is_refused_with_the_reason(tmp_path, body, needle):
    with pytest.raises(
        DataMismatchError, match=needle.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")
    ):
        ValidationStore(tmp_path).check(body, SPEC)
