"""The on-chain protocol in Python: task terms, phases, commitments and the owner's signatures.

Everything here mirrors `contracts/ITaskMarket.sol` exactly; the contract is the source of truth,
and the tests check each mirror against it (the commitment and the EIP-712 digests against the
deployed contract).
"""

from __future__ import annotations

import enum
import secrets
from collections.abc import Sequence
from dataclasses import astuple, dataclass

from eth_abi import encode
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils import keccak, to_checksum_address

BPS = 10_000
MAX_WINDOW = 7 * 24 * 3600  # TaskMarket.MAX_WINDOW: the longest phase window a task may set, seconds
MARKET_EIP712_NAME = "TaskMarket"
MARKET_EIP712_VERSION = "1"


class TaskStatus(enum.IntEnum):
    NONE = 0
    OPEN = 1
    COMPLETED = 2
    CANCELLED = 3
    EXPIRED = 4


class RoundPhase(enum.IntEnum):
    NONE = 0
    COMMIT = 1
    REVEAL = 2
    SCORE_COMMIT = 3
    SCORE_REVEAL = 4
    SETTLING = 5
    FINALIZED = 6
    ABORTED = 7


class Outcome(enum.IntEnum):
    """`ITaskMarket.Outcome`: what consensus made of a revealed update."""

    ACCEPTED = 0
    WORTHLESS = 1
    UNAVAILABLE = 2
    REJECTED = 3

    @property
    def aggregated(self) -> bool:
        """Whether the update goes into the round's aggregate: the quorum fetched it and did not
        reject it. A Worthless update is aggregated but not paid, so the significance rule that
        keeps luck unpaid does not also throw away honest information."""
        return self in (Outcome.ACCEPTED, Outcome.WORTHLESS)


@dataclass(frozen=True)
class TaskTerms:
    """`ITaskMarket.TaskTerms`; field order is the Solidity struct's order."""

    spec_hash: bytes
    coordinator: str
    rounds: int
    min_trainers: int
    max_trainers: int
    slash_bps: int
    commit_window: int
    reveal_window: int
    reward_pool: int
    min_stake: int
    min_validators: int
    max_validators: int
    validator_share_bps: int
    score_window: int
    score_reveal_window: int
    min_validator_stake: int

    def as_tuple(self) -> tuple:
        """The struct as web3 passes it to a contract function."""
        return astuple(self)

    @classmethod
    def from_tuple(cls, values) -> TaskTerms:
        return cls(*values)

    def as_typed_message(self) -> dict:
        return {
            "specHash": self.spec_hash,
            "coordinator": to_checksum_address(self.coordinator),
            "rounds": self.rounds,
            "minTrainers": self.min_trainers,
            "maxTrainers": self.max_trainers,
            "slashBps": self.slash_bps,
            "commitWindow": self.commit_window,
            "revealWindow": self.reveal_window,
            "rewardPool": self.reward_pool,
            "minStake": self.min_stake,
            "minValidators": self.min_validators,
            "maxValidators": self.max_validators,
            "validatorShareBps": self.validator_share_bps,
            "scoreWindow": self.score_window,
            "scoreRevealWindow": self.score_reveal_window,
            "minValidatorStake": self.min_validator_stake,
        }


_TASK_TERMS_TYPE = [
    {"name": "specHash", "type": "bytes32"},
    {"name": "coordinator", "type": "address"},
    {"name": "rounds", "type": "uint16"},
    {"name": "minTrainers", "type": "uint16"},
    {"name": "maxTrainers", "type": "uint16"},
    {"name": "slashBps", "type": "uint16"},
    {"name": "commitWindow", "type": "uint32"},
    {"name": "revealWindow", "type": "uint32"},
    {"name": "rewardPool", "type": "uint256"},
    {"name": "minStake", "type": "uint256"},
    {"name": "minValidators", "type": "uint16"},
    {"name": "maxValidators", "type": "uint16"},
    {"name": "validatorShareBps", "type": "uint16"},
    {"name": "scoreWindow", "type": "uint32"},
    {"name": "scoreRevealWindow", "type": "uint32"},
    {"name": "minValidatorStake", "type": "uint256"},
]
_DOMAIN_TYPE = [
    {"name": "name", "type": "string"},
    {"name": "version", "type": "string"},
    {"name": "chainId", "type": "uint256"},
    {"name": "verifyingContract", "type": "address"},
]


def new_salt() -> bytes:
    return secrets.token_bytes(32)


def make_commitment(task_id: int, round_no: int, trainer: str, update_hash: bytes, salt: bytes) -> bytes:
    """`keccak256(abi.encode(taskId, round, trainer, updateHash, salt))`, as `reveal` recomputes it."""
    return keccak(
        encode(
            ["uint256", "uint16", "address", "bytes32", "bytes32"],
            [task_id, round_no, to_checksum_address(trainer), update_hash, salt],
        )
    )


def make_score_commitment(
    task_id: int, round_no: int, validator: str, scores: Sequence[int], salt: bytes
) -> bytes:
    """`keccak256(abi.encode(taskId, round, validator, scores, salt))`, as `revealScores` recomputes it."""
    return keccak(
        encode(
            ["uint256", "uint16", "address", "int256[]", "bytes32"],
            [task_id, round_no, to_checksum_address(validator), list(scores), salt],
        )
    )


def revealed_scores_hash(scores: Sequence[int]) -> bytes:
    """`keccak256(abi.encode(scores))`: what the contract keeps of a revealed vector."""
    return keccak(encode(["int256[]"], [list(scores)]))


def create_task_typed_data(
    terms: TaskTerms, *, owner: str, nonce: int, deadline: int, chain_id: int, market: str
) -> dict:
    """EIP-712 message an owner signs so that anyone may relay `createTaskFor`."""
    return {
        "types": {
            "EIP712Domain": _DOMAIN_TYPE,
            "CreateTask": [
                {"name": "terms", "type": "TaskTerms"},
                {"name": "owner", "type": "address"},
                {"name": "nonce", "type": "uint256"},
                {"name": "deadline", "type": "uint256"},
            ],
            "TaskTerms": _TASK_TERMS_TYPE,
        },
        "primaryType": "CreateTask",
        "domain": {
            "name": MARKET_EIP712_NAME,
            "version": MARKET_EIP712_VERSION,
            "chainId": chain_id,
            "verifyingContract": to_checksum_address(market),
        },
        "message": {
            "terms": terms.as_typed_message(),
            "owner": to_checksum_address(owner),
            "nonce": nonce,
            "deadline": deadline,
        },
    }


def permit_typed_data(
    *,
    token_name: str,
    token: str,
    chain_id: int,
    owner: str,
    spender: str,
    value: int,
    nonce: int,
    deadline: int,
) -> dict:
    """EIP-2612 permit message (OpenZeppelin ERC20Permit, domain version "1")."""
    return {
        "types": {
            "EIP712Domain": _DOMAIN_TYPE,
            "Permit": [
                {"name": "owner", "type": "address"},
                {"name": "spender", "type": "address"},
                {"name": "value", "type": "uint256"},
                {"name": "nonce", "type": "uint256"},
                {"name": "deadline", "type": "uint256"},
            ],
        },
        "primaryType": "Permit",
        "domain": {
            "name": token_name,
            "version": "1",
            "chainId": chain_id,
            "verifyingContract": to_checksum_address(token),
        },
        "message": {
            "owner": to_checksum_address(owner),
            "spender": to_checksum_address(spender),
            "value": value,
            "nonce": nonce,
            "deadline": deadline,
        },
    }


@dataclass(frozen=True)
class PermitSignature:
    """`ITaskMarket.Permit`: what `createTaskFor` needs to pull the reward pool."""

    value: int
    deadline: int
    v: int
    r: bytes
    s: bytes

    def as_tuple(self) -> tuple:
        return astuple(self)


def sign_typed_data(private_key, typed_data: dict):
    """Signs EIP-712 data locally; the key never leaves this process."""
    return Account.sign_message(encode_typed_data(full_message=typed_data), private_key)


def sign_task_terms(
    private_key, terms: TaskTerms, *, nonce: int, deadline: int, chain_id: int, market: str
) -> bytes:
    owner = Account.from_key(private_key).address
    typed = create_task_typed_data(
        terms, owner=owner, nonce=nonce, deadline=deadline, chain_id=chain_id, market=market
    )
    return bytes(sign_typed_data(private_key, typed).signature)


def sign_permit(
    private_key,
    *,
    token_name: str,
    token: str,
    chain_id: int,
    spender: str,
    value: int,
    nonce: int,
    deadline: int,
) -> PermitSignature:
    owner = Account.from_key(private_key).address
    typed = permit_typed_data(
        token_name=token_name, token=token, chain_id=chain_id, owner=owner, spender=spender,
        value=value, nonce=nonce, deadline=deadline,
    )  # fmt: skip
    signed = sign_typed_data(private_key, typed)
    return PermitSignature(
        value, deadline, signed.v, signed.r.to_bytes(32, "big"), signed.s.to_bytes(32, "big")
    )
