"""`make fairness`: does pay follow value for honest trainers?

Every case plays tasks on the in-process market of :mod:`bench.simulation` (IN-PROCESS: a real
Anvil devnet, the real contracts, consensus, payouts and slashing, the real coordinator, and the
validators' real scoring rule on the demo's three held-out splits; the nodes are simulated in
this process). The task is the demo's spec with its default aggregation and scoring.

    a  two trainers holding identical data earn within 10% of each other
    b  a trainer with twice the data (same distribution) earns more than one with the base amount
    c  a trainer with half its labels flipped earns less than a clean one of the same size
    d  the demo's largest honest trainer is paid (a positive consensus value) in most rounds
    e  over SEEDS seeds and Dirichlet alpha in ALPHAS, no honest trainer is slashed; the copy and
       norm screens' false-positive rate on these honest non-IID updates is reported with it

a-c share one task: five trainers on IID draws from the demo's training pool (base size
``--base`` samples): two with the same draw, one with twice as much, one clean and one with half
its labels flipped. d is the demo's own split (5 trainers, Dirichlet 0.5, seed 0, 10 rounds).

Writes reports/fairness.json and prints each case with the earnings it compared:

    python bench/fairness.py [--cases a b c d e] [--seeds 20] [--rounds 5] [--jobs 2]
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

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from bench.simulation import RunResult, SimulatedMarket, play_task  # noqa: E402
from fedmarket.datasets import load_dataset  # noqa: E402
from fedmarket.deploy import ONE_TOKEN  # noqa: E402
from fedmarket.devnet import Anvil  # noqa: E402
from fedmarket.display import package_version  # noqa: E402
from fedmarket.learning import LocalData  # noqa: E402
from scripts.demo import split_data  # noqa: E402
from scripts.post_task import digit_task_spec  # noqa: E402

REPORT_PATH = REPO_ROOT / "reports" / "fairness.json"
ALPHAS = (0.1, 0.5, 1.0)
DEMO_TRAINERS, VALIDATORS = 5, 3
SCREEN_REASONS = ("copy", "norm_outlier")
MODE = (
    "IN-PROCESS: one Anvil devnet per worker, the real contracts and coordinator code, simulated SDK "
    "trainers and validators in one Python process"
)


def tokens(amount: int) -> float:
    return round(amount / ONE_TOKEN, 2)


def flip_half(data: LocalData, *, seed: int, num_classes: int = 10) -> LocalData:
    """`data` with a random half of its labels replaced by ``num_classes - 1 - y``."""
    flipped = np.random.default_rng(seed).permutation(len(data))[: len(data) // 2]
    y = data.y.copy()
    y[flipped] = num_classes - 1 - y[flipped]
    return LocalData(data.X, y)


def sized_trainers(pool: LocalData, *, base: int, seed: int) -> list[LocalData]:
    """Cases a-c: [same, same, double, base, base with half its labels flipped], IID draws."""
    order = np.random.default_rng(seed).permutation(len(pool))
    cuts = np.cumsum([base, 2 * base, base, base])
    same, double, clean, dirty = np.split(order[: cuts[-1]], cuts[:-1])
    part = lambda idx: LocalData(pool.X[idx], pool.y[idx])  # noqa: E731
    return [part(same), part(same), part(double), part(clean), flip_half(part(dirty), seed=seed)]


def play(job: tuple[argparse.Namespace, str, float, int]) -> tuple[str, float, int, RunResult]:
    """One task: ("sized", _, seed), ("demo", alpha, seed) or ("sweep", alpha, seed)."""
    args, kind, alpha, seed = job
    torch.set_num_threads(1)
    X, y = load_dataset("mnist")
    split = split_data(X, y, trainers=DEMO_TRAINERS, validators=VALIDATORS, alpha=alpha, seed=seed)
    spec = digit_task_spec("mnist", X.shape[1], seed=seed)
    trainers = sized_trainers(split.pool, base=args.base, seed=seed) if kind == "sized" else split.trainers
    rounds = {"sized": args.rounds, "demo": args.demo_rounds, "sweep": args.sweep_rounds}[kind]
    with tempfile.TemporaryDirectory(prefix="fedmarket-fairness-") as tmp, Anvil() as anvil:
        from web3 import Web3

        market = SimulatedMarket(
            Web3(Web3.HTTPProvider(anvil.url)), Path(tmp), trainers=len(trainers), validators=VALIDATORS
        )
        result = play_task(
            market, spec, name=f"{kind} alpha={alpha} seed={seed}", trainer_data=trainers,
            validator_data=split.validators, test=split.test, rounds=rounds, seed=seed,
        )  # fmt: skip
    return kind, alpha, seed, result


def case_a(sized: RunResult) -> dict:
    first, second = sized.earned.get("0", 0), sized.earned.get("1", 0)
    gap = abs(first - second) / max(first, second, 1)
    return {
        "case": "a",
        "holds": gap <= 0.10,
        "identical_data_earned": [tokens(first), tokens(second)],
        "gap": round(gap, 4),
    }


def case_b(sized: RunResult) -> dict:
    double, base = sized.earned.get("2", 0), sized.earned.get("3", 0)
    return {
        "case": "b",
        "holds": double > base,
        "double_data_earned": tokens(double),
        "base_data_earned": tokens(base),
    }


def case_c(sized: RunResult) -> dict:
    dirty, clean = sized.earned.get("4", 0), sized.earned.get("3", 0)
    return {
        "case": "c",
        "holds": dirty < clean,
        "half_flipped_earned": tokens(dirty),
        "clean_same_size_earned": tokens(clean),
    }


def case_d(demo: RunResult, sizes: list[int]) -> dict:
    largest = str(int(np.argmax(sizes)))
    rounds = len(demo.accuracy)
    paid = demo.paid_rounds[largest]
    return {
        "case": "d", "holds": paid > rounds / 2, "largest_trainer": int(largest), "samples": max(sizes),
        "rounds_paid": paid, "rounds": rounds, "earned": tokens(demo.earned.get(largest, 0)),
        "every_trainer_earned": {k: tokens(v) for k, v in sorted(demo.earned.items())},
    }  # fmt: skip


def case_e(sweep: list[tuple[float, int, RunResult]]) -> dict:
    slashed = sum(sum(r.slashes.values()) for _, _, r in sweep)
    honest_updates = sum(sum(sum(c.values()) for c in r.outcomes.values()) for _, _, r in sweep)
    screened: Counter[str] = Counter()
    for _, _, run in sweep:
        for reasons in run.reasons.values():
            screened.update({k: v for k, v in reasons.items() if k in SCREEN_REASONS})
    scored = honest_updates * VALIDATORS  # every validator scores every update
    return {
        "case": "e",
        "holds": slashed == 0,
        "honest_slashed": slashed,
        "runs": len(sweep),
        "honest_updates": honest_updates,
        "screen_false_positives": dict(screened),
        "screen_false_positive_rate": round(sum(screened.values()) / max(scored, 1), 5),
        "per_run": [
            {
                "alpha": a,
                "seed": s,
                "slashed": sum(r.slashes.values()),
                "outcomes": dict(sum(r.outcomes.values(), Counter())),
            }
            for a, s, r in sweep
        ],
    }


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cases", nargs="+", choices=list("abcde"), default=list("abcde"))
    parser.add_argument("--seeds", type=int, default=20, help="seeds per alpha in case e")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of the a-c task")
    parser.add_argument("--demo-rounds", type=int, default=10, help="rounds of case d (the demo's)")
    parser.add_argument("--sweep-rounds", type=int, default=3, help="rounds of each case-e task")
    parser.add_argument("--base", type=int, default=300, help="samples of the base trainer in a-c")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPORT_PATH)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    jobs = []
    if {"a", "b", "c"} & set(args.cases):
        jobs.append((args, "sized", 0.5, 0))
    if "d" in args.cases:
        jobs.append((args, "demo", 0.5, 0))
    if "e" in args.cases:
        jobs += [(args, "sweep", alpha, seed) for alpha in ALPHAS for seed in range(args.seeds)]
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        results = list(pool.map(play, jobs))
    by_kind = {kind: result for kind, _, _, result in results if kind != "sweep"}
    cases = []
    if "sized" in by_kind:
        cases += [
            f(by_kind["sized"]) for f, c in ((case_a, "a"), (case_b, "b"), (case_c, "c")) if c in args.cases
        ]
    if "demo" in by_kind:
        X, y = load_dataset("mnist")
        sizes = [
            len(t)
            for t in split_data(
                X, y, trainers=DEMO_TRAINERS, validators=VALIDATORS, alpha=0.5, seed=0
            ).trainers
        ]
        cases.append(case_d(by_kind["demo"], sizes))
    if "e" in args.cases:
        cases.append(case_e([(a, s, r) for kind, a, s, r in results if kind == "sweep"]))
    report = {
        "mode": MODE,
        "command": "python bench/fairness.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "fedmarket_version": package_version(),
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
        "cases": cases,
        "all_hold": all(c["holds"] for c in cases),
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print()
    for case in cases:
        shown = {k: v for k, v in case.items() if k not in ("case", "holds", "per_run")}
        print(f"case {case['case']}: {'holds' if case['holds'] else 'FAILS'}  {json.dumps(shown)}")
    print(f"\nwrote {args.out} in {report['wall_seconds']:.0f} s")
    return 0 if report["all_hold"] else 1


if __name__ == "__main__":
    sys.exit(main())
