"""Browser tests: Playwright for Python driving Debian's chromium (`make setup` installs it;
Playwright's own browser download cannot work offline), against a coordinator served over real
HTTP on a real Anvil. Every page is watched for console errors and for requests to other hosts.

`live_coordinator` is a coordinator whose indexer tails the chain in the background while the
test plays the trainers, the validators and each orchestrator step itself (testkit.coordinator),
so a page shows a real round as it runs."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from backend.app import create_app
from fedmarket.chain import MarketClient
from fedmarket.client import CoordinatorClient
from fedmarket.datasets import load_dataset, train_test_split
from fedmarket.errors import FedmarketError
from fedmarket.learning import LocalData
from fedmarket.store import HttpStore
from testkit.coordinator import Coordinator, Digits
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


INDEX_INTERVAL = 0.2  # seconds between the background indexer's polls


@dataclass
class LiveCoordinator:
    """A coordinator served over HTTP (`url`), its data under `data_dir`, and the testkit handle
    (`coordinator`: step the orchestrator, the SDK clients over HTTP) the test plays a round with."""

    url: str
    data_dir: Path
    coordinator: Coordinator


@pytest.fixture
def live_coordinator(fresh_market, tmp_path) -> Iterator[LiveCoordinator]:
    """A real coordinator over HTTP whose indexer runs in the background, as its Supervisor's
    would; no orchestrator thread: the test takes each step, so every state it checks holds."""
    data_dir = tmp_path / "coordinator"
    app = create_app(coordinator_settings(fresh_market, data_dir, run_orchestrators=False))
    with served(app) as url, httpx.Client(base_url=url) as http:
        services = app.state.services
        stop = threading.Event()

        def index() -> None:
            while not stop.is_set():
                try:
                    services.indexer.sync_once()
                except FedmarketError:  # the chain blinked: try again, as the Supervisor does
                    pass
                stop.wait(INDEX_INTERVAL)

        indexer = threading.Thread(target=index, name="test-indexer", daemon=True)
        indexer.start()
        try:
            with CoordinatorClient(url) as api, HttpStore(url) as store_client:
                market = MarketClient.connect(fresh_market.rpc_url, fresh_market.deployment)
                handle = Coordinator(fresh_market, http, services, market, api, store_client, lambda: None)
                yield LiveCoordinator(url, data_dir, handle)
        finally:
            stop.set()
            indexer.join(10)


@pytest.fixture(scope="session")
def digits() -> Digits:
    """scikit-learn's digits, 30% held out for validators (the split the backend tests use)."""
    X, y = load_dataset("digits")
    X_train, X_val, y_train, y_val = train_test_split(X, y, test_fraction=0.3, seed=0)
    return Digits(LocalData(X_train, y_train), LocalData(X_val, y_val))


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
