"""The content store over HTTP: put, get and head, and every refusal."""

from __future__ import annotations

import pytest
from multiformats import CID

from fedmarket.cid import cid_of, digest_of, normalize_cid
from testkit.coordinator import files_under


def assert_refused(response, status: int, error: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"] == error


def test_a_blob_round_trips_through_put_get_and_head(coordinator_app):
    http, data = coordinator_app.http, b"\x00global model bytes\xff" * 100
    put = http.post("/v1/blobs", content=data)
    assert put.status_code == 201
    assert put.json() == {"cid": cid_of(data), "size": len(data)}

    got = http.get(f"/v1/blobs/{cid_of(data)}")
    assert got.status_code == 200 and got.content == data
    assert got.headers["content-type"] == "application/octet-stream"
    assert "immutable" in got.headers["cache-control"]
    head = http.head(f"/v1/blobs/{cid_of(data)}")
    assert head.status_code == 200 and int(head.headers["content-length"]) == len(data)
    assert coordinator_app.services.store.get(cid_of(data)) == data  # the coordinator's own store


def test_putting_the_same_blob_twice_keeps_one_copy(coordinator_app):
    for _ in range(2):
        assert coordinator_app.http.post("/v1/blobs", content=b"same bytes").status_code == 201
    assert len(files_under(coordinator_app.services.store.root)) == 1


def test_a_cid_in_another_multibase_names_the_same_blob(coordinator_app):
    data = b"spelled differently"
    coordinator_app.http.post("/v1/blobs", content=data)
    base58 = CID.decode(cid_of(data)).encode("base58btc")
    assert normalize_cid(base58) == cid_of(data)
    assert coordinator_app.http.get(f"/v1/blobs/{base58}").content == data


def test_the_sdk_store_client_round_trips_through_the_api(coordinator_app):
    store = coordinator_app.store_client
    cid = store.put(b"through HttpStore")
    assert store.has(cid) and store.size(cid) == len(b"through HttpStore")
    assert store.get(cid) == b"through HttpStore"


def test_an_empty_blob_is_refused(coordinator_app):
    assert_refused(coordinator_app.http.post("/v1/blobs", content=b""), 400, "EmptyBlob")
    assert files_under(coordinator_app.services.store.root) == []


def test_a_blob_over_the_limit_is_refused_whether_or_not_its_length_is_declared(start_coordinator):
    coordinator = start_coordinator(max_blob_bytes=1024)
    http = coordinator.http
    assert http.post("/v1/blobs", content=b"x" * 1024).status_code == 201  # exactly the limit is fine
    stored = files_under(coordinator.services.store.root)

    assert_refused(
        http.post("/v1/blobs", content=b"y" * 1025), 413, "BlobTooLarge"
    )  # Content-Length declared

    def chunks():  # streamed without a length: refused while reading
        for _ in range(4):
            yield b"z" * 512

    assert_refused(http.post("/v1/blobs", content=chunks()), 413, "BlobTooLarge")
    assert files_under(coordinator.services.store.root) == stored
    assert http.head(f"/v1/blobs/{cid_of(b'y' * 1025)}").status_code == 404


@pytest.mark.parametrize(
    "cid",
    [
        "not-a-cid",
        "bafy",
        "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG",  # CIDv0
        "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi",  # dag-pb codec
        "bafkreiaaaa",  # truncated
    ],
)
def test_an_invalid_cid_is_refused_on_get_and_head(coordinator_app, cid):
    assert_refused(coordinator_app.http.get(f"/v1/blobs/{cid}"), 400, "InvalidCID")
    assert coordinator_app.http.head(f"/v1/blobs/{cid}").status_code == 400


def test_a_path_outside_the_store_is_never_served(coordinator_app):
    for path in (
        "/v1/blobs/..%2f..%2fcoordinator.db",
        "/v1/blobs/%2e%2e%2fcoordinator.db",
        "/v1/blobs/..%5Ccoordinator.db",
    ):
        response = coordinator_app.http.get(path)
        assert response.status_code in (400, 404), path
        assert b"SQLite" not in response.content


def test_an_unknown_blob_is_a_404(coordinator_app):
    cid = cid_of(b"never stored")
    assert_refused(coordinator_app.http.get(f"/v1/blobs/{cid}"), 404, "BlobNotFound")
    assert coordinator_app.http.head(f"/v1/blobs/{cid}").status_code == 404


def test_a_blob_damaged_on_disk_is_never_served(coordinator_app):
    data = b"a model someone will train on"
    cid = coordinator_app.http.post("/v1/blobs", content=data).json()["cid"]
    [path] = files_under(coordinator_app.services.store.root)
    assert path.name == cid and path.parent.name == digest_of(data).hex()[:2]
    path.write_bytes(b"a model someone tampered with")
    response = coordinator_app.http.get(f"/v1/blobs/{cid}")
    assert response.status_code == 500
    assert response.json()["error"] == "CorruptBlob"
    assert b"tampered" not in response.content
