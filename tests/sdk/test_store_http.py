"""HttpStore against a real HTTP server that misbehaves on demand (see conftest ``blob_server``)."""

from __future__ import annotations

import socket

import pytest

from fedmarket.cid import cid_of
from fedmarket.errors import (
    BlobNotFoundError,
    BlobTooLargeError,
    CorruptBlobError,
    StoreError,
    StoreUnavailableError,
)
from fedmarket.store import HttpStore

BLOB = b"a blob"
BLOB_CID = cid_of(BLOB)


def test_upload_lands_in_server_store(http_store, blob_server):
    cid = http_store.put(b"an update")
    assert blob_server.store.get(cid) == b"an update"


def test_get_corrupted_download_raises_corrupt_blob(http_store, blob_server):
    cid = blob_server.store.put(b"global model bytes")
    blob_server.mode = "corrupt"
    with pytest.raises(CorruptBlobError, match=cid):
        http_store.get(cid)
    assert blob_server.requests == ["GET"]  # corruption is reported, not retried


def test_upload_answered_with_other_cid_raises_corrupt_blob(http_store, blob_server):
    blob_server.mode = "wrong_cid"
    with pytest.raises(CorruptBlobError):
        http_store.put(b"my update")


@pytest.mark.parametrize(
    ("method", "argument", "answer"),
    [
        ("put", BLOB, BLOB_CID),
        ("get", BLOB_CID, BLOB),
        ("has", BLOB_CID, True),
        ("size", BLOB_CID, len(BLOB)),
    ],
)
def test_server_error_once_is_retried(http_store, blob_server, method, argument, answer):
    blob_server.store.put(BLOB)
    blob_server.mode = "fail_once"
    assert getattr(http_store, method)(argument) == answer
    assert len(blob_server.requests) == 2


def test_server_failing_every_time_raises_unavailable_after_retries(http_store, blob_server):
    blob_server.mode = "always_fail"
    with pytest.raises(StoreUnavailableError, match="HTTP 500") as caught:
        http_store.get(cid_of(b"anything"))
    assert caught.value.attempts == 3
    assert len(blob_server.requests) == 3


def test_missing_blob_is_not_retried(http_store, blob_server):
    with pytest.raises(BlobNotFoundError):
        http_store.get(cid_of(b"absent"))
    assert blob_server.requests == ["GET"]


def test_upload_over_server_limit_raises_too_large(blob_server, blob_limit):
    with HttpStore(blob_server.url, retries=2, backoff=0.01) as generous_client:
        with pytest.raises(BlobTooLargeError):
            generous_client.put(b"x" * (blob_limit + 1))
    assert blob_server.requests == ["POST"]


def test_upload_over_client_limit_is_refused_before_sending(blob_server):
    with HttpStore(blob_server.url, max_blob_bytes=10) as client:
        with pytest.raises(BlobTooLargeError):
            client.put(b"x" * 11)
    assert blob_server.requests == []


@pytest.mark.parametrize("mode", ["ok", "chunked"])
def test_download_over_client_limit_raises_too_large(blob_server, mode):
    cid = blob_server.store.put(b"x" * 5000)
    blob_server.mode = mode  # chunked: no Content-Length, the limit must hold while streaming
    with HttpStore(blob_server.url, max_blob_bytes=4096) as client:
        with pytest.raises(BlobTooLargeError):
            client.get(cid)


def test_chunked_download_is_verified(http_store, blob_server):
    data = bytes(range(256)) * 20
    cid = blob_server.store.put(data)
    blob_server.mode = "chunked"
    assert http_store.get(cid) == data


def test_unreachable_server_raises_unavailable():
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with HttpStore(f"http://127.0.0.1:{port}", retries=1, backoff=0.01, timeout=2) as client:
        with pytest.raises(StoreUnavailableError, match="ConnectError") as caught:
            client.put(b"nobody home")
    assert caught.value.attempts == 2


def test_base_url_with_trailing_slash_works(blob_server):
    with HttpStore(blob_server.url + "/") as client:
        assert client.get(client.put(b"slash")) == b"slash"


def test_non_http_url_is_refused():
    with pytest.raises(StoreError, match="http"):
        HttpStore("ftp://example.org")
