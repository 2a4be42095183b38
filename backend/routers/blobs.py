"""Content store over HTTP: the API `fedmarket.store.HttpStore` talks to."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from backend.deps import StoreDep
from backend.errors import ApiError
from fedmarket.cid import normalize_cid
from fedmarket.errors import BlobNotFoundError, CorruptBlobError, InvalidCIDError

router = APIRouter(prefix="/v1/blobs", tags=["blobs"])


def _cid(cid: str) -> str:
    try:
        return normalize_cid(cid)
    except InvalidCIDError as exc:
        raise ApiError(400, "InvalidCID", str(exc)) from None


@router.post("", status_code=201, summary="Store a blob (raw body); returns its CID")
async def put_blob(request: Request, store: StoreDep) -> dict:
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
    return {"cid": cid, "size": len(body)}


@router.get("/{cid}", summary="Read a blob, verified against its CID")
def get_blob(cid: str, store: StoreDep) -> Response:
    cid = _cid(cid)
    try:
        data = store.get(cid)
    except BlobNotFoundError:
        raise ApiError(404, "BlobNotFound", f"no blob {cid} in this store") from None
    except CorruptBlobError:
        raise ApiError(500, "CorruptBlob", f"blob {cid} failed verification on disk") from None
    return Response(data, media_type="application/octet-stream", headers={"Cache-Control": "public, max-age=31536000, immutable"})


@router.head("/{cid}", summary="Whether a blob exists, and its size")
def head_blob(cid: str, store: StoreDep) -> Response:
    cid = _cid(cid)
    if not store.has(cid):
        return Response(status_code=404)
    return Response(headers={"Content-Length": str(store.size(cid))}, media_type="application/octet-stream")
