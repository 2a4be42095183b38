"""`fedmarket-validator` in-process (typer's CliRunner) against a real market and coordinator."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from fedmarket.datasets import save_npz
from fedmarket.learning import LocalData
from trainer.validator_cli import app

ONE_TOKEN = 10**18
MIN_STAKE = 10 * ONE_TOKEN

runner = CliRunner()


@pytest.fixture
def cli(trainer_services, tmp_path):
    def invoke(command: str, *args: str, key: str | None = None):
        if command == "--version":
            return runner.invoke(app, ["--version"])
        argv = [
            command,
            *args,
            "--rpc-url",
            trainer_services.rpc_url,
            "--deployment",
            str(trainer_services.deployment_file),
        ]
        if command in ("join", "run"):
            argv += ["--coordinator", trainer_services.coordinator_url]
        if command != "claim":
            argv += ["--state-dir", str(tmp_path / "state")]
        if key is not None:
            argv += ["--key", key]
        names = ("FEDMARKET_VALIDATOR_KEY", "FEDMARKET_RPC_URL", "FEDMARKET_DEPLOYMENT_FILE",
                 "FEDMARKET_COORDINATOR_URL", "FEDMARKET_STATE_DIR")  # fmt: skip
        return runner.invoke(app, argv, env={**dict.fromkeys(names), "COLUMNS": "1000"})

    return invoke


def held_out(tmp_path, name: str, *, seed: int = 0, features: int = 8):
    rng = np.random.default_rng(seed)
    X, y = rng.random((12, features), dtype=np.float32), np.arange(12) % 3
    return save_npz(tmp_path / name, X, y), LocalData(X, y)


def test_join_stakes_and_commits_the_datas_canonical_hash(
    cli, make_task, trainer_services, trainers, tmp_path
):
    task_id = make_task()
    path, data = held_out(tmp_path, "split.npz")
    market = trainer_services.market()
    before = market.token_balance(trainers[6].address)
    result = cli("join", str(task_id), "--data", str(path), key=trainers[6].key.hex())
    assert result.exit_code == 0, result.output
    validator = market.validator(task_id, trainers[6].address)
    assert validator.joined and validator.stake == MIN_STAKE
    assert validator.data_hash == data.canonical_hash()
    assert market.token_balance(trainers[6].address) == before - MIN_STAKE


def test_a_validators_data_cannot_change_after_join(cli, make_task, trainer_services, trainers, tmp_path):
    task_id = make_task()
    first, _ = held_out(tmp_path, "first.npz", seed=1)
    other, _ = held_out(tmp_path, "other.npz", seed=2)
    assert cli("join", str(task_id), "--data", str(first), key=trainers[7].key.hex()).exit_code == 0
    balance = trainer_services.market().token_balance(trainers[7].address)
    result = cli("join", str(task_id), "--data", str(other), key=trainers[7].key.hex())
    assert result.exit_code == 1
    assert "a validator's data is fixed at join" in result.output
    assert trainer_services.market().token_balance(trainers[7].address) == balance


def test_data_that_does_not_fit_is_refused_before_staking(
    cli, make_task, trainer_services, trainers, tmp_path
):
    task_id = make_task()
    wrong, _ = held_out(tmp_path, "wrong.npz", features=5)
    result = cli("join", str(task_id), "--data", str(wrong), key=trainers[8].key.hex())
    assert result.exit_code == 1 and result.output.startswith("error: ")
    assert not trainer_services.market().validator(task_id, trainers[8].address).joined


def test_missing_key_says_how_to_give_one(cli, make_task, tmp_path):
    task_id = make_task()
    path, _ = held_out(tmp_path, "split.npz")
    result = cli("join", str(task_id), "--data", str(path))
    assert result.exit_code == 1
    assert "no validator key: pass --key 0x... or set FEDMARKET_VALIDATOR_KEY" in result.output


def test_status_and_claim_of_a_fresh_validator(cli, make_task, trainer_services, trainers, tmp_path):
    task_id = make_task()
    path, _ = held_out(tmp_path, "split.npz")
    assert cli("join", str(task_id), "--data", str(path), key=trainers[9].key.hex()).exit_code == 0
    status = cli("status", str(task_id), key=trainers[9].key.hex())
    assert status.exit_code == 0, status.output
    assert "stake 10.0000 FMT, claimable 0.0000 FMT" in status.output
    claim = cli("claim", str(task_id), key=trainers[9].key.hex())
    assert claim.exit_code == 0 and "nothing to claim" in claim.output


def test_stake_is_taken_in_fmt_exactly(cli, make_task, trainer_services, trainers, tmp_path):
    task_id = make_task()
    path, _ = held_out(tmp_path, "split.npz")
    result = cli(
        "join",
        str(task_id),
        "--data",
        str(path),
        "--stake",
        "12.000000000000000001",
        key=trainers[5].key.hex(),
    )
    assert result.exit_code == 0, result.output
    assert "staked 12.0000 FMT" in result.output  # shown rounded down, staked to the base unit
    assert trainer_services.market().validator(task_id, trainers[5].address).stake == 12 * ONE_TOKEN + 1


def test_a_stake_that_is_not_an_amount_is_refused(cli, make_task, trainers, tmp_path):
    task_id = make_task()
    path, _ = held_out(tmp_path, "split.npz")
    result = cli("join", str(task_id), "--data", str(path), "--stake", "ten", key=trainers[5].key.hex())
    assert result.exit_code == 1 and result.output.startswith("error: --stake: 'ten' is not an FMT amount")


def test_a_key_missing_a_digit_is_refused(cli, make_task, tmp_path, trainers):
    task_id = make_task()
    path, _ = held_out(tmp_path, "split.npz")
    result = cli("join", str(task_id), "--data", str(path), key=trainers[4].key.hex()[:-1])
    assert result.exit_code == 1
    assert result.output.startswith("error: the validator key has 63 hex digits, not 64")


def test_status_json_in_base_units(cli, make_task, trainers, tmp_path):
    task_id = make_task()
    path, data = held_out(tmp_path, "split.npz")
    assert cli("join", str(task_id), "--data", str(path), key=trainers[3].key.hex()).exit_code == 0
    result = cli("status", str(task_id), "--json", key=trainers[3].key.hex())
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {
        "task_id": task_id, "status": "open", "round": 0, "rounds": 2, "phase": "none", "phase_deadline": None,
        "address": trainers[3].address, "joined": True, "stake": str(MIN_STAKE), "claimable": "0",
        "data_hash": data.canonical_hash().hex(), "rounds_scored": [],
    }  # fmt: skip


def test_version(cli):
    result = cli("--version")
    assert result.exit_code == 0 and result.output.startswith("fedmarket-validator ")
