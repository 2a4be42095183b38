"""The task API: posting a task, and reading tasks (their trainers and validators), rounds and
an account's earnings.

Every refusal is checked three ways: the exact status, the `error` name a client acts on, and
that nothing was written anywhere (no task on chain, no blob, no database row).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
from sqlalchemy import func, select

from backend.db import ChainEventRow, TaskRow
from fedmarket.chain import SignedTask
from fedmarket.client import task_request_body
from fedmarket.devnet import dev_account
from fedmarket.protocol import TaskTerms
from testkit.coordinator import (
    VALIDATOR_STAKE,
    digits_spec,
    files_under,
    play_round,
    task_terms,
)

POOR_ACCOUNT_INDEX = 40  # a dev account with ETH but no tokens


# ---------------------------------------------------------------------- helpers


@dataclass(frozen=True)
class Written:
    """Everything a request could have written, to compare before and after it."""

    task_count: int
    blobs: tuple
    data_files: tuple
    task_rows: tuple
    events: int


def written(coordinator) -> Written:
    services = coordinator.services
    with services.db.session() as session:
        tasks = tuple((t.task_id, t.status) for t in session.scalars(select(TaskRow)))
        events = session.scalar(select(func.count()).select_from(ChainEventRow))
    return Written(
        task_count=coordinator.market.task_count(),
        blobs=tuple(files_under(services.store.root)),
        data_files=tuple(p for p in files_under(services.settings.data_dir) if "blobs" not in p.parts),
        task_rows=tasks,
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
    assert (task["terms"]["min_validators"], task["terms"]["max_validators"]) == (2, 8)
    assert int(task["terms"]["min_validator_stake"]) == VALIDATOR_STAKE
    assert task["terms"]["validator_share_bps"] == terms.validator_share_bps
    assert task["trainers"] == [] and task["validators"] == [] and task["rounds"] == []


def test_docs_and_openapi_are_served(coordinator_app):
    assert coordinator_app.http.get("/docs").status_code == 200
    schema = coordinator_app.http.get("/openapi.json").json()
    assert {"/v1/tasks", "/v1/tasks/{task_id}/earnings/{address}", "/v1/blobs", "/healthz"} <= set(
        schema["paths"]
    )
    assert "/v1/tasks/{task_id}/validation-data" not in schema["paths"]  # validators bring their own data


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
    (_set_term("validator_share_bps", 10_001), "terms.validator_share_bps"),
    (_set_term("min_validators", 0), "terms.min_validators"),
    (_set_term("score_window", 2**32), "terms.score_window"),
    (_set_term("min_validator_stake", "-1"), "terms.min_validator_stake"),
    (lambda b: b["terms"].pop("max_validators"), "terms.max_validators"),
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


def _validator_terms_the_market_refuses(coordinator, owner, outsider):
    spec = digits_spec()
    terms = task_terms(spec, coordinator.address, min_validators=3, max_validators=2)
    return create_body(coordinator, spec, terms, signer=owner)


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
        (_validator_terms_the_market_refuses, 422, "TaskMarketInvalidTerms"),
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


# ---------------------------------------------------------------------- reading


def test_reading_unknown_tasks_and_rounds_is_a_404(coordinator_app, posted_task, trainers):
    http, task_id = coordinator_app.http, posted_task.task_id
    assert_refused(http.get("/v1/tasks/999"), 404, "TaskNotFound")
    assert_refused(http.get("/v1/tasks/999/rounds/1"), 404, "TaskNotFound")
    assert_refused(http.get(f"/v1/tasks/999/earnings/{trainers[0].address}"), 404, "TaskNotFound")
    assert_refused(http.get(f"/v1/tasks/{task_id}/rounds/1"), 404, "RoundNotFound")
    assert_refused(http.get("/v1/no-such-resource"), 404, "NotFound")
    assert_refused(http.put(f"/v1/tasks/{task_id}/validation-data", content=b"x"), 404, "NotFound")


def test_malformed_ids_and_addresses_are_refused(coordinator_app, posted_task):
    malformed = [
        "/v1/tasks/one",
        "/v1/tasks/-1",
        "/v1/tasks/1/rounds/first",
        "/v1/tasks/1/rounds/-1",
        f"/v1/tasks/{2**64}",
        f"/v1/tasks/1/rounds/{2**16}",
        f"/v1/tasks/{2**64}/earnings/0x{'11' * 20}",
        "/v1/tasks?status=everything",
    ]
    for path in malformed:
        assert_refused(coordinator_app.http.get(path), 422, "InvalidRequest")
    for address in ("0x1234", "not-an-address", "0x" + "zz" * 20):
        response = coordinator_app.http.get(f"/v1/tasks/{posted_task.task_id}/earnings/{address}")
        assert_refused(response, 422, "InvalidAddress")


def test_earnings_before_any_round_are_zero(coordinator_app, posted_task, trainers):
    earnings = coordinator_app.api.earnings(posted_task.task_id, trainers[0].address.lower())
    assert earnings["account"] == trainers[0].address  # checksummed
    assert {k: v for k, v in earnings.items() if k not in ("task_id", "account")} == {
        "earned": "0", "earned_as_trainer": "0", "earned_as_validator": "0", "claimed": "0", "claimable": "0",
    }  # fmt: skip


def test_the_task_lists_its_validators_as_they_join_and_leave(coordinator_app, posted_task, make_validator):
    task_id = posted_task.task_id
    joined = [make_validator(coordinator_app, i, stake=VALIDATOR_STAKE + i) for i in (0, 1)]
    for validator in joined:
        validator.join(task_id)
    coordinator_app.sync()
    listed = coordinator_app.api.task(task_id)["validators"]
    assert [(v["validator"], v["stake"], v["data_hash"]) for v in listed] == [
        (v.address, str(VALIDATOR_STAKE + i), "0x" + v.data_hash.hex()) for i, v in enumerate(joined)
    ]
    joined[0].chain.leave_validator(task_id)
    coordinator_app.sync()
    assert [v["validator"] for v in coordinator_app.api.task(task_id)["validators"]] == [joined[1].address]


def test_a_trainer_that_also_validates_earns_in_both_roles(
    coordinator_app, post_task, make_trainer, make_validator, trainers, digits, w3
):
    """One account, two roles: its score for its own update is ignored, and its earnings add up."""
    task = post_task(coordinator_app)
    both = make_trainer(coordinator_app, 0, data=digits.classes((0, 1, 2, 3, 4)))
    other = make_trainer(coordinator_app, 1, data=digits.classes((5, 6, 7, 8, 9)))
    as_validator = make_validator(coordinator_app, 0, account=trainers[0])  # the same account
    as_validator.chain = both.chain  # and the same client: one nonce sequence per account
    validators = [as_validator, make_validator(coordinator_app, 1), make_validator(coordinator_app, 2)]
    for actor in (both, other, *validators):
        actor.join(task.task_id)
    assert play_round(coordinator_app, task, [both, other], validators, w3).action == "finalized"
    round_body = coordinator_app.api.round(task.task_id, 1)
    paid_as_trainer = {s["trainer"]: s["payout"] for s in round_body["submissions"]}[both.address]
    paid_as_validator = {v["validator"]: v["payout"] for v in round_body["validators"]}[both.address]
    earnings = coordinator_app.api.earnings(task.task_id, both.address)
    assert (earnings["earned_as_trainer"], earnings["earned_as_validator"]) == (
        paid_as_trainer,
        paid_as_validator,
    )
    assert (
        int(earnings["earned"]) == int(paid_as_trainer) + int(paid_as_validator) == int(earnings["claimable"])
    )
    assert int(paid_as_trainer) > 0
