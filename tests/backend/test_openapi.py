"""The coordinator's OpenAPI schema: committed and current, complete (a body for every answer,
binary where the route moves bytes, the error body on every refusal), and true to what the real
app sends: each route family's JSON parses as the model its route declares, losing nothing."""

from __future__ import annotations

import json

import pytest
from fastapi import params
from fastapi.dependencies.utils import get_flat_params
from fastapi.routing import APIRoute
from pydantic import BaseModel

from backend.app import create_app
from backend.routers import ROUTERS
from fedmarket.client import task_request_body
from fedmarket.protocol import BPS
from scripts.openapi import OPENAPI_PATH, render
from testkit.coordinator import MIN_STAKE, SLASH_BPS, digits_spec, play_round, task_terms, upload_headers

BINARY = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
ERROR_BODY = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
UPLOADS = [("post", "/v1/blobs")]
DOWNLOADS = [("get", "/v1/blobs/{cid}"), ("head", "/v1/blobs/{cid}")]


@pytest.fixture(scope="module")
def schema() -> dict:
    return create_app().openapi()  # needs no lifespan: no chain, database or store


def api_routes() -> list[tuple[str, APIRoute]]:
    """(method, route) for every route of the routers `create_app` includes (prefixes applied)."""
    return [
        (method.lower(), route)
        for router in ROUTERS
        for route in router.routes
        if isinstance(route, APIRoute)
        for method in sorted(route.methods)
    ]


def operations(schema: dict):
    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            yield method, path, operation


# ---------------------------------------------------------------------- the committed file


def test_the_committed_schema_is_what_the_app_generates():
    committed = OPENAPI_PATH.read_text() if OPENAPI_PATH.exists() else ""
    assert committed == render(), "docs/openapi.json is stale: run make openapi and commit it"


# ---------------------------------------------------------------------- completeness


def test_every_route_declares_the_body_of_its_success(schema):
    routes = api_routes()
    assert len(routes) == sum(1 for _ in operations(schema))  # every route is documented
    for method, route in routes:
        status = str(route.status_code or 200)
        content = schema["paths"][route.path][method]["responses"][status].get("content", {})
        assert len(content) == 1 and "schema" in next(iter(content.values())), (method, route.path, content)
        if (method, route.path) in DOWNLOADS:
            continue
        assert route.response_model is not None, (method, route.path)
        assert content["application/json"]["schema"] == {
            "$ref": f"#/components/schemas/{route.response_model.__name__}"
        }


@pytest.mark.parametrize(("method", "path"), UPLOADS)
def test_the_upload_routes_declare_a_required_octet_stream_body(schema, method, path):
    body = schema["paths"][path][method]["requestBody"]
    assert body["required"] is True and body["content"] == BINARY and body["description"]


@pytest.mark.parametrize(("method", "path"), DOWNLOADS)
def test_blob_reads_declare_octet_streams_not_json(schema, method, path):
    assert schema["paths"][path][method]["responses"]["200"]["content"] == BINARY


def test_the_task_phase_names_every_phase_of_the_market(schema):
    phase = schema["components"]["schemas"]["TaskPublic"]["properties"]["phase"]
    assert phase["enum"] == [
        "none", "commit", "reveal", "score_commit", "score_reveal", "settling", "finalized", "aborted",
    ]  # fmt: skip


def test_a_submission_names_every_outcome(schema):
    outcome = schema["components"]["schemas"]["SubmissionOutcome"]
    assert outcome["enum"] == ["accepted", "worthless", "unavailable", "rejected", "no_reveal"]


def test_no_operation_mentions_fastapis_validation_error(schema):
    # Our handler answers an invalid request with {"error": "InvalidRequest", "detail": ...}.
    assert "HTTPValidationError" not in json.dumps(schema)
    assert "ValidationError" not in schema["components"]["schemas"]


def test_every_refusal_declares_the_error_body(schema):
    refusals = 0
    for method, path, operation in operations(schema):
        for status, response in operation["responses"].items():
            if int(status) < 400:
                continue
            refusals += 1
            if method == "head":  # a HEAD answer has headers only
                assert "content" not in response, (method, path, status)
            elif (method, path, status) == ("get", "/healthz", "503"):  # degraded: the health body itself
                assert response["content"]["application/json"]["schema"]["$ref"].endswith("/Health")
            else:
                assert response.get("content") == ERROR_BODY, (method, path, status, response)
    assert refusals >= 20


def _can_fail_validation(route: APIRoute) -> bool:
    """Anything but a plain string in the path can be refused before the route runs."""
    if route.body_field is not None:
        return True
    return any(
        not isinstance(p.field_info, params.Path)
        or p.field_info.annotation is not str
        or p.field_info.metadata
        for p in get_flat_params(route.dependant)
    )


def test_a_route_whose_request_can_be_invalid_declares_our_422(schema):
    # The app drops FastAPI's default 422 (HTTPValidationError): each route must declare its own.
    checked = 0
    for method, route in api_routes():
        if _can_fail_validation(route):
            checked += 1
            responses = schema["paths"][route.path][method]["responses"]
            assert responses["422"]["content"] == ERROR_BODY, route.path
    assert checked >= 5


# ---------------------------------------------------------------------- the real app


def declared_model(method: str, path: str, status: int) -> type[BaseModel]:
    [route] = [r for m, r in api_routes() if (m, r.path) == (method.lower(), path)]
    if status == (route.status_code or 200):
        return route.response_model
    return route.responses[status]["model"]


def fetch(coordinator, route: str, *, path: dict | None = None, status: int = 200, **request) -> dict:
    """Sends `route` ("METHOD /template") through the real app; its JSON must parse as the model
    the route declares for `status`, and dump back unchanged: every key declared, every value kept."""
    method, template = route.split(" ")
    response = coordinator.http.request(method, template.format(**(path or {})), **request)
    assert response.status_code == status, response.text
    body = response.json()
    model = declared_model(method, template, status)
    assert model.model_validate(body).model_dump(mode="json", exclude_unset=True) == body, model.__name__
    return body


TASK = "GET /v1/tasks/{task_id}"
ROUND = "GET /v1/tasks/{task_id}/rounds/{round_no}"
EARNINGS = "GET /v1/tasks/{task_id}/earnings/{address}"


def test_task_bodies_match_their_models(coordinator_app, owner):
    market, spec = coordinator_app.market, digits_spec()
    signed = market.with_account(owner).sign_create_task(
        task_terms(spec, coordinator_app.address), deadline=market.chain_time() + 600
    )
    created = fetch(coordinator_app, "POST /v1/tasks", status=201, json=task_request_body(spec, signed))
    ids = {"task_id": created["task_id"]}

    listed = fetch(coordinator_app, "GET /v1/tasks", params={"status": "open"})
    assert [t["task_id"] for t in listed["tasks"]] == [ids["task_id"]]
    task = fetch(coordinator_app, TASK, path=ids)
    assert (task["status"], task["phase"], task["rounds"], task["validators"]) == ("open", "none", [], [])
    earnings = fetch(coordinator_app, EARNINGS, path={**ids, "address": owner.address})
    assert earnings["earned"] == earnings["claimable"] == "0"

    fetch(coordinator_app, "GET /v1/tasks", params={"status": "everything"}, status=422)
    fetch(coordinator_app, TASK, path={"task_id": 999}, status=404)
    fetch(coordinator_app, ROUND, path={**ids, "round_no": 1}, status=404)
    fetch(coordinator_app, EARNINGS, path={**ids, "address": "0x1234"}, status=422)


def test_round_and_earnings_bodies_match_their_models(
    coordinator_app, post_task, make_trainer, make_validator, w3
):
    task = post_task(coordinator_app, rounds=2)
    honest = [make_trainer(coordinator_app, i) for i in (0, 1)]
    garbage = make_trainer(coordinator_app, 2, mode="garbage")
    validators = [make_validator(coordinator_app, i) for i in (0, 1)]
    for actor in (*honest, garbage, *validators):
        actor.join(task.task_id)
    assert play_round(coordinator_app, task, [*honest, garbage], validators, w3).action == "finalized"
    ids = {"task_id": task.task_id}

    settled = fetch(coordinator_app, ROUND, path={**ids, "round_no": 1})
    assert settled["status"] == "finalized" and settled["new_model_cid"] and settled["report_cid"]
    verdict = {s["trainer"]: s for s in settled["submissions"]}[garbage.address]
    assert (verdict["outcome"], verdict["slashed"]) == ("rejected", str(MIN_STAKE * SLASH_BPS // BPS))
    assert len(settled["validators"]) == 2 and all(v["agreement"] for v in settled["validators"])
    earnings = fetch(coordinator_app, EARNINGS, path={**ids, "address": validators[0].address})
    assert int(earnings["earned_as_validator"]) > 0 and earnings["earned_as_trainer"] == "0"

    assert coordinator_app.step(task.task_id).action == "started"
    coordinator_app.sync()
    running = fetch(coordinator_app, ROUND, path={**ids, "round_no": 2})
    assert (running["status"], running["payout"], running["submissions"], running["validators"]) == (
        "started", None, [], [],
    )  # fmt: skip
    task_body = fetch(coordinator_app, TASK, path=ids)
    assert task_body["phase"] == "commit"
    assert [r["new_model_cid"] is None for r in task_body["rounds"]] == [False, True]  # null until published
    assert set(task_body["trainers"]) == {t.address for t in honest}  # the slashed one is out
    assert [v["validator"] for v in task_body["validators"]] == [v.address for v in validators]


def test_blob_bodies_match_their_models(coordinator_app, posted_task, owner):
    signed = {
        data: upload_headers(coordinator_app.market, posted_task.task_id, owner, data)
        for data in (b"model bytes", b"")
    }
    stored = fetch(
        coordinator_app, "POST /v1/blobs", status=201, content=b"model bytes", headers=signed[b"model bytes"]
    )
    assert stored["size"] == len(b"model bytes")
    fetch(coordinator_app, "POST /v1/blobs", status=400, content=b"", headers=signed[b""])
    fetch(coordinator_app, "POST /v1/blobs", status=401, content=b"unsigned")
    fetch(coordinator_app, "GET /v1/blobs/{cid}", path={"cid": "not-a-cid"}, status=400)
    got = coordinator_app.http.get(f"/v1/blobs/{stored['cid']}")
    assert got.headers["content-type"] == "application/octet-stream" and got.content == b"model bytes"


def test_health_and_info_bodies_match_their_models(coordinator_app):
    assert fetch(coordinator_app, "GET /healthz")["status"] == "ok"
    assert fetch(coordinator_app, "GET /v1/info")["coordinator"] == coordinator_app.address
