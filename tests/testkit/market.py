"""The market a test's services run against, and the settings that point a coordinator at it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from backend.settings import Settings
from fedmarket.deploy import Deployment

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class MarketEnv:
    """A market deployed for one test (its own addresses), written to a deployments file."""

    deployment: Deployment
    deployment_file: Path
    rpc_url: str


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
