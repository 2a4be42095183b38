"""`fedmarket-trainer` in-process (typer's CliRunner) against a real market and coordinator.

Every mistake a user can make ends in one line starting with ``error:`` that says what was wrong,
exit code 1, no traceback, and nothing staked. The happy paths show what a user reads.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from eth_account import Account
from typer.testing import CliRunner

from fedmarket.datasets import save_npz
from fedmarket.devnet import dev_account, free_port
from fedmarket.spec import mlp_spec
from trainer.cli import app

ONE_TOKEN = 10**18
MIN_STAKE = 10 * ONE_TOKEN
UNFUNDED_INDEX = 40  # a devnet account with ETH for gas but no FMT

runner = CliRunner()


@pytest.fixture
def cli(trainer_services, tmp_path):
    """`cli(command, *args, key=None, options=None, env=None)` runs one command with this module's
    connection options (or `options`), a fresh state dir, and no FEDMARKET_* settings from the
    environment but those in `env`. Wide columns keep each message on one line."""

    def invoke(command: str, *args: str, key: str | None = None, options: list[str] | None = None, env=None):
        argv = [command, *args, *(trainer_services.options() if options is None else options)]
        if command == "status" and "--coordinator" in argv:  # status reads the chain only
            at = argv.index("--coordinator")
            del argv[at : at + 2]
        if command != "tasks":
            argv += ["--state-dir", str(tmp_path / "state")]
        if key is not None:
            argv += ["--key", key]
        names = ("FEDMARKET_TRAINER_KEY", "FEDMARKET_RPC_URL", "FEDMARKET_DEPLOYMENT_FILE",
                 "FEDMARKET_COORDINATOR_URL", "FEDMARKET_STATE_DIR")  # fmt: skip
        return runner.invoke(app, argv, env={**dict.fromkeys(names), "COLUMNS": "1000", **(env or {})})

    return invoke


def key_of(account) -> str:
    return account.key.hex()


def assert_user_error(result, *phrases: str) -> str:
    """Exit code 1 through the CLI's own error path: one line, `error: ...`, naming each phrase."""
    assert isinstance(result.exception, SystemExit), (
        f"crashed instead of failing cleanly: {result.exception!r}"
    )
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for phrase in phrases:
        assert phrase in lines[0]
    return lines[0]


def sample_file(tmp_path, name: str, *, n: int = 12, features: int = 8, classes: int = 3):
    X = np.random.default_rng(0).random((n, features), dtype=np.float32)
    y = np.arange(n) % classes
    return save_npz(tmp_path / name, X, y)


# ---------------------------------------------------------------------- keys and connections


def test_malformed_key_is_refused(cli, make_task):
    task_id = make_task()
    assert_user_error(cli("join", str(task_id), key="0x1234"), "the trainer key has 4 hex digits, not 64")


def test_a_key_missing_a_digit_is_refused_not_taken_for_another_account(
    cli, make_task, trainer_services, trainers
):
    task_id = make_task()
    short = "0x" + key_of(trainers[0]).removeprefix("0x")[:-1]
    padded = Account.from_key(short).address  # the account eth-account would have signed for
    assert_user_error(cli("join", str(task_id), key=short), "the trainer key has 63 hex digits, not 64")
    assert not trainer_services.market().trainer(task_id, padded).joined
    assert not trainer_services.market().trainer(task_id, trainers[0].address).joined


def test_missing_key_says_how_to_give_one(cli, make_task):
    task_id = make_task()
    assert_user_error(cli("join", str(task_id)), "no trainer key", "--key", "FEDMARKET_TRAINER_KEY")


def test_key_can_come_from_the_environment(cli, make_task, trainers):
    task_id = make_task()
    result = cli("status", str(task_id), env={"FEDMARKET_TRAINER_KEY": key_of(trainers[7])})
    assert result.exit_code == 0, result.output
    assert "(not joined)" in result.output


@pytest.mark.parametrize("command", ["tasks", "join", "status", "claim"])
def test_unreachable_chain_is_reported(cli, trainer_services, trainers, command):
    dead_rpc = f"http://127.0.0.1:{free_port()}"
    options = ["--rpc-url", dead_rpc, "--deployment", str(trainer_services.deployment_file),
               "--coordinator", trainer_services.coordinator_url]  # fmt: skip
    args = [] if command == "tasks" else ["1"]
    key = None if command == "tasks" else key_of(trainers[0])
    assert_user_error(cli(command, *args, key=key, options=options), f"cannot reach the chain at {dead_rpc}")


def test_unreachable_coordinator_is_reported(cli, trainer_services, make_task):
    make_task()
    dead_api = f"http://127.0.0.1:{free_port()}"
    options = ["--rpc-url", trainer_services.rpc_url, "--deployment", str(trainer_services.deployment_file),
               "--coordinator", dead_api]  # fmt: skip
    assert_user_error(cli("tasks", options=options), f"cannot reach the coordinator at {dead_api}")


@pytest.mark.parametrize("command", ["status", "claim"])
def test_status_and_claim_need_only_the_chain(cli, trainer_services, make_task, trainers, command):
    task_id = make_task()
    trainer_services.market(trainers[0]).join(task_id)
    dead_api = f"http://127.0.0.1:{free_port()}"
    options = ["--rpc-url", trainer_services.rpc_url, "--deployment", str(trainer_services.deployment_file),
               "--coordinator", dead_api]  # fmt: skip
    result = cli(command, str(task_id), key=key_of(trainers[0]), options=options)
    assert result.exit_code == 0, result.output


def test_missing_deployments_file_says_to_deploy(cli, trainer_services, tmp_path, trainers):
    options = ["--rpc-url", trainer_services.rpc_url, "--deployment", str(tmp_path / "nowhere.json"),
               "--coordinator", trainer_services.coordinator_url]  # fmt: skip
    assert_user_error(
        cli("join", "1", key=key_of(trainers[0]), options=options), "no deployments file", "deploy"
    )


# ---------------------------------------------------------------------- tasks that cannot be joined


def test_unknown_task_is_refused(cli, make_task, trainers):
    make_task()
    assert_user_error(cli("join", "9999", key=key_of(trainers[0])), "task 9999 does not exist")


def test_full_task_is_refused_and_nothing_is_staked(cli, make_task, trainer_services, trainers):
    task_id = make_task(min_trainers=1, max_trainers=1)
    trainer_services.market(trainers[0]).join(task_id)
    market = trainer_services.market()
    before = market.token_balance(trainers[1].address)

    assert_user_error(
        cli("join", str(task_id), key=key_of(trainers[1])), f"task {task_id} is full (1/1 trainers)"
    )
    assert market.token_balance(trainers[1].address) == before
    assert not market.trainer(task_id, trainers[1].address).joined


def test_cancelled_task_cannot_be_joined(cli, make_task, trainer_services, owner, trainers):
    task_id = make_task()
    trainer_services.market(owner).cancel_task(task_id)
    assert_user_error(cli("join", str(task_id), key=key_of(trainers[0])), f"task {task_id} is cancelled")


def test_account_without_tokens_cannot_join(cli, make_task, trainer_services):
    task_id = make_task()
    broke = dev_account(UNFUNDED_INDEX)
    assert trainer_services.market().token_balance(broke.address) == 0
    message = assert_user_error(
        cli("join", str(task_id), key=key_of(broke)), f"{broke.address} holds 0.0000 FMT"
    )
    assert "needs a stake of 10.0000 FMT" in message
    assert not trainer_services.market().trainer(task_id, broke.address).joined


def test_account_without_eth_for_gas_says_so(cli, make_task, trainer_services, trainers):
    task_id = make_task()
    fresh = Account.create()  # tokens, but never any ETH
    trainer_services.market(trainers[6]).transfer(fresh.address, 2 * MIN_STAKE)
    assert_user_error(
        cli("join", str(task_id), key=key_of(fresh)), f"account {fresh.address} has no ETH for gas"
    )
    assert not trainer_services.market().trainer(task_id, fresh.address).joined


# ---------------------------------------------------------------------- data that does not fit the task
# The task (SMALL_SPEC) expects npz arrays X of shape (n, 8) and y with labels 0..2.


def too_few_features(directory):
    return sample_file(directory, "narrow.npz", features=5)


def labels_out_of_range(directory):
    return sample_file(directory, "labels.npz", classes=7)


def csv_for_an_npz_task(directory):
    path = directory / "data.csv"
    path.write_text("f0,f1,label\n1,2,0\n")
    return path


def not_an_npz_archive(directory):
    path = directory / "junk.npz"
    path.write_bytes(b"this is not a zip archive")
    return path


def wrong_array_names(directory):
    path = directory / "arrays.npz"
    np.savez(path, features=np.zeros((4, 8)), labels=np.zeros(4))
    return path


def missing_file(directory):
    return directory / "missing.npz"


@pytest.mark.parametrize(
    ("make_file", "phrases"),
    [
        pytest.param(
            too_few_features, ["task expects samples of shape (8,)", "has (5,)"], id="too-few-features"
        ),
        pytest.param(
            labels_out_of_range, ["outside [0, 3)", "the task has 3 classes"], id="labels-out-of-range"
        ),
        pytest.param(
            csv_for_an_npz_task, ["looks like a csv file", "the task expects npz data"], id="csv-for-npz"
        ),
        pytest.param(not_an_npz_archive, ["is not a readable npz archive"], id="not-an-npz-archive"),
        pytest.param(wrong_array_names, ["features 'X' and labels 'y'"], id="wrong-array-names"),
        pytest.param(missing_file, ["no data file at"], id="missing-file"),
    ],
)
def test_run_refuses_data_that_does_not_fit_before_staking(
    cli, make_task, trainer_services, trainers, tmp_path, make_file, phrases
):
    task_id = make_task()
    path = make_file(tmp_path)
    market = trainer_services.market()
    before = market.token_balance(trainers[0].address)

    assert_user_error(cli("run", str(task_id), "--data", str(path), key=key_of(trainers[0])), *phrases)
    assert market.token_balance(trainers[0].address) == before
    assert not market.trainer(task_id, trainers[0].address).joined


# ---------------------------------------------------------------------- happy paths


def test_tasks_lists_an_open_task(cli, make_task):
    task_id = make_task()
    result = cli("tasks")
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if line.strip("│ ").startswith(f"{task_id} "))
    for cell in ("small", "1,000.0000", "0/2", "10.0000", "0/3", "none"):
        assert cell in row


def test_tasks_json_lists_an_open_task_in_base_units(cli, make_task):
    task_id = make_task()
    result = cli("tasks", "--json")
    assert result.exit_code == 0, result.output
    listed = {row["task_id"]: row for row in json.loads(result.output)}  # nothing else on stdout
    assert listed[task_id] | {"spec_cid": None} == {
        "task_id": task_id, "name": "small", "spec_cid": None, "reward_pool": str(1_000 * ONE_TOKEN),
        "current_round": 0, "rounds": 2, "min_stake": str(MIN_STAKE), "trainers": 0, "max_trainers": 3,
        "validators": 0, "phase": "none",
    }  # fmt: skip
    assert listed[task_id]["spec_cid"].startswith("bafkrei")


def test_tasks_lists_a_task_whose_spec_is_missing_next_to_the_others(cli, make_task):
    listed = make_task()
    unlisted_spec = mlp_spec(name="never-uploaded", input_dim=8, num_classes=3, hidden=(5,))
    missing = make_task(spec=unlisted_spec, store_spec=False)
    result = cli("tasks")
    assert result.exit_code == 0, result.output
    cells = [line.strip("│ ") for line in result.output.splitlines()]
    rows = {int(row.split()[0]): row for row in cells if row[:1].isdigit()}
    assert "small" in rows[listed]
    assert "(spec unavailable)" in rows[missing]


def test_join_stakes_the_minimum_stake_once(cli, make_task, trainer_services, trainers):
    task_id = make_task()
    account = trainers[2]
    market = trainer_services.market()
    before = market.token_balance(account.address)

    result = cli("join", str(task_id), key=key_of(account))
    assert result.exit_code == 0, result.output
    assert f"joined task {task_id}" in result.output and "staked 10.0000 FMT" in result.output
    assert market.token_balance(account.address) == before - MIN_STAKE
    assert market.trainer(task_id, account.address).stake == MIN_STAKE

    again = cli("join", str(task_id), key=key_of(account))
    assert again.exit_code == 0, again.output
    assert "staked" not in again.output
    assert market.token_balance(account.address) == before - MIN_STAKE


def test_status_shows_stake_earned_and_claimable(cli, make_task, trainer_services, trainers):
    task_id = make_task()
    trainer_services.market(trainers[3]).join(task_id)
    result = cli("status", str(task_id), key=key_of(trainers[3]))
    assert result.exit_code == 0, result.output
    assert (
        f"task {task_id} (open, round 0/2, phase none): stake 10.0000 FMT, earned 0.0000 FMT, claimable 0.0000 FMT"
        in result.output
    )


def test_status_json_in_base_units(cli, make_task, trainer_services, trainers):
    task_id = make_task()
    trainer_services.market(trainers[3]).join(task_id)
    result = cli("status", str(task_id), "--json", key=key_of(trainers[3]))
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {
        "task_id": task_id, "status": "open", "round": 0, "rounds": 2, "phase": "none", "phase_deadline": None,
        "address": trainers[3].address, "joined": True, "stake": str(MIN_STAKE), "earned": "0", "claimable": "0",
        "epsilon": None, "rounds_taken_part": [],
    }  # fmt: skip


def test_version_is_the_package_version(cli):
    from importlib.metadata import version

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output == f"fedmarket-trainer {version('fedmarket')}\n"


def test_join_writes_the_node_log_with_iso_times(cli, make_task, trainers, tmp_path):
    task_id = make_task()
    assert cli("join", str(task_id), key=key_of(trainers[8])).exit_code == 0
    log = tmp_path / "state" / trainers[8].address.lower() / f"task-{task_id}" / "node.log"
    lines = log.read_text().splitlines()
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
    assert all(re.match(rf"{stamp} (INFO|WARNING|ERROR) fedmarket", line) for line in lines), lines
    assert lines[-2].endswith("fedmarket.node: joined, staked 10.0000 FMT")
    assert lines[-1].endswith(f"fedmarket.node: joined task {task_id} as {trainers[8].address}")


def test_status_of_an_account_that_never_joined_says_so(cli, make_task, trainers):
    task_id = make_task()
    result = cli("status", str(task_id), key=key_of(trainers[4]))
    assert result.exit_code == 0, result.output
    assert "stake 0.0000 FMT (not joined)" in result.output


def test_claim_with_nothing_earned_says_so(cli, make_task, trainer_services, trainers):
    task_id = make_task()
    trainer_services.market(trainers[5]).join(task_id)
    before = trainer_services.market().token_balance(trainers[5].address)
    result = cli("claim", str(task_id), key=key_of(trainers[5]))
    assert result.exit_code == 0, result.output
    assert "nothing to claim" in result.output
    assert trainer_services.market().token_balance(trainers[5].address) == before
