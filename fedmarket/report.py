"""The round report: the public audit record of one settled round, stored as a blob.

The coordinator writes one :class:`RoundReport` per finalized round, stores its canonical JSON
in the content store and puts the sha256 of those bytes on-chain as the round's ``reportHash``
(``finalizeRound``). Anyone can fetch it by that hash and check it against the chain: the
``rewards_root`` it lists is the root of :meth:`RoundReport.rewards_tree`, which must equal the
on-chain ``rewardsRoot``; ``payout`` is the on-chain ``payout``; every update CID hashes to the
``updateHash`` its trainer revealed. The trainer node and the API read cumulative earnings (and
so Merkle proofs) from the latest report, never from anything the chain does not commit to::

    report = RoundReport.from_json(store.get(cid_from_digest(round_info.report_hash)))
    assert report.report_hash() == round_info.report_hash
    assert report.rewards_tree().root == task_info.rewards_root

Token amounts are integers in base units, written as decimal strings (they exceed 2**53);
hashes are lowercase hex without ``0x``; addresses are checksummed. See ``docs/protocol.md``
(settlement) for how the numbers are decided.
"""

from __future__ import annotations

import enum
import hashlib
import math
from typing import Annotated, Any

from eth_utils import is_address, to_checksum_address
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PrivateAttr,
    ValidationError,
    model_validator,
)

from fedmarket.canonical import canonical_json
from fedmarket.errors import CodecError
from fedmarket.merkle import RewardsTree

__all__ = ["RejectionReason", "RoundMetrics", "RoundReport", "SubmissionReport", "TokenAmount"]


class RejectionReason(enum.StrEnum):
    """Why a committed update was refused; every refused committer is slashed."""

    NO_REVEAL = "no_reveal"  # committed but never revealed
    NOT_UPLOADED = "not_uploaded"  # revealed a hash whose blob is not in the store
    INVALID = "invalid"  # not a valid update for this model (names, shapes, dtype, NaN/Inf)
    WRONG_METADATA = "wrong_metadata"  # made for another task, round or trainer (a replay)
    NORM_BOUND = "norm_bound"  # update norm above the spec's bound
    DUPLICATE = "duplicate"  # same update hash as an earlier revealer
    HARMFUL = "harmful"  # value below the spec's harm threshold


def _amount(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError("must be a token amount: an integer in base units or its decimal string")
    if isinstance(value, str) and not value.isdigit():
        raise ValueError(f"must be a decimal string of base units, got {value!r}")
    if int(value) < 0:
        raise ValueError("a token amount cannot be negative")
    return int(value)


def _address(value: Any) -> str:
    if not isinstance(value, str) or not is_address(value):
        raise ValueError(f"must be a 0x-prefixed 20-byte address, got {value!r}")
    return to_checksum_address(value)


def _finite_or_none(value: Any) -> Any:
    """Canonical JSON has no NaN or infinity: a non-finite measurement is recorded as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


TokenAmount = Annotated[int, BeforeValidator(_amount), PlainSerializer(str, return_type=str)]
Address = Annotated[str, BeforeValidator(_address)]
Measurement = Annotated[float | None, BeforeValidator(_finite_or_none)]
HexDigest = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class _Artifact(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RoundMetrics(_Artifact):
    """The global model before and after the round, on the owner's validation split."""

    loss: Measurement = Field(description="mean cross-entropy of the new global model")
    accuracy: Measurement = Field(description="accuracy of the new global model")
    previous_loss: Measurement = Field(description="mean cross-entropy of the round's input model")
    previous_accuracy: Measurement = Field(description="accuracy of the round's input model")
    accepted: int = Field(ge=0, description="updates aggregated into the new model and paid")
    rejected: int = Field(ge=0, description="committers refused (and slashed), for any reason")


class SubmissionReport(_Artifact):
    """One committer's part in the round and the coordinator's verdict on it."""

    trainer: Address
    update_hash: HexDigest | None = Field(description="sha256 of the revealed update; null if never revealed")
    update_cid: str | None = Field(description="CIDv1 of the revealed update blob; null if never revealed")
    accepted: bool = Field(description="aggregated and paid (true) or refused and slashed (false)")
    reason: RejectionReason | None = Field(description="why it was refused; null when accepted")
    detail: str | None = Field(description="the refusal in words (at most a few hundred characters)")
    num_samples: int = Field(ge=0, description="local samples the update claims (its FedAvg weight)")
    norm: Measurement = Field(description="L2 norm of the update's delta; null if it was never decoded")
    score: Measurement = Field(description="value of the update under the spec's scoring rule")
    payout: TokenAmount = Field(description="what this round paid the trainer, base units")
    slashed: TokenAmount = Field(description="stake taken from the trainer this round, base units")


class RoundReport(_Artifact):
    """Everything a third party needs to audit one finalized round (see the module docstring)."""

    task_id: int = Field(ge=0, description="the market's task id")
    round: int = Field(ge=1, description="round number, from 1")
    model_cid: str = Field(description="the global model the round trained (its on-chain modelHash)")
    new_model_cid: str = Field(description="the aggregate of the accepted updates (newModelHash)")
    budget: TokenAmount = Field(description="what the round could pay: (pool + slashes) / rounds left")
    payout: TokenAmount = Field(description="what the round paid in all (the on-chain payout)")
    metrics: RoundMetrics
    submissions: tuple[SubmissionReport, ...] = Field(description="one entry per committer, refused first")
    cumulative: dict[Address, TokenAmount] = Field(
        description="every account's earnings in this task up to and including this round"
    )
    rewards_root: HexDigest = Field(description="root of the Merkle tree over `cumulative` (rewardsRoot)")
    timings: dict[str, float] = Field(description="seconds the coordinator spent per step (informational)")
    _tree: RewardsTree = PrivateAttr()  # built once, by the check below

    @model_validator(mode="after")
    def _consistent(self) -> RoundReport:
        """A report contradicting itself is refused: its payouts must add up and its root match."""
        paid = sum(s.payout for s in self.submissions)
        if paid != self.payout:
            raise ValueError(f"payout {self.payout} is not the sum of the submissions' payouts ({paid})")
        if self.payout > self.budget:
            raise ValueError(f"payout {self.payout} exceeds the budget {self.budget}")
        self._tree = RewardsTree(self.cumulative)
        root = self._tree.root.hex()
        if root != self.rewards_root:
            raise ValueError(f"rewards_root {self.rewards_root} is not the root of `cumulative` ({root})")
        return self

    def to_canonical_json(self) -> bytes:
        """The bytes that are stored and hashed (fedmarket.canonical)."""
        return canonical_json(self)

    def report_hash(self) -> bytes:
        """sha256 of the canonical JSON: the round's on-chain ``reportHash``."""
        return hashlib.sha256(self.to_canonical_json()).digest()

    def rewards_tree(self) -> RewardsTree:
        """The cumulative-rewards tree this report implies; its root is the on-chain rewardsRoot."""
        return self._tree

    def submission(self, trainer: str) -> SubmissionReport | None:
        """The verdict on `trainer`'s update, or None when it did not commit this round."""
        trainer = to_checksum_address(trainer)
        return next((s for s in self.submissions if s.trainer == trainer), None)

    @classmethod
    def from_json(cls, data: bytes | str) -> RoundReport:
        """Parse and validate a report blob; CodecError names what is wrong with it."""
        try:
            return cls.model_validate_json(data)
        except ValidationError as exc:
            raise CodecError(f"not a valid round report: {exc}") from exc
