"""`make bench` (second part): what one validator's Shapley scoring costs per round.

For each number of updates N (default 10, 50, 200) this trains N honest updates of the demo's
model (the MNIST MLP of ``digit_task_spec``, one round from its seeded initial weights) on N
disjoint IID shares of the demo's training pool, and times :func:`fedmarket.scoring.score_round`
:func:`fedmarket.scoring.shapley_values` under the demo spec's default scoring (exact up to 8
updates, else truncated Monte-Carlo bounded by ``scoring.max_evaluations`` model evaluations) on
one validator's held-out split (the demo's first), median of ``--repeats`` runs, and the round's
copy and norm screen (:func:`fedmarket.scoring.screen_updates`) beside it.

Adds a ``shapley`` section to reports/bench.json (the protocol-overhead figures stay) and prints:

    python bench/shapley_cost.py [--sizes 10 50 200] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from fedmarket.cid import digest_of  # noqa: E402
from fedmarket.codec import apply_delta, decode_update, encode_update, state_delta  # noqa: E402
from fedmarket.datasets import load_dataset  # noqa: E402
from fedmarket.learning import LocalData, train  # noqa: E402
from fedmarket.models import build_model  # noqa: E402
from fedmarket.scoring import Coalitions, Revealed, losses_on, round_seed, screen_updates, shapley_values  # noqa: E402
from fedmarket.spec import TaskSpec  # noqa: E402
from scripts.demo import split_data  # noqa: E402
from scripts.post_task import digit_task_spec  # noqa: E402

REPORT_PATH = REPO_ROOT / "reports" / "bench.json"
TASK, ROUND = 1, 1


def honest_updates(n: int, *, seed: int) -> tuple[list[Revealed], dict, TaskSpec, LocalData]:
    X, y = load_dataset("mnist")
    split = split_data(X, y, trainers=5, validators=3, alpha=0.5, seed=seed)
    spec = digit_task_spec("mnist", X.shape[1], seed=seed)
    model = build_model(spec)
    global_state = {k: v.clone() for k, v in model.state_dict().items()}
    shares = np.array_split(np.random.default_rng(seed).permutation(len(split.pool)), n)
    revealed = []
    for i, share in enumerate(shares):
        local = build_model(spec)
        local.load_state_dict(global_state)
        result = train(
            local, LocalData(split.pool.X[share], split.pool.y[share]), spec.training, seed=seed + i
        )
        trainer = f"0x{i + 1:040x}"
        blob = encode_update(
            state_delta(local.state_dict(), global_state), task_id=TASK, round=ROUND, trainer=trainer,
            num_samples=result.num_samples,
        )  # fmt: skip
        revealed.append(Revealed(trainer, digest_of(blob), blob))
    return revealed, global_state, spec, split.validators[0]


def measure(n: int, *, repeats: int, seed: int) -> dict:
    revealed, global_state, spec, validation = honest_updates(n, seed=seed)
    model = build_model(spec)
    losses_of_state = losses_on(model, validation)
    deltas, samples = [], []
    for item in revealed:
        assert item.data is not None
        update = decode_update(item.data, model=global_state)
        deltas.append({k: t.to(torch.float32) for k, t in update.delta.items()})
        samples.append(update.num_samples)
    trainers = [item.trainer for item in revealed]
    seconds, screen_seconds, evaluations = [], [], []
    for _ in range(repeats):
        started = time.perf_counter()
        screen_updates(trainers, deltas, [], spec=spec)
        screen_seconds.append(time.perf_counter() - started)
        started = time.perf_counter()
        coalitions = Coalitions(
            deltas, samples, settings=spec.aggregation,
            losses_of=lambda delta: losses_of_state(apply_delta(global_state, delta)),
        )  # fmt: skip
        values = shapley_values(coalitions, spec=spec, seed=round_seed(TASK, ROUND))
        seconds.append(time.perf_counter() - started)
        evaluations.append(coalitions.evaluations)
    z = spec.scoring.significance
    return {
        "updates": n,
        "method": spec.scoring.method,
        "max_evaluations": spec.scoring.max_evaluations,
        "evaluations_per_round": int(statistics.median(evaluations)),
        "seconds_per_round": round(statistics.median(seconds), 3),
        "screen_seconds": round(statistics.median(screen_seconds), 4),
        "validation_samples": len(validation),
        "updates_with_significant_positive_value": sum(1 for v in values if v.mean > 0 and v.significant(z)),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 50, 200])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPORT_PATH)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    for n in args.sizes:
        rows.append(measure(n, repeats=args.repeats, seed=args.seed))
        r = rows[-1]
        print(
            f"N={n:<4} {r['evaluations_per_round']:>5} evaluations  {r['seconds_per_round']:>7.2f} s per round"
            f"  ({r['updates_with_significant_positive_value']} of {n} significantly > 0)",
            flush=True,
        )
    report = json.loads(args.out.read_text()) if args.out.exists() else {}
    report["shapley"] = {
        "command": "python bench/shapley_cost.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "what": "one validator's Shapley values and screen on the demo model, median of repeats, 1 torch thread",
        "rows": rows,
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote the shapley section of {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
