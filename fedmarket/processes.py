"""Child processes for the demo and the tests: coordinators and trainer nodes on one machine.

Each child runs in its own session (process group), so stopping it also stops anything it
started; :meth:`ProcessGroup.stop` always ends every child, also after Ctrl-C or a failure.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
COORDINATOR_COMMAND = [sys.executable, "-m", "backend.cli"]  # what `fedmarket-coordinator` runs


class ProcessGroup:
    """Children started with a shared environment; `stop()` ends them all."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self.env = dict(env if env is not None else os.environ)
        self.procs: list[subprocess.Popen] = []

    def start(
        self, command: list[str], *, log: Path, env: Mapping[str, str] | None = None
    ) -> subprocess.Popen:
        """Starts `command` with its output appended to `log`; `env` adds to the group's."""
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as handle:
            proc = subprocess.Popen(
                command, stdout=handle, stderr=subprocess.STDOUT, env={**self.env, **(env or {})},
                cwd=REPO_ROOT, start_new_session=True,
            )  # fmt: skip
        self.procs.append(proc)
        return proc

    @staticmethod
    def signal(proc: subprocess.Popen, signum: int) -> None:
        if proc.poll() is None:
            os.killpg(proc.pid, signum)

    def stop(self, timeout: float = 10.0) -> None:
        for proc in self.procs:
            self.signal(proc, signal.SIGCONT)  # a paused process cannot act on SIGTERM
            self.signal(proc, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in self.procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.signal(proc, signal.SIGKILL)
                proc.wait()

    def __enter__(self) -> ProcessGroup:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


def log_tail(log: Path, chars: int = 3000) -> str:
    return log.read_text(errors="replace")[-chars:] if log.exists() else "(no log)"


def wait_until_healthy(url: str, proc: subprocess.Popen, log: Path, *, timeout: float = 60.0) -> None:
    """Returns once `url`/healthz answers 200; raises with the log's tail if `proc` dies or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: process exited with {proc.returncode}; log tail:\n{log_tail(log)}")
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass  # not listening yet
        time.sleep(0.1)
    raise RuntimeError(f"{url} not healthy after {timeout} s; log tail:\n{log_tail(log)}")
