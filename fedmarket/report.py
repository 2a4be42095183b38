"""The round report: the coordinator's public record of one settled round, stored as a blob.

The contract settles a round itself, from the validators' revealed score vectors (see
:mod:`fedmarket.consensus`); the coordinator then aggregates the Accepted updates, stores the new
global model and one :class:`RoundReport`, and publishes both hashes on-chain (``publishModel``:
``newModelHash``, ``reportHash``). Everything in the report is either copied from chain events
(outcomes, consensus values, payouts, agreements, slashes) or recomputable from public blobs (the
aggregate), so anyone can check it: ``fedmarket verify`` does::

    report = RoundReport.from_json(store.get(cid_from_digest(round_info.report_hash)))
    assert report.report_hash() == round_info.report_hash

Token amounts are integers in base units, written as decimal strings (they exceed 2**53);
consensus values and agreements are integers with 1e18 = 1; hashes are lowercase hex without
``0x``; addresses are checksummed. See ``docs/protocol.md`` (consensus, settlement).
"""

from __future__ import annotations

import enum
import hashlib
from typing import Annotated, Any

from eth_utils import is_address, to_checksum_address
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    model_validator,
)

from fedmarket.canonical import canonical_json
from fedmarket.errors import CodecError

__all__ = [
    "RejectionReason",
    "RoundReport",
    "SubmissionOutcome",
    "SubmissionReport",
    "TokenAmount",
    "ValidatorReport",
]


class RejectionReason(enum.StrEnum):
    """Why a validator flagged an update (its scoring rule's reasons, :mod:`fedmarket.scoring`)."""

    NO_REVEAL = "no_reveal"  # committed but never revealed
    NOT_UPLOADED = "not_uploaded"  # revealed a hash whose blob could not be fetched
    INVALID = "invalid"  # not a valid update for this model (names, shapes, dtype, NaN/Inf)
    WRONG_METADATA = "wrong_metadata"  # made for another task, round or trainer (a replay)
    NORM_BOUND = "norm_bound"  # update norm above the spec's bound
    DUPLICATE = "duplicate"  # same update hash as an earlier revealer
    COPY = "copy"  # zero, or (nearly) a multiple of an earlier update or the last aggregate
    NORM_OUTLIER = "norm_outlier"  # norm far above the round's median update norm (a boost)
    NO_SIGNAL = "no_signal"  # unaligned with the round's other updates (noise)
    HARMFUL = "harmful"  # value below the spec's harm threshold


class SubmissionOutcome(enum.StrEnum):
    """What the round made of a committed update: the contract's Outcome, or no reveal at all."""

    ACCEPTED = "accepted"  # consensus value > 0: paid and aggregated
    WORTHLESS = "worthless"  # consensus value 0: neither paid nor slashed
    UNAVAILABLE = "unavailable"  # no validator could fetch it: neither paid nor slashed
    REJECTED = "rejected"  # a stake majority flagged it invalid or harmful: slashed and removed
    NO_REVEAL = "no_reveal"  # committed and never revealed: slashed and removed


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


TokenAmount = Annotated[int, BeforeValidator(_amount), PlainSerializer(str, return_type=str)]
Address = Annotated[str, BeforeValidator(_address)]
HexDigest = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class _Artifact(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SubmissionReport(_Artifact):
    """One committer's update and what the contract's consensus made of it."""

    trainer: Address
    update_hash: HexDigest | None = Field(description="sha256 of the revealed update; null if never revealed")
    update_cid: str | None = Field(description="CIDv1 of the revealed update blob; null if never revealed")
    outcome: SubmissionOutcome = Field(description="the contract's verdict (TrainerSettled.outcome)")
    consensus: int = Field(ge=0, description="stake-weighted median of normalized scores, 1e18 = 1")
    payout: TokenAmount = Field(description="what this round paid the trainer, base units")
    slashed: TokenAmount = Field(description="stake burned from the trainer this round, base units")
    num_samples: int = Field(
        ge=0, description="samples the update claims (its aggregation weight); 0 if not aggregated"
    )
    scores: dict[Address, str] = Field(
        default_factory=dict,
        description="each validator's view of it: its normalized score (1e18 = all of that validator's "
        "positive value, a decimal string) or the flag it raised (unavailable, invalid, harmful), or "
        "`self` for a validator that is this trainer; the consensus lies within the scores (the median's guarantee)",
    )


class ValidatorReport(_Artifact):
    """One validator's part in the round."""

    validator: Address
    revealed: bool = Field(description="revealed its score vector (false: committed and went silent)")
    agreement: int = Field(
        ge=0, description="agreement with consensus (ValidatorSettled.agreement), 1e18 = 1"
    )
    payout: TokenAmount = Field(description="what this round paid the validator, base units")
    slashed: TokenAmount = Field(description="stake burned from the validator this round, base units")


class RoundReport(_Artifact):
    """Everything a third party needs to audit one finalized round (see the module docstring)."""

    task_id: int = Field(ge=0, description="the market's task id")
    round: int = Field(ge=1, description="round number, from 1")
    model_cid: str = Field(description="the global model the round trained (its on-chain modelHash)")
    new_model_cid: str = Field(description="the aggregate of the Accepted updates (newModelHash)")
    aggregation: str = Field(description="the spec's aggregation rule the new model was made with")
    budget: TokenAmount = Field(description="what the round could pay: pool / rounds left")
    payout: TokenAmount = Field(
        description="what the round paid in all, trainers and validators (on-chain payout)"
    )
    submissions: tuple[SubmissionReport, ...] = Field(
        description="one entry per committer, in the contract's order"
    )
    validators: tuple[ValidatorReport, ...] = Field(
        description="one entry per validator that committed scores"
    )
    timings: dict[str, float] = Field(description="seconds the coordinator spent per step (informational)")
    server_state_cid: str | None = Field(
        default=None,
        description="CIDv1 of the server optimizer's state after this round's step (FedAdam's moments, "
        "a safetensors blob: fedmarket.aggregation.decode_adam_state); the next round starts from it. "
        "Absent for optimizers that keep no state",
    )

    @model_validator(mode="after")
    def _consistent(self) -> RoundReport:
        """A report contradicting itself is refused: its payouts must add up within the budget."""
        paid = sum(s.payout for s in self.submissions) + sum(v.payout for v in self.validators)
        if paid != self.payout:
            raise ValueError(
                f"payout {self.payout} is not the sum of the trainers' and validators' payouts ({paid})"
            )
        if self.payout > self.budget:
            raise ValueError(f"payout {self.payout} exceeds the budget {self.budget}")
        return self

    @property
    def accepted(self) -> list[SubmissionReport]:
        return [s for s in self.submissions if s.outcome == SubmissionOutcome.ACCEPTED]

    def to_canonical_json(self) -> bytes:
        """The bytes that are stored and hashed (fedmarket.canonical). An absent
        ``server_state_cid`` is left out, so reports from before the field hash as they did."""
        document = self.model_dump(mode="json")
        if document["server_state_cid"] is None:
            del document["server_state_cid"]
        return canonical_json(document)

    def report_hash(self) -> bytes:
        """sha256 of the canonical JSON: the round's on-chain ``reportHash``."""
        return hashlib.sha256(self.to_canonical_json()).digest()

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
