"""`make bench`: what the protocol costs per round, next to the training it coordinates.

For each number of trainers N (default 5, 20, 50) this runs one task on a real Anvil devnet with
the real coordinator code, the real SDK and V validators (default 3), **all in one process** and
one after another:

- the coordinator is a :class:`backend.orchestrator.TaskOrchestrator` over a ``DirectoryStore``
  in a temp dir and a migrated SQLite ``Database``, driven by calling ``step()`` (start the round,
  finalize it on chain, publish its aggregate) instead of its polling thread;
- each trainer is a plain loop over the SDK with its own ``MarketClient``: read the round's
  model hash, fetch and decode the global model, train a tiny MLP (digits, 64 -> 16 -> 10) for
  one epoch on its own ``--samples`` (30), encode the update, commit; then upload and reveal;
- each validator holds its own ``--validation`` split (90 samples: 3 x 90 + 50 x 30 fit in the
  1,797 digits) and, once the reveals are in, reads the round's revealers from the chain, fetches
  their updates, scores them with the real rule (:mod:`fedmarket.scoring`, leave-one-out: see make_spec),
  commits its vector and reveals it.
  Trainers and validators use the coordinator's store directly (a real node goes through the
  HTTP store API) and never poll (a real node checks the phase before acting).

Every round is timed end to end (everyone runs one after another, so the wall time is the sum of
every part, not what parallel nodes on their own machines would see) and split into:

    training     trainer local training (sum over trainers; max and mean per trainer also kept)
    chain_tx     commit + reveal (trainers), commitScores + revealScores (validators), startRound +
                 finalizeRound + publishModel (coordinator): build, estimate gas, sign, send, receipt
    chain_reads  view calls and event logs, everyone's
    storage      blob puts/gets/has, everyone's (models, updates, the new model and the report)
    codec        trainer model decode + update encode
    scoring      the validators' rule: decode and check every update, leave-one-out aggregations
                 and evaluations on their own split (sum over validators)
    aggregation  the coordinator's aggregate of the accepted updates (report timing ``aggregation``)
    other        the rest of the round: the coordinator's decoding, the round report, model builds

Scaling to keep in mind: leave-one-out evaluates a validator's split N + 1 times and aggregates
N updates N + 1 times (O(N) evaluations, O(N^2) tensor arithmetic), once per validator; the
contract's finalizeRound reads V vectors of N entries (O(N x V) gas). The first round of each
task is a warm-up (cold caches and storage slots) and is not counted; the figures are medians
over the measured rounds. Each task has one round more than is played, so no measured round is
the task's last one (whose finalizeRound also refunds the pool to the owner, a once-per-task
cost). Every update is honest and none is flagged (harm threshold at its floor), so every round
keeps all N trainers; on splits this small a few may be worthless (consensus 0: aggregated but
not paid), which the report's ``accepted_per_round`` shows.

Gas comes from the receipts; the JSON-RPC requests every client sent are counted per round too.
Absolute seconds depend on the host (on a shared 2-core machine they vary by 2x between runs);
the split between categories, the request counts and the gas are what carry over.

Writes reports/bench.json and prints the tables:

    python bench/protocol_overhead.py [--sizes 5 20 50] [--validators 3] [--rounds 3] [--samples 30]
                                      [--validation 90]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from backend.db import Database  # noqa: E402
from backend.orchestrator import StepAction, TaskOrchestrator  # noqa: E402
from bench.simulation import ChainTimer, SimulatedTrainer, SimulatedValidator, Stopwatch, TimedStore, step  # noqa: E402
from fedmarket.chain import MarketClient  # noqa: E402
from fedmarket.cid import cid_from_digest  # noqa: E402
from fedmarket.contracts import compile_contracts  # noqa: E402
from fedmarket.datasets import load_dataset  # noqa: E402
from fedmarket.deploy import ONE_TOKEN, deploy_market, fund_accounts  # noqa: E402
from fedmarket.devnet import Anvil, dev_account  # noqa: E402
from fedmarket.learning import LocalData  # noqa: E402
from fedmarket.protocol import TaskTerms  # noqa: E402
from fedmarket.report import RoundReport, SubmissionOutcome  # noqa: E402
from fedmarket.spec import TaskSpec, mlp_spec  # noqa: E402
from scripts.gas_report import TARGETS as GAS_TARGETS  # noqa: E402

REPORT_PATH = REPO_ROOT / "reports" / "bench.json"
OWNER_INDEX, COORDINATOR_INDEX, FIRST_TRAINER_INDEX = 1, 2, 4  # Anvil dev accounts, as in the demo
MIN_STAKE = 10 * ONE_TOKEN
VALIDATOR_STAKE = 20 * ONE_TOKEN
VALIDATOR_SHARE_BPS = 1_000
REWARD_POOL = 1_000 * ONE_TOKEN
TRANSACTIONS = (
    "commit", "reveal", "commitScores", "revealScores", "startRound", "finalizeRound", "publishModel",
)  # fmt: skip
COORDINATOR_TRANSACTIONS = ("startRound", "finalizeRound", "publishModel")
MODE = (
    "IN-PROCESS: one Anvil devnet, the coordinator (TaskOrchestrator.step), simulated SDK trainers and "
    "validators in one Python process, one after another"
)
CATEGORIES = ("training", "chain_tx", "chain_reads", "storage", "codec", "aggregation", "scoring", "other")


# ------------------------------------------------------------------------------------ timing


def count_rpc_requests(w3) -> Counter:
    """Counts every JSON-RPC request `w3` sends, by method (innermost middleware: what hits the wire)."""
    from web3.middleware import Web3Middleware

    counts: Counter = Counter()

    class CountRequests(Web3Middleware):
        def request_processor(self, method, params):
            counts[method] += 1
            return method, params

    w3.middleware_onion.inject(CountRequests, name="count_rpc_requests", layer=0)
    return counts


@dataclass
class RoundSample:
    """Measurements of one round."""

    wall: float
    training: list[float]  # per trainer
    scoring: list[float]  # per validator
    trainer: dict[str, float]  # stopwatch categories, all trainers together
    validator: dict[str, float]  # stopwatch categories, all validators together
    coordinator: dict[str, float]  # stopwatch categories + report timings
    start_step: float
    finalize_step: float
    publish_step: float
    accepted: int  # updates in the round's aggregate
    gas: dict[str, list[int]] = field(default_factory=dict)  # per function, one entry per transaction
    tx_seconds: dict[str, list[float]] = field(default_factory=dict)  # likewise, send to receipt
    rpc_requests: dict[str, int] = field(default_factory=dict)  # JSON-RPC method -> requests sent


def make_spec(*, seed: int) -> TaskSpec:
    return mlp_spec(
        name="bench-digits-mlp",
        description="Protocol-overhead benchmark: a tiny MLP on scikit-learn digits.",
        input_dim=64,
        num_classes=10,
        hidden=(16,),
        norm_bound=100.0,
        init_seed=seed,
        training={"local_epochs": 1, "batch_size": 32, "optimizer": "sgd", "learning_rate": 0.1},
        # No update is ever flagged harmful: every measured round keeps all N trainers. LOO (not the
        # default Shapley) keeps scoring O(N) evaluations, so these figures compare across runs.
        scoring={"method": "loo", "harm_threshold": -1e6},
    )


class Bench:
    def __init__(self, *, anvil_url: str, workdir: Path, args: argparse.Namespace) -> None:
        from web3 import Web3

        self.args = args
        self.w3 = Web3(Web3.HTTPProvider(anvil_url))
        self.rpc_requests = count_rpc_requests(self.w3)
        artifacts = compile_contracts()
        deployer = dev_account(0)
        self.deployment = deploy_market(
            self.w3, deployer, token=artifacts["FMToken"], market=artifacts["TaskMarket"]
        )
        first_validator = FIRST_TRAINER_INDEX + max(args.sizes)
        trainer_accounts = [dev_account(FIRST_TRAINER_INDEX + i) for i in range(max(args.sizes))]
        validator_accounts = [dev_account(first_validator + i) for i in range(args.validators)]
        tasks = len(args.sizes)
        owner_address = dev_account(OWNER_INDEX).address
        fund_accounts(self.w3, self.deployment, deployer, [owner_address], tokens=REWARD_POOL * tasks)
        trainer_addresses = [t.address for t in trainer_accounts]
        fund_accounts(self.w3, self.deployment, deployer, trainer_addresses, tokens=MIN_STAKE * tasks)
        validator_addresses = [v.address for v in validator_accounts]
        fund_accounts(self.w3, self.deployment, deployer, validator_addresses, tokens=VALIDATOR_STAKE * tasks)

        self.coordinator_watch, self.trainer_watch, self.validator_watch = (
            Stopwatch(),
            Stopwatch(),
            Stopwatch(),
        )
        self.store = TimedStore(workdir / "blobs", watch=self.coordinator_watch)
        self.trainer_store = TimedStore(workdir / "blobs", watch=self.trainer_watch)  # same directory
        self.validator_store = TimedStore(workdir / "blobs", watch=self.validator_watch)
        self.db = Database(f"sqlite:///{workdir / 'coordinator.db'}")
        self.db.migrate()
        self.coordinator = self._client(dev_account(COORDINATOR_INDEX), self.coordinator_watch)
        self.owner = MarketClient(self.w3, self.deployment, dev_account(OWNER_INDEX))

        # Disjoint IID shares of digits: one `validation` split per validator, then `samples` per trainer.
        X, y = load_dataset("digits")
        order = np.random.default_rng(args.seed).permutation(len(y))
        held_out = args.validation * args.validators
        needed = held_out + args.samples * len(trainer_accounts)
        if needed > len(y):
            raise SystemExit(
                f"digits has {len(y)} samples, {needed} needed: lower --samples, --validation or --validators"
            )
        self.validators = []
        for i, account in enumerate(validator_accounts):
            split = order[i * args.validation : (i + 1) * args.validation]
            client = self._client(account, self.validator_watch)
            self.validators.append(SimulatedValidator(client, LocalData(X[split], y[split])))
        self.trainers = []
        for i, account in enumerate(trainer_accounts):
            first = held_out + i * args.samples
            share = order[first : first + args.samples]
            client = self._client(account, self.trainer_watch)
            self.trainers.append(SimulatedTrainer(client, LocalData(X[share], y[share])))

    def _client(self, account, watch: Stopwatch) -> MarketClient:
        return MarketClient(self.w3, self.deployment, account, observer=ChainTimer(watch))

    def create_task(self, size: int, spec: TaskSpec) -> int:
        self.store.put(spec.to_canonical_json())
        validators = len(self.validators)
        terms = TaskTerms(
            # One round more than is played: a task's last round also refunds the pool to the
            # owner, a once-per-task cost that would skew finalizeRound's per-round gas.
            rounds=self.args.rounds + 2,
            spec_hash=spec.spec_hash(), coordinator=self.coordinator.signer,
            min_trainers=size, max_trainers=size, slash_bps=1000, commit_window=3600, reveal_window=3600,
            reward_pool=REWARD_POOL, min_stake=MIN_STAKE,
            min_validators=validators, max_validators=validators, validator_share_bps=VALIDATOR_SHARE_BPS,
            score_window=3600, score_reveal_window=3600, min_validator_stake=VALIDATOR_STAKE,
        )  # fmt: skip
        task_id = self.owner.create_task(terms).task_id
        for trainer in self.trainers[:size]:
            trainer.chain.join(task_id)
        for validator in self.validators:
            validator.chain.join_as_validator(task_id, validator.data.canonical_hash(), VALIDATOR_STAKE)
        return task_id

    def run_size(self, size: int) -> list[RoundSample]:
        spec = make_spec(seed=self.args.seed)
        task_id = self.create_task(size, spec)
        orchestrator = TaskOrchestrator(task_id=task_id, chain=self.coordinator, store=self.store, db=self.db)
        samples = []
        for round_no in range(1, self.args.rounds + 2):
            trainers = self.trainers[:size]
            sample = self.play_round(orchestrator, task_id, round_no, spec=spec, trainers=trainers)
            if round_no > 1:  # round 1 warms caches and first-time storage slots
                samples.append(sample)
            label = f"round {round_no}" + (" (warm-up)" if round_no == 1 else "")
            print(f"  N={size:<3} {label:<18} {sample.wall:6.2f} s", flush=True)
        return samples

    def play_round(
        self, orchestrator: TaskOrchestrator, task_id: int, round_no: int, *, spec: TaskSpec, trainers
    ) -> RoundSample:
        for watch in (self.coordinator_watch, self.trainer_watch, self.validator_watch):
            watch.take()
        self.rpc_requests.clear()
        clients = [t.chain for t in trainers] + [v.chain for v in self.validators] + [self.coordinator]
        sent_before = [len(client.observer.sent) for client in clients]
        round_started = time.perf_counter()

        start_step = step(orchestrator, StepAction.STARTED, round_no)
        seed = self.args.seed + 1000 * round_no
        training = [
            trainer.train_and_commit(task_id, round_no, spec=spec, store=self.trainer_store, seed=seed + i)
            for i, trainer in enumerate(trainers)
        ]
        for trainer in trainers:
            trainer.upload_and_reveal(task_id, self.trainer_store)
        scoring = [
            validator.score_and_commit(task_id, round_no, spec=spec, store=self.validator_store)
            for validator in self.validators
        ]
        for validator in self.validators:
            validator.reveal(task_id)
        finalize_step = step(orchestrator, StepAction.FINALIZED, round_no)
        publish_step = step(orchestrator, StepAction.PUBLISHED, round_no)
        wall = time.perf_counter() - round_started
        rpc_requests = dict(self.rpc_requests)

        coordinator = self.coordinator_watch.take()
        trainer_side = self.trainer_watch.take()
        validator_side = self.validator_watch.take()
        report = self.round_report(task_id, round_no)  # read after the clocks stopped
        coordinator["aggregation"] = report.timings["aggregation"]
        kept = (SubmissionOutcome.ACCEPTED, SubmissionOutcome.WORTHLESS)
        refused = {s.trainer: s.outcome.value for s in report.submissions if s.outcome not in kept}
        if refused or len(report.submissions) != len(trainers):
            raise RuntimeError(f"round {round_no}: updates refused: {refused}; the bench expects none")

        gas: dict[str, list[int]] = defaultdict(list)
        tx_seconds: dict[str, list[float]] = defaultdict(list)
        for client, before in zip(clients, sent_before, strict=True):
            for name, used, seconds in client.observer.sent[before:]:
                gas[name].append(used)
                tx_seconds[name].append(seconds)
        return RoundSample(
            wall, training, scoring, trainer_side, validator_side, coordinator, start_step, finalize_step,
            publish_step, len(report.accepted), dict(gas), dict(tx_seconds), rpc_requests=rpc_requests,
        )  # fmt: skip

    def round_report(self, task_id: int, round_no: int) -> RoundReport:
        """The round report the coordinator stored (its `timings` split the publication)."""
        report_hash = self.coordinator.round(task_id, round_no).report_hash
        return RoundReport.from_json(self.store.get(cid_from_digest(report_hash)))


# ------------------------------------------------------------------------------------ summary


def split(sample: RoundSample) -> dict[str, float]:
    """One round's wall time by category (they add up to the wall time)."""
    sides = (sample.trainer, sample.validator, sample.coordinator)
    parts = {
        "training": sum(sample.training),
        "chain_tx": sum(side.get("chain_tx", 0.0) for side in sides),
        "chain_reads": sum(side.get("chain_reads", 0.0) for side in sides),
        "storage": sum(side.get("storage", 0.0) for side in sides),
        "codec": sample.trainer.get("codec", 0.0),
        "aggregation": sample.coordinator["aggregation"],
        "scoring": sample.validator.get("scoring", 0.0),
    }
    parts["other"] = max(0.0, sample.wall - sum(parts.values()))
    return parts


def median(values) -> float:
    return float(statistics.median(values))


def summarize(size: int, samples: list[RoundSample]) -> dict:
    splits = [split(s) for s in samples]
    seconds = {k: round(median(s[k] for s in splits), 4) for k in CATEGORIES}
    wall = median(s.wall for s in samples)
    validators = len(samples[0].scoring)

    def gas_of(name: str) -> int:
        """Mean over the round's transactions (the last committer and revealer pay a little more:
        they close the phase early), median over rounds."""
        return round(median(statistics.mean(s.gas[name]) for s in samples))

    def gas_max(name: str) -> int:
        return max(max(s.gas[name]) for s in samples)

    def latency_of(name: str) -> float:
        return round(median(x for s in samples for x in s.tx_seconds[name]), 4)

    methods = {m for s in samples for m in s.rpc_requests}
    rpc = {m: round(median(s.rpc_requests.get(m, 0) for s in samples)) for m in methods}
    commit, reveal = gas_of("commit"), gas_of("reveal")
    score_commit, score_reveal = gas_of("commitScores"), gas_of("revealScores")
    coordinator_gas = {name: gas_of(name) for name in COORDINATOR_TRANSACTIONS}
    coordinator_total = sum(coordinator_gas.values())
    return {
        "trainers": size,
        "validators": validators,
        "rounds_measured": len(samples),
        "accepted_per_round": round(median(s.accepted for s in samples)),
        "round_seconds": round(wall, 4),
        "seconds": seconds,
        "overhead_seconds": round(wall - seconds["training"], 4),
        "overhead_per_trainer_seconds": round((wall - seconds["training"]) / size, 5),
        "training_per_trainer_seconds": {
            "max": round(median(max(s.training) for s in samples), 5),
            "mean": round(median(statistics.mean(s.training) for s in samples), 5),
        },
        "scoring_per_validator_seconds": {
            "max": round(median(max(s.scoring) for s in samples), 5),
            "mean": round(median(statistics.mean(s.scoring) for s in samples), 5),
        },
        "coordinator_seconds": {
            "start_step": round(median(s.start_step for s in samples), 4),
            "finalize_step": round(median(s.finalize_step for s in samples), 4),
            "publish_step": round(median(s.publish_step for s in samples), 4),
            "chain_tx": round(median(s.coordinator.get("chain_tx", 0.0) for s in samples), 4),
            "chain_reads": round(median(s.coordinator.get("chain_reads", 0.0) for s in samples), 4),
            "storage": round(median(s.coordinator.get("storage", 0.0) for s in samples), 4),
            "aggregation": round(median(s.coordinator["aggregation"] for s in samples), 4),
        },
        "gas_per_trainer_per_round": {
            "commit": commit,
            "reveal": reveal,
            "own": commit + reveal,
            "coordinator_share": round(coordinator_total / size),
            "validator_share": round(validators * (score_commit + score_reveal) / size),
            "total": commit
            + reveal
            + round((coordinator_total + validators * (score_commit + score_reveal)) / size),
            "commit_max": gas_max("commit"),
            "reveal_max": gas_max("reveal"),
        },
        "gas_per_validator_per_round": {
            "commitScores": score_commit,
            "revealScores": score_reveal,
            "own": score_commit + score_reveal,
            "commitScores_max": gas_max("commitScores"),
            "revealScores_max": gas_max("revealScores"),
        },
        "coordinator_gas_per_round": {**coordinator_gas, "total": coordinator_total},
        "tx_seconds_median": {name: latency_of(name) for name in TRANSACTIONS},
        "rpc_requests_per_round": dict(sorted(rpc.items(), key=lambda item: -item[1])),
    }


def transactions_per_round(result: dict) -> int:
    return 2 * result["trainers"] + 2 * result["validators"] + len(COORDINATOR_TRANSACTIONS)


def print_tables(results: list[dict]) -> None:
    print("\nseconds per round (median), by category; everyone runs one after another in this process")
    columns = ("round", *CATEGORIES, "overhead", "train max", "score max", "tx")
    print(f"{'N':>3} " + " ".join(f"{c:>11}" for c in columns))
    for r in results:
        s, per_trainer = r["seconds"], r["training_per_trainer_seconds"]
        cells = [r["round_seconds"], *(s[c] for c in CATEGORIES)]
        share = r["overhead_seconds"] / r["round_seconds"]
        tx = statistics.mean(r["tx_seconds_median"][name] for name in ("commit", "reveal"))
        print(
            f"{r['trainers']:>3} " + " ".join(f"{x:>11.3f}" for x in cells)
            + f" {share:>11.0%} {per_trainer['max']:>11.4f} {r['scoring_per_validator_seconds']['max']:>11.4f}"
            + f" {tx:>11.3f}"
        )  # fmt: skip
    print("(overhead: share of the round that is not training; train max: one trainer's training;")
    print(" score max: one validator's scoring; tx: median seconds of one commit or reveal, send to receipt)")
    print("\nJSON-RPC requests per round (all clients; per transaction sent)")
    for r in results:
        rpc, sent = r["rpc_requests_per_round"], transactions_per_round(r)
        top = ", ".join(f"{m} {n} ({n / sent:.1f})" for m, n in list(rpc.items())[:4])
        print(f"{r['trainers']:>3} {sum(rpc.values()):>6} requests for {sent} transactions: {top}")
    print("\ngas per round (receipts; per transaction: mean, median over rounds)")
    gas_columns = (
        "commit", "reveal", "scoreCommit", "scoreReveal", "startRound", "finalize", "publish", "per trainer",
    )  # fmt: skip
    print(f"{'N':>3} " + " ".join(f"{c:>11}" for c in gas_columns))
    for r in results:
        g, v, c = (
            r["gas_per_trainer_per_round"],
            r["gas_per_validator_per_round"],
            r["coordinator_gas_per_round"],
        )
        gas_cells = (
            g["commit"], g["reveal"], v["commitScores"], v["revealScores"],
            c["startRound"], c["finalizeRound"], c["publishModel"], g["total"],
        )  # fmt: skip
        print(f"{r['trainers']:>3} " + " ".join(f"{x:>11,}" for x in gas_cells))


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[5, 20, 50], help="numbers of trainers")
    parser.add_argument("--validators", type=int, default=3, help="validators in every task")
    parser.add_argument("--rounds", type=int, default=3, help="measured rounds per size, after a warm-up")
    parser.add_argument("--samples", type=int, default=30, help="local samples per trainer")
    parser.add_argument("--validation", type=int, default=90, help="samples in each validator's split")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPORT_PATH)
    args = parser.parse_args(argv)
    if min(args.sizes) < 1 or args.rounds < 1 or args.validators < 1:
        parser.error("--sizes, --validators and --rounds must be at least 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)  # small models on a shared host: more threads only contend
    started = time.monotonic()
    accounts = max(64, FIRST_TRAINER_INDEX + max(args.sizes) + args.validators)
    print(f"protocol overhead per round, {MODE}")
    print(f"sizes {args.sizes}: 1 warm-up + {args.rounds} measured rounds each (medians)")
    results = []
    with tempfile.TemporaryDirectory(prefix="fedmarket-bench-") as tmp, Anvil(accounts=accounts) as anvil:
        bench = Bench(anvil_url=anvil.url, workdir=Path(tmp), args=args)
        try:
            for size in args.sizes:
                results.append(summarize(size, bench.run_size(size)))
        finally:
            bench.db.dispose()
    elapsed = time.monotonic() - started
    print_tables(results)
    report = {
        "mode": MODE,
        "setup": {
            "model": "mlp 64-16-10 (digits)",
            "local_epochs": 1,
            "samples_per_trainer": args.samples,
            "validators": args.validators,
            "validation_samples_per_validator": args.validation,
            "warmup_rounds": 1,
            "measured_rounds": args.rounds,
            "statistic": "median over measured rounds",
            "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(),
            "machine": platform.machine(),
        },  # fmt: skip
        "categories": list(CATEGORIES),
        "results": results,
        "wall_seconds": round(elapsed, 1),
    }
    args.out.parent.mkdir(exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"\nscoring is leave-one-out, per validator: N + 1 evaluations of its {args.validation}-sample split "
        f"and N + 1 aggregations of N updates per round (O(N) evaluations, O(N^2) tensor arithmetic)."
    )
    for r in results:
        g = r["gas_per_trainer_per_round"]
        v = r["gas_per_validator_per_round"]
        misses = [
            f"{op} {g[f'{op}_max']:,} > {GAS_TARGETS[op]:,}"
            for op in ("commit", "reveal")
            if g[f"{op}_max"] > GAS_TARGETS[op]
        ]
        if v["commitScores_max"] > GAS_TARGETS["scoreCommit"]:
            misses.append(f"commitScores {v['commitScores_max']:,} > {GAS_TARGETS['scoreCommit']:,}")
        if misses:
            print(f"N={r['trainers']}: gas above the docs/protocol.md target: {', '.join(misses)}")
    print(f"written to {args.out} in {elapsed:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
