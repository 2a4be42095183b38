"""TrainerNode: its state dir, what a node killed mid-round does when started again, and what a
restarted or stopped node (trainer or validator) says it resumes or leaves pending.

The state-dir tests need no chain. The restart tests drive one round on the real contracts (the
session deployment, inside a snapshot): the test plays the coordinator, a `MemoryStore` stands in
for the coordinator's store, and each "restart" is a new TrainerNode on the same state dir.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest

from fedmarket import files
from fedmarket.chain import MarketClient
from fedmarket.cid import cid_from_digest, digest_of
from fedmarket.client import CoordinatorClient
from fedmarket.codec import encode_model
from fedmarket.display import iso_time
from fedmarket.learning import LocalData
from fedmarket.models import build_model
from fedmarket.protocol import RoundPhase, TaskTerms, make_commitment
from fedmarket.spec import mlp_spec
from fedmarket.store import MemoryStore
from trainer import node as node_module
from trainer.node import NodeError, NodeSummary, RoundState, StateDir, TrainerNode
from trainer.validator_node import ValidatorNode

ONE_TOKEN = 10**18
TRAINER = "0x" + "ab" * 20
SPEC = mlp_spec(name="small", input_dim=8, num_classes=3, hidden=(6,))


def round_state(round_no: int, update: bytes) -> RoundState:
    return RoundState(
        round=round_no, update_hash=digest_of(update).hex(), salt="11" * 32, num_samples=5, loss=0.5
    )


# ---------------------------------------------------------------------- the state dir


def test_saved_round_loads_back_with_its_update(tmp_path):
    state_dir = StateDir(tmp_path, 7, TRAINER)
    state = round_state(3, b"update bytes")
    state_dir.save(state, b"update bytes")
    assert StateDir(tmp_path, 7, TRAINER).load(3) == (state, b"update bytes")


def test_a_round_never_saved_loads_as_none(tmp_path):
    assert StateDir(tmp_path, 7, TRAINER).load(1) is None


def test_state_is_kept_per_trainer_and_per_task(tmp_path):
    StateDir(tmp_path, 7, TRAINER).save(round_state(1, b"a"), b"a")
    assert StateDir(tmp_path, 8, TRAINER).load(1) is None
    assert StateDir(tmp_path, 7, "0x" + "cd" * 20).load(1) is None


def test_saving_progress_keeps_the_update(tmp_path):
    state_dir = StateDir(tmp_path, 7, TRAINER)
    state = round_state(1, b"update")
    state_dir.save(state, b"update")
    state_dir.save(dataclasses.replace(state, committed=True))  # no update: the blob stays
    loaded, update = state_dir.load(1)
    assert loaded.committed and update == b"update"


def test_a_write_cut_short_leaves_the_previous_state_whole(tmp_path, monkeypatch):
    state_dir = StateDir(tmp_path, 7, TRAINER)
    state = round_state(1, b"update")
    state_dir.save(state, b"update")

    def crash(source, target):
        raise OSError("killed before the rename")

    monkeypatch.setattr(files.os, "replace", crash)
    with pytest.raises(OSError):
        state_dir.save(dataclasses.replace(state, committed=True, revealed=True))
    monkeypatch.undo()
    assert state_dir.load(1) == (state, b"update")


def test_a_damaged_update_is_detected_not_revealed(tmp_path):
    state_dir = StateDir(tmp_path, 7, TRAINER)
    state_dir.save(round_state(1, b"update"), b"update")
    (state_dir.path / "round-1.update").write_bytes(b"updatf")
    with pytest.raises(NodeError, match="does not match its recorded hash; the state dir is damaged"):
        state_dir.load(1)


def test_all_rounds_come_in_round_order(tmp_path):
    state_dir = StateDir(tmp_path, 7, TRAINER)
    for round_no in (2, 10, 1):
        state_dir.save(round_state(round_no, b"u%d" % round_no), b"u%d" % round_no)
    assert [s.round for s in state_dir.all_rounds()] == [1, 2, 10]


def test_summary_is_written_as_json(tmp_path):
    state_dir = StateDir(tmp_path, 7, TRAINER)
    path = state_dir.write_summary(NodeSummary(rounds_committed=[1], rounds_revealed=[1], claimed=5))
    assert '"claimed": 5' in path.read_text()


# ---------------------------------------------------------------------- restarts on the real contracts


class Killed(BaseException):
    """Stands in for SIGKILL: nothing in the node catches it."""


@pytest.fixture
def round_one(chain, anvil, deployment, owner, coordinator, trainers, tmp_path):
    """A task (min 1, max 2 trainers) with trainers[0] and the owner's validator joined and round 1
    open for commits.

    Returns (task id, the store, `new_node(state_root)`): a fresh TrainerNode for trainers[0], as
    after a restart."""
    store = MemoryStore()
    store.put(SPEC.to_canonical_json())
    terms = TaskTerms(
        spec_hash=SPEC.spec_hash(), coordinator=coordinator.address, rounds=2, min_trainers=1, max_trainers=2,
        slash_bps=5000, commit_window=600, reveal_window=600, reward_pool=100 * ONE_TOKEN, min_stake=ONE_TOKEN,
        min_validators=1, max_validators=1, validator_share_bps=1_000, score_window=600, score_reveal_window=600,
        min_validator_stake=ONE_TOKEN,
    )  # fmt: skip
    task_id = MarketClient.connect(anvil.url, deployment, owner.key).create_task(terms).task_id
    rng = np.random.default_rng(0)
    data = LocalData(rng.random((20, 8), dtype=np.float32), rng.integers(0, 3, 20))
    api = CoordinatorClient("http://127.0.0.1:9")  # the node never asks the coordinator: never here

    def new_node(state_root: Path) -> TrainerNode:
        client = MarketClient.connect(anvil.url, deployment, trainers[0].key)
        return TrainerNode(
            task_id=task_id, chain=client, coordinator=api, store=store, data=data, state_root=state_root
        )

    new_node(tmp_path).ensure_joined()
    MarketClient.connect(anvil.url, deployment, owner.key).join_as_validator(task_id, b"\x01" * 32)
    model = encode_model(build_model(SPEC))
    store.put(model)
    MarketClient.connect(anvil.url, deployment, coordinator.key).start_round(task_id, digest_of(model))
    return task_id, store, new_node


def killed(*args, **kwargs):
    raise Killed()


def no_training(*args, **kwargs):
    raise AssertionError("the restarted node trained round 1 again")


def test_node_restarted_before_committing_commits_the_update_it_trained(round_one, tmp_path, monkeypatch):
    task_id, store, new_node = round_one
    first = new_node(tmp_path)
    monkeypatch.setattr(first.chain, "commit", killed)
    with pytest.raises(Killed):
        first.step(1, SPEC)  # trained and saved, killed before the commit was sent
    saved, update = first.state.load(1)
    assert first.chain.commitment(task_id).round_no == 0

    monkeypatch.setattr(node_module, "train", no_training)
    restarted = new_node(tmp_path)
    assert restarted.step(1, SPEC)
    on_chain = restarted.chain.commitment(task_id)
    assert on_chain.round_no == 1
    assert on_chain.commitment == make_commitment(
        task_id, 1, restarted.address, bytes.fromhex(saved.update_hash), bytes.fromhex(saved.salt)
    )


def test_node_restarted_after_committing_reveals_the_saved_update(round_one, tmp_path, monkeypatch):
    task_id, store, new_node = round_one
    first = new_node(tmp_path)
    assert first.step(1, SPEC)  # trains and commits; the only trainer, so the reveal phase opens
    assert first.chain.phase(task_id) == RoundPhase.REVEAL
    saved, update = first.state.load(1)

    monkeypatch.setattr(node_module, "train", no_training)
    restarted = new_node(tmp_path)
    assert restarted.step(1, SPEC)
    assert restarted.chain.commitment(task_id).revealed
    assert store.get(cid_from_digest(bytes.fromhex(saved.update_hash))) == update
    revealed = [e.args["updateHash"] for e in restarted.chain.iter_events("Revealed", task_id=task_id)]
    assert revealed == [bytes.fromhex(saved.update_hash)]
    assert restarted.state.load(1)[0].revealed


def test_node_that_lost_its_state_after_committing_says_it_cannot_reveal(round_one, tmp_path):
    task_id, store, new_node = round_one
    assert new_node(tmp_path / "before").step(1, SPEC)
    with pytest.raises(NodeError, match="committed in round 1 but the update is not in .*; cannot reveal"):
        new_node(tmp_path / "wiped").step(1, SPEC)


# ---------------------------------------------------------------------- what a restarted or stopped node says


def test_a_fresh_node_resumes_nothing(round_one, tmp_path):
    task_id, store, new_node = round_one
    node = new_node(tmp_path)
    assert node.resume_note() is None
    assert node.pending() == (
        "stopped in round 1: nothing pending — run the same command again to take part in the next rounds "
        "and claim at the end"
    )


def test_a_node_restarted_after_training_will_commit_the_saved_update(round_one, tmp_path, monkeypatch):
    task_id, store, new_node = round_one
    first = new_node(tmp_path)
    monkeypatch.setattr(first.chain, "commit", killed)
    with pytest.raises(Killed):
        first.step(1, SPEC)
    restarted = new_node(tmp_path)
    assert restarted.resume_note() == "round 1: trained, will commit the saved update"
    assert re.fullmatch(
        r"stopped in round 1: trained, not yet committed — run the same command again before the commit "
        r"deadline \(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ, in (\d+ min( \d+ s)?|\d+ s)\) to take part in this round",
        restarted.pending(),
    ), restarted.pending()


def test_a_node_restarted_after_committing_will_reveal_or_be_slashed(round_one, tmp_path):
    task_id, store, new_node = round_one
    assert new_node(tmp_path).step(1, SPEC)  # committed; the only trainer, so the reveal phase is open
    restarted = new_node(tmp_path)
    assert restarted.resume_note() == "round 1: committed, will reveal"
    reveal_deadline = restarted.chain.round(task_id, 1).reveal_deadline
    assert re.fullmatch(
        "stopped in round 1: committed, not yet revealed — run fedmarket-trainer run again before the reveal "
        rf"deadline \({iso_time(reveal_deadline)}, in (\d+ min( \d+ s)?|\d+ s)\) or 0\.5000 FMT of the stake is slashed",
        restarted.pending("fedmarket-trainer run"),
    )  # the commit phase closed at the commit (one trainer): the reveal window is 600 s; 50% of 1 FMT
    assert restarted.step(1, SPEC)  # reveals
    assert new_node(tmp_path).resume_note() == "round 1: revealed, waiting for the round to settle"


def test_a_validator_restarted_after_committing_scores_will_reveal(
    round_one, tmp_path, anvil, deployment, owner
):
    task_id, store, new_node = round_one
    trainer = new_node(tmp_path / "trainer")
    assert trainer.step(1, SPEC) and trainer.step(1, SPEC)  # commit, reveal: the score-commit phase opens
    rng = np.random.default_rng(1)
    data = LocalData(rng.random((10, 8), dtype=np.float32), rng.integers(0, 3, 10))

    def new_validator() -> ValidatorNode:
        client = MarketClient.connect(anvil.url, deployment, owner.key)
        return ValidatorNode(task_id=task_id, chain=client, store=store, data=data, state_root=tmp_path / "v")

    assert new_validator().resume_note() is None
    assert new_validator().step(1, SPEC)  # scores committed; the only validator: score-reveal opens
    restarted = new_validator()
    assert restarted.chain.phase(task_id) == RoundPhase.SCORE_REVEAL
    assert restarted.resume_note() == "round 1: scores committed, will reveal"
    assert restarted.pending().startswith(
        "stopped in round 1: scores committed, not yet revealed — run the same command again before the "
        "score-reveal deadline ("
    )
    assert restarted.pending().endswith("or 0.5000 FMT of the stake is slashed")
