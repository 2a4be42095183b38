"""`fedmarket-owner` in-process (typer's CliRunner) against a real market and a real coordinator.

The coordinator is served over HTTP with no background workers: tasks stay in round 0 unless a
test plays a round itself (testkit's scripted trainers and the owner's own validator, on the
files `post` wrote). Every user mistake ends in `error: ...`, exit code 1, and nothing posted.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from backend.app import create_app
from backend.services import Services
from fedmarket.chain import MarketClient
from fedmarket.cid import cid_from_digest, digest_of
from fedmarket.client import CoordinatorClient
from fedmarket.datasets import load_dataset, save_npz
from fedmarket.deploy import ONE_TOKEN, Deployment
from fedmarket.display import tokens
from fedmarket.learning import load_local_data
from fedmarket.owner_cli import app
from fedmarket.protocol import TaskStatus
from fedmarket.report import RoundReport, SubmissionOutcome
from fedmarket.spec import TaskSpec, mlp_spec
from fedmarket.store import HttpStore
from testkit.coordinator import (
    Coordinator,
    PostedTask,
    ScriptedTrainer,
    ScriptedValidator,
    digits_spec,
    play_round,
)
from testkit.market import MarketEnv, coordinator_settings, deploy_funded_market
from testkit.served import served

runner = CliRunner()
ENV_NAMES = (
    "FEDMARKET_OWNER_KEY",
    "FEDMARKET_RPC_URL",
    "FEDMARKET_DEPLOYMENT_FILE",
    "FEDMARKET_COORDINATOR_URL",
)
# Eight features, three classes; the CSV's label column sits between the features.
CSV_SPEC = mlp_spec(
    name="tabular", input_dim=8, num_classes=3, hidden=(6,), data={"format": "csv", "label_column": "digit"}
)
NPZ_SPEC = mlp_spec(name="arrays", input_dim=8, num_classes=3, hidden=(5,))


@dataclass
class OwnerServices:
    env: MarketEnv
    url: str
    services: Services

    def options(self, coordinator: str | None = None) -> list[str]:
        return [
            "--rpc-url", self.env.rpc_url, "--deployment", str(self.env.deployment_file),
            "--coordinator", coordinator or self.url,
        ]  # fmt: skip

    def market(self, account=None) -> MarketClient:
        client = MarketClient.connect(self.env.rpc_url, self.env.deployment)
        return client.with_account(account) if account is not None else client


@pytest.fixture(scope="module")
def owner_services(w3, anvil, artifacts, deployer, owner, trainers, tmp_path_factory):
    """A market of this module's own and a coordinator serving it over HTTP (orchestrators off:
    the tests step rounds themselves)."""
    recipients = [owner.address, *(t.address for t in trainers)]
    deployed: Deployment = deploy_funded_market(
        w3, artifacts=artifacts, deployer=deployer, recipients=recipients
    )
    root = tmp_path_factory.mktemp("owner-services")
    deployment_file = root / "deployments" / "local.json"
    deployed.write(deployment_file)
    env = MarketEnv(deployed, deployment_file, anvil.url)
    application = create_app(coordinator_settings(env, root / "coordinator", run_orchestrators=False))
    with served(application) as url:
        yield OwnerServices(env, url, application.state.services)


@pytest.fixture
def cli(owner_services):
    """`cli(command, *args, options=None, env=None)`: one command with this module's connection
    options and no FEDMARKET_* settings but those in `env`; wide columns keep lines whole."""

    def invoke(command: str, *args: str, options: list[str] | None = None, env=None):
        argv = [command, *args, *(owner_services.options() if options is None else options)]
        if command == "watch":  # chain only
            argv = argv[: argv.index("--coordinator")]
        return runner.invoke(app, argv, env={**dict.fromkeys(ENV_NAMES), "COLUMNS": "1000", **(env or {})})

    return invoke


def key_of(account) -> str:
    return account.key.hex()


def assert_user_error(result, *phrases: str) -> str:
    """Exit code 1 through the CLI's own error path: the last line is `error: ...` naming each phrase."""
    assert isinstance(result.exception, SystemExit), (
        f"crashed instead of failing cleanly: {result.exception!r}"
    )
    assert result.exit_code == 1, result.output
    line = result.output.strip().splitlines()[-1]
    assert line.startswith("error: "), result.output
    for phrase in phrases:
        assert phrase in line, line
    return line


def tabular(n: int = 100, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 50, size=(n, 8)).astype(np.float64) / 4, np.arange(n) % 3


def write_csv(path: Path, X: np.ndarray, y: np.ndarray, *, label: str = "digit") -> Path:
    """Features f0..f7 with the label column after f2."""
    header = ["f0", "f1", "f2", label, "f3", "f4", "f5", "f6", "f7"]
    rows = [[*map(str, x[:3]), str(int(t)), *map(str, x[3:])] for x, t in zip(X.tolist(), y, strict=True)]
    path.write_text("\n".join(",".join(r) for r in [header, *rows]) + "\n")
    return path


def spec_as_yaml(spec: TaskSpec, path: Path) -> Path:
    path.write_text(yaml.safe_dump(json.loads(spec.model_dump_json())))
    return path


def spec_as_json(spec: TaskSpec, path: Path) -> Path:
    path.write_bytes(spec.to_canonical_json())
    return path


def post_args(data: Path, spec: Path, out: Path, *extra: str) -> list[str]:
    return ["--data", str(data), "--spec", str(spec), "--validation-out", str(out / "validation"), *extra]


def rows_of(path: Path, spec: TaskSpec):
    data = load_local_data(path, spec)
    return [tuple(x) + (int(t),) for x, t in zip(data.X.reshape(len(data), -1).tolist(), data.y, strict=True)]


# ---------------------------------------------------------------------- post


def test_post_from_a_csv_with_a_yaml_spec(cli, owner_services, owner, tmp_path):
    X, y = tabular()
    data = write_csv(tmp_path / "mine.csv", X, y)
    spec_file = spec_as_yaml(CSV_SPEC, tmp_path / "spec.yaml")
    market = owner_services.market()
    balance = market.token_balance(owner.address)
    validation = tmp_path / "out" / "validator-owner.csv"

    result = cli(
        "post", "--data", str(data), "--spec", str(spec_file), "--validation-out", str(validation),
        "--shards", "2", "--shards-dir", str(tmp_path / "shards"), "--key", key_of(owner),
        "--pool", "1234.5", "--stake", "2.25", "--validator-stake", "3.000000000000000001", "--rounds", "4",
        "--min-trainers", "2", "--max-trainers", "7", "--min-validators", "1", "--max-validators", "3",
        "--validator-share", "12.5", "--slash", "40%", "--commit-window", "90", "--reveal-window", "45",
        "--score-window", "80", "--score-reveal-window", "40",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    task_id = market.task_count()
    info = market.task(task_id)
    assert (
        f"task {task_id} posted" in result.output and cid_from_digest(CSV_SPEC.spec_hash()) in result.output
    )
    assert f"fedmarket-validator run {task_id} --data {validation}" in result.output
    assert info.owner == owner.address and info.status == TaskStatus.OPEN
    terms = info.terms
    assert terms.spec_hash == CSV_SPEC.spec_hash()  # the YAML is the same spec, byte for byte
    assert terms.coordinator == owner_services.services.chain.address
    assert (terms.reward_pool, terms.min_stake) == (1_234_500_000_000_000_000_000, 2_250_000_000_000_000_000)
    assert terms.min_validator_stake == 3 * ONE_TOKEN + 1  # exact to the last base unit
    assert (terms.rounds, terms.min_trainers, terms.max_trainers) == (4, 2, 7)
    assert (terms.min_validators, terms.max_validators) == (1, 3)
    assert (terms.validator_share_bps, terms.slash_bps) == (1_250, 4_000)
    windows = (terms.commit_window, terms.reveal_window, terms.score_window, terms.score_reveal_window)
    assert windows == (90, 45, 80, 40)
    assert market.token_balance(owner.address) == balance - terms.reward_pool

    shards = [tmp_path / "shards" / f"trainer-{i}.csv" for i in range(2)]
    assert validation.read_text().splitlines()[0] == "f0,f1,f2,digit,f3,f4,f5,f6,f7"  # the owner's header
    held_out = rows_of(validation, CSV_SPEC)
    assert len(held_out) == 20 and set(Counter(r[-1] for r in held_out).values()) <= {6, 7}  # stratified
    everything = held_out + [row for shard in shards for row in rows_of(shard, CSV_SPEC)]
    assert sorted(everything) == sorted(rows_of(data, CSV_SPEC))  # every sample in exactly one file
    assert [len(rows_of(s, CSV_SPEC)) for s in shards] == [40, 40]  # IID by default


def test_post_from_an_npz_with_a_json_spec_and_label_skewed_shards(cli, owner_services, owner, tmp_path):
    X, y = tabular(n=300, seed=1)
    data = save_npz(tmp_path / "mine.npz", X.astype(np.float32), y)
    spec_file = spec_as_json(NPZ_SPEC, tmp_path / "spec.json")
    shards_dir = tmp_path / "shards"

    result = cli(
        "post", *post_args(data, spec_file, tmp_path), "--shards", "3", "--shards-dir", str(shards_dir),
        "--alpha", "0.3", "--seed", "5", env={"FEDMARKET_OWNER_KEY": key_of(owner).removeprefix("0x")},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    task_id = owner_services.market().task_count()
    assert owner_services.market().task(task_id).terms.spec_hash == NPZ_SPEC.spec_hash()
    with HttpStore(owner_services.url) as store:  # the coordinator keeps the spec trainers read
        assert store.get(cid_from_digest(NPZ_SPEC.spec_hash())) == NPZ_SPEC.to_canonical_json()
    shards = [rows_of(shards_dir / f"trainer-{i}.npz", NPZ_SPEC) for i in range(3)]
    held_out = rows_of(tmp_path / "validation", NPZ_SPEC)
    assert len(held_out) == 60
    assert sorted(held_out + [r for s in shards for r in s]) == sorted(rows_of(data, NPZ_SPEC))
    mixes = [Counter(r[-1] for r in shard) for shard in shards]
    assert any(max(m.values()) > 0.6 * sum(m.values()) for m in mixes), mixes  # Dirichlet(0.3) skews


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"fedmarket-owner {version('fedmarket')}"


# ---------------------------------------------------------------------- bad input posts nothing


def missing_label_column(tmp_path):
    X, y = tabular()
    return write_csv(tmp_path / "mine.csv", X, y, label="target"), spec_as_json(CSV_SPEC, tmp_path / "s.json")


def spec_failing_the_schema(tmp_path):
    X, y = tabular()
    broken = json.loads(CSV_SPEC.model_dump_json()) | {"num_classes": 1, "optimiser": "sgd"}
    path = tmp_path / "spec.yml"
    path.write_text(yaml.safe_dump(broken))
    return write_csv(tmp_path / "mine.csv", X, y), path


def valid_inputs(tmp_path):
    X, y = tabular()
    return write_csv(tmp_path / "mine.csv", X, y), spec_as_yaml(CSV_SPEC, tmp_path / "spec.yaml")


def _key(account) -> str:
    return key_of(account)


@pytest.mark.parametrize(
    ("make_inputs", "extra", "key", "phrases"),
    [
        pytest.param(
            missing_label_column, [], _key, ["mine.csv has no column named 'digit'", "f2, target, f3"],
            id="missing-label-column",
        ),
        pytest.param(
            spec_failing_the_schema, [], _key, ["spec.yml: invalid task spec", "num_classes", "optimiser"],
            id="spec-fails-the-schema",
        ),
        pytest.param(
            valid_inputs, [], lambda owner: key_of(owner)[:-1], ["has 63 hex digits, not 64", "exactly 32 bytes"],
            id="63-hex-digit-key",
        ),
        pytest.param(valid_inputs, [], lambda owner: None, ["no owner key", "FEDMARKET_OWNER_KEY"], id="no-key"),
        pytest.param(
            valid_inputs, ["--pool", "1.0000000000000000001"], _key, ["--pool", "more than 18 decimals"],
            id="too-many-decimals",
        ),
        pytest.param(
            valid_inputs, ["--validator-share", "120"], _key, ["--validator-share", "from 0 to 100"],
            id="share-over-100",
        ),
        pytest.param(
            valid_inputs, ["--coordinator-address", "0x" + "11" * 20], _key,
            ["WrongCoordinator", "terms.coordinator must be this coordinator"], id="another-coordinator",
        ),
        pytest.param(
            valid_inputs, ["--coordinator-address", "nobody"], _key,
            ["--coordinator-address must be a 0x-prefixed 20-byte address"], id="not-an-address",
        ),
        pytest.param(
            valid_inputs, ["--min-trainers", "5", "--max-trainers", "2"], _key,
            ["the market refused", "TaskMarketInvalidTerms", "maxTrainers"], id="terms-the-contract-refuses",
        ),
    ],
)  # fmt: skip
def test_bad_input_is_refused_and_nothing_is_posted_or_written(
    cli, owner_services, owner, tmp_path, make_inputs, extra, key, phrases
):
    data, spec_file = make_inputs(tmp_path)
    market = owner_services.market()
    tasks, balance = market.task_count(), market.token_balance(owner.address)
    out = tmp_path / "out"
    args = [*post_args(data, spec_file, out), "--shards", "2", "--shards-dir", str(out), *extra]
    owner_key = key(owner)
    assert_user_error(cli("post", *args, *(["--key", owner_key] if owner_key else [])), *phrases)
    assert market.task_count() == tasks and market.token_balance(owner.address) == balance
    assert not out.exists() or not list(out.iterdir())  # a refused post leaves no split files behind


def test_an_existing_split_file_is_not_replaced_without_force(cli, owner_services, owner, tmp_path):
    data, spec_file = valid_inputs(tmp_path)
    kept = tmp_path / "validation"
    kept.write_text("an earlier task's split\n")
    tasks = owner_services.market().task_count()
    assert_user_error(cli("post", *post_args(data, spec_file, tmp_path), "--key", key_of(owner)), "--force")
    assert kept.read_text() == "an earlier task's split\n" and owner_services.market().task_count() == tasks


# ---------------------------------------------------------------------- status


def posted_task(cli, owner_services, owner, tmp_path, *extra: str) -> int:
    data, spec_file = valid_inputs(tmp_path)
    result = cli("post", *post_args(data, spec_file, tmp_path), "--key", key_of(owner), *extra)
    assert result.exit_code == 0, result.output
    return owner_services.market().task_count()


def test_status_json_gives_terms_and_state_in_base_units(cli, owner_services, owner, trainers, tmp_path):
    task_id = posted_task(cli, owner_services, owner, tmp_path, "--pool", "500.25", "--stake", "7")
    owner_services.market(trainers[0]).join(task_id)
    owner_services.market(trainers[1]).join(task_id)
    owner_services.market(trainers[1]).leave(task_id)
    owner_services.market(owner).join_as_validator(task_id, bytes(range(32)), 12 * ONE_TOKEN)

    result = cli("status", str(task_id), "--json")
    assert result.exit_code == 0, result.output
    status = json.loads(result.output)
    assert status["task_id"] == task_id and status["name"] == "tabular" and status["owner"] == owner.address
    assert (status["status"], status["phase"], status["current_round"], status["rounds_done"]) == (
        "open",
        "none",
        0,
        0,
    )
    assert status["pool"] == str(500_250_000_000_000_000_000) and status["unclaimed"] == "0"
    assert status["terms"]["reward_pool"] == "500250000000000000000" and status["terms"]["min_stake"] == str(
        7 * ONE_TOKEN
    )
    assert status["terms"]["spec_hash"] == "0x" + CSV_SPEC.spec_hash().hex()
    joined = [{"trainer": trainers[0].address, "stake": str(7 * ONE_TOKEN)}]  # trainers[1] left
    assert (status["trainer_count"], status["trainers"]) == (1, joined)
    validator = {"validator": owner.address, "stake": str(12 * ONE_TOKEN)}
    assert (status["validator_count"], status["validators"]) == (1, [validator])

    human = cli("status", str(task_id))
    assert human.exit_code == 0, human.output
    assert f"task {task_id} 'tabular': open, round 0/3 (0 done), phase none" in human.output
    assert "pool left 500.2500 of 500.2500 FMT" in human.output and trainers[0].address in human.output
    assert trainers[1].address not in human.output


def test_status_of_an_unknown_task(cli, owner_services):
    assert_user_error(cli("status", "9999"), "task 9999 does not exist")


# ---------------------------------------------------------------------- one played round


@dataclass
class Played:
    task_id: int
    spec: TaskSpec
    report: RoundReport
    new_model_hash: bytes
    trainers: list[str]


@pytest.fixture(scope="module")
def played(owner_services, owner, trainers, w3, tmp_path_factory) -> Played:
    """A one-round digits task posted with the CLI, then played: two scripted trainers on the
    shards `post` wrote, the owner validating on its own split; settled and published."""
    root = tmp_path_factory.mktemp("played")
    X, y = load_dataset("digits")
    data = save_npz(root / "digits.npz", X, y)
    spec = digits_spec()
    argv = [
        "post", *post_args(data, spec_as_json(spec, root / "spec.json"), root), "--shards", "2",
        "--shards-dir", str(root), "--rounds", "1", "--min-trainers", "2", "--max-trainers", "2",
        "--min-validators", "1", "--key", key_of(owner), *owner_services.options(),
    ]  # fmt: skip
    result = runner.invoke(app, argv, env={**dict.fromkeys(ENV_NAMES), "COLUMNS": "1000"})
    assert result.exit_code == 0, result.output
    market = owner_services.market()
    task_id = market.task_count()
    store = HttpStore(owner_services.url)
    scripted = [
        ScriptedTrainer(t, market, store, load_local_data(root / f"trainer-{i}.npz", spec), seed=i)
        for i, t in enumerate(trainers[:2])
    ]
    validator = ScriptedValidator(owner, market, store, load_local_data(root / "validation", spec))
    for trainer in scripted:
        trainer.join(task_id)
    validator.join(task_id)
    coordinator = Coordinator(
        owner_services.env, None, owner_services.services, market, CoordinatorClient(owner_services.url), store,
        lambda: None,
    )  # served over HTTP: no TestClient  # fmt: skip
    task = PostedTask(task_id, spec, market.task(task_id).terms, cid_from_digest(spec.spec_hash()))
    play_round(coordinator, task, scripted, [validator], w3)
    settled = market.round(task_id, 1)
    assert settled.model_published and market.task(task_id).status == TaskStatus.COMPLETED
    report = RoundReport.from_json(store.get(cid_from_digest(settled.report_hash)))
    return Played(task_id, spec, report, settled.new_model_hash, [t.address for t in scripted])


def test_report_shows_outcomes_consensus_payouts_and_scores(cli, played, owner):
    result = cli("report", str(played.task_id), "1")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    report = played.report
    assert f"budget {tokens(report.budget)} FMT, paid {tokens(report.payout)} FMT" in lines[0]
    assert {s.trainer for s in report.submissions} == set(played.trainers)
    assert report.payout > 0
    for submission in report.submissions:
        row = next(line for line in lines if submission.trainer in line and submission.outcome.value in line)
        assert tokens(submission.payout) in row and f"{submission.consensus / 10**18:.4f}" in row
        score_row = [line for line in lines if line.strip("│ ").startswith(submission.trainer)][-1]
        assert f"{int(submission.scores[owner.address]) / 10**18:.4f}" in score_row
    validator_row = next(line for line in lines if line.strip("│ ").startswith(owner.address))
    assert tokens(report.validators[0].payout) in validator_row and "yes" in validator_row
    assert any(s.outcome == SubmissionOutcome.ACCEPTED for s in report.submissions)

    as_json = cli("report", str(played.task_id), "1", "--json")
    assert as_json.exit_code == 0, as_json.output
    assert RoundReport.model_validate(json.loads(as_json.output)) == report


def test_report_of_a_round_that_never_started(cli, played):
    assert_user_error(cli("report", str(played.task_id), "2"), f"task {played.task_id} has no round 2")


def test_fetch_model_writes_the_published_model_verified(cli, played, tmp_path):
    for args in ([], ["--round", "1"]):
        out = tmp_path / f"model{len(args)}.safetensors"
        result = cli("fetch-model", str(played.task_id), "--out", str(out), *args)
        assert result.exit_code == 0, result.output
        assert digest_of(out.read_bytes()) == played.new_model_hash
        assert "verified against the chain" in result.output
    assert_user_error(
        cli("fetch-model", str(played.task_id), "--round", "2", "--out", str(tmp_path / "no.safetensors")),
        "has no round 2",
    )
    assert not (tmp_path / "no.safetensors").exists()


def test_fetch_model_refuses_a_tampered_blob_and_writes_nothing(
    cli, played, owner_services, blob_server, tmp_path
):
    """A store that serves other bytes under the model's CID (the SDK tests' blob server, which
    flips a bit of every download in `corrupt` mode) gets nothing past the on-chain hash."""
    with HttpStore(owner_services.url) as real:
        model = real.get(cid_from_digest(played.new_model_hash))
    blob_server.store.put(model)
    blob_server.store.put(played.spec.to_canonical_json())
    options = owner_services.options(coordinator=blob_server.url)
    good = tmp_path / "good.safetensors"
    trusted = cli("fetch-model", str(played.task_id), "--out", str(good), options=options)
    assert trusted.exit_code == 0, trusted.output  # any store will do: the chain names the bytes
    assert good.read_bytes() == model

    blob_server.mode = "corrupt"
    out = tmp_path / "model.safetensors"
    result = cli("fetch-model", str(played.task_id), "--out", str(out), options=options)
    assert_user_error(result, "does not match its on-chain hash", "nothing written")
    assert not out.exists()


def test_status_and_watch_after_the_last_round(cli, played):
    status = json.loads(cli("status", str(played.task_id), "--json").output)
    assert (status["status"], status["rounds_done"], status["current_round"]) == ("completed", 1, 1)
    assert status["model_cid"] == cid_from_digest(played.new_model_hash)

    watched = cli("watch", str(played.task_id), "--interval", "0.1")
    assert watched.exit_code == 0, watched.output
    row = next(line for line in watched.output.splitlines() if line.strip("│ ").startswith("1 "))
    assert "published" in row and tokens(played.report.payout) in row
    assert f"task {played.task_id} is over" in watched.output


def test_watch_follows_a_task_until_it_is_cancelled(cli, owner_services, owner, tmp_path):
    """An open task keeps `watch` refreshing; the owner's cancel ends it."""
    import threading
    import time

    task_id = posted_task(cli, owner_services, owner, tmp_path)
    timer = threading.Timer(1.0, lambda: owner_services.market(owner).cancel_task(task_id))
    timer.start()
    started = time.monotonic()
    try:
        watched = cli("watch", str(task_id), "--interval", "0.2")
    finally:
        timer.join()
    assert watched.exit_code == 0, watched.output
    assert time.monotonic() - started >= 1.0
    titles = [
        line.strip() for line in watched.output.splitlines() if line.strip().startswith(f"task {task_id}: ")
    ]
    assert [t.split(",")[0] for t in titles] == [f"task {task_id}: open", f"task {task_id}: cancelled"]
