"""Request bodies of the task API. Token amounts are integers in base units (JSON numbers or
decimal strings, since they exceed 2**53); hashes and signatures are 0x-hex."""

from __future__ import annotations

import re
from typing import Annotated, Any

from eth_utils import is_address, to_checksum_address
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from fedmarket.protocol import PermitSignature, TaskTerms

_HEX = re.compile(r"^0x[0-9a-fA-F]*$")
UINT256_MAX = 2**256 - 1  # the contract's integers; a larger value cannot even be encoded


def _amount(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("must be an integer amount in base units")
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if not isinstance(value, int) or not 0 <= value <= UINT256_MAX:
        raise ValueError(
            "must be an integer amount in base units from 0 to 2**256 - 1 (a number or a decimal string)"
        )
    return value


def _address(value: Any) -> str:
    if not isinstance(value, str) or not is_address(value):
        raise ValueError("must be a 0x-prefixed 20-byte address")
    return to_checksum_address(value)


def _hex_bytes(length: int | None):
    def parse(value: Any) -> bytes:
        if not isinstance(value, str) or not _HEX.match(value) or len(value) % 2:
            raise ValueError("must be 0x-prefixed hex")
        raw = bytes.fromhex(value[2:])
        if length is not None and len(raw) != length:
            raise ValueError(f"must be {length} bytes")
        return raw

    return parse


Amount = Annotated[int, BeforeValidator(_amount)]
Address = Annotated[str, BeforeValidator(_address)]
Bytes32 = Annotated[bytes, BeforeValidator(_hex_bytes(32))]
Signature = Annotated[bytes, BeforeValidator(_hex_bytes(65))]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TermsIn(_Strict):
    spec_hash: Bytes32
    coordinator: Address
    rounds: int = Field(ge=1, le=65535)
    min_trainers: int = Field(ge=1, le=65535)
    max_trainers: int = Field(ge=1, le=65535)
    slash_bps: int = Field(ge=0, le=10_000)
    commit_window: int = Field(ge=1, lt=2**32)
    reveal_window: int = Field(ge=1, lt=2**32)
    reward_pool: Amount
    min_stake: Amount

    def to_terms(self) -> TaskTerms:
        return TaskTerms(**self.model_dump())


class PermitIn(_Strict):
    value: Amount
    deadline: int = Field(ge=0, le=UINT256_MAX)
    v: int = Field(ge=0, le=255)
    r: Bytes32
    s: Bytes32

    def to_permit(self) -> PermitSignature:
        return PermitSignature(self.value, self.deadline, self.v, self.r, self.s)


class CreateTaskRequest(_Strict):
    """A task signed by its owner: the spec, the terms (EIP-712-signed) and the pool's permit."""

    spec: dict[str, Any]
    terms: TermsIn
    owner: Address
    deadline: int = Field(
        ge=0, le=UINT256_MAX, description="unix time after which the owner's signature is void"
    )
    signature: Signature
    permit: PermitIn
