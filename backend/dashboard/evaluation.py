"""Accuracy and loss of a task's published models on an evaluation set held by the coordinator.

The protocol publishes no accuracy: validators score updates on held-out data they keep to
themselves, and the coordinator holds no data. An operator who wants the dashboard to chart
accuracy puts a held-out file in the task's data format (`spec.data.format`) at
``<data_dir>/evaluation/<task_id>.npz`` (or ``.csv``); each published model is then evaluated on it
once, and the result is cached by the model's CID (a CID names one set of weights forever) and
the file's size and modification time (a replaced file is read again). Without such a file the
metrics still carry what the chain alone gives: the validators' consensus loss drop per round.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from fedmarket.cid import digest_from_cid
from fedmarket.errors import DataMismatchError, FedmarketError
from fedmarket.learning import EvalResult, LocalData, evaluate, load_local_data
from fedmarket.models import build_model
from fedmarket.rounds import fetch_model
from fedmarket.spec import TaskSpec
from fedmarket.store import ContentStore

EVALUATION_DIR = "evaluation"


@dataclass(frozen=True)
class EvaluationSet:
    path: Path
    data: LocalData


_lock = threading.Lock()
_data: dict[tuple[str, int, int], LocalData] = {}
_results: dict[tuple[str, int, int, str], EvalResult] = {}


def evaluation_path(data_dir: Path, task_id: int, spec: TaskSpec) -> Path:
    """Where the operator puts the task's evaluation set."""
    return data_dir / EVALUATION_DIR / f"{task_id}.{spec.data.format}"


def _file_key(path: Path) -> tuple[str, int, int] | None:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return (str(path), stat.st_size, stat.st_mtime_ns)


def evaluation_set(data_dir: Path, task_id: int, spec: TaskSpec) -> tuple[EvaluationSet | None, str]:
    """The task's evaluation set (checked against the spec like any node's data), or None, and
    a sentence saying what the metrics are measured on or why there are none."""
    path = evaluation_path(data_dir, task_id, spec)
    where = f"{EVALUATION_DIR}/{path.name} in the coordinator's data directory"
    key = _file_key(path)
    if key is None:
        return None, f"no evaluation set: put one at {where} to chart accuracy and loss"
    with _lock:
        data = _data.get(key)
    if data is None:
        try:
            data = load_local_data(path, spec)
        except (DataMismatchError, FileNotFoundError) as exc:
            reason = str(exc).replace(str(path), path.name)  # the operator's paths stay private
            return None, f"the evaluation set at {where} does not fit the task: {reason}"
        with _lock:
            for stale in [k for k in _data if k[0] == key[0]]:  # the file was replaced
                del _data[stale]
            _data[key] = data
    note = f"accuracy and loss on this coordinator's evaluation set ({len(data)} samples)"
    return EvaluationSet(path, data), note


def evaluate_model(
    store: ContentStore, spec: TaskSpec, evaluation: EvaluationSet, model_cid: str
) -> EvalResult | None:
    """Loss and accuracy of the model `model_cid` on the evaluation set; None when the store
    cannot give the model (missing or corrupt: nothing to measure)."""
    key = _file_key(evaluation.path)
    if key is None:
        return None
    cache_key = (*key, model_cid)
    with _lock:
        cached = _results.get(cache_key)
    if cached is not None:
        return cached
    try:
        state = fetch_model(store, spec, digest_from_cid(model_cid))
    except FedmarketError:
        return None
    model = build_model(spec)
    model.load_state_dict(state)
    result = evaluate(model, evaluation.data)
    with _lock:
        _results[cache_key] = result
    return result
