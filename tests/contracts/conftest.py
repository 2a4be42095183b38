"""Fixtures for the TaskMarket contract tests; each test runs in the `market_chain` snapshot."""

from __future__ import annotations

import pytest
from web3 import Web3

from testkit.contracts import MarketDriver
from testkit.market import FUNDED_TOKENS


@pytest.fixture(scope="session")
def quick_w3(anvil) -> Web3:
    """The session's Anvil through a provider that asks for the chain id once: web3 asks again
    before every call and every transaction it builds, a third of all requests here."""
    return Web3(
        Web3.HTTPProvider(
            anvil.url,
            request_kwargs={"timeout": 30},
            cache_allowed_requests=True,
            cacheable_requests={"eth_chainId"},
        )
    )


@pytest.fixture
def market_chain(market_chain, quick_w3):
    """The session's `market_chain` (a fresh Chain in the test's snapshot), on `quick_w3`."""
    return type(market_chain)(quick_w3, market_chain.deployment)


@pytest.fixture
def driver(market_chain, owner, coordinator) -> MarketDriver:
    return MarketDriver(market_chain, owner, coordinator)


@pytest.fixture
def validators(market_chain, accounts, deployer, trainers):
    """Three validator accounts: the two spare session accounts (funded here, inside the test's
    snapshot) and trainers[9], which no test joins as a trainer unless it says so."""
    spare = accounts[4 + len(trainers) :]
    for account in spare:
        market_chain.tx(deployer, market_chain.token.functions.transfer(account.address, FUNDED_TOKENS))
    return [*spare, trainers[9]]


@pytest.fixture
def make_task(driver):
    """`make_task(**term_overrides) -> taskId`, posted and funded by `owner`."""

    def factory(**overrides) -> int:
        task_id, _ = driver.create_task(**overrides)
        return task_id

    return factory


@pytest.fixture
def joined_task(driver, make_task, trainers, validators):
    """A task (3 rounds, trainer quorum 2 of up to 5, validator quorum 1 of up to 4) with
    trainers[0:3] and validators[0:2] joined; returns its id."""
    task_id = make_task()
    driver.join(task_id, trainers[:3])
    driver.join_validators(task_id, validators[:2])
    return task_id
