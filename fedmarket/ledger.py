"""What the chain says about one round, rebuilt from the market's events alone.

Validators need the round's revealers in the contract's order to build their score vectors;
whoever finalizes needs the complete :class:`fedmarket.chain.Settlement`; `fedmarket verify`
and the coordinator need the consensus the contract emitted. All of it is public: this module
reads it from events (and, for stakes and the budget, from state at the block before settlement),
never from a coordinator's database.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from eth_utils import to_checksum_address

from fedmarket.chain import MarketClient, Settlement
from fedmarket.protocol import Outcome


def address_order(address: str) -> int:
    """The contract's order of addresses: as 160-bit integers."""
    return int(address, 16)


@dataclass(frozen=True)
class SettledTrainer:
    """`TrainerSettled`."""

    trainer: str
    outcome: Outcome
    consensus: int
    payout: int


@dataclass(frozen=True)
class SettledValidator:
    """`ValidatorSettled`."""

    validator: str
    agreement: int
    payout: int


@dataclass
class RoundLedger:
    """One round's public record."""

    task_id: int
    round_no: int
    model_hash: bytes = b""
    committers: list[str] = field(default_factory=list)  # in commit order
    reveals: dict[str, bytes] = field(default_factory=dict)  # trainer -> update hash, in reveal order
    score_committers: list[str] = field(default_factory=list)
    score_reveals: dict[str, tuple[int, ...]] = field(default_factory=dict)
    settled_trainers: dict[str, SettledTrainer] = field(default_factory=dict)
    settled_validators: dict[str, SettledValidator] = field(default_factory=dict)
    trainer_slashes: dict[str, int] = field(default_factory=dict)  # trainer -> tokens burned
    validator_slashes: dict[str, int] = field(default_factory=dict)  # validator -> tokens burned
    finalized_block: int | None = None
    aborted: bool = False
    published_model: bytes | None = None
    report_hash: bytes | None = None

    @property
    def trainers(self) -> list[str]:
        """The revealers in the contract's order: the positions of every score vector."""
        return sorted(self.reveals, key=address_order)

    @property
    def non_revealers(self) -> list[str]:
        return [t for t in self.committers if t not in self.reveals]

    @property
    def validators(self) -> list[str]:
        return sorted(self.score_reveals, key=address_order)

    @property
    def silent_validators(self) -> list[str]:
        return [v for v in self.score_committers if v not in self.score_reveals]

    def settlement(self) -> Settlement:
        validators = self.validators
        return Settlement(
            trainers=tuple(self.trainers),
            non_revealers=tuple(self.non_revealers),
            validators=tuple(validators),
            scores=tuple(self.score_reveals[v] for v in validators),
            silent_validators=tuple(self.silent_validators),
        )

    def aggregated(self) -> list[str]:
        """Trainers whose updates the aggregate is made of (:attr:`Outcome.aggregated`), in the contract's order."""
        return [
            t
            for t in self.trainers
            if t in self.settled_trainers and self.settled_trainers[t].outcome.aggregated
        ]


def read_round(
    market: MarketClient, task_id: int, round_no: int, *, from_block: int | None = None
) -> RoundLedger:
    """The round's record from the market's events of `task_id` (one paged scan)."""
    ledger = RoundLedger(task_id, round_no)
    for event in market.iter_events(task_id=task_id, from_block=from_block):
        args = event.args
        if args.get("round") != round_no:
            continue
        name = event.name
        if name == "RoundStarted":
            ledger.model_hash = bytes(args["modelHash"])
        elif name == "Committed":
            ledger.committers.append(to_checksum_address(args["trainer"]))
        elif name == "Revealed":
            ledger.reveals[to_checksum_address(args["trainer"])] = bytes(args["updateHash"])
        elif name == "ScoresCommitted":
            ledger.score_committers.append(to_checksum_address(args["validator"]))
        elif name == "ScoresRevealed":
            ledger.score_reveals[to_checksum_address(args["validator"])] = tuple(
                int(e) for e in args["scores"]
            )
        elif name == "TrainerSettled":
            trainer = to_checksum_address(args["trainer"])
            ledger.settled_trainers[trainer] = SettledTrainer(
                trainer, Outcome(args["outcome"]), int(args["consensus"]), int(args["payout"])
            )
        elif name == "ValidatorSettled":
            validator = to_checksum_address(args["validator"])
            ledger.settled_validators[validator] = SettledValidator(
                validator, int(args["agreement"]), int(args["payout"])
            )
        elif name == "TrainerSlashed":
            ledger.trainer_slashes[to_checksum_address(args["trainer"])] = int(args["amount"])
        elif name == "ValidatorSlashed":
            ledger.validator_slashes[to_checksum_address(args["validator"])] = int(args["amount"])
        elif name == "RoundFinalized":
            ledger.finalized_block = event.block_number
        elif name == "RoundAborted":
            ledger.aborted = True
        elif name == "ModelPublished":
            ledger.published_model = bytes(args["modelHash"])
            ledger.report_hash = bytes(args["reportHash"])
    return ledger
