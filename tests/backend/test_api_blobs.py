"""The content store over HTTP: put, get and head, who may put (a task's participants, signed;
anyone for a blob the chain names), quotas, and every refusal, each with nothing stored."""

from __future__ import annotations

import pytest
from multiformats import CID

from fedmarket.cid import cid_of, digest_of, normalize_cid
from fedmarket.uploads import HEADERS, UploadSigner
from testkit.coordinator import files_under, upload_headers


def assert_refused(response, status: int, error: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == error, body
    assert body["detail"]


def put(coordinator, task, account, data: bytes, **signer_fields):
    """`account`'s signed upload of `data` for `task`, through the app."""
    headers = upload_headers(coordinator.market, task.task_id, account, data, **signer_fields)
    return coordinator.http.post("/v1/blobs", content=data, headers=headers)


def blobs(coordinator) -> list:
    return files_under(coordinator.services.store.root)


# ---------------------------------------------------------------------- taken


def test_a_blob_round_trips_through_put_get_and_head(coordinator_app, posted_task, owner):
    data = b"\x00global model bytes\xff" * 100
    stored = put(coordinator_app, posted_task, owner, data)
    assert stored.status_code == 201, stored.text
    assert stored.json() == {"cid": cid_of(data), "size": len(data)}

    http = coordinator_app.http
    got = http.get(f"/v1/blobs/{cid_of(data)}")
    assert got.status_code == 200 and got.content == data
    assert got.headers["content-type"] == "application/octet-stream"
    assert "immutable" in got.headers["cache-control"]
    head = http.head(f"/v1/blobs/{cid_of(data)}")
    assert head.status_code == 200 and int(head.headers["content-length"]) == len(data)
    assert coordinator_app.services.store.get(cid_of(data)) == data  # the coordinator's own store


def test_putting_the_same_blob_twice_keeps_one_copy(coordinator_app, posted_task, owner):
    before = len(blobs(coordinator_app))  # the task's spec
    for _ in range(2):
        assert put(coordinator_app, posted_task, owner, b"same bytes").status_code == 201
    assert len(blobs(coordinator_app)) == before + 1


def test_a_cid_in_another_multibase_names_the_same_blob(coordinator_app, posted_task, owner):
    data = b"spelled differently"
    put(coordinator_app, posted_task, owner, data)
    base58 = CID.decode(cid_of(data)).encode("base58btc")
    assert normalize_cid(base58) == cid_of(data)
    assert coordinator_app.http.get(f"/v1/blobs/{base58}").content == data


def test_the_sdk_store_client_signs_its_uploads_in_process(coordinator_app, posted_task, owner):
    store = coordinator_app.store_client.signed_by(
        UploadSigner.for_market(coordinator_app.market, posted_task.task_id, owner)
    )
    cid = store.put(b"through HttpStore")
    assert store.has(cid) and store.size(cid) == len(b"through HttpStore")
    assert store.get(cid) == b"through HttpStore"


def test_joined_trainers_and_validators_may_upload(
    coordinator_app, posted_task, make_trainer, make_validator
):
    trainer, validator = make_trainer(coordinator_app, 0), make_validator(coordinator_app, 0)
    trainer.join(posted_task.task_id)
    validator.join(posted_task.task_id)
    for who in (trainer, validator):
        assert (
            put(coordinator_app, posted_task, who.account, f"from {who.address}".encode()).status_code == 201
        )


def test_anyone_may_restore_a_blob_the_chain_names_but_no_other(coordinator_app, posted_task):
    """The task's spec is named on chain: once lost from the store, anyone may upload it again, unsigned."""
    spec = posted_task.spec.to_canonical_json()
    [spec_file] = blobs(coordinator_app)
    spec_file.unlink()
    headers = {
        HEADERS.task: str(posted_task.task_id),
        HEADERS.sha256: digest_of(spec).hex(),
        HEADERS.size: str(len(spec)),
    }
    restored = coordinator_app.http.post("/v1/blobs", content=spec, headers=headers)
    assert restored.status_code == 201, restored.text
    assert coordinator_app.services.store.get(posted_task.spec_cid) == spec

    other = b"not named by the chain"
    headers = {**headers, HEADERS.sha256: digest_of(other).hex(), HEADERS.size: str(len(other))}
    assert_refused(
        coordinator_app.http.post("/v1/blobs", content=other, headers=headers), 401, "UploadNotAuthorized"
    )
    assert not coordinator_app.services.store.has(cid_of(other))


def test_an_update_revealed_without_its_upload_may_be_uploaded_by_anyone(
    coordinator_app, posted_task, make_trainer, make_validator
):
    lost, honest = make_trainer(coordinator_app, 0, mode="no_upload"), make_trainer(coordinator_app, 1)
    for actor in (lost, honest, make_validator(coordinator_app, 0), make_validator(coordinator_app, 1)):
        actor.join(posted_task.task_id)
    assert coordinator_app.step(posted_task.task_id).action == "started"
    for trainer in (lost, honest):
        trainer.prepare(posted_task.task_id, posted_task.spec)
        trainer.commit(posted_task.task_id)
    for trainer in (lost, honest):
        trainer.upload()
        trainer.reveal(posted_task.task_id)
    assert not coordinator_app.services.store.has(lost.prepared.cid)
    headers = {
        HEADERS.task: str(posted_task.task_id), HEADERS.sha256: lost.update_hash.hex(), HEADERS.size: str(len(lost.update))
    }  # fmt: skip
    assert coordinator_app.http.post("/v1/blobs", content=lost.update, headers=headers).status_code == 201
    assert coordinator_app.services.store.get(lost.prepared.cid) == lost.update


# ---------------------------------------------------------------------- refused, nothing stored


def test_an_unsigned_upload_from_anyone_is_refused(coordinator_app, posted_task):
    """The audit: `POST /v1/blobs` took 64 MiB from anyone. Now a bare body is refused."""
    before = blobs(coordinator_app)
    assert_refused(
        coordinator_app.http.post("/v1/blobs", content=b"anyone's bytes"), 401, "UploadNotAuthorized"
    )
    assert blobs(coordinator_app) == before


def test_a_stranger_signing_is_refused(coordinator_app, posted_task, outsider):
    before = blobs(coordinator_app)
    assert_refused(put(coordinator_app, posted_task, outsider, b"a stranger's bytes"), 403, "NotAParticipant")
    assert blobs(coordinator_app) == before


def test_a_body_other_than_the_signed_one_is_refused(coordinator_app, posted_task, owner):
    before = blobs(coordinator_app)
    headers = upload_headers(coordinator_app.market, posted_task.task_id, owner, b"signed bytes!")
    response = coordinator_app.http.post("/v1/blobs", content=b"other bytes!!", headers=headers)  # same size
    assert_refused(response, 400, "HashMismatch")
    assert blobs(coordinator_app) == before and not coordinator_app.services.store.has(
        cid_of(b"other bytes!!")
    )

    def longer():  # chunked, no Content-Length: more bytes than signed
        yield b"signed bytes!"
        yield b" and more"

    assert_refused(
        coordinator_app.http.post("/v1/blobs", content=longer(), headers=headers), 400, "SizeMismatch"
    )
    assert blobs(coordinator_app) == before


def test_signatures_that_are_expired_too_long_forged_or_for_another_market_are_refused(
    coordinator_app, posted_task, owner, outsider
):
    before, market = blobs(coordinator_app), coordinator_app.market
    assert_refused(put(coordinator_app, posted_task, owner, b"late", valid_for=-10), 401, "SignatureExpired")
    assert_refused(
        put(coordinator_app, posted_task, owner, b"forever", valid_for=86_400), 401, "SignatureTooLong"
    )
    headers = upload_headers(market, posted_task.task_id, owner, b"claimed")
    forged = {**headers, HEADERS.uploader: outsider.address}
    response = coordinator_app.http.post("/v1/blobs", content=b"claimed", headers=forged)
    assert_refused(response, 401, "InvalidSignature")
    elsewhere = UploadSigner(owner, market.deployment.chain_id, outsider.address, posted_task.task_id)
    headers = elsewhere.headers(digest_of(b"elsewhere"), len(b"elsewhere"))
    assert_refused(
        coordinator_app.http.post("/v1/blobs", content=b"elsewhere", headers=headers), 401, "InvalidSignature"
    )
    assert blobs(coordinator_app) == before


def test_uploads_for_unknown_or_closed_tasks_are_refused(coordinator_app, posted_task, owner):
    before = blobs(coordinator_app)
    unknown = type(posted_task)(999, posted_task.spec, posted_task.terms, posted_task.spec_cid)
    assert_refused(put(coordinator_app, unknown, owner, b"for no task"), 404, "TaskNotFound")
    coordinator_app.market.with_account(owner).cancel_task(posted_task.task_id)
    assert_refused(put(coordinator_app, posted_task, owner, b"for a cancelled task"), 403, "TaskNotOpen")
    assert blobs(coordinator_app) == before


def test_an_empty_blob_is_refused(coordinator_app, posted_task, owner):
    before = blobs(coordinator_app)
    assert_refused(put(coordinator_app, posted_task, owner, b""), 400, "EmptyBlob")
    assert blobs(coordinator_app) == before


def test_a_blob_over_the_limit_is_refused_from_its_headers(start_coordinator, post_task, owner):
    coordinator = start_coordinator(max_blob_bytes=1024)
    task = post_task(coordinator)
    assert put(coordinator, task, owner, b"x" * 1024).status_code == 201  # exactly the limit is fine
    stored = blobs(coordinator)
    assert_refused(put(coordinator, task, owner, b"y" * 1025), 413, "BlobTooLarge")
    assert blobs(coordinator) == stored
    assert coordinator.http.head(f"/v1/blobs/{cid_of(b'y' * 1025)}").status_code == 404


def test_each_address_has_an_hourly_quota_and_refusals_cost_none_of_it(start_coordinator, post_task, owner):
    coordinator = start_coordinator(upload_quota_bytes_per_hour=2000)
    task = post_task(coordinator)
    headers = upload_headers(coordinator.market, task.task_id, owner, b"a" * 1500)
    wrong = coordinator.http.post("/v1/blobs", content=b"b" * 1500, headers=headers)
    assert_refused(wrong, 400, "HashMismatch")  # refused: charged nothing
    assert put(coordinator, task, owner, b"a" * 1500).status_code == 201
    stored = blobs(coordinator)
    assert_refused(put(coordinator, task, owner, b"c" * 600), 429, "UploadQuotaExceeded")
    assert blobs(coordinator) == stored
    assert coordinator.services.uploads.spent(owner.address) == 1500


# ---------------------------------------------------------------------- reads


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


def test_a_blob_damaged_on_disk_is_never_served(coordinator_app, posted_task, owner):
    data = b"a model someone will train on"
    cid = put(coordinator_app, posted_task, owner, data).json()["cid"]
    [path] = [p for p in blobs(coordinator_app) if p.name == cid]
    assert path.parent.name == digest_of(data).hex()[:2]
    path.write_bytes(b"a model someone tampered with")
    response = coordinator_app.http.get(f"/v1/blobs/{cid}")
    assert response.status_code == 500
    assert response.json()["error"] == "CorruptBlob"
    assert b"tampered" not in response.content
