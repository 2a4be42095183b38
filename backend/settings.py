"""Coordinator settings, read from the environment (prefix ``FEDMARKET_``) or passed in.

The ``devnet`` profile (default) works with nothing configured: it talks to Anvil on :8545,
reads ``deployments/local.json`` and signs with Anvil's third dev account. Any other profile
refuses to start without an explicit coordinator key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from eth_utils import is_address, to_checksum_address
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

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
    # The store takes uploads from a task's participants only (see backend/uploads.py), bounded:
    upload_quota_bytes_per_hour: int = Field(
        default=1024 * MiB, gt=0, description="bytes one address may upload in any hour"
    )
    max_concurrent_uploads: int = Field(
        default=32, ge=1, description="uploads in flight at once, all addresses"
    )
    max_uploads_per_address: int = Field(
        default=4, ge=1, description="uploads in flight at once, one address"
    )
    upload_read_timeout: float = Field(default=30.0, gt=0, description="seconds an upload may send nothing")
    upload_timeout: float = Field(default=600.0, gt=0, description="seconds one upload may take in all")
    # HTTP server (uvicorn): a connection must send its request headers within header_timeout
    # (slowloris), idle keep-alive connections close after timeout_keep_alive, and past
    # limit_concurrency open connections new requests get a 503.
    header_timeout: float = Field(default=10.0, gt=0, description="seconds to send a request's headers")
    timeout_keep_alive: int = Field(default=5, ge=1)
    limit_concurrency: int = Field(default=512, ge=1, description="open connections at most")
    # The relay: a signature's deadline must outlast the transaction's inclusion by this much.
    relay_deadline_margin: int = Field(
        default=60, ge=0, description="seconds a relayed deadline must exceed the latest block's time by"
    )
    owner_allowlist: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="owners (comma-separated addresses) whose tasks naming this coordinator it runs "
        "even when posted elsewhere; tasks posted through POST /v1/tasks always run",
    )
    poll_interval: float = 0.5  # seconds between chain polls of the orchestrator and indexer
    run_orchestrators: bool = True  # off for an API-only replica
    # Aggregation and model codecs: one thread avoids oversubscribing a shared host
    # (two busy processes with two threads each run ~40x slower than with one).
    torch_threads: int = Field(default=1, ge=1)
    host: str = "127.0.0.1"
    port: int = 8000

    @field_validator("owner_allowlist", mode="before")
    @classmethod
    def _addresses(cls, value: object) -> list[str]:
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list | tuple):
            raise ValueError("owner_allowlist is a comma-separated list of addresses")
        addresses = [str(item).strip() for item in items if str(item).strip()]
        for address in addresses:
            if not is_address(address):
                raise ValueError(f"owner_allowlist: {address!r} is not a 0x-prefixed 20-byte address")
        return [to_checksum_address(a) for a in addresses]

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
