"""Browser tests: Playwright for Python driving Debian's chromium (`make setup` installs it;
Playwright's own browser download cannot work offline), against a coordinator served over real
HTTP on a real Anvil. Every page is watched for console errors and for requests to other hosts."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from backend.app import create_app
from testkit.market import REPO_ROOT, coordinator_settings
from testkit.served import served

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Headless, and nothing in the background: this machine's network is closed, and chromium's own
# update, sync and telemetry requests would fail (and slow every start) otherwise.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
SCREENS = REPO_ROOT / "reports" / "screens"


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no chromium at {CHROMIUM}: `make setup` installs Debian's chromium package")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def coordinator_url(fresh_market, tmp_path) -> Iterator[str]:
    """A real coordinator (lifespan, indexer; no orchestrators) on the test's market, over HTTP."""
    settings = coordinator_settings(fresh_market, tmp_path / "coordinator", run_orchestrators=False)
    with served(create_app(settings)) as url:
        yield url


@dataclass
class WatchedPage:
    """A page and what it did wrong: console errors, uncaught exceptions, requests elsewhere."""

    page: Page
    home: str
    errors: list[str] = field(default_factory=list)
    foreign_requests: list[str] = field(default_factory=list)

    def screenshot(self, name: str) -> Path:
        SCREENS.mkdir(parents=True, exist_ok=True)
        path = SCREENS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=False)
        return path


@pytest.fixture
def watched(browser, coordinator_url) -> Iterator[WatchedPage]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    home = urlsplit(coordinator_url).netloc
    watch = WatchedPage(page, coordinator_url)
    page.on("console", lambda message: watch.errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: watch.errors.append(str(error)))

    def note_request(request) -> None:
        parts = urlsplit(request.url)
        if parts.scheme in ("http", "https", "ws", "wss") and parts.netloc != home:
            watch.foreign_requests.append(request.url)

    page.on("request", note_request)
    try:
        yield watch
    finally:
        context.close()
