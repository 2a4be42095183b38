"""Owner authentication for the coordinator's private endpoints (EIP-191 personal signatures).

The owner signs a one-line statement binding the chain, the market, the task, the sha256 of the
exact body and an expiry; the coordinator recovers the signer and compares it with the task's
on-chain owner. The key stays with the owner. Each signature is accepted once.
"""

from __future__ import annotations

import hashlib

from eth_account import Account
from eth_account.messages import encode_defunct
from eth_utils import to_checksum_address

SIGNATURE_HEADER = "X-Fedmarket-Signature"
EXPIRY_HEADER = "X-Fedmarket-Expiry"


def validation_upload_message(*, chain_id: int, market: str, task_id: int, body: bytes, expiry: int) -> str:
    digest = hashlib.sha256(body).hexdigest()
    return (
        f"fedmarket validation-data upload: chain {chain_id}, market {to_checksum_address(market)}, "
        f"task {task_id}, sha256 {digest}, expires {expiry}"
    )


def sign_validation_upload(
    private_key, *, chain_id: int, market: str, task_id: int, body: bytes, expiry: int
) -> dict[str, str]:
    """HTTP headers that authenticate `body` as task `task_id`'s validation data until `expiry`."""
    message = validation_upload_message(
        chain_id=chain_id, market=market, task_id=task_id, body=body, expiry=expiry
    )
    signed = Account.sign_message(encode_defunct(text=message), private_key)
    return {SIGNATURE_HEADER: "0x" + bytes(signed.signature).hex(), EXPIRY_HEADER: str(expiry)}


def recover_signer(message: str, signature: str) -> str:
    """The address that signed `message`; ValueError for a malformed signature."""
    return Account.recover_message(encode_defunct(text=message), signature=signature)
