"""Loading local data: both formats load, and each kind of mismatch is refused with a clear message."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedmarket.datasets import save_npz
from fedmarket.errors import FedmarketError
from fedmarket.learning import DataMismatchError, load_local_data
from fedmarket.spec import DataFormat, mlp_spec
from testkit.specs import image_spec

NPZ_SPEC = mlp_spec(name="tabular", input_dim=4, num_classes=3)
CSV_SPEC = mlp_spec(
    name="tabular", input_dim=4, num_classes=3, data=DataFormat(format="csv", label_column="class")
)
IMAGE_SPEC = image_spec()


def sample_arrays(n: int = 6) -> tuple[np.ndarray, np.ndarray]:
    X = np.arange(n * 4, dtype=np.float64).reshape(n, 4)
    y = np.arange(n) % 3
    return X, y


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# --- loading -------------------------------------------------------------------------------------


def test_npz_loads_as_float32_features_and_int64_labels(tmp_path):
    X, y = sample_arrays()
    data = load_local_data(save_npz(tmp_path / "train.npz", X, y), NPZ_SPEC)
    assert data.X.dtype == np.float32 and data.X.shape == (6, 4)
    assert data.y.dtype == np.int64
    np.testing.assert_array_equal(data.X, X.astype(np.float32))
    np.testing.assert_array_equal(data.y, y)


def test_npz_with_lowercase_x_array_loads(tmp_path):
    X, y = sample_arrays()
    np.savez(tmp_path / "train.npz", x=X, y=y)
    assert load_local_data(tmp_path / "train.npz", NPZ_SPEC).X.shape == (6, 4)


def test_features_are_multiplied_by_the_tasks_feature_scale(tmp_path):
    spec = mlp_spec(name="pixels", input_dim=4, num_classes=3, data=DataFormat(feature_scale=1 / 255))
    X = np.full((3, 4), 255, dtype=np.uint8)
    data = load_local_data(save_npz(tmp_path / "train.npz", X, np.array([0, 1, 2])), spec)
    np.testing.assert_allclose(data.X, np.ones((3, 4)))


def test_csv_reads_the_label_column_and_keeps_the_other_columns_in_order(tmp_path):
    path = write_csv(tmp_path / "train.csv", "a,b,class,c,d\n1,2,0,3,4\n5,6,2,7,8\n")
    data = load_local_data(path, CSV_SPEC)
    np.testing.assert_array_equal(data.X, [[1, 2, 3, 4], [5, 6, 7, 8]])
    np.testing.assert_array_equal(data.y, [0, 2])


def test_flat_samples_are_reshaped_to_the_input_shape(tmp_path):
    X, y = sample_arrays()
    assert load_local_data(save_npz(tmp_path / "flat.npz", X, y), IMAGE_SPEC).X.shape == (6, 1, 2, 2)


def test_samples_missing_a_channel_axis_are_reshaped_to_the_input_shape(tmp_path):
    X, y = sample_arrays()
    path = save_npz(tmp_path / "hw.npz", X.reshape(6, 2, 2), y)
    assert load_local_data(path, IMAGE_SPEC).X.shape == (6, 1, 2, 2)


# --- mismatches ----------------------------------------------------------------------------------


def test_wrong_feature_count_names_both_shapes(tmp_path):
    X, y = sample_arrays()
    expected = r"task expects samples of shape \(4,\), train.npz has \(3,\)"
    with pytest.raises(DataMismatchError, match=expected):
        load_local_data(save_npz(tmp_path / "train.npz", X[:, :3], y), NPZ_SPEC)


def test_same_count_in_another_layout_is_not_silently_reshaped(tmp_path):
    X, y = sample_arrays()
    spec = image_spec((2, 2, 1))
    with pytest.raises(DataMismatchError, match=r"expects samples of shape \(2, 2, 1\).*has \(4, 1\)"):
        load_local_data(save_npz(tmp_path / "t.npz", X.reshape(6, 4, 1), y), spec)


def test_label_out_of_range_names_the_label_and_the_class_count(tmp_path):
    X, y = sample_arrays()
    y[4] = 3
    with pytest.raises(DataMismatchError, match=r"label 3 \(sample 4\) outside \[0, 3\).*3 classes"):
        load_local_data(save_npz(tmp_path / "train.npz", X, y), NPZ_SPEC)


def test_negative_label_is_refused(tmp_path):
    X, y = sample_arrays()
    y[0] = -1
    with pytest.raises(DataMismatchError, match=r"label -1 \(sample 0\) outside"):
        load_local_data(save_npz(tmp_path / "train.npz", X, y), NPZ_SPEC)


def test_fractional_label_is_refused(tmp_path):
    X, _ = sample_arrays(2)
    with pytest.raises(DataMismatchError, match=r"label 1.5 \(sample 1\).*integer class indices"):
        load_local_data(save_npz(tmp_path / "train.npz", X, np.array([0.0, 1.5])), NPZ_SPEC)


def test_nan_feature_is_refused(tmp_path):
    X, y = sample_arrays()
    X[2, 1] = np.nan
    with pytest.raises(DataMismatchError, match=r"NaN or infinite feature value \(first in sample 2"):
        load_local_data(save_npz(tmp_path / "train.npz", X, y), NPZ_SPEC)


def test_feature_overflowing_float32_is_refused(tmp_path):
    X, y = sample_arrays()
    X[0, 0] = 1e300
    with pytest.raises(DataMismatchError, match="NaN or infinite"):
        load_local_data(save_npz(tmp_path / "train.npz", X, y), NPZ_SPEC)


def test_csv_without_the_label_column_names_the_column_and_what_it_has(tmp_path):
    path = write_csv(tmp_path / "train.csv", "a,b,label,c,d\n1,2,0,3,4\n")
    expected = r"no column named 'class' \(its columns: a, b, label, c, d\)"
    with pytest.raises(DataMismatchError, match=expected):
        load_local_data(path, CSV_SPEC)


def test_csv_with_a_non_numeric_cell_is_refused(tmp_path):
    path = write_csv(tmp_path / "train.csv", "a,b,class,c,d\n1,2,0,3,4\n5,six,2,7,8\n")
    with pytest.raises(DataMismatchError, match="cannot be read as a table of numbers"):
        load_local_data(path, CSV_SPEC)


def test_csv_with_only_a_header_is_refused(tmp_path):
    path = write_csv(tmp_path / "train.csv", "a,b,class,c,d\n")
    with pytest.raises(DataMismatchError, match="no samples"):
        load_local_data(path, CSV_SPEC)


def test_npz_without_labels_is_refused(tmp_path):
    np.savez(tmp_path / "train.npz", X=np.zeros((2, 4)))
    with pytest.raises(DataMismatchError, match=r"holds arrays \['X'\].*features 'X' and labels 'y'"):
        load_local_data(tmp_path / "train.npz", NPZ_SPEC)


def test_npz_holding_python_objects_is_refused_not_unpickled(tmp_path):
    np.savez(tmp_path / "train.npz", X=np.array([{"a": 1}, {"b": 2}], dtype=object), y=np.array([0, 1]))
    with pytest.raises(DataMismatchError, match="plain numeric npz"):
        load_local_data(tmp_path / "train.npz", NPZ_SPEC)


def test_more_samples_than_labels_is_refused(tmp_path):
    X, y = sample_arrays()
    with pytest.raises(DataMismatchError, match="6 samples but 5 labels"):
        load_local_data(save_npz(tmp_path / "train.npz", X, y[:5]), NPZ_SPEC)


def test_a_csv_file_for_an_npz_task_is_refused_by_its_suffix(tmp_path):
    path = write_csv(tmp_path / "train.csv", "a,b,label,c,d\n1,2,0,3,4\n")
    with pytest.raises(DataMismatchError, match="looks like a csv file, but the task expects npz data"):
        load_local_data(path, NPZ_SPEC)


def test_a_file_that_is_not_an_npz_archive_is_refused(tmp_path):
    (tmp_path / "train.npz").write_bytes(b"not a zip file")
    with pytest.raises(DataMismatchError, match="train.npz"):
        load_local_data(tmp_path / "train.npz", NPZ_SPEC)


def test_a_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_local_data(tmp_path / "absent.npz", NPZ_SPEC)


def test_data_mismatch_is_a_fedmarket_error_and_a_value_error():
    assert issubclass(DataMismatchError, FedmarketError)
    assert issubclass(DataMismatchError, ValueError)
