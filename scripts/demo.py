"""`make demo`: the whole market on one machine, end to end.

Starts Anvil, deploys the contracts, starts the coordinator (a subprocess), funds a task owner,
trainers and validators from dev accounts, and splits a real data set: a test split the demo keeps
to measure accuracy, one disjoint held-out split per validator (the first is the owner's), and the
rest for the trainers with a Dirichlet(alpha) label skew. It posts the task through the HTTP API
with signatures made here, runs every trainer (`fedmarket-trainer run`) and every validator
(`fedmarket-validator run`) as its own process, prints per-round accuracy of each published model
and what every participant earned, next to a centrally trained baseline, and runs `fedmarket
verify` on the finished task. Every process it started is stopped at the end, on Ctrl-C and on
failure.

Writes reports/demo.json for a clean run and reports/demo-<attack>.json for an attack run
(`--attacker noise` -> demo-noise.json, `--bad-validator inflate` -> demo-inflate.json), unless
--out says otherwise; the report records the command, the wall time and the machine, so a figure
quoted from it can be rerun. Logs and state go to --workdir, or to a temporary directory that is
deleted after a successful run and kept (its path printed) when the demo fails or is interrupted.

    python scripts/demo.py --trainers 5 --validators 3 --rounds 10 --dataset mnist \
        [--attacker sign-flip|noise|free-rider] [--bad-validator inflate|random|lazy]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import subprocess  # noqa: E402

from backend.dashboard.evaluation import EVALUATION_DIR  # noqa: E402
from fedmarket.chain import MarketClient  # noqa: E402
from fedmarket.cid import cid_from_digest  # noqa: E402
from fedmarket.client import CoordinatorClient  # noqa: E402
from fedmarket.consensus import FLAGS, HARMFUL, INVALID, SCALE, UNAVAILABLE, normalized_scores  # noqa: E402
from fedmarket.contracts import compile_contracts  # noqa: E402
from fedmarket.datasets import DATASETS, dirichlet_split, load_dataset, save_npz, train_test_split  # noqa: E402
from fedmarket.deploy import ONE_TOKEN, deploy_market, fund_accounts  # noqa: E402
from fedmarket.devnet import DEVNET_BLOCK_TIME, Anvil, dev_account, free_port  # noqa: E402
from fedmarket.display import iso_time, package_version  # noqa: E402
from fedmarket.learning import LocalData, evaluate, train  # noqa: E402
from fedmarket.ledger import read_round  # noqa: E402
from fedmarket.models import build_model  # noqa: E402
from fedmarket.processes import COORDINATOR_COMMAND, ProcessGroup, wait_until_healthy  # noqa: E402
from fedmarket.protocol import Outcome, TaskStatus, TaskTerms  # noqa: E402
from fedmarket.rounds import fetch_model  # noqa: E402
from fedmarket.spec import TaskSpec  # noqa: E402
from fedmarket.store import HttpStore  # noqa: E402
from scripts.post_task import digit_task_spec  # noqa: E402
from trainer.attacks import ATTACKS, BAD_VALIDATORS, shards  # noqa: E402

console = Console(soft_wrap=True)  # paths and addresses stay whole, to copy
OWNER_INDEX, COORDINATOR_INDEX, FIRST_TRAINER_INDEX, FIRST_VALIDATOR_INDEX = 1, 2, 4, 40  # Anvil dev accounts
TEST_FRACTION, VALIDATOR_FRACTION = 0.15, 0.07  # the demo's test split; each validator's held-out split
REWARD_POOL = 10_000 * ONE_TOKEN
MIN_STAKE = 100 * ONE_TOKEN
TRAINER_FUNDS = 1_000 * ONE_TOKEN
REPORTS = REPO_ROOT / "reports"
SYBIL_IDENTITIES = 3  # --attacker sybil: one data set across this many identities
FLAG_NAMES = {HARMFUL: "harmful", INVALID: "invalid", UNAVAILABLE: "unavailable"}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"fedmarket demo {package_version()}")
    parser.add_argument("--trainers", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--dataset", choices=DATASETS, default="mnist")
    parser.add_argument(
        "--validators", type=int, default=3, help="the owner's validator and independent ones"
    )
    parser.add_argument(
        "--attacker",
        choices=ATTACKS,
        default=None,
        help="make the last trainer malicious (sybil: the last three identities share one data set)",
    )
    parser.add_argument(
        "--bad-validator", choices=BAD_VALIDATORS, default=None, help="make the last validator dishonest"
    )
    parser.add_argument("--alpha", type=float, default=0.5, help="Dirichlet label-skew concentration")
    parser.add_argument("--local-epochs", type=int, default=2)
    parser.add_argument(
        "--dp-noise", type=float, default=None, help="trainers use DP-SGD with this noise multiplier"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="the JSON report (default: reports/demo.json, or reports/demo-<attack>.json for an attack run)",
    )
    parser.add_argument(
        "--workdir", type=Path, default=None, help="keep logs and state here (default: a temp dir)"
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="give up after this many seconds")
    args = parser.parse_args(argv)
    if args.trainers < 2:
        parser.error("--trainers must be at least 2")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if not 1 <= args.validators <= 8:
        parser.error("--validators must be between 1 and 8")
    if args.bad_validator and args.validators < 3:
        parser.error("--bad-validator needs at least 3 validators (an honest majority to outvote it)")
    args.out = args.out or default_report_path(args)
    args.command = " ".join(
        ["python scripts/demo.py", *map(shlex.quote, sys.argv[1:] if argv is None else argv)]
    )
    return args


def default_report_path(args: argparse.Namespace) -> Path:
    """reports/demo.json for the clean run (the one the README's table starts from), and a file of
    its own per attack, so an attack run never overwrites the clean one."""
    attacks = [a for a in (args.attacker, args.bad_validator) if a]
    return REPORTS / ("demo.json" if not attacks else f"demo-{'-'.join(attacks)}.json")


def machine() -> dict:
    """What the wall time was measured on."""
    return {
        "cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
        "torch": torch.__version__, "load_average_at_start": round(os.getloadavg()[0], 2),
    }  # fmt: skip


@dataclass(frozen=True)
class DataSplit:
    """The demo's data: a test split (its yardstick), one disjoint held-out split per validator
    (the first is the owner's) and the rest split non-IID among the trainers."""

    test: LocalData
    validators: list[LocalData]
    trainers: list[LocalData]
    pool: LocalData  # the trainers' samples together, for the centralized baseline


def split_data(
    X: np.ndarray, y: np.ndarray, *, trainers: int, validators: int, alpha: float, seed: int
) -> DataSplit:
    """The demo's split; the attack and fairness benches use the same one."""
    X_rest, X_test, y_rest, y_test = train_test_split(X, y, test_fraction=TEST_FRACTION, seed=seed)
    held = []
    for i in range(validators):
        share = VALIDATOR_FRACTION / (1 - TEST_FRACTION - i * VALIDATOR_FRACTION)
        X_rest, X_held, y_rest, y_held = train_test_split(
            X_rest, y_rest, test_fraction=share, seed=seed + i + 1
        )
        held.append(LocalData(X_held, y_held))
    parts = dirichlet_split(y_rest, parts=trainers, alpha=alpha, seed=seed, min_size=20)
    trainer_parts = [LocalData(X_rest[p], y_rest[p]) for p in parts]
    return DataSplit(LocalData(X_test, y_test), held, trainer_parts, LocalData(X_rest, y_rest))


def centralized_accuracy(
    spec: TaskSpec, train_data: LocalData, validation: LocalData, *, epochs: int, seed: int
) -> float:
    """The same model trained on the union of the trainers' data for as many epochs in total."""
    model = build_model(spec)
    settings = spec.training.model_copy(update={"local_epochs": epochs})
    train(model, train_data, settings, seed=seed)
    return evaluate(model, validation).accuracy


def run_demo(args: argparse.Namespace, workdir: Path) -> dict:
    started = time.monotonic()
    started_at = time.time()
    box = machine()  # before the demo's own processes load the machine
    processes = ProcessGroup()
    with ExitStack() as stack:
        console.rule(
            f"fedmarket demo: {args.trainers} trainers, {args.validators} validators, {args.rounds} rounds, "
            f"{args.dataset}"
            + (f", attacker {args.attacker}" if args.attacker else "")
            + (f", bad validator {args.bad_validator}" if args.bad_validator else "")
        )
        anvil = stack.enter_context(Anvil(block_time=DEVNET_BLOCK_TIME, log_path=workdir / "anvil.log"))
        stack.callback(processes.stop)  # runs before Anvil stops: nothing logs a lost chain
        from web3 import Web3

        w3 = Web3(Web3.HTTPProvider(anvil.url))
        artifacts = compile_contracts()
        deployer, owner, coordinator_account = (
            dev_account(0),
            dev_account(OWNER_INDEX),
            dev_account(COORDINATOR_INDEX),
        )
        trainers = [dev_account(FIRST_TRAINER_INDEX + i) for i in range(args.trainers)]
        # The owner runs the first validator (its own held-out split); the others are independent.
        validators = [owner] + [dev_account(FIRST_VALIDATOR_INDEX + i) for i in range(args.validators - 1)]
        deployment = deploy_market(w3, deployer, token=artifacts["FMToken"], market=artifacts["TaskMarket"])
        deployment_file = workdir / "deployments" / "local.json"
        deployment.write(deployment_file)
        fund_accounts(
            w3, deployment, deployer, [owner.address], tokens=REWARD_POOL + TRAINER_FUNDS
        )  # + its stake
        fund_accounts(
            w3, deployment, deployer, [a.address for a in (*trainers, *validators[1:])], tokens=TRAINER_FUNDS
        )
        console.print(f"devnet {anvil.url}: FMToken {deployment.token}, TaskMarket {deployment.market}")

        port = free_port()
        api_url = f"http://127.0.0.1:{port}"
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO_ROOT),
            "FEDMARKET_RPC_URL": anvil.url,
            "FEDMARKET_DEPLOYMENT_FILE": str(deployment_file),
            "FEDMARKET_DATA_DIR": str(workdir / "coordinator"),
            "FEDMARKET_PORT": str(port),
            "FEDMARKET_POLL_INTERVAL": "0.2",
            "FEDMARKET_COORDINATOR_URL": api_url,
        }
        log = workdir / "coordinator.log"
        coordinator_proc = processes.start(COORDINATOR_COMMAND, log=log, env=env)
        wait_until_healthy(api_url, coordinator_proc, log)
        console.print(f"coordinator {api_url} (log {log})")

        X, y = load_dataset(args.dataset)
        split = split_data(
            X, y, trainers=args.trainers, validators=args.validators, alpha=args.alpha, seed=args.seed
        )
        attackers = 1
        if args.attacker == "sybil":  # the last trainer's data, split across the last identities
            attackers = min(SYBIL_IDENTITIES, args.trainers - 1)
            split.trainers[-attackers:] = shards(split.trainers[-1], attackers)
        X_test, y_test = split.test.X, split.test.y
        validator_files = [
            save_npz(workdir / "data" / f"validator-{i}.npz", held.X, held.y)
            for i, held in enumerate(split.validators)
        ]
        data_files = [
            save_npz(workdir / "data" / f"trainer-{i}.npz", part.X, part.y)
            for i, part in enumerate(split.trainers)
        ]

        spec = digit_task_spec(
            args.dataset, X.shape[1], local_epochs=args.local_epochs, seed=args.seed, dp_noise=args.dp_noise
        )
        terms = TaskTerms(
            spec_hash=spec.spec_hash(), coordinator=coordinator_account.address, rounds=args.rounds,
            min_trainers=max(1, args.trainers // 2), max_trainers=args.trainers, slash_bps=5000,
            commit_window=120, reveal_window=60, reward_pool=REWARD_POOL, min_stake=MIN_STAKE,
            min_validators=max(1, args.validators // 2 + 1) if args.validators > 2 else args.validators,
            max_validators=args.validators, validator_share_bps=1_000, score_window=120, score_reveal_window=30,
            min_validator_stake=MIN_STAKE,
        )  # fmt: skip
        market = MarketClient.connect(anvil.url, deployment)
        api = stack.enter_context(CoordinatorClient(api_url))
        posted = api.post_task(spec=spec, terms=terms, owner_key=owner.key, market=market)
        task_id = posted["task_id"]
        console.print(f"task {task_id} posted through the API (spec {posted['spec_cid']})")
        # The demo's test split doubles as the coordinator's evaluation set: the dashboard charts
        # each published model's accuracy on it (backend/dashboard/evaluation.py).
        save_npz(workdir / "coordinator" / EVALUATION_DIR / f"{task_id}.npz", X_test, y_test)
        console.print(f"dashboard {api_url}/tasks/{task_id} (open it while the demo runs)")

        validator_roles = ["owner"] + ["independent"] * (args.validators - 1)
        if args.bad_validator:
            validator_roles[-1] = f"bad ({args.bad_validator})"
        validator_procs = []
        for i, (account, data_file) in enumerate(zip(validators, validator_files, strict=True)):
            command = [
                sys.executable, "-m", "trainer.validator_cli", "run", str(task_id), "--data", str(data_file),
                "--state-dir", str(workdir / "validator-state"), "--poll", "0.2",
            ]  # fmt: skip
            if args.bad_validator and i == args.validators - 1:
                command += ["--bad-validator", args.bad_validator]
            validator_env = {**env, "FEDMARKET_VALIDATOR_KEY": account.key.hex()}
            validator_procs.append(
                processes.start(command, log=workdir / f"validator-{i}.log", env=validator_env)
            )
        console.print(f"{args.validators} validator processes started")

        roles = ["honest"] * args.trainers
        if args.attacker:
            roles[-attackers:] = ["attacker"] * attackers
        trainer_procs = []
        for i, (account, data_file) in enumerate(zip(trainers, data_files, strict=True)):
            command = [
                sys.executable, "-m", "trainer.cli", "run", str(task_id), "--data", str(data_file),
                "--state-dir", str(workdir / "trainer-state"), "--poll", "0.2", "--seed", str(args.seed),
            ]  # fmt: skip
            if roles[i] == "attacker":
                command += ["--attacker", args.attacker]
            trainer_env = {**env, "FEDMARKET_TRAINER_KEY": account.key.hex()}
            trainer_procs.append(processes.start(command, log=workdir / f"trainer-{i}.log", env=trainer_env))
        console.print(f"{args.trainers} trainer processes started (logs in {workdir})")

        test = LocalData(X_test.astype(np.float32), y_test.astype(np.int64))
        store = HttpStore(api_url)
        rounds = watch_rounds(
            market,
            store,
            spec,
            test,
            task_id,
            [*trainer_procs, *validator_procs],
            deadline=started + args.timeout,
        )
        for proc, account in zip([*trainer_procs, *validator_procs], [*trainers, *validators], strict=True):
            remaining = max(1.0, started + args.timeout - time.monotonic())
            if proc.wait(remaining) != 0:
                console.print(f"[yellow]{account.address} exited with {proc.returncode}[/yellow]")

        earned, slashed, agreements = earnings(market, task_id)
        slashes = slash_reasons(market, task_id)
        claimed = {
            e.args["account"]: e.args["amount"] for e in market.iter_events("RewardsClaimed", task_id=task_id)
        }
        per_trainer = []
        for i, account in enumerate(trainers):
            summary_file = (
                workdir / "trainer-state" / account.address.lower() / f"task-{task_id}" / "summary.json"
            )
            summary = json.loads(summary_file.read_text()) if summary_file.exists() else {}
            per_trainer.append({
                "address": account.address,
                "role": roles[i],
                "samples": len(split.trainers[i]),
                "stake": MIN_STAKE / ONE_TOKEN,
                "stake_returned": summary.get("stake_returned", 0) / ONE_TOKEN,
                "earned": earned["trainer"].get(account.address, 0) / ONE_TOKEN,
                "claimed": summary.get("claimed", 0) / ONE_TOKEN,
                "slashed": slashed["trainer"].get(account.address, 0) / ONE_TOKEN,
                "slashes": slashes.get(account.address, []),
                "gas": summary.get("gas_used", 0),
                "epsilon": summary.get("epsilon"),
            })  # fmt: skip
        per_validator = [
            {
                "address": account.address,
                "role": validator_roles[i],
                "stake": MIN_STAKE / ONE_TOKEN,
                "earned": earned["validator"].get(account.address, 0) / ONE_TOKEN,
                "slashed": slashed["validator"].get(account.address, 0) / ONE_TOKEN,
                "slashes": slashes.get(account.address, []),
                "agreement": (
                    sum(agreements[account.address]) / len(agreements[account.address]) / SCALE
                    if agreements.get(account.address) else None
                ),
            }
            for i, account in enumerate(validators)
        ]  # fmt: skip
        total_claimed = sum(claimed.values()) / ONE_TOKEN
        honest_validators = [
            v.address for v, role in zip(validators, validator_roles, strict=True) if "bad" not in role
        ]
        guarantee = median_guarantee(market, task_id, honest_validators)

        verify = subprocess.run(
            [sys.executable, "-m", "fedmarket.cli", "verify", str(task_id), "--rpc-url", anvil.url,
             "--deployment", str(deployment_file), "--store", api_url],
            cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        (workdir / "verify.log").write_text(verify.stdout + verify.stderr)
        console.print(verify.stdout.rstrip())

        union = LocalData(split.pool.X.astype(np.float32), split.pool.y.astype(np.int64))
        baseline = centralized_accuracy(
            spec, union, test, epochs=args.rounds * args.local_epochs, seed=args.seed
        )
        report = {
            "command": args.command,
            "fedmarket_version": package_version(),
            "started_at": iso_time(started_at),
            "machine": box,
            "task_id": task_id,
            "dataset": args.dataset,
            "attacker": args.attacker,
            "bad_validator": args.bad_validator,
            "rounds": rounds,
            "trainers": per_trainer,
            "validators": per_validator,
            "claimed": total_claimed,
            "verify_exit_code": verify.returncode,
            "median_guarantee": guarantee,
            "centralized_accuracy": baseline,
            "federated_accuracy": rounds[-1]["accuracy"] if rounds else None,
            "owner_refund": sum(
                e.args["refund"] for e in market.iter_events("TaskCompleted", task_id=task_id)
            )
            / ONE_TOKEN,
            "market_balance": market.token_balance(deployment.market) / ONE_TOKEN,
            "wall_seconds": round(time.monotonic() - started, 1),
        }
    print_report(report)
    return report


def earnings(market: MarketClient, task_id: int) -> tuple[dict, dict, dict]:
    """Per role and account, from the chain's events: earned, slashed, and per-round agreements."""
    earned: dict[str, dict[str, int]] = {"trainer": {}, "validator": {}}
    slashed: dict[str, dict[str, int]] = {"trainer": {}, "validator": {}}
    agreements: dict[str, list[int]] = {}
    for event in market.iter_events(task_id=task_id):
        args = event.args
        if event.name == "TrainerSettled":
            earned["trainer"][args["trainer"]] = earned["trainer"].get(args["trainer"], 0) + args["payout"]
        elif event.name == "ValidatorSettled":
            earned["validator"][args["validator"]] = (
                earned["validator"].get(args["validator"], 0) + args["payout"]
            )
            agreements.setdefault(args["validator"], []).append(args["agreement"])
        elif event.name == "TrainerSlashed":
            slashed["trainer"][args["trainer"]] = slashed["trainer"].get(args["trainer"], 0) + args["amount"]
        elif event.name == "ValidatorSlashed":
            slashed["validator"][args["validator"]] = (
                slashed["validator"].get(args["validator"], 0) + args["amount"]
            )
    return earned, slashed, agreements


def slash_reasons(market: MarketClient, task_id: int) -> dict[str, list[dict]]:
    """Per account, every slash with its round and why, from the chain alone: a trainer slashed
    without a settlement did not reveal; a rejected one is named by the flag most of the score
    vectors raised (harmful, invalid); a slashed validator committed scores and did not reveal."""
    found: dict[str, list[dict]] = {}
    for round_no in range(1, market.task(task_id).current_round + 1):
        ledger = read_round(market, task_id, round_no)
        for trainer, amount in ledger.trainer_slashes.items():
            if trainer not in ledger.settled_trainers:
                reason = "did not reveal"
            else:
                at = ledger.trainers.index(trainer)
                flags = Counter(v[at] for v in ledger.score_reveals.values() if v[at] in FLAGS)
                reason = FLAG_NAMES[flags.most_common(1)[0][0]] if flags else "rejected"
            found.setdefault(trainer, []).append(
                {"round": round_no, "amount": amount / ONE_TOKEN, "reason": reason}
            )
        for validator, amount in ledger.validator_slashes.items():
            found.setdefault(validator, []).append(
                {"round": round_no, "amount": amount / ONE_TOKEN, "reason": "did not reveal scores"}
            )
    return found


def slashed_why(row: dict) -> str:
    """`50.00 (round 1: harmful)`: what a participant lost and what for."""
    reasons = "; ".join(f"round {s['round']}: {s['reason']}" for s in row["slashes"])
    return f"{row['slashed']:.2f} ({reasons})" if reasons else f"{row['slashed']:.2f}"


def median_guarantee(market: MarketClient, task_id: int, honest: Sequence[str]) -> dict:
    """Whether every scored update's consensus stayed within the honest validators' normalized
    scores for it, in every round (what the stake-weighted median promises against a minority)."""
    breaches = []
    checked = 0
    for round_no in range(1, market.task(task_id).current_round + 1):
        ledger = read_round(market, task_id, round_no)
        if not ledger.settled_trainers:
            continue
        validators = ledger.validators
        vectors = [ledger.score_reveals[v] for v in validators]
        normalized = normalized_scores(trainers=ledger.trainers, validators=validators, scores=vectors)
        for i, trainer in enumerate(ledger.trainers):
            settled = ledger.settled_trainers[trainer]
            if settled.outcome not in (Outcome.ACCEPTED, Outcome.WORTHLESS):
                continue
            views = [
                normalized[v][i] for v, validator in enumerate(validators)
                if validator in honest and vectors[v][i] != UNAVAILABLE and validator != trainer
            ]  # fmt: skip
            if not views:
                continue
            checked += 1
            if not min(views) <= settled.consensus <= max(views):
                breaches.append({"round": round_no, "trainer": trainer, "consensus": settled.consensus})
    return {"updates_checked": checked, "held": not breaches, "breaches": breaches}


def watch_rounds(
    market: MarketClient,
    store: HttpStore,
    spec: TaskSpec,
    test: LocalData,
    task_id: int,
    procs,
    *,
    deadline: float,
) -> list[dict]:
    """Prints each round once settled: accuracy of its published model on the demo's test split,
    and the contract's outcomes. Returns the rounds once the task ended and its last model is out."""
    seen: dict[int, dict] = {}
    last = time.monotonic()
    model = build_model(spec)
    console.print(f"{'round':>5} {'accuracy':>9} {'loss':>8} {'accepted':>9} {'rejected':>9} {'seconds':>8}")
    while True:
        info = market.task(task_id)
        for round_no in range(1, info.current_round + 1):
            if round_no in seen:
                continue
            round_info = market.round(task_id, round_no)
            if not round_info.closed or (not round_info.aborted and not round_info.model_published):
                continue
            outcomes = [
                e.args["outcome"] for e in market.iter_events("TrainerSettled", task_id=task_id)
                if e.args["round"] == round_no
            ]  # fmt: skip
            accuracy = loss = None
            if round_info.model_published:
                model.load_state_dict(fetch_model(store, spec, round_info.new_model_hash))
                result = evaluate(model, test)
                accuracy, loss = result.accuracy, result.loss
            now = time.monotonic()
            row = {
                "round": round_no, "status": "aborted" if round_info.aborted else "finalized",
                "accuracy": accuracy, "loss": loss,
                "accepted": sum(1 for o in outcomes if o == Outcome.ACCEPTED),
                "rejected": sum(1 for o in outcomes if o == Outcome.REJECTED),
                "seconds": round(now - last, 2), "model_cid": cid_from_digest(round_info.new_model_hash)
                if round_info.model_published else None,
            }  # fmt: skip
            last = now
            seen[round_no] = row
            acc = f"{accuracy:.4f}" if accuracy is not None else row["status"]
            shown_loss = f"{loss:.4f}" if loss is not None else "-"
            console.print(
                f"{round_no:>5} {acc:>9} {shown_loss:>8} {row['accepted']:>9} {row['rejected']:>9} {row['seconds']:>8}"
            )
        if info.status != TaskStatus.OPEN and len(seen) >= info.current_round:
            return [seen[k] for k in sorted(seen)]
        if time.monotonic() > deadline:
            raise TimeoutError("the demo ran past --timeout; see the logs in the work dir")
        if all(p.poll() is not None for p in procs) and info.status == TaskStatus.OPEN:
            raise RuntimeError("every node process exited while the task is still open; see their logs")
        time.sleep(0.5)


def print_report(report: dict) -> None:
    left = ("address", "role", "slashed (why)")
    table = Table(title="trainers (FMT)")
    for column in ("address", "role", "samples", "stake", "earned", "claimed", "slashed (why)", "gas"):
        table.add_column(column, justify="left" if column in left else "right")
    for t in report["trainers"]:
        table.add_row(t["address"], t["role"], str(t["samples"]), f"{t['stake']:.0f}", f"{t['earned']:.2f}",
                      f"{t['claimed']:.2f}", slashed_why(t), f"{t['gas']:,}")  # fmt: skip
    console.print(table)
    validators = Table(title="validators (FMT)")
    for column in ("address", "role", "stake", "agreement", "earned", "slashed (why)"):
        validators.add_column(column, justify="left" if column in left else "right")
    for v in report["validators"]:
        agreement = f"{v['agreement']:.3f}" if v["agreement"] is not None else "-"
        validators.add_row(v["address"], v["role"], f"{v['stake']:.0f}", agreement, f"{v['earned']:.2f}",
                           slashed_why(v))  # fmt: skip
    console.print(validators)
    console.print(f"fedmarket verify exited with {report['verify_exit_code']}")
    guarantee = report["median_guarantee"]
    console.print(
        f"consensus within the honest validators' scores for all {guarantee['updates_checked']} scored updates: "
        + ("yes" if guarantee["held"] else f"[red]no: {guarantee['breaches']}[/red]")
    )
    console.print(
        f"federated accuracy {report['federated_accuracy']:.4f} vs centralized {report['centralized_accuracy']:.4f}; "
        f"market now holds {report['market_balance']:.2f} FMT; wall time {report['wall_seconds']} s"
    )
    box = report["machine"]
    console.print(
        f"started {report['started_at']} on {box['cpus']} CPUs (load {box['load_average_at_start']}), "
        f"{box['platform']}; rerun: {report['command']}",
        soft_wrap=True,
    )


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)  # the baseline shares two cores with the coordinator and the trainers
    temporary = args.workdir is None
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="fedmarket-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        report = run_demo(args, workdir)
    except KeyboardInterrupt:
        console.print(f"[yellow]interrupted; every process was stopped; logs kept in {workdir}[/yellow]")
        return 130
    except Exception as exc:  # the logs are what explains it: keep them, say where
        traceback.print_exc()
        console.print(f"[red]the demo failed: {exc}[/red]\nlogs kept in {workdir}", soft_wrap=True)
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    console.print(f"report written to {args.out}")
    if temporary:
        shutil.rmtree(workdir, ignore_errors=True)
        console.print(f"logs in {workdir} deleted (pass --workdir DIR to keep them)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
