"""Fixtures for the TaskMarket contract tests; each test runs in the `market_chain` snapshot."""

from __future__ import annotations

import pytest
from testkit.contracts import MarketDriver


@pytest.fixture
def driver(market_chain, owner, coordinator) -> MarketDriver:
    return MarketDriver(market_chain, owner, coordinator)


@pytest.fixture
def make_task(driver):
    """`make_task(**term_overrides) -> taskId`, posted and funded by `owner`."""

    def factory(**overrides) -> int:
        task_id, _ = driver.create_task(**overrides)
        return task_id

    return factory


@pytest.fixture
def joined_task(driver, make_task, trainers):
    """A task (3 rounds, quorum 2, up to 5 trainers) with trainers[0:3] joined; returns its id."""
    task_id = make_task()
    driver.join(task_id, trainers[:3])
    return task_id
