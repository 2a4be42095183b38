"""Who may upload to this coordinator's store, and how much: the checks `POST /v1/blobs` makes
before it reads a byte of the body.

An upload names a task and the blob's sha256 and size in its headers (:data:`fedmarket.uploads.HEADERS`).
It is taken when either

- it is signed (:mod:`fedmarket.uploads`) by a participant of that task while the task is open:
  its owner, its coordinator, a joined trainer or a joined validator; it is charged to that
  address (:class:`UploadGate`: bytes per hour, uploads in flight); or
- unsigned, the chain already names its hash for that task: the spec, the current global model,
  or an update revealed in it (so anyone may restore a public blob, never add one).

Everything else is refused with a 4xx and a reason, before the body is read and with nothing
stored. The body then streams to a temporary file while it is hashed (never held whole in
memory), and is kept only if it hashes to the signed sha256 and has the signed size.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy import select
from starlette.datastructures import Headers

from backend.db import SubmissionRow
from backend.errors import ApiError
from backend.settings import Settings
from fedmarket.errors import ContractRevert
from fedmarket.protocol import TaskStatus
from fedmarket.uploads import HEADERS, MAX_SIGNATURE_VALIDITY, UploadClaim, recover_uploader

if TYPE_CHECKING:
    from backend.services import Services

HOUR = 3600.0
CLOSE = {"Connection": "close"}  # a refusal before the body is read ends the connection


def refuse(status: int, error: str, detail: str, **headers: str) -> ApiError:
    return ApiError(status, error, detail, headers={**CLOSE, **headers})


def _header_int(headers: Headers, name: str, *, required: bool = True) -> int | None:
    value = headers.get(name)
    if value is None:
        if required:
            raise refuse(401, "UploadNotAuthorized", f"an upload needs the {name} header ({_HOW})")
        return None
    if not value.isdigit() or len(value) > 20:
        raise refuse(400, "InvalidUploadHeader", f"{name} must be a non-negative integer, got {value[:40]!r}")
    return int(value)


_HOW = "sign it with fedmarket.uploads.UploadSigner, e.g. HttpStore(url, signer=UploadSigner.for_market(...))"


def parse_claim(headers: Headers, *, max_blob_bytes: int) -> UploadClaim:
    """The upload's headers, checked for form only (400, 401, 413): nothing is asked of the chain."""
    task_id = _header_int(headers, HEADERS.task)
    raw_hash = (headers.get(HEADERS.sha256) or "").removeprefix("0x")
    if not raw_hash:
        raise refuse(401, "UploadNotAuthorized", f"an upload needs the {HEADERS.sha256} header ({_HOW})")
    try:
        sha256 = bytes.fromhex(raw_hash)
    except ValueError:
        sha256 = b""
    if len(sha256) != 32:
        raise refuse(400, "InvalidUploadHeader", f"{HEADERS.sha256} must be 32 bytes of hex")
    size = _header_int(headers, HEADERS.size)
    assert task_id is not None and size is not None  # required above
    if size == 0:
        raise refuse(400, "EmptyBlob", "send the blob's bytes as the request body")
    if size > max_blob_bytes:
        raise refuse(413, "BlobTooLarge", f"blob of {size} bytes is over the {max_blob_bytes}-byte limit")
    declared = headers.get("content-length")
    if declared is not None and declared != str(size):
        raise refuse(
            400, "SizeMismatch", f"Content-Length {declared[:20]} differs from {HEADERS.size} {size}"
        )
    signature_hex = headers.get(HEADERS.signature)
    if signature_hex is None:
        return UploadClaim(task_id, sha256, size)
    try:
        signature = bytes.fromhex(signature_hex.removeprefix("0x"))
    except ValueError:
        signature = b""
    if len(signature) != 65:
        raise refuse(401, "InvalidSignature", f"{HEADERS.signature} must be a 65-byte signature in hex")
    expires = _header_int(headers, HEADERS.expires)
    return UploadClaim(task_id, sha256, size, expires, headers.get(HEADERS.uploader), signature)


def authorize(services: Services, claim: UploadClaim, *, now: float | None = None) -> str | None:
    """The address the upload is charged to, None for an unsigned blob the chain names; an
    ApiError (401, 403, 404) otherwise. Asks the chain (blocking: run it in a thread)."""
    chain = services.chain
    try:
        info = chain.task(claim.task_id)
    except ContractRevert as revert:
        if revert.name == "TaskMarketUnknownTask":
            raise refuse(404, "TaskNotFound", f"no task {claim.task_id} on this market") from None
        raise
    if claim.signed:
        now = time.time() if now is None else now
        assert claim.expires is not None
        if claim.expires < now:
            raise refuse(
                401, "SignatureExpired", f"the upload signature expired at {claim.expires}; sign again"
            )
        if claim.expires > now + MAX_SIGNATURE_VALIDITY:
            raise refuse(
                401, "SignatureTooLong",
                f"an upload signature may be valid for {MAX_SIGNATURE_VALIDITY} s at most; sign a nearer expiry",
            )  # fmt: skip
        try:
            address = recover_uploader(claim, chain_id=chain.deployment.chain_id, market=chain.market_address)
        except ValueError:
            raise refuse(
                401, "InvalidSignature", "the upload signature does not recover to an address"
            ) from None
        if claim.uploader is not None and claim.uploader.lower() != address.lower():
            raise refuse(
                401, "InvalidSignature",
                f"the signature is {address}'s, not {claim.uploader[:42]}'s (signed other fields?)",
            )  # fmt: skip
        if info.status != TaskStatus.OPEN:
            raise refuse(
                403, "TaskNotOpen", f"task {claim.task_id} is {info.status.name.lower()}: no uploads"
            )
        if address in (info.owner, info.terms.coordinator):
            return address
        if chain.trainer(claim.task_id, address).joined or chain.validator(claim.task_id, address).joined:
            return address
        raise refuse(
            403, "NotAParticipant",
            f"{address} is not the owner, the coordinator, a joined trainer or a joined validator of "
            f"task {claim.task_id}: join the task first",
        )  # fmt: skip
    if claim.sha256 in (info.terms.spec_hash, info.model_hash) or _revealed(services, claim):
        return None
    raise refuse(
        401, "UploadNotAuthorized",
        f"an unsigned upload must be a blob the chain names for task {claim.task_id} (its spec, its "
        f"model, a revealed update); {_HOW}",
    )  # fmt: skip


def _revealed(services: Services, claim: UploadClaim) -> bool:
    """Whether a trainer revealed this hash in the task (the index, caught up first)."""
    services.indexer.sync()
    wanted = "0x" + claim.sha256.hex()
    with services.db.session() as session:
        found = session.scalar(
            select(SubmissionRow.trainer).where(
                SubmissionRow.task_id == claim.task_id, SubmissionRow.update_hash == wanted
            )
        )
    return found is not None


@dataclass
class Admission:
    key: str
    charge: tuple[float, int] | None  # (when, bytes) in the address's hour, refunded on failure


@dataclass
class UploadGate:
    """Bounds what uploaders can hold: uploads in flight (all, and per key: an address, or a
    blob's hash for an unsigned upload), and bytes per address in any hour. Used from the event
    loop only, so it needs no lock; its maps hold only keys with uploads in flight or bytes in the
    last hour (participants, who staked to be one)."""

    settings: Settings
    _in_flight: dict[str, int] = field(default_factory=dict)
    _spent: dict[str, deque[tuple[float, int]]] = field(default_factory=dict)

    @property
    def in_flight(self) -> int:
        return sum(self._in_flight.values())

    def spent(self, address: str, *, now: float | None = None) -> int:
        """Bytes charged to `address` in the last hour."""
        now = time.monotonic() if now is None else now
        window = self._spent.get(address.lower())
        if window is None:
            return 0
        while window and window[0][0] <= now - HOUR:
            window.popleft()
        if not window:
            del self._spent[address.lower()]
        return sum(size for _, size in window)

    def admit(self, key: str, size: int, *, charged: bool) -> Admission:
        settings = self.settings
        key = key.lower()
        if self.in_flight >= settings.max_concurrent_uploads:
            raise refuse(
                429, "UploadsBusy", f"{settings.max_concurrent_uploads} uploads are in flight; retry shortly",
                **{"Retry-After": "1"},
            )  # fmt: skip
        if self._in_flight.get(key, 0) >= settings.max_uploads_per_address:
            raise refuse(
                429, "TooManyUploads",
                f"{settings.max_uploads_per_address} uploads of {key} are in flight; finish one first",
                **{"Retry-After": "1"},
            )  # fmt: skip
        charge = None
        if charged:
            now = time.monotonic()
            quota = settings.upload_quota_bytes_per_hour
            spent = self.spent(key, now=now)
            if spent + size > quota:
                raise refuse(
                    429, "UploadQuotaExceeded",
                    f"{key} uploaded {spent} bytes in the last hour; {size} more would pass the "
                    f"{quota}-byte hourly quota",
                )  # fmt: skip
            charge = (now, size)
            self._spent.setdefault(key, deque()).append(charge)
        self._in_flight[key] = self._in_flight.get(key, 0) + 1
        return Admission(key, charge)

    def release(self, admission: Admission, *, stored: bool) -> None:
        left = self._in_flight.get(admission.key, 0) - 1
        if left > 0:
            self._in_flight[admission.key] = left
        else:
            self._in_flight.pop(admission.key, None)
        if not stored and admission.charge is not None:  # a refused upload costs no quota
            window = self._spent.get(admission.key)
            if window is not None and admission.charge in window:
                window.remove(admission.charge)
                if not window:
                    del self._spent[admission.key]
