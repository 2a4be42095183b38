"""The owners' private validation splits: one home for where they live, how they are written and read.

An owner uploads its split once per task (``PUT /v1/tasks/{id}/validation-data``, owner-signed);
it is kept as the uploaded NPZ bytes, mode 0600, under the coordinator's private directory and
never served back. It is checked on upload and read for scoring with the same rule a trainer's
local data is (:mod:`fedmarket.learning.data`: shapes, dtypes, label range, ``feature_scale``).
A new upload replaces the file atomically; readers pick the new split up by its modification time.
"""

from __future__ import annotations

import threading
from pathlib import Path

from fedmarket.files import atomic_write
from fedmarket.learning import LocalData, parse_npz
from fedmarket.spec import TaskSpec

__all__ = ["ValidationStore"]


class ValidationStore:
    """`<root>/task-<id>-validation.npz` per task; shared by the API, orchestrators and indexer."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._lock = threading.Lock()
        self._loaded: dict[int, tuple[int, LocalData]] = {}  # task -> (file mtime_ns, parsed data)

    def path(self, task_id: int) -> Path:
        return self.root / f"task-{task_id}-validation.npz"

    def has(self, task_id: int) -> bool:
        return self.path(task_id).is_file()

    def check(self, body: bytes, spec: TaskSpec) -> LocalData:
        """The upload as data, or DataMismatchError saying what does not fit the task."""
        return parse_npz(body, spec, source="the validation data")

    def write(self, task_id: int, body: bytes) -> None:
        """Replaces the task's split (readable by the coordinator's user only)."""
        atomic_write(self.path(task_id), body, mode=0o600)

    def load(self, task_id: int, spec: TaskSpec) -> LocalData | None:
        """The task's split, read and checked against `spec`; None before the owner uploaded one."""
        path = self.path(task_id)
        try:
            version = path.stat().st_mtime_ns
        except FileNotFoundError:
            return None
        with self._lock:
            cached = self._loaded.get(task_id)
            if cached is not None and cached[0] == version:
                return cached[1]
        data = parse_npz(path.read_bytes(), spec, source=path.name)
        with self._lock:
            self._loaded[task_id] = (version, data)
        return data
