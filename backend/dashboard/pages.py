"""The dashboard's HTML routes and assets.

Each page is a small Jinja2 template (autoescaped) naming what it shows; `dashboard.js` fetches
the JSON API (`/v1/...`) and polls it every two seconds, so a page follows a running round without
a reload, and the JSON API stays the one source of every number and sentence. The pages send a
strict Content-Security-Policy: scripts, styles and requests only from this coordinator, no inline
script. An unknown task, round or account is a 404 page; the JSON API keeps its error bodies.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
from eth_utils import is_address, to_checksum_address
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from backend.db import RoundRow, TaskRow
from backend.deps import DbDep
from backend.routers.accounts import account_task_ids

HERE = Path(__file__).resolve().parent
ASSETS_PATH = "/static/dashboard"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
MAX_TASK_ID, MAX_ROUND = 2**63, 2**16  # what the database and the market can hold

templates = Jinja2Templates(
    env=jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True, undefined=jinja2.StrictUndefined
    )
)
router = APIRouter(include_in_schema=False)


def _page(request: Request, template: str, *, status_code: int = 200, **context: Any) -> HTMLResponse:
    response = templates.TemplateResponse(
        request, template, {"assets": ASSETS_PATH, **context}, status_code=status_code
    )
    response.headers["Content-Security-Policy"] = CSP
    response.headers["Cache-Control"] = "no-store"  # the data is fetched live; the shell is tiny
    return response


def _not_found(request: Request, title: str, detail: str) -> HTMLResponse:
    return _page(request, "not_found.html", status_code=404, page="not-found", title=title, detail=detail)


def _number(text: str, limit: int) -> int | None:
    return int(text) if text.isascii() and text.isdigit() and int(text) < limit else None


@router.get("/", response_class=HTMLResponse)
def market_page(request: Request) -> HTMLResponse:
    return _page(request, "market.html", page="market", title="Market")


@router.get("/tasks/{task_id}", response_class=HTMLResponse)
def task_page(request: Request, task_id: str, db: DbDep) -> HTMLResponse:
    number = _number(task_id, MAX_TASK_ID)
    if number is None:
        return _not_found(
            request, "No such task", f"{task_id!r} is not a task id: task ids are whole numbers."
        )
    with db.session() as session:
        known = session.get(TaskRow, number) is not None
    if not known:
        return _not_found(request, "No such task", f"There is no task {number} on this coordinator's market.")
    return _page(request, "task.html", page="task", title=f"Task {number}", task_id=number)


@router.get("/tasks/{task_id}/rounds/{round_no}", response_class=HTMLResponse)
def round_page(request: Request, task_id: str, round_no: str, db: DbDep) -> HTMLResponse:
    task, number = _number(task_id, MAX_TASK_ID), _number(round_no, MAX_ROUND)
    if task is None or number is None:
        return _not_found(
            request, "No such round", f"Task {task_id!r}, round {round_no!r}: both are whole numbers."
        )
    with db.session() as session:
        known_task = session.get(TaskRow, task) is not None
        known = known_task and session.get(RoundRow, (task, number)) is not None
    if not known:
        detail = f"Task {task} has no round {number} yet." if known_task else f"There is no task {task}."
        return _not_found(request, "No such round", detail)
    return _page(
        request,
        "round.html",
        page="round",
        title=f"Task {task}, round {number}",
        task_id=task,
        round_no=number,
    )


@router.get("/accounts/{address}", response_class=HTMLResponse)
def account_page(request: Request, address: str, db: DbDep) -> HTMLResponse:
    if not is_address(address):
        return _not_found(
            request, "No such account", f"{address!r} is not an address (0x and 40 hex digits)."
        )
    account = to_checksum_address(address)
    with db.session() as session:
        known = bool(account_task_ids(session, account))
    if not known:
        return _not_found(
            request, "No such account", f"{account} owns, trains and validates in no task here."
        )
    return _page(request, "account.html", page="account", title=f"Account {account}", address=account)


def install_dashboard(app: FastAPI) -> None:
    """Serves the pages and their script, styles and icon, all from this coordinator."""
    app.mount(ASSETS_PATH, StaticFiles(directory=HERE / "static"), name="dashboard-assets")
    app.include_router(router)
