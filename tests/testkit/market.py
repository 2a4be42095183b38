"""The market a test's services run against, and the settings that point a coordinator at it."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from eth_account.signers.local import LocalAccount
from web3 import Web3

from backend.settings import Settings
from fedmarket.contracts import Artifact
from fedmarket.deploy import ONE_TOKEN, Deployment, deploy_market, fund_accounts

REPO_ROOT = Path(__file__).resolve().parents[2]
FUNDED_TOKENS = 100_000 * ONE_TOKEN  # what every role account holds on a test market


@dataclass
class MarketEnv:
    """A market deployed for one test (its own addresses), written to a deployments file."""

    deployment: Deployment
    deployment_file: Path
    rpc_url: str


def deploy_funded_market(
    w3: Web3, *, artifacts: dict[str, Artifact], deployer: LocalAccount, recipients: Sequence[str]
) -> Deployment:
    """A new FMToken + TaskMarket on `w3`, each recipient given FUNDED_TOKENS."""
    deployed = deploy_market(w3, deployer, token=artifacts["FMToken"], market=artifacts["TaskMarket"])
    fund_accounts(w3, deployed, deployer, recipients, tokens=FUNDED_TOKENS)
    return deployed


def market_env(
    rpc_url: str,
    directory: Path,
    *,
    artifacts: dict[str, Artifact],
    deployer: LocalAccount,
    recipients: Sequence[str],
) -> MarketEnv:
    """:func:`deploy_funded_market` on the node at `rpc_url`, written to `directory`/local.json."""
    deployed = deploy_funded_market(
        Web3(Web3.HTTPProvider(rpc_url)), artifacts=artifacts, deployer=deployer, recipients=recipients
    )
    path = directory / "local.json"
    deployed.write(path)
    return MarketEnv(deployed, path, rpc_url)


def coordinator_settings(env: MarketEnv, data_dir: Path, **overrides) -> Settings:
    """Devnet settings for a coordinator on `env`, keeping its data under `data_dir`."""
    return Settings(
        rpc_url=env.rpc_url,
        deployment_file=env.deployment_file,
        data_dir=data_dir,
        poll_interval=0.1,
        **overrides,
    )


def coordinator_env(env: MarketEnv, data_dir: Path, port: int) -> dict[str, str]:
    """Environment that makes `python -m backend.app` run against `env` (for subprocess tests)."""
    return {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "FEDMARKET_RPC_URL": env.rpc_url,
        "FEDMARKET_DEPLOYMENT_FILE": str(env.deployment_file),
        "FEDMARKET_DATA_DIR": str(data_dir),
        "FEDMARKET_PORT": str(port),
        "FEDMARKET_POLL_INTERVAL": "0.1",
    }
