"""Which aggregation gets the demo closest to centralized training: measured, not guessed.

    python bench/aggregation_choice.py [--seeds 0 1 2 3 4] [--only fedavg fedavgm-0.7]

Plain in-process federated learning, **no chain, no coordinator, no validators**: every round
each trainer trains the global model on its own data with the spec's recipe, the deltas are
combined by the spec's aggregation (:func:`fedmarket.aggregation.aggregate`) and the step is
taken by its server optimizer (:func:`fedmarket.aggregation.server_step`), from the same inputs
the coordinator uses: the previous published step for FedAvgM, the stored float32 Adam moments for
FedAdam. In the demo every honest update is aggregated (Accepted and Worthless alike), so this is
the demo's model sequence without the market around it.

The data are the demo's exactly (scripts/demo.py `split_data`): MNIST, its test split (the yardstick), one
held-out split per validator (3, removed from the training data as the demo does), the rest cut
among 5 trainers by Dirichlet(0.5) label skew, seed 0, 10 rounds of 2 local epochs, each trainer's
per-round seed derived as the demo's trainers derive it (task 1, their dev accounts). The
centralized baseline is the demo's own (`centralized_accuracy`: the union of the trainers' data,
rounds x local epochs, same recipe), computed once per trainer recipe with the proximal term off
(a proximal term anchored at the initial weights would only hold the baseline back).

Each config is the demo's spec with the recipe it had before this measurement (``BEFORE``: plain
FedAvg, local lr 0.15, momentum 0.5) and the config's overrides; ``default (digit_task_spec)`` is
the demo's spec as it stands. Writes reports/aggregation.json: per config, its spec overrides,
accuracy per round, final accuracy, the centralized accuracy it is compared with and the largest
update norm a trainer sent (the demo refuses any above the spec's norm_bound), per seed; prints
a table.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from fedmarket.aggregation import AdamState, aggregate, server_step  # noqa: E402
from fedmarket.cid import digest_of  # noqa: E402
from fedmarket.codec import apply_delta, state_delta, update_norm  # noqa: E402
from fedmarket.datasets import load_dataset  # noqa: E402
from fedmarket.devnet import dev_account  # noqa: E402
from fedmarket.learning import LocalData, evaluate, train  # noqa: E402
from fedmarket.models import build_model  # noqa: E402
from fedmarket.spec import TaskSpec  # noqa: E402
from scripts.demo import FIRST_TRAINER_INDEX, DataSplit, centralized_accuracy, split_data  # noqa: E402
from scripts.post_task import digit_task_spec  # noqa: E402

REPORT_PATH = REPO_ROOT / "reports" / "aggregation.json"
DATASET, TRAINERS, VALIDATORS, ALPHA, ROUNDS, LOCAL_EPOCHS, TASK_ID = "mnist", 5, 3, 0.5, 10, 2, 1

# The demo's recipe before this measurement: plain FedAvg, local SGD at lr 0.15, momentum 0.5.
BEFORE: dict[str, dict[str, Any]] = {
    "training": {"learning_rate": 0.15, "momentum": 0.5, "proximal_mu": 0.0},
    "aggregation": {"server_optimizer": "none"},
}
NONE = {"server_optimizer": "none"}
DEFAULT = "default (digit_task_spec)"
# name -> spec overrides on top of BEFORE; DEFAULT is digit_task_spec as it stands, unchanged.
CONFIGS: dict[str, dict[str, Any] | None] = {
    DEFAULT: None,
    "fedavg": {"aggregation": NONE},
    "fedavg-server-lr-1.5": {"aggregation": {"server_optimizer": "fedavgm", "server_momentum": 0.0, "server_learning_rate": 1.5}},
    "fedavgm-0.3": {"aggregation": {"server_optimizer": "fedavgm", "server_momentum": 0.3}},
    "fedavgm-0.5": {"aggregation": {"server_optimizer": "fedavgm", "server_momentum": 0.5}},
    "fedavgm-0.7": {"aggregation": {"server_optimizer": "fedavgm", "server_momentum": 0.7}},
    "fedavgm-0.9": {"aggregation": {"server_optimizer": "fedavgm", "server_momentum": 0.9}},
    "fedavgm-0.9-lr-0.5": {"aggregation": {"server_optimizer": "fedavgm", "server_momentum": 0.9, "server_learning_rate": 0.5}},
    "fedadam-0.001": {"aggregation": {"server_optimizer": "fedadam", "server_learning_rate": 0.001}},
    "fedadam-0.003": {"aggregation": {"server_optimizer": "fedadam", "server_learning_rate": 0.003}},
    "fedadam-0.01": {"aggregation": {"server_optimizer": "fedadam", "server_learning_rate": 0.01}},
    "fedadam-0.03": {"aggregation": {"server_optimizer": "fedadam", "server_learning_rate": 0.03}},
    "fedadam-0.1": {"aggregation": {"server_optimizer": "fedadam", "server_learning_rate": 0.1}},
    "fedprox-0.01": {"aggregation": NONE, "training": {"proximal_mu": 0.01}},
    "fedprox-0.1": {"aggregation": NONE, "training": {"proximal_mu": 0.1}},
    "fedavgm-0.5+fedprox-0.01": {"aggregation": {"server_optimizer": "fedavgm", "server_momentum": 0.5}, "training": {"proximal_mu": 0.01}},
    "fedavg-trainer-lr-0.1-mom-0.9": {"aggregation": NONE, "training": {"learning_rate": 0.1, "momentum": 0.9}},
    "fedavgm-0.5-trainer-lr-0.1-mom-0.9": {"aggregation": {"server_optimizer": "fedavgm", "server_momentum": 0.5}, "training": {"learning_rate": 0.1, "momentum": 0.9}},
    "fedavgm-0.7-trainer-lr-0.1-mom-0.9": {"aggregation": {"server_optimizer": "fedavgm", "server_momentum": 0.7}, "training": {"learning_rate": 0.1, "momentum": 0.9}},
    "fedavgm-0.5-trainer-mom-0.7": {"aggregation": {"server_optimizer": "fedavgm", "server_momentum": 0.5}, "training": {"momentum": 0.7}},
}  # fmt: skip


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="the demo's seed is 0")
    parser.add_argument("--only", nargs="+", choices=sorted(CONFIGS), default=None, help="run these configs")
    parser.add_argument("--out", type=Path, default=REPORT_PATH)
    return parser.parse_args(argv)


def demo_data(seed: int) -> DataSplit:
    """The demo's data for `seed` (scripts/demo.py `split_data`)."""
    X, y = load_dataset(DATASET)
    return split_data(X, y, trainers=TRAINERS, validators=VALIDATORS, alpha=ALPHA, seed=seed)


def trainer_seed(seed: int, round_no: int, trainer: int) -> int:
    """What a demo trainer started with `--seed` trains round `round_no` with (trainer/node.py)."""
    address = dev_account(FIRST_TRAINER_INDEX + trainer).address
    material = f"{seed}/{TASK_ID}/{round_no}/{address.lower()}".encode()
    return int.from_bytes(digest_of(material)[:8], "big") >> 1


def config_spec(base: TaskSpec, overrides: dict[str, Any] | None) -> TaskSpec:
    """`base` (the demo's spec) with BEFORE and then `overrides` merged in; `base` itself for None."""
    if overrides is None:
        return base
    document = base.model_dump(mode="json")
    for changes in (BEFORE, overrides):
        for section, fields in changes.items():
            document[section] = {**document[section], **fields}
    return TaskSpec(**document)


def federate(
    spec: TaskSpec, shares: list[LocalData], test: LocalData, seed: int
) -> tuple[list[float], float]:
    """Accuracy on the test split after each of ROUNDS rounds of in-process FL under `spec`, and
    the largest update norm any trainer sent (above the spec's `norm_bound`, the demo refuses it)."""
    model = build_model(spec)
    weights = {key: tensor.detach().clone() for key, tensor in model.state_dict().items()}
    last_step: dict[str, torch.Tensor] | None = None
    adam: AdamState | None = None
    accuracies, largest = [], 0.0
    for round_no in range(1, ROUNDS + 1):
        deltas = []
        for i, data in enumerate(shares):
            model.load_state_dict(weights)
            train(model, data, spec.training, seed=trainer_seed(seed, round_no, i))
            deltas.append(state_delta(model.state_dict(), weights))
            largest = max(largest, update_norm(deltas[-1]))
        result = aggregate(deltas, [len(data) for data in shares], spec.aggregation)
        step = server_step(result.delta, spec.aggregation, last_step=last_step, state=adam)
        new_weights = apply_delta(weights, step.step)
        # What the next round reads, as the coordinator reads it: the published step, the stored moments.
        last_step, adam, weights = state_delta(new_weights, weights), step.state, new_weights
        model.load_state_dict(weights)
        accuracies.append(evaluate(model, test).accuracy)
    return accuracies, largest


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)  # as the demo's baseline does; small models only contend with more
    started = time.monotonic()
    names = args.only or list(CONFIGS)
    results: dict[str, Any] = {name: {"overrides": CONFIGS[name], "seeds": {}} for name in names}
    for seed in args.seeds:
        data = demo_data(seed)
        shares, union, test = data.trainers, data.pool, data.test
        base = digit_task_spec(DATASET, int(np.prod(union.X.shape[1:])), local_epochs=LOCAL_EPOCHS, seed=seed)
        baselines: dict[str, float] = {}
        for name in names:
            spec = config_spec(base, CONFIGS[name])
            recipe = spec.training.model_copy(update={"proximal_mu": 0.0})
            key = recipe.model_dump_json()
            if key not in baselines:
                plain = TaskSpec(
                    **{**spec.model_dump(mode="json"), "training": recipe.model_dump(mode="json")}
                )
                baselines[key] = centralized_accuracy(
                    plain, union, test, epochs=ROUNDS * LOCAL_EPOCHS, seed=seed
                )
            tic = time.monotonic()
            per_round, largest = federate(spec, shares, test, seed)
            results[name]["seeds"][str(seed)] = {
                "accuracy_per_round": per_round, "final_accuracy": per_round[-1],
                "centralized_accuracy": baselines[key], "gap": baselines[key] - per_round[-1],
                "max_update_norm": largest, "norm_bound": spec.norm_bound,
                "seconds": round(time.monotonic() - tic, 1),
            }  # fmt: skip
            print(
                f"seed {seed} {name:<36} final {per_round[-1]:.4f} centralized {baselines[key]:.4f} "
                f"max update norm {largest:.1f}", flush=True,
            )  # fmt: skip
    for entry in results.values():
        runs = entry["seeds"].values()
        entry["mean_final_accuracy"] = float(np.mean([r["final_accuracy"] for r in runs]))
        entry["mean_gap"] = float(np.mean([r["gap"] for r in runs]))
        entry["worst_gap"] = float(max(r["gap"] for r in runs))
        entry["max_update_norm"] = float(max(r["max_update_norm"] for r in runs))
    print_table(results, args.seeds)
    report = {
        "mode": "in-process federated learning: no chain, coordinator or validators (see the docstring)",
        "command": " ".join(["python bench/aggregation_choice.py", *(argv if argv is not None else sys.argv[1:])]),
        "setup": {
            "dataset": DATASET, "trainers": TRAINERS, "validators_held_out": VALIDATORS, "alpha": ALPHA,
            "rounds": ROUNDS, "local_epochs": LOCAL_EPOCHS, "seeds": args.seeds, "test_samples": len(test),
            "base_spec": "scripts/post_task.py digit_task_spec with BEFORE, then each config's overrides",
            "before": BEFORE,
            "torch_threads": torch.get_num_threads(), "python": platform.python_version(), "torch": torch.__version__,
        },
        "configs": results,
        "wall_seconds": round(time.monotonic() - started, 1),
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out} in {report['wall_seconds']} s")
    return 0


def print_table(results: dict[str, Any], seeds: list[int]) -> None:
    first = str(seeds[0])
    header = f"{'config':<36} {'final':>7} {'central':>8} {'gap':>7} {'max norm':>9}"
    if len(seeds) > 1:
        header += f" {'mean final':>11} {'mean gap':>9} {'worst gap':>10}"
    print(f"\nseed {first}: accuracy after {ROUNDS} rounds on the demo's test split")
    print(header)
    for name, entry in results.items():
        run = entry["seeds"][first]
        row = (
            f"{name:<36} {run['final_accuracy']:>7.4f} {run['centralized_accuracy']:>8.4f} {run['gap']:>+7.4f} "
            f"{entry['max_update_norm']:>9.1f}"
        )
        if len(seeds) > 1:
            row += f" {entry['mean_final_accuracy']:>11.4f} {entry['mean_gap']:>+9.4f} {entry['worst_gap']:>+10.4f}"
        print(row)


if __name__ == "__main__":
    sys.exit(main())
