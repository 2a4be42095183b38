"""Signed uploads to a coordinator's store: who may put a blob, proven without sending a key.

A coordinator's ``POST /v1/blobs`` takes a blob only from a participant of a task (its owner, its
coordinator, a joined trainer or validator), or a blob whose hash the chain already names for the
task (its spec, its current model, an update revealed in it). A participant proves who it is with
an EIP-191 signature, made in its own process, over one line per field::

    fedmarket upload
    chain: 31337
    market: 0x5FbDB2315678afecb367f032d93F642f64180aa3
    task: 1
    sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
    size: 4
    expires: 1746100990

The signature binds the blob's hash and size, so a copied signature can only upload the same
bytes again (harmless: a blob's name is its content); ``expires`` (unix seconds) bounds how long
it can be used. Only the signature travels, in the headers of :data:`HEADERS`, before the body: the
coordinator decides before reading a byte of it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from eth_utils import to_checksum_address

__all__ = [
    "HEADERS",
    "MAX_SIGNATURE_VALIDITY",
    "UploadClaim",
    "UploadSigner",
    "recover_uploader",
    "upload_message",
]

MAX_SIGNATURE_VALIDITY = 600
"""Seconds a coordinator accepts between now and a signature's ``expires`` (a longer one is refused)."""


@dataclass(frozen=True)
class _Headers:
    task: str = "X-Fedmarket-Task"
    sha256: str = "X-Fedmarket-Sha256"
    size: str = "X-Fedmarket-Size"
    expires: str = "X-Fedmarket-Expires"
    uploader: str = "X-Fedmarket-Uploader"
    signature: str = "X-Fedmarket-Signature"


HEADERS = _Headers()
"""The request headers of an upload: task id, the blob's sha256 (hex) and size, and for a signed
upload the signature's expiry, the uploader's address and the 65-byte signature (0x-hex)."""


def upload_message(
    *, chain_id: int, market: str, task_id: int, sha256: bytes, size: int, expires: int
) -> str:
    """The text an uploader signs (EIP-191 ``personal_sign``)."""
    return (
        "fedmarket upload\n"
        f"chain: {chain_id}\n"
        f"market: {to_checksum_address(market)}\n"
        f"task: {task_id}\n"
        f"sha256: {sha256.hex()}\n"
        f"size: {size}\n"
        f"expires: {expires}"
    )


@dataclass(frozen=True)
class UploadClaim:
    """What an upload's headers say: the task, the blob's hash and size, and (signed) who and until when."""

    task_id: int
    sha256: bytes
    size: int
    expires: int | None = None
    uploader: str | None = None
    signature: bytes | None = None

    @property
    def signed(self) -> bool:
        return self.signature is not None


def recover_uploader(claim: UploadClaim, *, chain_id: int, market: str) -> str:
    """The address that signed `claim` (checksummed); ValueError when the signature is malformed."""
    if claim.signature is None or claim.expires is None:
        raise ValueError("the upload is not signed")
    message = upload_message(
        chain_id=chain_id, market=market, task_id=claim.task_id, sha256=claim.sha256, size=claim.size,
        expires=claim.expires,
    )  # fmt: skip
    return to_checksum_address(
        Account.recover_message(encode_defunct(text=message), signature=claim.signature)
    )


@dataclass(frozen=True)
class UploadSigner:
    """Signs this node's uploads for one task, in this process: the key never leaves it.

    ``HttpStore(url, signer=UploadSigner(...))`` sends :meth:`headers` with every put.
    """

    account: LocalAccount
    chain_id: int
    market: str
    task_id: int
    valid_for: int = 300  # seconds; a retry later than that signs again

    @classmethod
    def for_market(cls, market, task_id: int, account: LocalAccount | None = None) -> UploadSigner:
        """A signer for `task_id` on a :class:`fedmarket.chain.MarketClient`'s deployment, with its
        account (or `account`)."""
        account = account or market.account
        if account is None:
            raise ValueError("signing uploads needs an account: the market client is read-only")
        return cls(account, market.deployment.chain_id, market.market_address, task_id)

    @property
    def address(self) -> str:
        return self.account.address

    def headers(self, sha256: bytes, size: int, *, now: float | None = None) -> dict[str, str]:
        expires = int(now if now is not None else time.time()) + self.valid_for
        message = upload_message(
            chain_id=self.chain_id, market=self.market, task_id=self.task_id, sha256=sha256, size=size,
            expires=expires,
        )  # fmt: skip
        signature = self.account.sign_message(encode_defunct(text=message)).signature
        return {
            HEADERS.task: str(self.task_id),
            HEADERS.sha256: sha256.hex(),
            HEADERS.size: str(size),
            HEADERS.expires: str(expires),
            HEADERS.uploader: self.account.address,
            HEADERS.signature: "0x" + bytes(signature).hex(),
        }
