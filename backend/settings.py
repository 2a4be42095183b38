"""Coordinator settings, read from the environment (prefix ``FEDMARKET_``) or passed in.

The ``devnet`` profile (default) works with nothing configured: it talks to Anvil on :8545,
reads ``deployments/local.json`` and signs with Anvil's third dev account. Any other profile
refuses to start without an explicit coordinator key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from fedmarket.devnet import dev_account

MiB = 1024 * 1024
DEVNET_COORDINATOR_INDEX = 2  # Anvil dev account #2: public key material, devnet only


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FEDMARKET_", extra="ignore")

    profile: Literal["devnet", "production"] = "devnet"
    rpc_url: str = "http://127.0.0.1:8545"
    deployment_file: Path = Path("deployments/local.json")
    coordinator_key: SecretStr | None = None
    data_dir: Path = Path(".fedmarket/coordinator")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default SQLite under data_dir"
    )
    store_dir: Path | None = Field(default=None, description="blob directory; default data_dir/blobs")
    max_blob_bytes: int = 64 * MiB
    poll_interval: float = 0.5  # seconds between chain polls of the orchestrator and indexer
    run_orchestrators: bool = True  # off for an API-only replica
    # Aggregation and model codecs: one thread avoids oversubscribing a shared host
    # (two busy processes with two threads each run ~40x slower than with one).
    torch_threads: int = Field(default=1, ge=1)
    host: str = "127.0.0.1"
    port: int = 8000

    @model_validator(mode="after")
    def _require_key_outside_devnet(self) -> Settings:
        if self.coordinator_key is None:
            if self.profile != "devnet":
                raise ValueError("FEDMARKET_COORDINATOR_KEY is required outside the devnet profile")
            self.coordinator_key = SecretStr(dev_account(DEVNET_COORDINATOR_INDEX).key.hex())
        return self

    def signing_key(self) -> str:
        """The coordinator's private key (validation filled in the devnet one, or refused to start)."""
        if self.coordinator_key is None:  # unreachable after validation; keeps the type honest
            raise ValueError("FEDMARKET_COORDINATOR_KEY is not set")
        return self.coordinator_key.get_secret_value()

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'coordinator.db').resolve()}"

    @property
    def resolved_store_dir(self) -> Path:
        return self.store_dir or self.data_dir / "blobs"
