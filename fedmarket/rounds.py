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

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from torch import Tensor

from fedmarket.cid import cid_from_digest, digest_of
from fedmarket.codec import decode_model, decode_update, encode_model, encode_update, state_delta
from fedmarket.errors import FedmarketError
from fedmarket.models import build_model
from fedmarket.protocol import make_commitment, new_salt
from fedmarket.spec import TaskSpec
from fedmarket.store import ContentStore

if TYPE_CHECKING:
    from fedmarket.chain import MarketClient
    from fedmarket.learning import LocalData
    from fedmarket.ledger import RoundLedger
    from fedmarket.scoring import Reference, ScoredUpdate

__all__ = [
    "DeltaRewrite",
    "copy_references",
    "score_revealed",
    "PreparedUpdate",
    "fetch_model",
    "fetch_spec",
    "initial_model_blob",
    "prepare_update",
]

DeltaRewrite = Callable[[dict[str, Tensor]], dict[str, Tensor]]
log = logging.getLogger(__name__)


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


def copy_references(
    chain: MarketClient,
    store: ContentStore,
    spec: TaskSpec,
    *,
    task_id: int,
    round_no: int,
    global_state: Mapping[str, Tensor],
) -> list[Reference]:
    """What round `round_no`'s updates must not copy (:func:`fedmarket.scoring.screen_updates`):
    the previous round's aggregate delta (this round's model minus the last one) and every update
    revealed in the last ``spec.scoring.copy_rounds`` rounds whose blob the store still has (one
    the store lacks could not have been copied from it either, so it is skipped)."""
    from fedmarket.ledger import read_round
    from fedmarket.scoring import Reference

    references = []
    if round_no > 1:
        previous = fetch_model(store, spec, chain.round(task_id, round_no - 1).model_hash)
        aggregate = {k: global_state[k].double() - previous[k].double() for k in global_state}
        references.append(Reference("the previous round's aggregate", aggregate))
    for earlier in range(max(1, round_no - spec.scoring.copy_rounds), round_no):
        for trainer, update_hash in read_round(chain, task_id, earlier).reveals.items():
            try:
                update = decode_update(store.get(cid_from_digest(update_hash)), model=global_state)
            except FedmarketError as exc:
                log.info("round %d update of %s is no copy reference: %s", earlier, trainer, exc)
                continue
            references.append(Reference(f"{trainer}'s round {earlier} update", update.delta))
    return references


def score_revealed(
    chain: MarketClient,
    store: ContentStore,
    spec: TaskSpec,
    data: LocalData,
    *,
    task_id: int,
    round_no: int,
    fetch: Callable[[bytes], bytes | None],
) -> tuple[RoundLedger, dict[str, ScoredUpdate]]:
    """A validator's verdicts on round `round_no`, by trainer, under the task's rule: every
    revealed update (``fetch(update_hash)``: the verified blob, None if it cannot be had), the
    copy references (:func:`copy_references`) and the validator's own update on `data` (the
    signal screen's reference). What a validator node, the benchmarks and the tests all run."""
    from fedmarket.ledger import read_round
    from fedmarket.scoring import RULES, Revealed, losses_on, own_update, round_seed

    ledger = read_round(chain, task_id, round_no)
    global_state = fetch_model(store, spec, ledger.model_hash)
    revealed = [Revealed(t, h, fetch(h)) for t, h in ledger.reveals.items()]  # reveal order
    verdicts = RULES[spec.scoring.method](
        spec=spec, task_id=task_id, round_no=round_no, global_state=global_state, revealed=revealed,
        losses_of_state=losses_on(build_model(spec), data),
        references=copy_references(chain, store, spec, task_id=task_id, round_no=round_no, global_state=global_state),
        validator_update=own_update(spec, global_state, data, seed=round_seed(task_id, round_no)),
    )  # fmt: skip
    return ledger, verdicts
