"""Content store over HTTP: the API `fedmarket.store.HttpStore` talks to.

Blobs travel as raw bytes, not JSON: the routes read and write the body themselves (streamed to
disk while hashed, size-limited, with read timeouts), so their bodies are declared to OpenAPI here
rather than inferred by FastAPI. Who may upload is decided from the headers alone, before the
body is read (:mod:`backend.uploads`).
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Path, Request, Response
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from backend.deps import ServicesDep, StoreDep
from backend.errors import ApiError, error_responses
from backend.schemas import BlobStored, octet_stream
from backend.settings import Settings
from backend.uploads import CLOSE, authorize, parse_claim, refuse
from fedmarket.cid import cid_from_digest, normalize_cid
from fedmarket.errors import (
    BlobNotFoundError,
    BlobTooLargeError,
    CorruptBlobError,
    InvalidCIDError,
    StoreError,
)
from fedmarket.store import PendingBlob
from fedmarket.uploads import HEADERS

router = APIRouter(prefix="/v1/blobs", tags=["blobs"])

BlobCid = Annotated[str, Path(description="the blob's CID (CIDv1, raw, sha2-256), in any multibase")]

BLOB_BODY = {
    **octet_stream("The blob's bytes, at most the store's max_blob_bytes; not empty"),
    "required": True,
}
UPLOAD_PARAMETERS = [
    {"name": HEADERS.task, "in": "header", "required": True, "schema": {"type": "integer"},
     "description": "the task the blob belongs to"},
    {"name": HEADERS.sha256, "in": "header", "required": True, "schema": {"type": "string"},
     "description": "the blob's sha256, 64 hex digits: the body must hash to it"},
    {"name": HEADERS.size, "in": "header", "required": True, "schema": {"type": "integer"},
     "description": "the blob's size in bytes: the body must be exactly this long"},
    {"name": HEADERS.expires, "in": "header", "required": False, "schema": {"type": "integer"},
     "description": "signed uploads: unix time the signature expires (at most 600 s ahead)"},
    {"name": HEADERS.uploader, "in": "header", "required": False, "schema": {"type": "string"},
     "description": "signed uploads: the address that signed"},
    {"name": HEADERS.signature, "in": "header", "required": False, "schema": {"type": "string"},
     "description": "signed uploads: EIP-191 signature (0x-hex, 65 bytes) of fedmarket.uploads.upload_message"},
]  # fmt: skip
UPLOAD_DESCRIPTION = (
    "Takes a blob from a participant of an open task (its owner, its coordinator, a joined trainer "
    "or validator) who signs the task, the blob's sha256 and size and an expiry "
    "(`fedmarket.uploads`), or, unsigned, a blob whose hash the chain names for the task (its spec, "
    "its model, a revealed update). Decided from the headers before the body is read; the body "
    "streams to disk and is kept only if it hashes to the signed sha256. Each address may upload "
    "`upload_quota_bytes_per_hour` bytes an hour and have `max_uploads_per_address` uploads in flight."
)
CACHE_FOREVER = "public, max-age=31536000, immutable"  # a CID names these bytes and no others
BLOB_HEADERS = {
    "Cache-Control": {"description": CACHE_FOREVER, "schema": {"type": "string"}},
    "Content-Length": {"description": "the blob's size in bytes", "schema": {"type": "integer"}},
}


def _cid(cid: str) -> str:
    try:
        return normalize_cid(cid)
    except InvalidCIDError as exc:
        raise ApiError(400, "InvalidCID", str(exc)) from None


@router.post(
    "", status_code=201, response_model=BlobStored, responses=error_responses(400, 401, 403, 404, 408, 413, 429),
    openapi_extra={"requestBody": BLOB_BODY, "parameters": UPLOAD_PARAMETERS},
    summary="Store a blob (raw body) for a task's participant, signed; returns its CID",
    description=UPLOAD_DESCRIPTION,
)  # fmt: skip
async def put_blob(request: Request, response: Response, services: ServicesDep) -> BlobStored:
    store, settings = services.store, services.settings
    claim = parse_claim(request.headers, max_blob_bytes=store.max_blob_bytes)
    charged = await run_in_threadpool(authorize, services, claim)
    cid = cid_from_digest(claim.sha256)
    if store.has(cid):  # already here: nothing to read, and the unread body ends the connection
        response.headers.update(CLOSE)
        return BlobStored(cid=cid, size=store.size(cid))
    admission = services.uploads.admit(
        charged or f"sha256:{claim.sha256.hex()}", claim.size, charged=bool(charged)
    )
    stored = False
    pending = store.begin_put(sha256=claim.sha256, size=claim.size)
    try:
        await _receive_into(request, pending, settings)
        try:
            cid = await run_in_threadpool(pending.commit)
        except CorruptBlobError as exc:
            raise refuse(400, "HashMismatch", f"the body does not hash to {HEADERS.sha256}: {exc}") from None
        except StoreError as exc:
            raise refuse(400, "SizeMismatch", str(exc)) from None
        stored = True
    finally:
        pending.abort()  # a no-op after commit
        services.uploads.release(admission, stored=stored)
    return BlobStored(cid=cid, size=claim.size)


async def _receive_into(request: Request, pending: PendingBlob, settings: Settings) -> None:
    """Streams the body into `pending`, a piece at a time; 408 when the client stalls, 413 past the size."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + settings.upload_timeout
    chunks = request.stream().__aiter__()
    while True:
        wait = min(settings.upload_read_timeout, give_up - loop.time())
        try:
            if wait <= 0:
                raise TimeoutError
            chunk = await asyncio.wait_for(chunks.__anext__(), wait)
        except StopAsyncIteration:
            return
        except ClientDisconnect:  # nobody to answer; the finally of put_blob drops what came
            raise refuse(400, "ClientDisconnected", "the client closed the connection mid-upload") from None
        except TimeoutError:
            raise refuse(
                408, "UploadTimeout",
                f"the upload stalled (nothing for {settings.upload_read_timeout:g} s, or over "
                f"{settings.upload_timeout:g} s in all); nothing was stored",
            ) from None  # fmt: skip
        try:
            pending.write(chunk)
        except BlobTooLargeError as exc:
            raise refuse(413, "BlobTooLarge", str(exc)) from None
        except StoreError as exc:
            raise refuse(400, "SizeMismatch", str(exc)) from None


@router.get(
    "/{cid}", response_class=Response,
    responses={
        200: {**octet_stream("The blob's bytes, verified against its CID"), "headers": BLOB_HEADERS},
        **error_responses(400, 404, 500),
    },
    summary="Read a blob, verified against its CID",
)  # fmt: skip
def get_blob(cid: BlobCid, store: StoreDep) -> Response:
    cid = _cid(cid)
    try:
        data = store.get(cid)
    except BlobNotFoundError:
        raise ApiError(404, "BlobNotFound", f"no blob {cid} in this store") from None
    except CorruptBlobError:
        raise ApiError(500, "CorruptBlob", f"blob {cid} failed verification on disk") from None
    return Response(data, media_type="application/octet-stream", headers={"Cache-Control": CACHE_FOREVER})


@router.head(
    "/{cid}", response_class=Response,
    responses={
        200: {
            **octet_stream("The blob exists; no body (HEAD), Content-Length is its size"),
            "headers": {"Content-Length": BLOB_HEADERS["Content-Length"]},
        },
        **error_responses(400, 404, body=False),
    },
    summary="Whether a blob exists, and its size",
)  # fmt: skip
def head_blob(cid: BlobCid, store: StoreDep) -> Response:
    cid = _cid(cid)
    if not store.has(cid):
        return Response(status_code=404)
    return Response(headers={"Content-Length": str(store.size(cid))}, media_type="application/octet-stream")
