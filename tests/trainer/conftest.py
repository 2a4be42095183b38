"""Fixtures for the trainer node and CLI tests.

`trainer_services` is one market of its own on the session Anvil plus a coordinator serving it,
in-process (uvicorn in a background thread), shared by a test module; `make_task` posts a task
on that market straight from the owner's account, with its spec in the coordinator's store
where the CLI reads it. Tests stay apart by using tasks of their own.
"""

from __future__ import annotations

import dataclasses
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn

from backend.app import create_app
from backend.settings import Settings
from fedmarket.chain import MarketClient
from fedmarket.client import CoordinatorClient, CoordinatorError
from fedmarket.deploy import ONE_TOKEN, Deployment
from fedmarket.protocol import TaskTerms
from fedmarket.spec import TaskSpec, mlp_spec
from fedmarket.store import HttpStore
from fedmarket.uploads import UploadSigner
from testkit.market import deploy_funded_market

SMALL_SPEC = mlp_spec(name="small", input_dim=8, num_classes=3, hidden=(6,))


@dataclass
class TrainerServices:
    """Where a trainer node finds the chain, the deployment and the coordinator."""

    deployment: Deployment
    deployment_file: Path
    rpc_url: str
    coordinator_url: str

    def options(self) -> list[str]:
        """The connection options every `fedmarket-trainer` command takes."""
        return [
            "--rpc-url", self.rpc_url, "--deployment", str(self.deployment_file),
            "--coordinator", self.coordinator_url,
        ]  # fmt: skip

    def market(self, account=None) -> MarketClient:
        client = MarketClient.connect(self.rpc_url, self.deployment)
        return client.with_account(account) if account is not None else client


@pytest.fixture(scope="module")
def trainer_services(
    w3, anvil, artifacts, deployer, owner, outsider, trainers, tmp_path_factory
) -> Iterator[TrainerServices]:
    recipients = [owner.address, outsider.address, *(t.address for t in trainers)]
    deployed = deploy_funded_market(w3, artifacts=artifacts, deployer=deployer, recipients=recipients)
    root = tmp_path_factory.mktemp("trainer-services")
    deployment_file = root / "deployments" / "local.json"
    deployed.write(deployment_file)

    settings = Settings(
        rpc_url=anvil.url, deployment_file=deployment_file, data_dir=root / "coordinator", poll_interval=0.1
    )
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(create_app(settings), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("the in-process coordinator did not start")
            time.sleep(0.02)
        yield TrainerServices(deployed, deployment_file, anvil.url, url)
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


def default_terms(spec: TaskSpec, coordinator: str) -> TaskTerms:
    return TaskTerms(
        spec_hash=spec.spec_hash(), coordinator=coordinator, rounds=2, min_trainers=2, max_trainers=3,
        slash_bps=5000, commit_window=60, reveal_window=30, reward_pool=1_000 * ONE_TOKEN, min_stake=10 * ONE_TOKEN,
        min_validators=1, max_validators=2, validator_share_bps=1_000, score_window=60, score_reveal_window=30,
        min_validator_stake=10 * ONE_TOKEN,
    )  # fmt: skip


@pytest.fixture
def make_task(trainer_services, owner, outsider) -> Callable[..., int]:
    """`make_task(spec=SMALL_SPEC, store_spec=True, **term_overrides) -> task id`: created on
    chain by `owner`, its spec in the coordinator's store (unless `store_spec=False`), and indexed
    by the coordinator when this returns.

    The terms name `outsider` as the task's coordinator, so the coordinator here indexes and
    serves the task but never runs its rounds: it stays in round 0, open for joining (and a
    module's dozens of tasks do not each get an orchestrator polling the chain)."""

    def make(*, spec: TaskSpec = SMALL_SPEC, store_spec: bool = True, **overrides) -> int:
        terms = dataclasses.replace(default_terms(spec, outsider.address), **overrides)
        market = trainer_services.market(owner)
        task_id = market.create_task(terms).task_id
        if store_spec:  # the owner of an open task may upload to the store (signed, in this process)
            signer = UploadSigner.for_market(market, task_id)
            with HttpStore(trainer_services.coordinator_url, signer=signer) as store:
                store.put(spec.to_canonical_json())
        with CoordinatorClient(trainer_services.coordinator_url) as api:
            deadline = time.monotonic() + 10
            while True:
                try:
                    api.task(task_id)
                    return task_id
                except CoordinatorError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)

    return make
