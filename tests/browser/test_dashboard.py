"""The dashboard in a real browser, on a real coordinator and a real Anvil, following a real task.

The test plays the trainers, the validators and each orchestrator step (testkit.coordinator);
the coordinator's indexer runs in the background, and the pages poll the JSON API: every change
checked here reaches the page without a reload. Each page is checked for console errors and
requests to other hosts, and saved to reports/screens/.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from playwright.sync_api import expect

from backend.dashboard.evaluation import EVALUATION_DIR
from backend.dashboard.status import TaskProgress, status_text, submission_reason
from backend.db import TaskState
from backend.schemas import AccountPublic, TaskList, TaskMetrics, TaskPublic, TaskStandings
from fedmarket.cid import digest_from_cid
from fedmarket.protocol import RoundPhase
from testkit.coordinator import (
    PostedTask,
    ScriptedTrainer,
    ScriptedValidator,
    digits_spec,
    send_scores,
    task_terms,
)

PAGE_TIMEOUT_MS = 15_000  # a change reaches a page within an indexer poll and a page poll (2 s)
SERVER_ERROR = re.compile(r"^Failed to load resource: the server responded with a status of 500")


@pytest.fixture(autouse=True)
def _patient_expectations():
    expect.set_options(timeout=PAGE_TIMEOUT_MS)


@pytest.fixture
def coordinator_url(live_coordinator) -> str:
    """The `watched` page's coordinator: the live one (overrides conftest's API-only one)."""
    return live_coordinator.url


def post_task(live, owner, **terms) -> PostedTask:
    coordinator, spec = live.coordinator, digits_spec()
    signed = task_terms(spec, coordinator.address, **terms)
    posted = coordinator.api.post_task(
        spec=spec, terms=signed, owner_key=owner.key, market=coordinator.market
    )
    return PostedTask(posted["task_id"], spec, signed, posted["spec_cid"])


def assert_clean(watched) -> None:
    assert watched.errors == [], watched.errors
    assert watched.foreign_requests == [], watched.foreign_requests


def blob_file(live, cid: str):
    """Where the coordinator's DirectoryStore keeps a blob: <root>/<2 hex digits of sha256>/<cid>."""
    return live.coordinator.services.store.root / digest_from_cid(cid).hex()[:2] / cid


# ---------------------------------------------------------------------- the status sentence


def progress(**fields) -> TaskProgress:
    defaults = dict(
        status=TaskState.OPEN, phase=RoundPhase.NONE, current_round=0,
        trainers=2, min_trainers=2, validators=2, min_validators=2,
    )  # fmt: skip
    return TaskProgress(**{**defaults, **fields})


@pytest.mark.parametrize(
    ("fields", "text"),
    [
        ({"trainers": 1}, "waiting for 1 more trainer (1/2)"),
        ({"trainers": 0, "validators": 1}, "waiting for 2 more trainers (0/2) and 1 more validator (1/2)"),
        ({}, "starting round 1"),
        ({"phase": RoundPhase.COMMIT, "current_round": 3, "trainers": 3, "commits": 2},
         "round 3: trainers committing (2/3 committed)"),
        ({"phase": RoundPhase.SCORE_COMMIT, "current_round": 3, "score_commits": 1},
         "round 3: validators scoring (1/2 committed)"),
        ({"phase": RoundPhase.SETTLING, "current_round": 3, "reveals": 2, "score_reveals": 2}, "settling round 3"),
        ({"phase": RoundPhase.SETTLING, "current_round": 3, "reveals": 1}, "round 3: too few updates revealed (1/2); aborting"),
        ({"phase": RoundPhase.FINALIZED, "current_round": 3, "published": False}, "round 3: publishing the new model"),
        ({"phase": RoundPhase.ABORTED, "current_round": 3, "validators": 1},
         "round 3 aborted; waiting for 1 more validator (1/2)"),
        ({"phase": None, "current_round": 3}, "round 3: phase unknown (the chain did not answer)"),
        ({"status": TaskState.COMPLETED, "published": False}, "completed; publishing the final model"),
        ({"status": TaskState.COMPLETED}, "completed"),
        ({"status": TaskState.CANCELLED}, "cancelled"),
    ],
)  # fmt: skip
def test_the_status_sentence_says_what_the_task_waits_for(fields, text):
    assert status_text(progress(**fields)) == text


def test_a_rejection_names_who_flagged_it():
    reason = submission_reason("rejected", ["invalid", "invalid", "1234"])
    assert reason == "flagged invalid by 2 of 3: slashed and removed"
    assert submission_reason(None, []) == "waiting for the round to settle"


# ---------------------------------------------------------------------- a live task


def test_a_task_runs_live_on_every_page(watched, live_coordinator, owner, trainers, digits, w3):
    live, page = live_coordinator, watched.page
    coordinator = live.coordinator
    task = post_task(live, owner, rounds=2)
    cancelled = post_task(live, owner, rounds=1)
    coordinator.market.with_account(owner).cancel_task(cancelled.task_id)
    # The operator's held-out set: the task's chart shows accuracy and loss on it.
    evaluation = live.data_dir / EVALUATION_DIR / f"{task.task_id}.npz"
    evaluation.parent.mkdir(parents=True)
    held_out = digits.validation_share(3, 4)
    np.savez(evaluation, X=held_out.X, y=held_out.y)
    store, market = coordinator.store_client, coordinator.market
    players = [ScriptedTrainer(trainers[i], market, store, digits.iid(i), seed=i) for i in (0, 1)]
    checkers = [
        ScriptedValidator(trainers[5 + i], market, store, digits.validation_share(i, 4)) for i in (0, 1)
    ]
    task_id = task.task_id

    # ---- market: open tasks first, each saying what it waits for; joins show up without a reload
    page.goto(f"{live.url}/")
    row = page.locator(f"tr[data-task-id='{task_id}']")
    status = row.locator(".status-text")
    expect(status).to_have_text("waiting for 2 more trainers (0/2) and 2 more validators (0/2)")
    expect(page.locator("tbody tr").first).to_have_attribute("data-task-id", str(task_id))
    expect(page.locator(f"tr[data-task-id='{cancelled.task_id}'] .status-text")).to_have_text("cancelled")
    expect(row).to_contain_text("1,000 FMT")  # the reward pool, in tokens
    players[0].join(task_id)
    expect(status).to_have_text("waiting for 1 more trainer (1/2) and 2 more validators (0/2)")
    players[1].join(task_id)
    checkers[0].join(task_id)
    expect(status).to_have_text("waiting for 1 more validator (1/2)")
    checkers[1].join(task_id)
    expect(status).to_have_text("starting round 1")
    expect(row).to_contain_text("2 / 8")  # trainers and validators joined / max
    assert_clean(watched)

    # ---- task: the round's progress in words, and the chart gaining a point when it settles
    page.goto(f"{live.url}/tasks/{task_id}")
    sentence = page.locator("#status-text")
    expect(sentence).to_have_text("starting round 1")
    chart = page.locator("#chart svg.chart")
    expect(chart).to_have_attribute("data-points", "0")
    assert coordinator.step(task_id).action == "started"
    expect(sentence).to_have_text("round 1: trainers committing (0/2 committed)")
    expect(page.locator("#status .countdown")).to_contain_text(re.compile(r"ends in \d+ (s|min)"))
    expect(chart).to_have_attribute("data-points", "1")  # round 0: the initial model, measured
    for player in players:
        player.prepare(task_id, task.spec)
    players[0].commit(task_id)
    expect(sentence).to_have_text("round 1: trainers committing (1/2 committed)")
    players[1].commit(task_id)
    expect(sentence).to_have_text("round 1: trainers revealing (0/2 revealed)")
    for player in players:
        player.upload()
        player.reveal(task_id)
    expect(sentence).to_have_text("round 1: validators scoring (0/2 committed)")
    send_scores(task, checkers)
    expect(sentence).to_have_text("settling round 1")
    assert coordinator.step(task_id).action == "finalized"
    expect(sentence).to_have_text("round 1: publishing the new model")
    expect(chart).to_have_attribute("data-points", "1")
    assert coordinator.step(task_id).action == "published"
    expect(chart).to_have_attribute("data-points", "2")  # round 1's model, without a reload
    expect(sentence).to_have_text("starting round 2")
    round_row = page.locator("#rounds tr[data-round='1']")
    expect(round_row).to_contain_text("finalized")
    expect(round_row).to_contain_text(re.compile(r"\d+\.\d%"))  # its model's accuracy
    expect(round_row.locator("a", has_text="report")).to_have_attribute(
        "href", re.compile(r"^/v1/blobs/bafkrei")
    )
    for player in players:
        expect(page.locator(f"#trainers tr[data-account='{player.address}']")).to_contain_text("FMT")
    expect(page.locator("#validators tbody tr")).to_have_count(2)
    watched.screenshot("task")
    assert_clean(watched)

    # ---- round: every update, its scores and consensus; Verify hashes the blob in the browser
    page.goto(f"{live.url}/tasks/{task_id}/rounds/1")
    first, second = (page.locator(f"#updates tr[data-trainer='{p.address}']") for p in players)
    expect(first).to_contain_text("accepted")
    expect(first.locator(".reason")).to_have_text("valued by the validators' consensus: paid and aggregated")
    expect(page.locator("#txs tbody tr")).to_have_count(1 + 2 * 2 + 2 * 2 + 2)  # start ... publish
    first.get_by_role("button", name="Verify").click()
    expect(first.locator(".verdict")).to_have_attribute("data-state", "verified")
    assert_clean(watched)
    # Someone rewrites the second update in the coordinator's store.
    submissions = {s["trainer"]: s for s in coordinator.api.round(task_id, 1)["submissions"]}
    blob_file(live, submissions[players[1].address]["update_cid"]).write_bytes(b"not the revealed update")
    second.get_by_role("button", name="Verify").click()
    expect(second.locator(".verdict")).to_have_attribute("data-state", "mismatch")
    expect(first.locator(".verdict")).to_have_attribute("data-state", "verified")
    watched.screenshot("round")
    # The coordinator refuses to serve bytes that fail their hash (500 CorruptBlob): that is the only error.
    assert [e for e in watched.errors if not SERVER_ERROR.match(e)] == [] and watched.foreign_requests == []
    watched.errors.clear()
    # Bytes that reach the browser are hashed there: anything but the revealed bytes is a mismatch.
    check = "([text, hash]) => window.fedmarketDashboard.checkBytes(new TextEncoder().encode(text), hash)"
    assert page.evaluate(check, ["tampered", submissions[players[0].address]["update_hash"]]) == "mismatch"
    sha256_of_abc = "0xba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert page.evaluate(check, ["abc", sha256_of_abc]) == "verified"

    # ---- account: a trainer's tasks, earnings, claims and stake
    page.goto(f"{live.url}/accounts/{players[0].address.lower()}")
    account_row = page.locator(f"#tasks tr[data-task-id='{task_id}']")
    expect(account_row).to_contain_text("trainer")
    expect(account_row).to_contain_text("10 FMT")  # its stake
    earned = int(coordinator.api.earnings(task_id, players[0].address)["earned"])
    assert earned > 0
    expect(page.locator("#facts")).to_contain_text("Earned")
    watched.screenshot("account")
    assert_clean(watched)

    # ---- market again, with round 2 running: its row says what the round waits for
    assert coordinator.step(task_id).action == "started"
    players[0].prepare(task_id, task.spec)
    players[0].commit(task_id)
    page.goto(f"{live.url}/")
    expect(status).to_have_text("round 2: trainers committing (1/2 committed)")
    expect(row.locator(".countdown")).to_contain_text("ends in")
    watched.screenshot("market")
    assert_clean(watched)

    # The JSON behind the pages parses as the models the routes declare.
    http = coordinator.http
    TaskList.model_validate(http.get("/v1/tasks").json())
    TaskPublic.model_validate(http.get(f"/v1/tasks/{task_id}").json())
    metrics = TaskMetrics.model_validate(http.get(f"/v1/tasks/{task_id}/metrics").json())
    assert [p.round for p in metrics.points] == [0, 1, 2] and metrics.evaluation_samples == len(held_out)
    assert metrics.points[1].accuracy is not None and metrics.points[1].loss_drop is not None
    bare = TaskMetrics.model_validate(http.get(f"/v1/tasks/{cancelled.task_id}/metrics").json())
    assert (bare.evaluation_samples, bare.points) == (None, []) and "no evaluation set" in bare.evaluation
    standings = TaskStandings.model_validate(http.get(f"/v1/tasks/{task_id}/standings").json())
    assert sum(int(t.earned) for t in standings.trainers) > 0
    account = AccountPublic.model_validate(http.get(f"/v1/accounts/{owner.address}").json())
    assert {t.task_id: t.roles for t in account.tasks} == {task_id: ["owner"], cancelled.task_id: ["owner"]}
    assert account.tasks[1].refund == str(cancelled.terms.reward_pool)


# ---------------------------------------------------------------------- bad input


def test_unknown_tasks_rounds_and_accounts_get_a_404_page(watched, live_coordinator, owner, outsider):
    live, page = live_coordinator, watched.page
    task = post_task(live, owner)
    for path, says in [
        ("/tasks/999", "There is no task 999"),
        ("/tasks/abc", "not a task id"),
        (f"/tasks/{task.task_id}/rounds/1", f"Task {task.task_id} has no round 1 yet"),
        ("/tasks/999/rounds/1", "There is no task 999"),
        ("/accounts/0x1234", "is not an address"),
        (f"/accounts/{outsider.address}", "owns, trains and validates in no task"),
    ]:
        response = page.goto(f"{live.url}{path}")
        assert response is not None and response.status == 404, path
        assert "text/html" in response.headers["content-type"]
        expect(page.locator("h1")).to_contain_text("No such")
        expect(page.locator("main")).to_contain_text(says)
    expect(page.get_by_role("link", name="Back to the market")).to_have_attribute("href", "/")
    assert_clean_except_404s(watched)
    # The JSON API keeps its error bodies.
    http = live.coordinator.http
    assert http.get("/v1/tasks/999").json()["error"] == "TaskNotFound"
    assert http.get(f"/v1/accounts/{outsider.address}").json()["error"] == "AccountNotFound"
    assert http.get("/v1/accounts/0x1234").json()["error"] == "InvalidAddress"


def assert_clean_except_404s(watched) -> None:
    """A 404 page is still a 404 answer, which the console reports; nothing else may appear."""
    not_found = re.compile(r"^Failed to load resource: the server responded with a status of 404")
    assert [e for e in watched.errors if not not_found.match(e)] == []
    assert watched.foreign_requests == []
