"""The trainer node: joins a task and takes part in every round until the task ends.

Per round: pull the global model (verified against its on-chain hash), train locally, encode the
delta, persist salt + update to the state dir, commit, wait for the reveal phase, upload, reveal.
At the end: claim what was earned and take the stake back.

Restart-safe: the update and its salt are on disk (fsynced) before the commit is sent, so a node
killed after committing and started again reveals the same update. The chain is asked, not the
disk, whether a commit or reveal already happened.
"""

from __future__ import annotations

import json
import logging
import secrets
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from fedmarket.chain import MarketClient, TaskInfo, TrainerInfo
from fedmarket.cid import cid_from_digest, digest_of
from fedmarket.client import CoordinatorClient
from fedmarket.display import fmt, iso_time
from fedmarket.errors import ContractRevert, FedmarketError
from fedmarket.files import atomic_write
from fedmarket.learning import LocalData, train
from fedmarket.models import build_model
from fedmarket.protocol import RoundPhase, TaskStatus, make_commitment
from fedmarket.rounds import fetch_model, prepare_update
from fedmarket.spec import TaskSpec
from fedmarket.store import ContentStore
from trainer.attacks import Attack, AttackContext, attack_context
from trainer.round_node import EventSink, RoundNode, RoundSummary, Standing

log = logging.getLogger("fedmarket.trainer")


class NodeError(FedmarketError):
    """The node cannot take part: a message a person can act on."""


@dataclass
class RoundState:
    """What the node must remember about one round across restarts."""

    round: int
    update_hash: str
    salt: str
    num_samples: int
    loss: float
    epsilon: float | None = None
    committed: bool = False
    uploaded: bool = False
    revealed: bool = False


@dataclass
class NodeSummary(RoundSummary):
    epsilon: float | None = None  # the privacy spent over the rounds (basic composition)


class StateDir:
    """`<root>/task-<id>/round-<n>.json` + `.update` blob; atomic, fsynced writes."""

    def __init__(self, root: Path, task_id: int, trainer: str) -> None:
        self.path = Path(root) / trainer.lower() / f"task-{task_id}"
        self.path.mkdir(parents=True, exist_ok=True)

    def save(self, state: RoundState, update: bytes | None = None) -> None:
        if update is not None:
            atomic_write(self.path / f"round-{state.round}.update", update)
        atomic_write(self.path / f"round-{state.round}.json", json.dumps(state.__dict__).encode())

    def load(self, round_no: int) -> tuple[RoundState, bytes] | None:
        meta, blob = self.path / f"round-{round_no}.json", self.path / f"round-{round_no}.update"
        if not meta.exists() or not blob.exists():
            return None
        state = RoundState(**json.loads(meta.read_text()))
        update = blob.read_bytes()
        if digest_of(update).hex() != state.update_hash:
            raise NodeError(f"{blob} does not match its recorded hash; the state dir is damaged")
        return state, update

    def write_summary(self, summary: RoundSummary) -> Path:
        """What the node did in this task, as JSON (read by `status` and the demo)."""
        path = self.path / "summary.json"
        atomic_write(path, json.dumps(summary.__dict__).encode())
        return path

    def all_rounds(self) -> list[RoundState]:
        """Every saved round, in round order (round 10 after round 9, not after round 1)."""
        states = [RoundState(**json.loads(p.read_text())) for p in self.path.glob("round-*.json")]
        return sorted(states, key=lambda state: state.round)


class TrainerNode(RoundNode):
    acts_in = (RoundPhase.COMMIT, RoundPhase.REVEAL)

    def __init__(
        self,
        *,
        task_id: int,
        chain: MarketClient,
        coordinator: CoordinatorClient,
        store: ContentStore,
        data: LocalData | None,
        state_root: Path,
        poll_interval: float = 0.5,
        on_event: EventSink | None = None,
        attack: Attack | None = None,
        train_seed: int | None = None,
    ) -> None:
        super().__init__(
            task_id=task_id, chain=chain, store=store, poll_interval=poll_interval, on_event=on_event
        )
        self.coordinator = coordinator
        self.data = data
        self.state = StateDir(state_root, task_id, self.address)
        # How the demo plays an attacker: a change to the training data and a delta rewrite.
        self._attack = attack
        # Demo only: reproducible training (a seed per round derived from this); default random.
        self._train_seed = train_seed
        self.summary: NodeSummary = NodeSummary()

    # ------------------------------------------------------------------ set-up

    def member(self) -> TrainerInfo:
        return self.chain.trainer(self.task_id, self.address)

    def ensure_joined(self) -> None:
        info = self.chain.task(self.task_id)  # ContractRevert TaskMarketUnknownTask for a wrong id
        if info.status != TaskStatus.OPEN:
            raise NodeError(f"task {self.task_id} is {info.status.name.lower()}; nothing to join")
        if self.chain.trainer(self.task_id, self.address).joined:
            return
        if info.trainer_count >= info.terms.max_trainers:
            raise NodeError(
                f"task {self.task_id} is full ({info.trainer_count}/{info.terms.max_trainers} trainers)"
            )
        balance = self.chain.token_balance(self.address)
        if balance < info.terms.min_stake:
            raise NodeError(
                f"{self.address} holds {fmt(balance)}; joining task {self.task_id} needs a stake of "
                f"{fmt(info.terms.min_stake)}"
            )
        self._track(self.chain.ensure_allowance(info.terms.min_stake))
        self._track(self.chain.join(self.task_id, auto_approve=False))
        self._emit("joined", {"stake": info.terms.min_stake})

    def standing(self, round_no: int, info: TaskInfo) -> Standing | None:
        on_chain = self.chain.commitment(self.task_id, self.address)
        phase = self.chain.phase(self.task_id)
        deadlines = self.chain.round(self.task_id, round_no)
        if on_chain.round_no == round_no:
            if on_chain.revealed:
                return Standing(round_no, "revealed")
            if phase in (RoundPhase.COMMIT, RoundPhase.REVEAL):
                return Standing(
                    round_no, "committed", next="reveal", not_yet="not yet revealed", deadline_name="reveal",
                    deadline=deadlines.reveal_deadline, at_stake=self.slashable(info),
                )  # fmt: skip
            return Standing(
                round_no,
                f"committed and not revealed by the reveal deadline ({iso_time(deadlines.reveal_deadline)}): "
                f"{fmt(self.slashable(info))} of the stake is slashed when the round settles",
            )
        if phase == RoundPhase.COMMIT and self.state.load(round_no) is not None:
            return Standing(
                round_no, "trained", next="commit the saved update", not_yet="not yet committed",
                deadline_name="commit", deadline=deadlines.commit_deadline,
            )  # fmt: skip
        return None

    # ------------------------------------------------------------------ a round

    def act(self, round_no: int, phase: RoundPhase, spec: TaskSpec) -> bool:
        saved = self.state.load(round_no)
        on_chain = self.chain.commitment(self.task_id, self.address)
        committed = on_chain.round_no == round_no
        if phase == RoundPhase.COMMIT and not committed:
            self._train_and_commit(round_no, spec, saved)
            return True
        if phase == RoundPhase.REVEAL and committed and not on_chain.revealed:
            if saved is None:
                raise NodeError(
                    f"committed in round {round_no} but the update is not in {self.state.path}; cannot reveal"
                )
            self._upload_and_reveal(*saved)
            return True
        return False

    def _train_and_commit(self, round_no: int, spec: TaskSpec, saved) -> None:
        if saved is None:
            state, update = self._train(round_no, spec)
        else:
            state, update = saved  # trained before a restart: commit that same update
        commitment = make_commitment(
            self.task_id, round_no, self.address, bytes.fromhex(state.update_hash), bytes.fromhex(state.salt)
        )
        try:
            self._track(self.chain.commit(self.task_id, commitment))
        except ContractRevert as revert:
            if revert.name == "TaskMarketWrongPhase":
                self._emit("missed", {"round": round_no, "reason": "commit phase closed while training"})
                return
            raise
        state.committed = True
        self.state.save(state)
        self.summary.rounds_committed.append(round_no)
        self._emit("committed", {"round": round_no})

    def _train(self, round_no: int, spec: TaskSpec) -> tuple[RoundState, bytes]:
        # The store verifies the blob against its CID, i.e. against the on-chain model hash.
        if self.data is None:
            raise NodeError("this node has no local data to train on: start it with --data FILE")
        global_state = fetch_model(self.store, spec, self.chain.round(self.task_id, round_no).model_hash)
        model = build_model(spec)
        model.load_state_dict(global_state)
        self._emit("training", {"round": round_no, "epochs": spec.training.local_epochs})
        data = self._attack.training_data(self.data, spec.num_classes) if self._attack else self.data
        result = train(
            model, data, spec.training, seed=self._seed_for(round_no), privacy=spec.privacy,
            on_epoch=lambda epoch, loss: self._emit("epoch", {"round": round_no, "epoch": epoch, "loss": loss}),
        )  # fmt: skip
        rewrite = None
        if self._attack is not None:
            context = attack_context(
                self._attack, chain=self.chain, store=self.store, spec=spec, task_id=self.task_id,
                round_no=round_no, global_state=global_state, data=data, seed=self._seed_for(round_no),
            )  # fmt: skip
            rewrite = partial(_rewrite_with, self._attack, context)
        prepared = prepare_update(
            global_state=global_state, trained_state=model.state_dict(), task_id=self.task_id, round_no=round_no,
            trainer=self.address, num_samples=result.num_samples, rewrite=rewrite,
        )  # fmt: skip
        state = RoundState(
            round=round_no, update_hash=prepared.update_hash.hex(), salt=prepared.salt.hex(),
            num_samples=result.num_samples, loss=result.loss, epsilon=result.epsilon,
        )  # fmt: skip
        update = prepared.blob
        self.state.save(state, update)  # on disk before the commit: a restart can still reveal
        if result.epsilon is not None:
            self.summary.epsilon = (self.summary.epsilon or 0.0) + result.epsilon
        return state, update

    def _seed_for(self, round_no: int) -> int:
        if self._train_seed is None:
            return secrets.randbits(63)
        material = f"{self._train_seed}/{self.task_id}/{round_no}/{self.address.lower()}".encode()
        return int.from_bytes(digest_of(material)[:8], "big") >> 1

    def _upload_and_reveal(self, state: RoundState, update: bytes) -> None:
        cid = self.store.put(update)
        if cid != cid_from_digest(bytes.fromhex(state.update_hash)):
            raise NodeError(f"store returned {cid} for update {state.update_hash}")
        state.uploaded = True
        self.state.save(state)
        self._track(
            self.chain.reveal(self.task_id, bytes.fromhex(state.update_hash), bytes.fromhex(state.salt))
        )
        state.revealed = True
        self.state.save(state)
        self.summary.rounds_revealed.append(state.round)
        self._emit("revealed", {"round": state.round, "cid": cid})


def _rewrite_with(attack: Attack, context: AttackContext, delta: dict) -> dict:
    return attack.rewrite(delta, context)
