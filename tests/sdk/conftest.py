"""Fixtures for the SDK tests: spec factories, stores, and a real coordinator-style blob server.

The blob server is a tiny FastAPI app implementing the store API (``/v1/blobs``) over a
``MemoryStore``, served by uvicorn on a free local port in a background thread, so ``HttpStore``
is tested over real HTTP. Its ``mode`` makes it misbehave the ways a real server or proxy can.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from fedmarket.cid import cid_of
from fedmarket.errors import BlobNotFoundError, InvalidCIDError
from fedmarket.spec import TaskSpec, mlp_spec
from fedmarket.store import DirectoryStore, HttpStore, MemoryStore

BLOB_LIMIT = 64 * 1024  # every test store's max_blob_bytes, server included


@pytest.fixture
def trainer_address() -> str:
    """A trainer's address, as update metadata carries it."""
    return "0x" + "a1" * 20


@pytest.fixture
def blob_limit() -> int:
    """The size limit every test store enforces."""
    return BLOB_LIMIT


# --- specs ---------------------------------------------------------------------------------------


@pytest.fixture
def make_spec() -> Callable[..., TaskSpec]:
    """Factory for a small valid MLP spec; keyword arguments override any field."""

    def make(**overrides: Any) -> TaskSpec:
        fields: dict[str, Any] = {"name": "digits", "input_dim": 8, "num_classes": 3, "hidden": (6,)}
        fields.update(overrides)
        return mlp_spec(**fields)

    return make


# --- stores --------------------------------------------------------------------------------------


@pytest.fixture
def directory_store(tmp_path) -> DirectoryStore:
    return DirectoryStore(tmp_path / "blobs")


@dataclass
class BlobServer:
    """State of the test blob server; tests set ``mode`` and read ``requests``."""

    url: str
    store: MemoryStore = field(default_factory=lambda: MemoryStore(max_blob_bytes=BLOB_LIMIT))
    mode: str = "ok"  # ok | corrupt | chunked | fail_once | always_fail | wrong_cid
    requests: list[str] = field(default_factory=list)
    failed: bool = False

    def reset(self) -> None:
        self.store = MemoryStore(max_blob_bytes=BLOB_LIMIT)
        self.mode = "ok"
        self.requests = []
        self.failed = False

    def should_fail(self) -> bool:
        if self.mode == "always_fail" or (self.mode == "fail_once" and not self.failed):
            self.failed = True
            return True
        return False


def _blob_app(server: BlobServer) -> FastAPI:
    app = FastAPI()

    def unavailable() -> Response:
        return Response(status_code=500, content=b"internal error")

    @app.post("/v1/blobs")
    async def upload(request: Request) -> Response:
        server.requests.append("POST")
        if server.should_fail():
            return unavailable()
        body = await request.body()
        if len(body) > BLOB_LIMIT:
            return JSONResponse({"detail": "blob too large"}, status_code=413)
        cid = server.store.put(body)
        if server.mode == "wrong_cid":
            cid = cid_of(body + b"!")
        return JSONResponse({"cid": cid, "size": len(body)}, status_code=201)

    @app.api_route("/v1/blobs/{cid}", methods=["GET", "HEAD"])
    async def download(cid: str, request: Request) -> Response:
        server.requests.append(request.method)
        if server.should_fail():
            return unavailable()
        try:
            data = server.store.get(cid)
        except InvalidCIDError as exc:
            return JSONResponse({"detail": str(exc)}, status_code=400)
        except BlobNotFoundError:
            return JSONResponse({"detail": "not found"}, status_code=404)
        if request.method == "HEAD":
            return Response(headers={"content-length": str(len(data))})
        if server.mode == "corrupt":
            data = bytes([data[0] ^ 0x01]) + data[1:]
        if server.mode == "chunked":  # no Content-Length: the client must count while reading
            return StreamingResponse(iter([data[i : i + 1024] for i in range(0, len(data), 1024)]))
        return Response(content=data, media_type="application/octet-stream")

    return app


@pytest.fixture(scope="session")
def _blob_server() -> Iterator[BlobServer]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    state = BlobServer(url=f"http://127.0.0.1:{sock.getsockname()[1]}")
    server = uvicorn.Server(uvicorn.Config(_blob_app(state), log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("test blob server did not start")
        time.sleep(0.01)
    yield state
    server.should_exit = True
    thread.join(timeout=5)
    sock.close()


@pytest.fixture
def blob_server(_blob_server: BlobServer) -> BlobServer:
    """The shared blob server, emptied and well-behaved at the start of each test."""
    _blob_server.reset()
    return _blob_server


@pytest.fixture
def http_store(blob_server: BlobServer) -> Iterator[HttpStore]:
    """An ``HttpStore`` on the blob server, with quick retries so failure tests stay fast."""
    with HttpStore(blob_server.url, retries=2, backoff=0.01, timeout=5, max_blob_bytes=BLOB_LIMIT) as store:
        yield store


@pytest.fixture(params=["directory", "memory", "http"])
def any_store(request, tmp_path) -> DirectoryStore | MemoryStore | HttpStore:
    """Each back end in turn, all with the same size limit, for tests of the shared contract."""
    if request.param == "directory":
        return DirectoryStore(tmp_path / "blobs", max_blob_bytes=BLOB_LIMIT)
    if request.param == "memory":
        return MemoryStore(max_blob_bytes=BLOB_LIMIT)
    return request.getfixturevalue("http_store")
