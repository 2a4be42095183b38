"""`make demo`: the whole market on one machine, end to end.

Starts Anvil, deploys the contracts, starts the coordinator (a subprocess), funds a task owner and
trainers from dev accounts, splits a real data set (20% stays with the owner as validation data,
the rest goes to the trainers with a Dirichlet(alpha) label skew), posts the task through the
HTTP API with signatures made here, uploads the validation split, runs every trainer as its own
`fedmarket-trainer run` process, and prints per-round and per-trainer tables next to a centrally
trained baseline. Writes reports/demo.json. Every process it started is stopped at the end, on
Ctrl-C and on failure.

    python scripts/demo.py --trainers 5 --rounds 10 --dataset mnist [--attacker sign-flip]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from fedmarket.chain import MarketClient  # noqa: E402
from fedmarket.client import CoordinatorClient  # noqa: E402
from fedmarket.contracts import compile_contracts  # noqa: E402
from fedmarket.datasets import DATASETS, dirichlet_split, load_dataset, save_npz, train_test_split  # noqa: E402
from fedmarket.deploy import ONE_TOKEN, deploy_market, fund_accounts  # noqa: E402
from fedmarket.devnet import DEVNET_BLOCK_TIME, Anvil, dev_account, free_port  # noqa: E402
from fedmarket.learning import LocalData, evaluate, train  # noqa: E402
from fedmarket.models import build_model  # noqa: E402
from fedmarket.processes import COORDINATOR_COMMAND, ProcessGroup, wait_until_healthy  # noqa: E402
from fedmarket.protocol import TaskStatus, TaskTerms  # noqa: E402
from fedmarket.spec import TaskSpec  # noqa: E402
from scripts.post_task import digit_task_spec  # noqa: E402
from trainer.attacks import ATTACKS  # noqa: E402

console = Console()
OWNER_INDEX, COORDINATOR_INDEX, FIRST_TRAINER_INDEX = 1, 2, 4  # Anvil dev accounts
REWARD_POOL = 10_000 * ONE_TOKEN
MIN_STAKE = 100 * ONE_TOKEN
TRAINER_FUNDS = 1_000 * ONE_TOKEN


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trainers", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--dataset", choices=DATASETS, default="mnist")
    parser.add_argument("--attacker", choices=ATTACKS, default=None, help="make the last trainer malicious")
    parser.add_argument("--alpha", type=float, default=0.5, help="Dirichlet label-skew concentration")
    parser.add_argument("--local-epochs", type=int, default=2)
    parser.add_argument(
        "--dp-noise", type=float, default=None, help="trainers use DP-SGD with this noise multiplier"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "reports" / "demo.json")
    parser.add_argument(
        "--workdir", type=Path, default=None, help="keep logs and state here (default: a temp dir)"
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="give up after this many seconds")
    args = parser.parse_args(argv)
    if args.trainers < 2:
        parser.error("--trainers must be at least 2")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    return args


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
    processes = ProcessGroup()
    with ExitStack() as stack:
        console.rule(
            f"fedmarket demo: {args.trainers} trainers, {args.rounds} rounds, {args.dataset}"
            + (f", attacker {args.attacker}" if args.attacker else "")
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
        deployment = deploy_market(w3, deployer, token=artifacts["FMToken"], market=artifacts["TaskMarket"])
        deployment_file = workdir / "deployments" / "local.json"
        deployment.write(deployment_file)
        fund_accounts(w3, deployment, deployer, [owner.address], tokens=REWARD_POOL)
        fund_accounts(w3, deployment, deployer, [t.address for t in trainers], tokens=TRAINER_FUNDS)
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

        # Data: the owner keeps 20% for validation; the rest is split non-IID among trainers.
        X, y = load_dataset(args.dataset)
        X_train, X_val, y_train, y_val = train_test_split(X, y, test_fraction=0.2, seed=args.seed)
        parts = dirichlet_split(y_train, parts=args.trainers, alpha=args.alpha, seed=args.seed, min_size=20)
        data_files = [
            save_npz(workdir / "data" / f"trainer-{i}.npz", X_train[p], y_train[p])
            for i, p in enumerate(parts)
        ]

        spec = digit_task_spec(
            args.dataset, X.shape[1], local_epochs=args.local_epochs, seed=args.seed, dp_noise=args.dp_noise
        )
        terms = TaskTerms(
            spec_hash=spec.spec_hash(), coordinator=coordinator_account.address, rounds=args.rounds,
            min_trainers=max(1, args.trainers // 2), max_trainers=args.trainers, slash_bps=5000,
            commit_window=120, reveal_window=60, reward_pool=REWARD_POOL, min_stake=MIN_STAKE,
        )  # fmt: skip
        market = MarketClient.connect(anvil.url, deployment)
        api = stack.enter_context(CoordinatorClient(api_url))
        posted = api.post_task(spec=spec, terms=terms, owner_key=owner.key, market=market)
        task_id = posted["task_id"]
        api.upload_validation_data(task_id, X_val, y_val, owner_key=owner.key, market=market)
        console.print(
            f"task {task_id} posted through the API (spec {posted['spec_cid']}), validation split uploaded"
        )

        roles = ["honest"] * args.trainers
        if args.attacker:
            roles[-1] = "attacker"
        trainer_procs = []
        for i, (account, data_file) in enumerate(zip(trainers, data_files, strict=True)):
            command = [
                sys.executable, "-m", "trainer.cli", "run", str(task_id), "--data", str(data_file),
                "--state-dir", str(workdir / "trainer-state"), "--poll", "0.2",
            ]  # fmt: skip
            if roles[i] == "attacker":
                command += ["--attacker", args.attacker]
            trainer_env = {**env, "FEDMARKET_TRAINER_KEY": account.key.hex()}
            trainer_procs.append(processes.start(command, log=workdir / f"trainer-{i}.log", env=trainer_env))
        console.print(f"{args.trainers} trainer processes started (logs in {workdir})")

        rounds = watch_rounds(api, market, task_id, trainer_procs, deadline=started + args.timeout)
        for proc, account in zip(trainer_procs, trainers, strict=True):
            remaining = max(1.0, started + args.timeout - time.monotonic())
            if proc.wait(remaining) != 0:
                console.print(f"[yellow]trainer {account.address} exited with {proc.returncode}[/yellow]")

        per_trainer = []
        for i, account in enumerate(trainers):
            summary_file = (
                workdir / "trainer-state" / account.address.lower() / f"task-{task_id}" / "summary.json"
            )
            summary = json.loads(summary_file.read_text()) if summary_file.exists() else {}
            rewards = api.rewards(task_id, account.address)
            per_trainer.append({
                "address": account.address,
                "role": roles[i],
                "samples": int(len(parts[i])),
                "stake": MIN_STAKE / ONE_TOKEN,
                "stake_returned": summary.get("stake_returned", 0) / ONE_TOKEN,
                "earned": int(rewards["cumulative"]) / ONE_TOKEN,
                "claimed": market.claimed(task_id, account.address) / ONE_TOKEN,
                "gas": summary.get("gas_used", 0),
                "epsilon": summary.get("epsilon"),
            })  # fmt: skip

        union = LocalData(X_train.astype(np.float32), y_train.astype(np.int64))
        validation = LocalData(X_val.astype(np.float32), y_val.astype(np.int64))
        baseline = centralized_accuracy(
            spec, union, validation, epochs=args.rounds * args.local_epochs, seed=args.seed
        )
        report = {
            "task_id": task_id,
            "dataset": args.dataset,
            "attacker": args.attacker,
            "rounds": rounds,
            "trainers": per_trainer,
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


def watch_rounds(
    api: CoordinatorClient, market: MarketClient, task_id: int, procs, *, deadline: float
) -> list[dict]:
    """Prints each round as the coordinator settles it; returns the rounds once the task ended."""
    seen: dict[int, dict] = {}
    last = time.monotonic()
    console.print(f"{'round':>5} {'accuracy':>9} {'loss':>8} {'accepted':>9} {'rejected':>9} {'seconds':>8}")
    while True:
        for item in api.task(task_id)["rounds"]:
            if item["status"] in ("finalized", "aborted") and item["round"] not in seen:
                metrics = item["metrics"] or {}
                now = time.monotonic()
                row = {
                    "round": item["round"],
                    "accuracy": metrics.get("accuracy"),
                    "loss": metrics.get("loss"),
                    "accepted": metrics.get("accepted", 0),
                    "rejected": metrics.get("rejected", 0),
                    "seconds": round(now - last, 2),
                }
                last = now
                seen[item["round"]] = row
                acc = f"{row['accuracy']:.4f}" if row["accuracy"] is not None else item["status"]
                loss = f"{row['loss']:.4f}" if row["loss"] is not None else "-"
                console.print(
                    f"{row['round']:>5} {acc:>9} {loss:>8} {row['accepted']:>9} {row['rejected']:>9} {row['seconds']:>8}"
                )
        if market.task(task_id).status != TaskStatus.OPEN and len(seen) >= market.task(task_id).current_round:
            return [seen[k] for k in sorted(seen)]
        if time.monotonic() > deadline:
            raise TimeoutError("the demo ran past --timeout; see the logs in the work dir")
        if all(p.poll() is not None for p in procs) and market.task(task_id).status == TaskStatus.OPEN:
            raise RuntimeError("every trainer process exited while the task is still open; see trainer logs")
        time.sleep(0.5)


def print_report(report: dict) -> None:
    table = Table(title="trainers")
    for column in ("address", "role", "samples", "stake", "earned", "claimed", "gas"):
        table.add_column(column, justify="right" if column not in ("address", "role") else "left")
    for t in report["trainers"]:
        table.add_row(t["address"], t["role"], str(t["samples"]), f"{t['stake']:.0f}", f"{t['earned']:.2f}",
                      f"{t['claimed']:.2f}", f"{t['gas']:,}")  # fmt: skip
    console.print(table)
    console.print(
        f"federated accuracy {report['federated_accuracy']:.4f} vs centralized {report['centralized_accuracy']:.4f}; "
        f"market now holds {report['market_balance']:.2f} FMT; wall time {report['wall_seconds']} s"
    )


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)  # the baseline shares two cores with the coordinator and the trainers
    with ExitStack() as stack:
        workdir = args.workdir or Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="fedmarket-demo-"))
        )
        workdir.mkdir(parents=True, exist_ok=True)
        try:
            report = run_demo(args, workdir)
        except KeyboardInterrupt:
            console.print("[yellow]interrupted; every process was stopped[/yellow]")
            return 130
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        console.print(f"report written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
