"""Coordinator settings: devnet works with nothing configured; production demands a key."""

import pytest
from pydantic import ValidationError

from backend.settings import Settings
from fedmarket.devnet import dev_account


def test_devnet_profile_defaults_to_the_devnet_coordinator_key(monkeypatch):
    monkeypatch.delenv("FEDMARKET_COORDINATOR_KEY", raising=False)
    settings = Settings(profile="devnet")
    assert settings.coordinator_key.get_secret_value().removeprefix("0x") == dev_account(
        2
    ).key.hex().removeprefix("0x")


def test_production_profile_without_a_key_refuses_to_start(monkeypatch):
    monkeypatch.delenv("FEDMARKET_COORDINATOR_KEY", raising=False)
    with pytest.raises(ValidationError, match="FEDMARKET_COORDINATOR_KEY is required"):
        Settings(profile="production")


def test_settings_come_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("FEDMARKET_PROFILE", "production")
    monkeypatch.setenv("FEDMARKET_COORDINATOR_KEY", "0x" + "11" * 32)
    monkeypatch.setenv("FEDMARKET_DATA_DIR", str(tmp_path))
    settings = Settings()
    assert settings.profile == "production"
    assert settings.resolved_database_url == f"sqlite:///{tmp_path.resolve() / 'coordinator.db'}"
    assert settings.resolved_store_dir == tmp_path / "blobs"
    assert "11" * 32 not in repr(settings)  # the key never shows up in logs
