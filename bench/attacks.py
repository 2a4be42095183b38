"""`make attacks`: what each attack earns, what it costs the honest trainers and the model.

For the clean run and every attack in :mod:`trainer.attacks` this plays one task on the
in-process market of :mod:`bench.simulation` (IN-PROCESS: a real Anvil devnet, the real
contracts, consensus, payouts and slashing, the real coordinator publishing each round and the
validators' real scoring rule on their own held-out splits; the nodes are simulated, one after
another, in this process). The data is the demo's (:func:`scripts.demo.split_data`): the MNIST
subset, 10 trainers with a Dirichlet(0.5) label skew, 3 validators; the task is the demo's spec
with its default aggregation and scoring. The last 3 trainers (30%) attack, colluding: each knows
the group's honest deltas of the round, the last published aggregate and the updates revealed in
the last round, and nothing of this round's honest updates (commit-reveal).

``sybil`` gives the three attacking identities one data set, the last trainer's, split in three.
Its yardstick, ``single_identity_earned``, is what one honest identity holding all of that data
earns in a run with the same seven other trainers (``sybil-baseline``); the clean run, where the
other two identities hold data of their own, is reported beside it (``clean_run_holder_earned``).

``clean_accuracy`` is the issue's yardstick (all ten trainers honest). An attacker rejected in
round 1 takes its own data out of the model too, so ``honest_only_accuracy`` (the seven honest
trainers alone, ``honest-only``) says how much of a gap is the lost data rather than the attack.

Writes reports/attacks.json and prints the table:

    python bench/attacks.py [--attacks sign-flip boost ...] [--rounds 10] [--seed 0] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from bench.simulation import RunResult, SimulatedMarket, play_task  # noqa: E402
from fedmarket.datasets import load_dataset  # noqa: E402
from fedmarket.deploy import ONE_TOKEN  # noqa: E402
from fedmarket.devnet import Anvil  # noqa: E402
from fedmarket.display import package_version  # noqa: E402
from scripts.demo import split_data  # noqa: E402
from scripts.post_task import digit_task_spec  # noqa: E402
from trainer.attacks import ATTACKS, attack, shards  # noqa: E402

REPORT_PATH = REPO_ROOT / "reports" / "attacks.json"
SUITE = tuple(a for a in ATTACKS if a != "free-rider")  # free-rider is zero's older name
BASELINES = ("clean", "honest-only", "sybil-baseline")  # runs without an attacker
MODE = (
    "IN-PROCESS: one Anvil devnet, the real contracts and coordinator code, simulated SDK trainers and "
    "validators in one Python process, one after another"
)


def fmt_tokens(amount: int) -> float:
    return round(amount / ONE_TOKEN, 2)


class AttackSuite:
    """The demo's data and spec on one devnet, played clean, as a Sybil baseline or attacked."""

    def __init__(self, args: argparse.Namespace, w3, workdir: Path, *, runs: int) -> None:
        self.args = args
        X, y = load_dataset("mnist")
        self.split = split_data(
            X, y, trainers=args.trainers, validators=args.validators, alpha=args.alpha, seed=args.seed
        )
        self.market = SimulatedMarket(
            w3, workdir, trainers=args.trainers, validators=args.validators, tasks=runs
        )
        self.spec = digit_task_spec("mnist", X.shape[1], local_epochs=args.local_epochs, seed=args.seed)
        self.attackers = list(range(args.trainers - args.attackers, args.trainers))

    def play(self, name: str) -> RunResult:
        """Play `name`: "clean", "sybil-baseline" or an attack."""
        datasets = list(self.split.trainers)
        mode = None if name in BASELINES else attack(name, seed=self.args.seed)
        if name == "sybil-baseline":
            datasets = datasets[: self.attackers[0]] + [datasets[-1]]
        elif name == "honest-only":  # what the model can learn without the attackers' data
            datasets = datasets[: self.attackers[0]]
        elif name == "sybil":
            datasets = datasets[: self.attackers[0]] + shards(datasets[-1], len(self.attackers))
        return play_task(
            self.market, self.spec, name=name, trainer_data=datasets, validator_data=self.split.validators,
            test=self.split.test, rounds=self.args.rounds, seed=self.args.seed,
            attack=mode, attackers=set(self.attackers) if mode is not None else set(),
        )  # fmt: skip


def summarize(
    name: str,
    run: RunResult,
    clean: RunResult,
    honest_only: RunResult,
    baseline: RunResult,
    attackers: list[int],
) -> dict:
    attacking = {str(i) for i in attackers}
    honest = [k for k in run.earned if k not in attacking]
    row = {
        "attack": name,
        "attackers_earned": fmt_tokens(sum(run.earned.get(k, 0) for k in attacking)),
        "honest_slashed": sum(run.slashes[k] for k in honest),
        "honest_earned": fmt_tokens(sum(run.earned[k] for k in honest)),
        "accuracy": round(run.accuracy[-1], 4),
        "clean_accuracy": round(clean.accuracy[-1], 4),
        "honest_only_accuracy": round(honest_only.accuracy[-1], 4),
        "attacker_outcomes": dict(sum((run.outcomes.get(k, Counter()) for k in attacking), Counter())),
        "attacker_flags": dict(sum((run.reasons.get(k, Counter()) for k in attacking), Counter())),
        "honest_flags": dict(sum((run.reasons.get(k, Counter()) for k in honest), Counter())),
        "earned": {k: fmt_tokens(v) for k, v in sorted(run.earned.items(), key=lambda kv: int(kv[0]))},
        "accuracy_per_round": [round(a, 4) for a in run.accuracy],
        "seconds": round(run.seconds, 1),
    }
    if name == "sybil":
        row["single_identity_earned"] = fmt_tokens(baseline.earned[str(attackers[0])])
        row["clean_run_holder_earned"] = fmt_tokens(clean.earned[str(attackers[-1])])
    return row


def holds(row: dict) -> bool:
    """The issue's bar for one attack."""
    accurate = row["accuracy"] >= row["clean_accuracy"] - 0.01
    if row["attack"] == "sybil":
        return accurate and row["attackers_earned"] <= 1.1 * row["single_identity_earned"]
    return accurate and row["attackers_earned"] == 0 and row["honest_slashed"] == 0


def print_table(rows: list[dict]) -> None:
    print(
        f"\n{'attack':<11} {'attackers':>10} {'honest':>10} {'honest':>8} {'accuracy':>9} {'clean':>7}  holds  flags"
    )
    print(f"{'':<11} {'earned':>10} {'earned':>10} {'slashed':>8}")
    for r in rows:
        flags = ", ".join(f"{k} {v}" for k, v in r["attacker_flags"].items()) or "-"
        extra = f" (single identity {r['single_identity_earned']:.2f})" if r["attack"] == "sybil" else ""
        print(
            f"{r['attack']:<11} {r['attackers_earned']:>10.2f} {r['honest_earned']:>10.2f} {r['honest_slashed']:>8}"
            f" {r['accuracy']:>9.4f} {r['clean_accuracy']:>7.4f} {r['honest_only_accuracy']:>7.4f}"
            f"  {'yes' if holds(r) else 'NO':<5}  {flags}{extra}"
        )


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--attacks", nargs="+", choices=SUITE, default=list(SUITE))
    parser.add_argument("--trainers", type=int, default=10)
    parser.add_argument("--attackers", type=int, default=3)
    parser.add_argument("--validators", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--local-epochs", type=int, default=2)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPORT_PATH)
    parser.add_argument("--jobs", type=int, default=2, help="runs played in parallel, each on its own devnet")
    args = parser.parse_args(argv)
    if not 1 <= args.attackers < args.trainers / 2:
        parser.error("--attackers must be at least 1 and a minority of --trainers")
    return args


def play_runs(args: argparse.Namespace, names: list[str]) -> list[RunResult]:
    """Play `names` one after another on a devnet of their own (one worker of ``--jobs``)."""
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="fedmarket-attacks-") as tmp, Anvil() as anvil:
        from web3 import Web3

        suite = AttackSuite(args, Web3(Web3.HTTPProvider(anvil.url)), Path(tmp), runs=len(names))
        return [suite.play(name) for name in names]


def main(argv=None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    names = ["clean", "honest-only", *(["sybil-baseline"] if "sybil" in args.attacks else []), *args.attacks]
    batches = [names[i :: args.jobs] for i in range(args.jobs)]
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        played = {r.name: r for batch in pool.map(play_runs, [args] * args.jobs, batches) for r in batch}
    clean, attackers = played["clean"], list(range(args.trainers - args.attackers, args.trainers))
    baseline = played.get("sybil-baseline", clean)
    rows = [
        summarize(name, played[name], clean, played["honest-only"], baseline, attackers)
        for name in args.attacks
    ]
    spec = digit_task_spec("mnist", 784, local_epochs=args.local_epochs, seed=args.seed)
    report = {
        "mode": MODE,
        "command": "python bench/attacks.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "fedmarket_version": package_version(),
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
        "setup": {
            "dataset": "mnist",
            "trainers": args.trainers,
            "attackers": attackers,
            "validators": args.validators,
            "rounds": args.rounds,
            "alpha": args.alpha,
            "seed": args.seed,
            "aggregation": spec.aggregation.model_dump(),
            "scoring": spec.scoring.model_dump(),
        },  # fmt: skip
        "clean": {
            "accuracy_per_round": [round(a, 4) for a in clean.accuracy],
            "earned": {k: fmt_tokens(v) for k, v in clean.earned.items()},
        },
        "attacks": rows,
        "all_hold": all(holds(r) for r in rows),
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print_table(rows)
    print(f"\nwrote {args.out} in {report['wall_seconds']:.0f} s")
    return 0 if report["all_hold"] else 1


if __name__ == "__main__":
    sys.exit(main())
