"""The task API: posting a task, uploading validation data, and reading tasks, rounds, rewards.

Every refusal is checked three ways: the exact status, the `error` name a client acts on, and
that nothing was written anywhere (no task on chain, no blob, no database row, no private file).
"""

from __future__ import annotations

import io
import json
import stat
from dataclasses import dataclass

import numpy as np
import pytest
from sqlalchemy import func, select

from backend.db import ChainEventRow, TaskRow, UsedSignatureRow
from fedmarket.auth import SIGNATURE_HEADER, sign_validation_upload
from fedmarket.chain import SignedTask
from fedmarket.cid import cid_of
from fedmarket.client import task_request_body
from fedmarket.devnet import dev_account
from fedmarket.protocol import TaskTerms
from testkit.coordinator import digits_spec, files_under, task_terms

POOR_ACCOUNT_INDEX = 40  # a dev account with ETH but no tokens
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


# ---------------------------------------------------------------------- helpers


@dataclass(frozen=True)
class Written:
    """Everything a request could have written, to compare before and after it."""

    task_count: int
    blobs: tuple
    private_files: tuple
    task_rows: tuple
    used_signatures: int
    events: int


def written(coordinator) -> Written:
    services = coordinator.services
    with services.db.session() as session:
        tasks = tuple((t.task_id, t.has_validation_data) for t in session.scalars(select(TaskRow)))
        used = session.scalar(select(func.count()).select_from(UsedSignatureRow))
        events = session.scalar(select(func.count()).select_from(ChainEventRow))
    return Written(
        task_count=coordinator.market.task_count(),
        blobs=tuple(files_under(services.store.root)),
        private_files=tuple(files_under(services.settings.private_dir)),
        task_rows=tasks,
        used_signatures=used,
        events=events,
    )


def assert_refused(response, status: int, error: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == error, body
    assert body["detail"]  # a reason a person can act on


def create_body(coordinator, spec, terms: TaskTerms, *, signer, owner=None, deadline=None) -> dict:
    """The JSON of POST /v1/tasks, signed by `signer` for `owner` (default: the signer)."""
    market = coordinator.market.with_account(signer)
    deadline = deadline if deadline is not None else market.chain_time() + 600
    signature = market.sign_task_terms(
        terms, deadline=deadline, nonce=market.nonce_of(owner or signer.address)
    )
    permit = market.sign_permit(terms.reward_pool, deadline=deadline)
    return task_request_body(spec, SignedTask(terms, owner or signer.address, deadline, signature, permit))


def npz(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def upload_headers(coordinator, task_id: int, body: bytes, *, signer, expires_in: int = 300) -> dict:
    market = coordinator.market
    return sign_validation_upload(
        signer.key, chain_id=market.deployment.chain_id, market=market.market_address, task_id=task_id,
        body=body, expiry=market.chain_time() + expires_in,
    )  # fmt: skip


# ---------------------------------------------------------------------- posting: happy path


def test_posted_task_is_on_chain_in_the_store_and_listed(coordinator_app, owner, digits):
    spec = digits_spec()
    terms = task_terms(spec, coordinator_app.address, rounds=2)
    posted = coordinator_app.api.post_task(
        spec=spec, terms=terms, owner_key=owner.key, market=coordinator_app.market
    )

    info = coordinator_app.market.task(posted["task_id"])
    assert (info.owner, info.terms, info.pool) == (owner.address, terms, terms.reward_pool)
    assert coordinator_app.services.store.get(posted["spec_cid"]) == spec.to_canonical_json()

    listed = coordinator_app.api.tasks()
    assert [t["task_id"] for t in listed] == [posted["task_id"]]
    assert coordinator_app.api.tasks(status="open") == listed
    assert coordinator_app.api.tasks(status="completed") == []
    task = coordinator_app.api.task(posted["task_id"])
    assert task["owner"] == owner.address
    assert task["coordinator"] == coordinator_app.address
    assert task["status"] == "open" and task["phase"] == "none"
    assert task["spec_cid"] == posted["spec_cid"]
    assert task["terms"]["rounds"] == 2 and int(task["terms"]["reward_pool"]) == terms.reward_pool
    assert task["has_validation_data"] is False
    assert task["trainers"] == [] and task["rounds"] == []


def test_docs_and_openapi_are_served(coordinator_app):
    assert coordinator_app.http.get("/docs").status_code == 200
    schema = coordinator_app.http.get("/openapi.json").json()
    assert {"/v1/tasks", "/v1/tasks/{task_id}/validation-data", "/v1/blobs", "/healthz"} <= set(
        schema["paths"]
    )


# ---------------------------------------------------------------------- posting: refusals


def _set_term(field: str, value):
    def mutate(body: dict) -> None:
        body["terms"][field] = value

    return mutate


MALFORMED_FIELDS = [
    (_set_term("spec_hash", "0x1234"), "terms.spec_hash"),
    (_set_term("spec_hash", "0x" + "zz" * 32), "terms.spec_hash"),
    (_set_term("reward_pool", "-5"), "terms.reward_pool"),
    (_set_term("reward_pool", "1.5"), "terms.reward_pool"),
    (_set_term("reward_pool", True), "terms.reward_pool"),
    (_set_term("min_stake", str(2**256)), "terms.min_stake"),
    (_set_term("coordinator", "0xnotanaddress"), "terms.coordinator"),
    (_set_term("slash_bps", 10_001), "terms.slash_bps"),
    (_set_term("rounds", 0), "terms.rounds"),
    (lambda b: b.update(owner="0x1234"), "owner"),
    (lambda b: b.update(signature="0x" + "ab" * 64), "signature"),
    (lambda b: b.update(signature="not hex"), "signature"),
    (lambda b: b.update(deadline=2**256), "deadline"),
    (lambda b: b["permit"].update(deadline=2**256), "permit.deadline"),
    (lambda b: b["permit"].update(value=str(2**256)), "permit.value"),
    (lambda b: b["permit"].update(r="0x00"), "permit.r"),
    (lambda b: b.update(extra="field"), "extra"),
    (lambda b: b.pop("permit"), "permit"),
]


def test_malformed_fields_are_refused_as_invalid_request(coordinator_app, owner):
    # One test for all cases: each is a schema check that runs before the chain is asked anything.
    spec = digits_spec()
    signed = create_body(coordinator_app, spec, task_terms(spec, coordinator_app.address), signer=owner)
    before = written(coordinator_app)
    for mutate, problem in MALFORMED_FIELDS:
        body = json.loads(json.dumps(signed))
        mutate(body)
        response = coordinator_app.http.post("/v1/tasks", json=body)
        assert_refused(response, 422, "InvalidRequest")
        assert problem in response.json()["detail"], (problem, response.json())
    assert written(coordinator_app) == before
    # The same body, untouched, is accepted: the refusals were the mutations' doing.
    assert coordinator_app.http.post("/v1/tasks", json=signed).status_code == 201


def test_a_body_that_is_not_json_is_refused(coordinator_app):
    before = written(coordinator_app)
    assert_refused(coordinator_app.http.post("/v1/tasks", content=b"\x00not json"), 422, "InvalidRequest")
    assert written(coordinator_app) == before


def _invalid_spec(coordinator, owner, outsider):
    spec = digits_spec()
    body = create_body(coordinator, spec, task_terms(spec, coordinator.address), signer=owner)
    body["spec"] = {
        "name": "no layers",
        "input_shape": [64],
        "num_classes": 10,
        "layers": [],
        "norm_bound": 1.0,
    }
    return body


def _layers_that_do_not_fit(coordinator, owner, outsider):
    spec = digits_spec()
    body = create_body(coordinator, spec, task_terms(spec, coordinator.address), signer=owner)
    body["spec"]["layers"][2]["in_features"] = 99  # hidden width is 16
    return body


def _spec_hash_mismatch(coordinator, owner, outsider):
    signed_for = digits_spec(name="another task")
    body = create_body(coordinator, digits_spec(), task_terms(signed_for, coordinator.address), signer=owner)
    return body


def _wrong_coordinator(coordinator, owner, outsider):
    spec = digits_spec()
    return create_body(coordinator, spec, task_terms(spec, outsider.address), signer=owner)


def _expired_deadline(coordinator, owner, outsider):
    spec = digits_spec()
    terms = task_terms(spec, coordinator.address)
    return create_body(coordinator, spec, terms, signer=owner, deadline=coordinator.market.chain_time() - 1)


def _signed_by_another_key(coordinator, owner, outsider):
    spec = digits_spec()
    return create_body(
        coordinator, spec, task_terms(spec, coordinator.address), signer=outsider, owner=owner.address
    )


def _term_altered_after_signing(coordinator, owner, outsider):
    spec = digits_spec()
    body = create_body(coordinator, spec, task_terms(spec, coordinator.address), signer=owner)
    body["terms"]["min_stake"] = "1"  # a relayer lowering the stake trainers must put up
    return body


def _owner_without_tokens(coordinator, owner, outsider):
    spec = digits_spec()
    return create_body(
        coordinator, spec, task_terms(spec, coordinator.address), signer=dev_account(POOR_ACCOUNT_INDEX)
    )


def _permit_for_less_than_the_pool(coordinator, owner, outsider):
    spec = digits_spec()
    terms = task_terms(spec, coordinator.address)
    body = create_body(coordinator, spec, terms, signer=owner)
    market = coordinator.market.with_account(owner)
    permit = market.sign_permit(terms.reward_pool - 1, deadline=body["deadline"])
    body["permit"] = {
        "value": str(permit.value), "deadline": permit.deadline, "v": permit.v,
        "r": "0x" + permit.r.hex(), "s": "0x" + permit.s.hex(),
    }  # fmt: skip
    return body


def _terms_the_market_refuses(coordinator, owner, outsider):
    spec = digits_spec()
    return create_body(
        coordinator, spec, task_terms(spec, coordinator.address, min_trainers=3, max_trainers=2), signer=owner
    )


@pytest.mark.parametrize(
    ("make_body", "status", "error"),
    [
        (_invalid_spec, 422, "InvalidSpec"),
        (_layers_that_do_not_fit, 422, "InvalidSpec"),
        (_spec_hash_mismatch, 422, "SpecHashMismatch"),
        (_wrong_coordinator, 422, "WrongCoordinator"),
        (_expired_deadline, 422, "SignatureExpired"),
        (_signed_by_another_key, 403, "TaskMarketInvalidSignature"),
        (_term_altered_after_signing, 403, "TaskMarketInvalidSignature"),
        (_owner_without_tokens, 422, "InsufficientFunds"),
        (_permit_for_less_than_the_pool, 422, "ERC20InsufficientAllowance"),
        (_terms_the_market_refuses, 422, "TaskMarketInvalidTerms"),
    ],
)
def test_a_task_the_market_would_not_accept_is_refused_and_nothing_is_written(
    coordinator_app, owner, outsider, make_body, status, error
):
    body = make_body(coordinator_app, owner, outsider)
    before = written(coordinator_app)
    assert_refused(coordinator_app.http.post("/v1/tasks", json=body), status, error)
    assert written(coordinator_app) == before
    assert before.task_count == 0 and before.blobs == ()


def test_a_signed_task_cannot_be_posted_twice(coordinator_app, owner):
    spec = digits_spec()
    body = create_body(coordinator_app, spec, task_terms(spec, coordinator_app.address), signer=owner)
    assert coordinator_app.http.post("/v1/tasks", json=body).status_code == 201
    before = written(coordinator_app)
    # The market's nonce moved on: the same signature no longer matches the owner's next task.
    assert_refused(coordinator_app.http.post("/v1/tasks", json=body), 403, "TaskMarketInvalidSignature")
    assert written(coordinator_app) == before


# ---------------------------------------------------------------------- validation data


class WritesAFileWhenUnpickled:
    """A pickle payload: unpickling it would create `path` (the server must never unpickle)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_validation_upload_is_stored_privately_and_marked_on_the_task(
    coordinator_app, post_task, owner, digits
):
    task = post_task(coordinator_app, validation=False)
    body = npz(X=digits.validation.X, y=digits.validation.y)
    headers = upload_headers(coordinator_app, task.task_id, body, signer=owner)

    response = coordinator_app.http.put(
        f"/v1/tasks/{task.task_id}/validation-data", content=body, headers=headers
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"task_id": task.task_id, "samples": len(digits.validation)}

    path = coordinator_app.services.validation.path(task.task_id)
    assert path.read_bytes() == body
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert coordinator_app.http.head(f"/v1/blobs/{cid_of(body)}").status_code == 404  # never a public blob
    assert coordinator_app.api.task(task.task_id)["has_validation_data"] is True


def _no_headers(coordinator, task_id, owner, outsider, digits, tmp_path):
    return npz(X=digits.validation.X, y=digits.validation.y), {}


def _expired(coordinator, task_id, owner, outsider, digits, tmp_path):
    body = npz(X=digits.validation.X, y=digits.validation.y)
    return body, upload_headers(coordinator, task_id, body, signer=owner, expires_in=0)


def _expiry_too_far(coordinator, task_id, owner, outsider, digits, tmp_path):
    body = npz(X=digits.validation.X, y=digits.validation.y)
    max_age = coordinator.services.settings.max_signature_age
    return body, upload_headers(coordinator, task_id, body, signer=owner, expires_in=max_age + 60)


def _signed_by_non_owner(coordinator, task_id, owner, outsider, digits, tmp_path):
    body = npz(X=digits.validation.X, y=digits.validation.y)
    return body, upload_headers(coordinator, task_id, body, signer=outsider)


def _signed_for_another_body(coordinator, task_id, owner, outsider, digits, tmp_path):
    body = npz(X=digits.validation.X, y=digits.validation.y)
    headers = upload_headers(coordinator, task_id, body, signer=owner)
    return npz(X=digits.validation.X[:10], y=digits.validation.y[:10]), headers


def _malformed_signature(coordinator, task_id, owner, outsider, digits, tmp_path):
    body = npz(X=digits.validation.X, y=digits.validation.y)
    headers = upload_headers(coordinator, task_id, body, signer=owner)
    return body, {**headers, SIGNATURE_HEADER: "0x1234"}


def _signed(body_of):
    def make(coordinator, task_id, owner, outsider, digits, tmp_path):
        body = body_of(digits, tmp_path)
        return body, upload_headers(coordinator, task_id, body, signer=owner)

    return make


@pytest.mark.parametrize(
    ("make_request", "status", "error"),
    [
        (_no_headers, 422, "InvalidRequest"),
        (_expired, 401, "SignatureExpired"),
        (_expiry_too_far, 401, "ExpiryTooFar"),
        (_malformed_signature, 401, "InvalidSignature"),
        (_signed_by_non_owner, 403, "NotTaskOwner"),
        (_signed_for_another_body, 403, "NotTaskOwner"),
        (_signed(lambda d, _: npz(X=d.validation.X[:, :32], y=d.validation.y)), 422, "InvalidValidationData"),
        (_signed(lambda d, _: npz(X=d.validation.X, y=d.validation.y[:-1])), 422, "InvalidValidationData"),
        (_signed(lambda d, _: npz(X=d.validation.X, y=d.validation.y + 1)), 422, "InvalidValidationData"),
        (_signed(lambda d, _: npz(X=d.validation.X, y=d.validation.y - 1)), 422, "InvalidValidationData"),
        # The trainers' rule: integral float labels and (n, 1) columns are fine, these are not.
        (_signed(lambda d, _: npz(X=d.validation.X, y=d.validation.y + 0.5)), 422, "InvalidValidationData"),
        (_signed(lambda d, _: npz(X=d.validation.X, y=np.stack([d.validation.y] * 2, axis=1))), 422, "InvalidValidationData"),
        (_signed(lambda d, _: npz(X=d.validation.X * np.nan, y=d.validation.y)), 422, "InvalidValidationData"),
        (_signed(lambda d, _: npz(X=d.validation.X[:0], y=d.validation.y[:0])), 422, "InvalidValidationData"),
        (_signed(lambda d, _: npz(X=d.validation.X)), 422, "InvalidValidationData"),
        (_signed(lambda d, _: b"X,y\n0.5,3\n"), 422, "InvalidValidationData"),
        (_signed(lambda d, _: b""), 422, "InvalidValidationData"),
    ],
    ids=[
        "no-headers", "expired", "expiry-too-far", "malformed-signature", "non-owner", "signed-another-body",
        "wrong-shape", "length-mismatch", "label-too-high", "label-negative", "fractional-labels", "2d-labels",
        "nan-features", "empty", "no-y", "not-npz", "empty-body",
    ],
)  # fmt: skip
def test_bad_validation_uploads_are_refused_and_nothing_is_written(
    coordinator_app, post_task, owner, outsider, digits, tmp_path, make_request, status, error
):
    task = post_task(coordinator_app, validation=False)
    body, headers = make_request(coordinator_app, task.task_id, owner, outsider, digits, tmp_path)
    before = written(coordinator_app)
    response = coordinator_app.http.put(
        f"/v1/tasks/{task.task_id}/validation-data", content=body, headers=headers
    )
    assert_refused(response, status, error)
    assert written(coordinator_app) == before
    assert before.private_files == ()


def test_a_pickled_object_array_is_refused_without_being_unpickled(
    coordinator_app, post_task, owner, digits, tmp_path
):
    task = post_task(coordinator_app, validation=False)
    marker = tmp_path / "unpickled"
    X = np.empty(len(digits.validation), dtype=object)
    X[:] = [WritesAFileWhenUnpickled(str(marker))] * len(X)
    body = npz(X=X, y=digits.validation.y)
    headers = upload_headers(coordinator_app, task.task_id, body, signer=owner)
    before = written(coordinator_app)

    response = coordinator_app.http.put(
        f"/v1/tasks/{task.task_id}/validation-data", content=body, headers=headers
    )
    assert_refused(response, 422, "InvalidValidationData")
    assert not marker.exists()
    assert written(coordinator_app) == before


def test_validation_upload_for_an_unknown_task_is_refused(coordinator_app, owner, digits):
    body = npz(X=digits.validation.X, y=digits.validation.y)
    headers = upload_headers(coordinator_app, 99, body, signer=owner)
    before = written(coordinator_app)
    assert_refused(
        coordinator_app.http.put("/v1/tasks/99/validation-data", content=body, headers=headers),
        404,
        "TaskNotFound",
    )
    assert written(coordinator_app) == before


def test_validation_upload_over_the_size_limit_is_refused(start_coordinator, post_task, owner, digits):
    coordinator = start_coordinator(max_validation_bytes=1024)
    task = post_task(coordinator, validation=False)
    body = npz(X=digits.validation.X, y=digits.validation.y)
    headers = upload_headers(coordinator, task.task_id, body, signer=owner)
    before = written(coordinator)
    response = coordinator.http.put(
        f"/v1/tasks/{task.task_id}/validation-data", content=body, headers=headers
    )
    assert_refused(response, 413, "ValidationDataTooLarge")
    assert written(coordinator) == before


def _malleated(signature_hex: str) -> str:
    """The same signature in another encoding that recovers the same signer: (r, n - s, flipped v)."""
    raw = bytes.fromhex(signature_hex.removeprefix("0x"))
    r, s, v = raw[:32], int.from_bytes(raw[32:64], "big"), raw[64]
    return "0x" + (r + (SECP256K1_N - s).to_bytes(32, "big") + bytes([55 - v])).hex()


def _v_as_recovery_id(signature_hex: str) -> str:
    """The same signature with v written as 0/1 instead of 27/28 (both recover the signer)."""
    return signature_hex[:-2] + f"{int(signature_hex[-2:], 16) - 27:02x}"


@pytest.mark.parametrize(
    "replay",
    [
        lambda headers: headers,
        lambda headers: {**headers, SIGNATURE_HEADER: _malleated(headers[SIGNATURE_HEADER])},
        lambda headers: {**headers, SIGNATURE_HEADER: _v_as_recovery_id(headers[SIGNATURE_HEADER])},
    ],
    ids=["same-signature", "high-s-twin", "v-0-or-1"],
)
def test_a_validation_signature_is_accepted_once(coordinator_app, post_task, owner, digits, replay):
    task = post_task(coordinator_app, validation=False)
    first = npz(X=digits.validation.X, y=digits.validation.y)
    first_headers = upload_headers(coordinator_app, task.task_id, first, signer=owner)
    url = f"/v1/tasks/{task.task_id}/validation-data"
    assert coordinator_app.http.put(url, content=first, headers=first_headers).status_code == 200
    assert_refused(
        coordinator_app.http.put(url, content=first, headers=replay(first_headers)), 409, "SignatureReplayed"
    )
    # The owner replaces the split; whoever saw the first upload must not be able to put it back.
    second = npz(X=digits.validation.X[:100], y=digits.validation.y[:100])
    second_headers = upload_headers(coordinator_app, task.task_id, second, signer=owner)
    assert coordinator_app.http.put(url, content=second, headers=second_headers).status_code == 200
    before = written(coordinator_app)

    assert_refused(
        coordinator_app.http.put(url, content=first, headers=replay(first_headers)), 409, "SignatureReplayed"
    )
    assert written(coordinator_app) == before
    path = coordinator_app.services.validation.path(task.task_id)
    assert path.read_bytes() == second


def test_concurrent_uploads_of_one_signature_store_it_once(coordinator_app, post_task, owner, digits):
    """Two requests racing with the same signature: one is stored, the other refused, no 500."""
    from concurrent.futures import ThreadPoolExecutor

    task = post_task(coordinator_app, validation=False)
    body = npz(X=digits.validation.X, y=digits.validation.y)
    headers = upload_headers(coordinator_app, task.task_id, body, signer=owner)
    url = f"/v1/tasks/{task.task_id}/validation-data"
    with ThreadPoolExecutor(4) as pool:
        responses = list(
            pool.map(lambda _: coordinator_app.http.put(url, content=body, headers=headers), range(4))
        )
    assert sorted(r.status_code for r in responses) == [200, 409, 409, 409]
    assert all(r.json()["error"] == "SignatureReplayed" for r in responses if r.status_code == 409)


# ---------------------------------------------------------------------- reading


def test_reading_unknown_tasks_and_rounds_is_a_404(coordinator_app, posted_task, trainers):
    http, task_id = coordinator_app.http, posted_task.task_id
    assert_refused(http.get("/v1/tasks/999"), 404, "TaskNotFound")
    assert_refused(http.get("/v1/tasks/999/rounds/1"), 404, "TaskNotFound")
    assert_refused(http.get(f"/v1/tasks/999/rewards/{trainers[0].address}"), 404, "TaskNotFound")
    assert_refused(http.get(f"/v1/tasks/{task_id}/rounds/1"), 404, "RoundNotFound")
    assert_refused(http.get("/v1/no-such-resource"), 404, "NotFound")


def test_malformed_ids_and_addresses_are_refused(coordinator_app, posted_task):
    malformed = [
        "/v1/tasks/one",
        "/v1/tasks/-1",
        "/v1/tasks/1/rounds/first",
        "/v1/tasks/1/rounds/-1",
        f"/v1/tasks/{2**64}",
        f"/v1/tasks/1/rounds/{2**16}",
        f"/v1/tasks/{2**64}/rewards/0x{'11' * 20}",
        "/v1/tasks?status=everything",
    ]
    for path in malformed:
        assert_refused(coordinator_app.http.get(path), 422, "InvalidRequest")
    for address in ("0x1234", "not-an-address", "0x" + "zz" * 20):
        response = coordinator_app.http.get(f"/v1/tasks/{posted_task.task_id}/rewards/{address}")
        assert_refused(response, 422, "InvalidAddress")
    before = written(coordinator_app)
    assert_refused(
        coordinator_app.http.put(f"/v1/tasks/{2**64}/validation-data", content=b"x"), 422, "InvalidRequest"
    )
    assert written(coordinator_app) == before


def test_rewards_before_any_round_are_zero_without_a_proof(coordinator_app, posted_task, trainers):
    rewards = coordinator_app.api.rewards(posted_task.task_id, trainers[0].address.lower())
    assert rewards["account"] == trainers[0].address  # checksummed
    assert (rewards["cumulative"], rewards["claimed"], rewards["proof"]) == ("0", "0", [])
