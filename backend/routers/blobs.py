"""Content store over HTTP: the API `fedmarket.store.HttpStore` talks to.

Blobs travel as raw bytes, not JSON: the routes read and write the body themselves (streamed and
size-limited), so their bodies are declared to OpenAPI here rather than inferred by FastAPI.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, Response
from starlette.concurrency import run_in_threadpool

from backend.deps import StoreDep
from backend.errors import ApiError, error_responses
from backend.schemas import BlobStored, octet_stream
from fedmarket.cid import normalize_cid
from fedmarket.errors import BlobNotFoundError, CorruptBlobError, InvalidCIDError

router = APIRouter(prefix="/v1/blobs", tags=["blobs"])

BlobCid = Annotated[str, Path(description="the blob's CID (CIDv1, raw, sha2-256), in any multibase")]

BLOB_BODY = {
    **octet_stream("The blob's bytes, at most the store's max_blob_bytes; not empty"),
    "required": True,
}
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
    "", status_code=201, response_model=BlobStored, responses=error_responses(400, 413),
    openapi_extra={"requestBody": BLOB_BODY}, summary="Store a blob (raw body); returns its CID",
)  # fmt: skip
async def put_blob(request: Request, store: StoreDep) -> BlobStored:
    limit = store.max_blob_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "BlobTooLarge", f"blob of {declared} bytes is over the {limit}-byte limit")
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > limit:
            raise ApiError(413, "BlobTooLarge", f"blob is over the {limit}-byte limit")
    if not body:
        raise ApiError(400, "EmptyBlob", "send the blob's bytes as the request body")
    cid = await run_in_threadpool(store.put, bytes(body))
    return BlobStored(cid=cid, size=len(body))


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
