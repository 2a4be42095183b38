"""One round's artifacts as every node builds and reads them: the spec, the global model and a
trainer's prepared update.

A trainer node, the bench and the test harness all go through :func:`prepare_update`, so there is
one way to turn a trained model into the blob, hash, salt and commitment of the protocol::

    spec = fetch_spec(store, task.terms.spec_hash)
    global_state = fetch_model(store, spec, round_info.model_hash)   # verified against the hash
    ...train a copy of the model...
    prepared = prepare_update(
        global_state=global_state, trained_state=model.state_dict(), task_id=1, round_no=3,
        trainer=address, num_samples=len(data),
    )
    chain.commit(1, prepared.commitment)      # later: store.put(prepared.blob); chain.reveal(...)

See ``docs/protocol.md`` (commitment) for why the salt must stay secret until the reveal.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from torch import Tensor

from fedmarket.cid import cid_from_digest, digest_of
from fedmarket.codec import decode_model, encode_model, encode_update, state_delta
from fedmarket.models import build_model
from fedmarket.protocol import make_commitment, new_salt
from fedmarket.spec import TaskSpec
from fedmarket.store import ContentStore

__all__ = [
    "DeltaRewrite",
    "PreparedUpdate",
    "fetch_model",
    "fetch_spec",
    "initial_model_blob",
    "prepare_update",
]

DeltaRewrite = Callable[[dict[str, Tensor]], dict[str, Tensor]]


def fetch_spec(store: ContentStore, spec_hash: bytes) -> TaskSpec:
    """The task's spec from the store, verified against the on-chain ``specHash``."""
    return TaskSpec.from_json(store.get(cid_from_digest(spec_hash)))


def fetch_model(store: ContentStore, spec: TaskSpec, model_hash: bytes) -> dict[str, Tensor]:
    """A global model's weights from the store, verified against its hash and the spec's layout."""
    return decode_model(store.get(cid_from_digest(model_hash)), model=build_model(spec))


def initial_model_blob(spec: TaskSpec) -> bytes:
    """The seeded round-1 model every party can rebuild from the spec."""
    return encode_model(build_model(spec))


@dataclass(frozen=True)
class PreparedUpdate:
    """A trainer's update for one round, ready to commit, upload and reveal."""

    blob: bytes
    update_hash: bytes  # sha256 of `blob`: what is committed to and revealed
    salt: bytes
    commitment: bytes

    @property
    def cid(self) -> str:
        return cid_from_digest(self.update_hash)

    @classmethod
    def from_blob(
        cls, blob: bytes, *, task_id: int, round_no: int, trainer: str, salt: bytes | None = None
    ) -> PreparedUpdate:
        """Hash, salt and commitment for `blob` (a fresh random salt unless one is given)."""
        update_hash = digest_of(blob)
        salt = new_salt() if salt is None else salt
        commitment = make_commitment(task_id, round_no, trainer, update_hash, salt)
        return cls(blob=blob, update_hash=update_hash, salt=salt, commitment=commitment)


def prepare_update(
    *,
    global_state: Mapping[str, Tensor],
    trained_state: Mapping[str, Tensor],
    task_id: int,
    round_no: int,
    trainer: str,
    num_samples: int,
    rewrite: DeltaRewrite | None = None,
) -> PreparedUpdate:
    """The delta `trained_state - global_state` as this round's update (safetensors, never pickle).

    `rewrite` changes the delta before it is encoded: how the demo and the tests play attackers.
    """
    delta = state_delta(trained_state, global_state)
    if rewrite is not None:
        delta = rewrite(delta)
    blob = encode_update(delta, task_id=task_id, round=round_no, trainer=trainer, num_samples=num_samples)
    return PreparedUpdate.from_blob(blob, task_id=task_id, round_no=round_no, trainer=trainer)
