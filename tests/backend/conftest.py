"""Fixtures for the coordinator tests: a coordinator on a fresh market, tasks posted through its
API, scripted trainers and scripted validators (helpers in ``testkit/coordinator.py``).

Everything is real: the session Anvil, the compiled contracts, the coordinator's directory store
and SQLite database under the test's ``tmp_path``, the validators' scoring rule on digits.
Nothing runs in the background: tests step the orchestrator and the indexer themselves, so every
test is deterministic.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from eth_account.signers.local import LocalAccount
from fastapi.testclient import TestClient

from backend.app import create_app
from fedmarket.chain import MarketClient
from fedmarket.client import CoordinatorClient
from fedmarket.datasets import load_dataset, train_test_split
from fedmarket.devnet import dev_accounts
from fedmarket.learning import LocalData
from fedmarket.spec import TaskSpec
from fedmarket.store import HttpStore
from testkit.coordinator import (
    TEST_SERVER,
    Coordinator,
    Digits,
    PostedTask,
    ScriptedTrainer,
    ScriptedValidator,
    digits_spec,
    task_terms,
)
from testkit.market import MarketEnv, coordinator_settings, market_env

VALIDATOR_COUNT = 5
VALIDATION_PARTS = 4  # the held-out pool is cut in this many validator splits


@pytest.fixture(scope="session")
def digits() -> Digits:
    X, y = load_dataset("digits")
    X_train, X_val, y_train, y_val = train_test_split(X, y, test_fraction=0.3, seed=0)
    return Digits(LocalData(X_train, y_train), LocalData(X_val, y_val))


@pytest.fixture(scope="session")
def validators(accounts) -> list[LocalAccount]:
    """Accounts of their own for validators, after the session's roles (`accounts` holds 16)."""
    return dev_accounts(len(accounts) + VALIDATOR_COUNT)[len(accounts) :]


@pytest.fixture
def fresh_market(anvil, artifacts, deployer, owner, outsider, trainers, validators, tmp_path) -> MarketEnv:
    """The session conftest's fresh market, with the validators funded too."""
    recipients = [owner.address, outsider.address, *(a.address for a in (*trainers, *validators))]
    return market_env(
        anvil.url, tmp_path / "deployments", artifacts=artifacts, deployer=deployer, recipients=recipients
    )


@pytest.fixture
def start_coordinator(fresh_market, tmp_path) -> Iterator[Callable[..., Coordinator]]:
    """``start_coordinator(**settings_overrides)`` opens a coordinator app on the test's market,
    data in ``tmp_path/coordinator`` unless `data_dir` says otherwise; its `close()` or the
    test's teardown shuts it down."""
    with ExitStack() as every:

        def start(*, data_dir: Path | None = None, **overrides) -> Coordinator:
            overrides.setdefault("run_orchestrators", False)
            settings = coordinator_settings(fresh_market, data_dir or tmp_path / "coordinator", **overrides)
            stack = ExitStack()
            every.callback(stack.close)
            http = stack.enter_context(TestClient(create_app(settings)))
            # The SDK's clients reach the app through the test client's in-process transport.
            transport = http._transport
            api = stack.enter_context(CoordinatorClient(TEST_SERVER, transport=transport))
            store_client = stack.enter_context(HttpStore(TEST_SERVER, transport=transport, retries=0))
            market = MarketClient.connect(fresh_market.rpc_url, fresh_market.deployment)
            return Coordinator(
                fresh_market, http, http.app.state.services, market, api, store_client, stack.close
            )

        yield start


@pytest.fixture
def coordinator_app(start_coordinator) -> Coordinator:
    """A coordinator with default settings and no background workers."""
    return start_coordinator()


@pytest.fixture
def post_task(owner) -> Callable[..., PostedTask]:
    """``post_task(coordinator, spec=None, **term_overrides)``: posts a digits task through the
    coordinator's API, signed in the test by the `owner` fixture."""

    def post(coordinator: Coordinator, *, spec: TaskSpec | None = None, **terms) -> PostedTask:
        spec = spec or digits_spec()
        signed_terms = task_terms(spec, coordinator.address, **terms)
        posted = coordinator.api.post_task(
            spec=spec, terms=signed_terms, owner_key=owner.key, market=coordinator.market
        )
        return PostedTask(posted["task_id"], spec, signed_terms, posted["spec_cid"])

    return post


@pytest.fixture
def posted_task(coordinator_app, post_task) -> PostedTask:
    """A one-round digits task, quorums of 2 trainers and 2 validators, posted through the
    default coordinator's API."""
    return post_task(coordinator_app)


@pytest.fixture
def make_trainer(trainers, digits) -> Callable[..., ScriptedTrainer]:
    """``make_trainer(coordinator, index, data=None, **kwargs)``: the `index`-th funded trainer
    account as a :class:`ScriptedTrainer` storing blobs through the coordinator's API; its data
    defaults to the digits of its own classes (:meth:`Digits.skewed`)."""

    def make(
        coordinator: Coordinator, index: int, *, data: LocalData | None = None, **kwargs
    ) -> ScriptedTrainer:
        data = data if data is not None else digits.iid(index)
        return ScriptedTrainer(
            trainers[index], coordinator.market, coordinator.store_client, data, seed=index, **kwargs
        )

    return make


@pytest.fixture
def make_validator(validators, digits) -> Callable[..., ScriptedValidator]:
    """``make_validator(coordinator, index, data=None, account=None, **kwargs)``: the `index`-th
    validator account (or `account`) as a :class:`ScriptedValidator` reading blobs through the
    coordinator's API; its data defaults to its own quarter of the held-out digits (indices 0 to
    3; index 4 holds all of them)."""

    def make(
        coordinator: Coordinator,
        index: int,
        *,
        data: LocalData | None = None,
        account: LocalAccount | None = None,
        **kwargs,
    ) -> ScriptedValidator:
        if data is None:
            parts = VALIDATION_PARTS
            data = digits.validation_share(index, parts) if index < parts else digits.validation
        account = account or validators[index]
        return ScriptedValidator(account, coordinator.market, coordinator.store_client, data, **kwargs)

    return make
