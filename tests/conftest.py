"""Shared fixtures: one real Anvil per test session, the contracts deployed on it, and role
accounts. Each test that touches the chain runs inside an `evm_snapshot`/`evm_revert` pair, so
tests never see each other's transactions."""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass

import pytest
import torch
from eth_account.signers.local import LocalAccount
from web3 import Web3

from fedmarket.contracts import compile_contracts
from fedmarket.deploy import Deployment
from fedmarket.devnet import Anvil, dev_accounts
from fedmarket.transactions import TransactionSender
from testkit.market import MarketEnv, deploy_funded_market, market_env

TRAINER_COUNT = 10
MIN_FREE_DISK = (
    256 * 2**20
)  # the suite's temporary files (deployments, stores, databases, logs) need ~100 MiB
torch.set_num_threads(1)  # tests share two cores with Anvil and service processes
# CLI tables render at one width whatever runs the tests (a terminal, CI, an xdist worker).
os.environ["COLUMNS"] = "200"


def pytest_report_header(config) -> str:
    free = shutil.disk_usage(tempfile.gettempdir()).free
    return f"free disk under {tempfile.gettempdir()}: {free / 2**20:,.0f} MiB"


def pytest_sessionstart(session) -> None:
    """A full disk fails every test that writes a file, with errors far from the cause: say it once."""
    free = shutil.disk_usage(tempfile.gettempdir()).free
    if free < MIN_FREE_DISK:
        pytest.exit(
            f"only {free / 2**20:.0f} MiB free under {tempfile.gettempdir()}; the tests need "
            f"{MIN_FREE_DISK / 2**20:.0f} MiB (free some disk space, then run make test again)",
            returncode=3,
        )


@pytest.fixture(scope="session")
def artifacts():
    return compile_contracts()


@pytest.fixture(scope="session")
def anvil():
    with Anvil() as node:
        yield node


@pytest.fixture(scope="session")
def w3(anvil) -> Web3:
    return Web3(Web3.HTTPProvider(anvil.url, request_kwargs={"timeout": 30}))


@pytest.fixture(scope="session")
def accounts() -> list[LocalAccount]:
    return dev_accounts(16)


@pytest.fixture(scope="session")
def deployer(accounts) -> LocalAccount:
    return accounts[0]


@pytest.fixture(scope="session")
def owner(accounts) -> LocalAccount:
    return accounts[1]


@pytest.fixture(scope="session")
def coordinator(accounts) -> LocalAccount:
    return accounts[2]


@pytest.fixture(scope="session")
def outsider(accounts) -> LocalAccount:
    return accounts[3]


@pytest.fixture(scope="session")
def trainers(accounts) -> list[LocalAccount]:
    return accounts[4 : 4 + TRAINER_COUNT]


@pytest.fixture(scope="session")
def deployment(w3, artifacts, deployer, owner, outsider, trainers) -> Deployment:
    recipients = [owner.address, outsider.address, *(t.address for t in trainers)]
    return deploy_funded_market(w3, artifacts=artifacts, deployer=deployer, recipients=recipients)


@pytest.fixture
def chain(w3, deployment):
    """Isolates a test: snapshot before, revert after."""
    snapshot = w3.provider.make_request("evm_snapshot", [])["result"]
    yield w3
    w3.provider.make_request("evm_revert", [snapshot])


@dataclass
class Chain:
    """Test-side handle on the deployed market: senders per account and clock control."""

    w3: Web3
    deployment: Deployment

    def __post_init__(self) -> None:
        self.token = self.deployment.token_contract(self.w3)
        self.market = self.deployment.market_contract(self.w3)
        self.decoder = self.deployment.revert_decoder()
        self._senders: dict[str, TransactionSender] = {}

    def sender(self, account: LocalAccount) -> TransactionSender:
        if account.address not in self._senders:
            self._senders[account.address] = TransactionSender(self.w3, account, decoder=self.decoder)
        return self._senders[account.address]

    def tx(self, account: LocalAccount, fn):
        return self.sender(account).transact(fn)

    def now(self) -> int:
        return self.w3.eth.get_block("latest")["timestamp"]

    def advance(self, seconds: int) -> None:
        self.w3.provider.make_request("evm_increaseTime", [seconds])
        self.w3.provider.make_request("evm_mine", [])

    def balance(self, address: str) -> int:
        return self.token.functions.balanceOf(address).call()


@pytest.fixture
def market_chain(chain, deployment) -> Chain:
    """A fresh Chain handle (fresh nonce caches) inside an isolated snapshot."""
    return Chain(chain, deployment)


# ---------------------------------------------------------------------- services


@pytest.fixture
def fresh_market(w3, anvil, artifacts, deployer, owner, outsider, trainers, tmp_path) -> MarketEnv:
    """A new token + market on the session Anvil, for tests whose services index the chain
    (snapshots would pull blocks from under an indexer)."""
    recipients = [owner.address, outsider.address, *(t.address for t in trainers)]
    return market_env(
        anvil.url, tmp_path / "deployments", artifacts=artifacts, deployer=deployer, recipients=recipients
    )
