"""Loading a trainer's local data and checking it against the task spec before any training.

Two layouts, chosen by the spec's ``data.format``:

- ``npz``: a NumPy archive with a features array ``X`` (``x`` is accepted too) and a label array
  ``y``. Read with ``allow_pickle=False``: an archive holding Python objects is refused, never
  unpickled.
- ``csv``: a header row, then one sample per row; the column named ``data.label_column`` holds the
  label, every other column is a feature, in file order.

A file whose suffix names the other format (``.csv`` for an npz task, ``.npz`` for a csv task) is
refused with a message saying so; any other suffix is read as the spec's format.

Features are multiplied by ``data.feature_scale`` and converted to float32; flat samples whose
length is the product of ``input_shape`` are reshaped to it, as are samples that differ from it
only by axes of length 1 (``(28, 28)`` for ``(1, 28, 28)``). Anything else that does not fit
raises :class:`DataMismatchError`, which says what the file has and what the task expects.
"""

from __future__ import annotations

import csv
import io
import math
import warnings
import zipfile
from pathlib import Path

import numpy as np

from fedmarket.errors import DataMismatchError
from fedmarket.learning.training import LocalData
from fedmarket.spec import TaskSpec

__all__ = ["DataMismatchError", "check_local_data", "load_local_data", "parse_npz"]


def load_local_data(path: str | Path, spec: TaskSpec) -> LocalData:
    """Read ``path`` in the spec's data format and check it against the spec (see the module doc).

    Raises ``FileNotFoundError`` when there is no such file, and :class:`DataMismatchError` when
    the file cannot be read in the task's format or its contents do not fit the task.
    """
    path = Path(path)
    fmt = spec.data.format
    other = {"npz": ".csv", "csv": ".npz"}.get(fmt)
    if other is None:
        raise DataMismatchError(f"unknown data format {fmt!r} in the task spec; expected 'npz' or 'csv'")
    if path.suffix.lower() == other:
        raise DataMismatchError(
            f"{path.name} looks like a {other[1:]} file, but the task expects {fmt} data: "
            f"convert it to {fmt}"
            + (f" with a label column {spec.data.label_column!r}" if fmt == "csv" else "")
        )
    if not path.is_file():
        raise FileNotFoundError(f"no data file at {path}")
    if fmt == "npz":
        features, labels = read_npz(path, name=path.name)
    else:
        features, labels = read_csv(path, label_column=spec.data.label_column)
    return check_local_data(features, labels, spec, source=path.name)


def check_local_data(
    features: np.ndarray, labels: np.ndarray, spec: TaskSpec, *, source: str = "the data"
) -> LocalData:
    """Scale, reshape and check raw arrays against the spec; the checks of :func:`load_local_data`."""
    features = np.asarray(features)
    labels = np.asarray(labels)
    input_shape = tuple(int(dim) for dim in spec.input_shape)
    if features.ndim < 1 or len(features) == 0:
        raise DataMismatchError(f"{source} has no samples")
    if features.dtype.kind not in "biuf":
        raise DataMismatchError(
            f"{source} has features of type {features.dtype}; the task expects numbers (float32)"
        )
    features = _reshape(features, input_shape, source=source)
    with np.errstate(over="ignore", invalid="ignore"):
        scaled = features.astype(np.float64) * float(spec.data.feature_scale)
        features = scaled.astype(np.float32)
    if not np.isfinite(features).all():
        sample = int(np.flatnonzero(~np.isfinite(features.reshape(len(features), -1)).all(axis=1))[0])
        raise DataMismatchError(
            f"{source} has a NaN or infinite feature value (first in sample {sample}, after scaling by "
            f"{spec.data.feature_scale}); every feature must be a finite float32 number"
        )
    labels = _labels(labels, n=len(features), num_classes=int(spec.num_classes), source=source)
    return LocalData(X=features, y=labels)


def _reshape(features: np.ndarray, input_shape: tuple[int, ...], *, source: str) -> np.ndarray:
    sample_shape = features.shape[1:]
    if sample_shape == input_shape:
        return features
    flat = len(sample_shape) == 1 and sample_shape[0] == math.prod(input_shape)
    same_but_unit_axes = tuple(d for d in sample_shape if d != 1) == tuple(d for d in input_shape if d != 1)
    if flat or same_but_unit_axes:
        return features.reshape(len(features), *input_shape)
    raise DataMismatchError(
        f"task expects samples of shape {input_shape}, {source} has {sample_shape}"
        + (
            f" ({math.prod(sample_shape)} values per sample, the task needs {math.prod(input_shape)})"
            if math.prod(sample_shape) != math.prod(input_shape)
            else ""
        )
    )


def _labels(labels: np.ndarray, *, n: int, num_classes: int, source: str) -> np.ndarray:
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise DataMismatchError(
            f"{source} has labels of shape {labels.shape}; "
            f"the task expects one class index per sample, shape ({n},)"
        )
    if len(labels) != n:
        raise DataMismatchError(
            f"{source} has {n} samples but {len(labels)} labels; each sample needs one label"
        )
    if labels.dtype.kind == "b" or labels.dtype.kind not in "iuf":
        raise DataMismatchError(
            f"{source} has labels of type {labels.dtype}; "
            f"the task expects integer class indices 0..{num_classes - 1}"
        )
    if labels.dtype.kind == "f":
        bad = ~np.isfinite(labels) | (labels != np.round(labels))
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            raise DataMismatchError(
                f"{source} has label {labels[first]} (sample {first}); "
                f"the task expects integer class indices 0..{num_classes - 1}"
            )
    outside = (labels < 0) | (labels >= num_classes)
    if outside.any():
        first = int(np.flatnonzero(outside)[0])
        raise DataMismatchError(
            f"{source} has label {labels[first]:g} (sample {first}) outside [0, {num_classes}): the task has "
            f"{num_classes} classes, labelled 0..{num_classes - 1}"
        )
    return labels.astype(np.int64)


def parse_npz(data: bytes, spec: TaskSpec, *, source: str = "the upload") -> LocalData:
    """An NPZ archive held in memory (an upload), read and checked like :func:`load_local_data`."""
    features, labels = read_npz(io.BytesIO(data), name=source)
    return check_local_data(features, labels, spec, source=source)


def read_npz(file: Path | io.BytesIO, *, name: str) -> tuple[np.ndarray, np.ndarray]:
    if not zipfile.is_zipfile(file):  # else np.load tries to unpickle it and blames "pickled data"
        raise DataMismatchError(
            f"{name} is not a readable npz archive (not a zip file); the task expects npz data"
        )
    try:
        if isinstance(file, io.BytesIO):
            file.seek(0)  # is_zipfile read it
        with np.load(file, allow_pickle=False) as archive:
            names = list(archive.files)
            feature_name = "X" if "X" in names else "x" if "x" in names else None
            if feature_name is None or "y" not in names:
                raise DataMismatchError(
                    f"{name} holds arrays {names}; the task expects an npz with features 'X' and labels 'y'"
                )
            return archive[feature_name], archive["y"]
    except DataMismatchError:
        raise
    except ValueError as exc:  # object arrays (pickles) are refused by allow_pickle=False
        raise DataMismatchError(f"{name} cannot be read as plain numeric npz arrays: {exc}") from exc
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DataMismatchError(
            f"{name} is not a readable npz archive ({exc}); the task expects npz data"
        ) from exc


def read_csv(path: Path, *, label_column: str) -> tuple[np.ndarray, np.ndarray]:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        header = next(csv.reader(handle), None)
    if not header:
        raise DataMismatchError(f"{path.name} is empty; the task expects a CSV with a header row")
    columns = [name.strip() for name in header]
    if columns.count(label_column) != 1:
        problem = "has no column" if label_column not in columns else "has more than one column"
        shown = ", ".join(columns[:10]) + (", ..." if len(columns) > 10 else "")
        raise DataMismatchError(
            f"{path.name} {problem} named {label_column!r} (its columns: {shown}); "
            f"the task reads labels from the column {label_column!r}"
        )
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="loadtxt: input contained no data")
            table = np.loadtxt(
                path, delimiter=",", skiprows=1, dtype=np.float64, ndmin=2, encoding="utf-8-sig"
            )
    except ValueError as exc:
        reason = str(exc).split(";")[0]  # drop numpy's advice about `usecols`, which is not for our users
        raise DataMismatchError(
            f"{path.name} cannot be read as a table of numbers, one per header column ({reason}); "
            "every cell must be a number and every row as long as the header"
        ) from exc
    if table.size == 0:
        raise DataMismatchError(f"{path.name} has a header but no samples")
    if table.shape[1] != len(columns):
        raise DataMismatchError(
            f"{path.name} has {table.shape[1]} values per row but {len(columns)} header columns"
        )
    label_index = columns.index(label_column)
    labels = table[:, label_index]
    features = np.delete(table, label_index, axis=1)
    return features, labels
