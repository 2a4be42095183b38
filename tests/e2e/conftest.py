"""Fixtures for the end-to-end tests: a market of their own on the session Anvil, the coordinator
as a real subprocess (`python -m backend.app`), and a process registry that stops everything the
tests started, whatever happens."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedmarket.processes import COORDINATOR_COMMAND, ProcessGroup, wait_until_healthy
from testkit.market import REPO_ROOT, MarketEnv, market_env


@pytest.fixture(scope="module")
def e2e_market(anvil, artifacts, deployer, owner, outsider, trainers, tmp_path_factory) -> MarketEnv:
    """Like `fresh_market`, once per module: the coordinator indexes it from its first block."""
    recipients = [owner.address, outsider.address, *(t.address for t in trainers)]
    directory = tmp_path_factory.mktemp("e2e-market")
    return market_env(anvil.url, directory, artifacts=artifacts, deployer=deployer, recipients=recipients)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """Logs, data files and state dirs of this module's processes."""
    return tmp_path_factory.mktemp("e2e")


@pytest.fixture(scope="module")
def service_env(e2e_market, workdir) -> dict[str, str]:
    """What every subprocess sees: this repo on the path and the module's chain and deployment."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FEDMARKET_")}
    return {
        **clean,
        "PYTHONPATH": str(REPO_ROOT),
        "FEDMARKET_RPC_URL": e2e_market.rpc_url,
        "FEDMARKET_DEPLOYMENT_FILE": str(e2e_market.deployment_file),
    }


@pytest.fixture(scope="module")
def processes(service_env) -> Iterator[ProcessGroup]:
    registry = ProcessGroup(service_env)
    try:
        yield registry
    finally:
        registry.stop()


@pytest.fixture(scope="module")
def coordinator_url(processes, workdir) -> str:
    """A coordinator subprocess on a free port (devnet key: dev account #2, the `coordinator`)."""
    from fedmarket.devnet import free_port

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = workdir / "coordinator.log"
    settings = {
        "FEDMARKET_DATA_DIR": str(workdir / "coordinator"), "FEDMARKET_PORT": str(port), "FEDMARKET_POLL_INTERVAL": "0.1",
    }  # fmt: skip
    proc = processes.start(COORDINATOR_COMMAND, log=log, env=settings)
    wait_until_healthy(url, proc, log)
    return url
