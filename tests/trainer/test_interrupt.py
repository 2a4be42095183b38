"""Ctrl-C on a real `fedmarket-trainer run` process, and the same command started again.

The test plays the task's coordinator (the task names `outsider`, so the module's coordinator
never runs it): it starts round 1 with two trainers joined, of which only the node under test
acts, so the commit phase stays open after the node commits. SIGINT then must print what is
pending (a commit not yet revealed, its deadline, what is slashed), exit 130 and print no
traceback; the restarted node must say it will reveal.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from fedmarket.cid import digest_of
from fedmarket.codec import encode_model
from fedmarket.datasets import save_npz
from fedmarket.models import build_model
from fedmarket.spec import mlp_spec
from fedmarket.store import HttpStore
from fedmarket.uploads import UploadSigner
from testkit import interruptible
from testkit.market import REPO_ROOT

SPEC = mlp_spec(name="small", input_dim=8, num_classes=3, hidden=(6,))  # make_task's default spec
STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"


def start_node(services, task_id: int, key: str, data: Path, state: Path, log: Path) -> subprocess.Popen:
    command = [
        sys.executable, "-m", "trainer.cli", "run", str(task_id), "--data", str(data), "--state-dir", str(state),
        "--poll", "0.1", *services.options(),
    ]  # fmt: skip
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FEDMARKET_")}
    env = {**clean, "PYTHONPATH": str(REPO_ROOT), "FEDMARKET_TRAINER_KEY": key, "COLUMNS": "200"}
    with open(log, "wb") as out:
        return subprocess.Popen(
            command, cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, preexec_fn=interruptible
        )


def wait_for(log: Path, text: str, proc: subprocess.Popen, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text():
        assert proc.poll() is None, f"node exited with {proc.returncode}:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"no {text!r} after {timeout} s:\n{log.read_text()}"
        time.sleep(0.1)


def interrupt(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
    return proc.wait(timeout=180)  # generous: a loaded CI machine is slow, not wrong


def test_ctrl_c_says_what_is_pending_and_a_restart_resumes_it(
    trainer_services, make_task, owner, outsider, trainers, tmp_path
):
    task_id = make_task(spec=SPEC, min_trainers=2, max_trainers=2)
    node, idle = trainers[0], trainers[1]
    trainer_services.market(node).join(task_id)
    trainer_services.market(idle).join(task_id)  # joined, never commits: the commit phase stays open
    trainer_services.market(owner).join_as_validator(task_id, b"\x01" * 32)
    model = encode_model(build_model(SPEC))
    signer = UploadSigner.for_market(trainer_services.market(outsider), task_id)  # the task's coordinator
    with HttpStore(trainer_services.coordinator_url, signer=signer) as store:
        store.put(model)
    trainer_services.market(outsider).start_round(task_id, digest_of(model))
    rng = np.random.default_rng(0)
    data = save_npz(tmp_path / "data.npz", rng.random((12, 8), dtype=np.float32), np.arange(12) % 3)
    state = tmp_path / "state"

    first_log = tmp_path / "first.log"
    first = start_node(trainer_services, task_id, node.key.hex(), data, state, first_log)
    wait_for(first_log, "round 1: committed", first)
    assert interrupt(first) == 130
    said = first_log.read_text()
    assert "Traceback" not in said and "Aborted" not in said, said
    assert re.search(
        r"stopped in round 1: committed, not yet revealed — run fedmarket-trainer run again before the reveal "
        r"deadline \(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ, in (\d+ min( \d+ s)?|\d+ s)\) or 5\.0000 FMT of the stake is slashed",
        said,
    ), said  # reveal deadline: commit window 60 s + reveal window 30 s after the round started

    second_log = tmp_path / "second.log"
    second = start_node(trainer_services, task_id, node.key.hex(), data, state, second_log)
    wait_for(second_log, "round 1: committed, will reveal", second)
    assert interrupt(second) == 130
    assert "round 1: training" not in second_log.read_text()  # it resumed; it did not train again

    node_log = (state / node.address.lower() / f"task-{task_id}" / "node.log").read_text()
    assert re.search(rf"^{STAMP} INFO fedmarket.node: round 1: committed$", node_log, flags=re.M), node_log
    assert re.search(rf"^{STAMP} WARNING fedmarket.node: stopped in round 1: committed", node_log, flags=re.M)
    assert re.search(rf"^{STAMP} INFO fedmarket.node: round 1: committed, will reveal$", node_log, flags=re.M)
