"""Post a training task through the coordinator's API, as a task owner.

    python scripts/post_task.py --owner-key 0x... --dataset digits --rounds 3 --shards 3 --shard-dir data/

The owner's key signs the EIP-712 task terms and the EIP-2612 permit for the reward pool here,
on the owner's machine; only signatures go to the coordinator, which relays the transaction (the
owner needs tokens, no gas). 20% of the data set stays with the owner as its held-out split,
written to `<shard-dir>/validator-owner.npz` for the owner's own validator (`fedmarket-validator
run TASK --data data/validator-owner.npz --key <owner key>`; it never leaves the owner's machine);
`--shards N` writes the rest as N label-skewed NPZ files that trainer nodes can use
(`fedmarket-trainer run TASK --data data/trainer-0.npz`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from fedmarket.chain import MarketClient  # noqa: E402
from fedmarket.client import CoordinatorClient  # noqa: E402
from fedmarket.datasets import DATASETS, dirichlet_split, load_dataset, save_npz, train_test_split  # noqa: E402
from fedmarket.deploy import ONE_TOKEN  # noqa: E402
from fedmarket.protocol import TaskTerms  # noqa: E402
from fedmarket.spec import TaskSpec, mlp_spec  # noqa: E402


def digit_task_spec(
    dataset: str, input_dim: int, *, local_epochs: int = 2, seed: int = 0, dp_noise: float | None = None
) -> TaskSpec:
    """An MLP for the bundled digit data sets, with settings tuned for 5-10 non-IID trainers;
    `dp_noise` asks trainers for DP-SGD with that noise multiplier (clip norm 1, delta 1e-5)."""
    return mlp_spec(
        name=f"{dataset}-mlp",
        description=f"Classify {dataset} images (flattened) into 10 digits.",
        input_dim=input_dim,
        num_classes=10,
        hidden=(128,) if input_dim > 100 else (64,),
        norm_bound=25.0,
        init_seed=seed,
        training={
            "local_epochs": local_epochs,
            "batch_size": 32,
            "optimizer": "sgd",
            "learning_rate": 0.15,
            "momentum": 0.5,
        },
        privacy=None
        if dp_noise is None
        else {"noise_multiplier": dp_noise, "max_grad_norm": 1.0, "delta": 1e-5},
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--owner-key", required=True, help="task owner's private key (stays on this machine)")
    parser.add_argument("--coordinator", default="http://127.0.0.1:8000")
    parser.add_argument("--rpc-url", default="http://127.0.0.1:8545")
    parser.add_argument("--deployment", type=Path, default=REPO_ROOT / "deployments" / "local.json")
    parser.add_argument("--dataset", choices=DATASETS, default="digits")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--min-trainers", type=int, default=2)
    parser.add_argument("--max-trainers", type=int, default=10)
    parser.add_argument("--pool", type=int, default=1000, help="reward pool in whole tokens")
    parser.add_argument("--stake", type=int, default=10, help="trainer and validator stake in whole tokens")
    parser.add_argument("--min-validators", type=int, default=1, help="score vectors a round needs")
    parser.add_argument("--max-validators", type=int, default=5)
    parser.add_argument("--shards", type=int, default=0, help="also write N trainer data shards")
    parser.add_argument("--shard-dir", type=Path, default=Path("data"))
    parser.add_argument(
        "--dp-noise", type=float, default=None, help="ask trainers for DP-SGD with this noise multiplier"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    market = MarketClient.connect(args.rpc_url, args.deployment)
    X, y = load_dataset(args.dataset)
    X_train, X_val, y_train, y_val = train_test_split(X, y, test_fraction=0.2, seed=args.seed)
    spec = digit_task_spec(args.dataset, X.shape[1], seed=args.seed, dp_noise=args.dp_noise)
    with CoordinatorClient(args.coordinator) as api:
        coordinator_address = api.info()["coordinator"]
        terms = TaskTerms(
            spec_hash=spec.spec_hash(), coordinator=coordinator_address, rounds=args.rounds,
            min_trainers=args.min_trainers, max_trainers=args.max_trainers, slash_bps=5000,
            commit_window=120, reveal_window=60, reward_pool=args.pool * ONE_TOKEN, min_stake=args.stake * ONE_TOKEN,
            min_validators=args.min_validators, max_validators=args.max_validators, validator_share_bps=1_000,
            score_window=120, score_reveal_window=60, min_validator_stake=args.stake * ONE_TOKEN,
        )  # fmt: skip
        posted = api.post_task(spec=spec, terms=terms, owner_key=args.owner_key, market=market)
    held_out = save_npz(args.shard_dir / "validator-owner.npz", X_val, y_val)
    print(f"task {posted['task_id']} posted (spec {posted['spec_cid']}, tx {posted['tx_hash']})")
    print(f"the owner's held-out split for its validator: {held_out} ({len(y_val)} samples)")
    if args.shards:
        parts = dirichlet_split(y_train, parts=args.shards, alpha=0.5, seed=args.seed, min_size=20)
        for i, part in enumerate(parts):
            path = save_npz(args.shard_dir / f"trainer-{i}.npz", X_train[part], y_train[part])
            print(f"trainer data shard {path} ({len(part)} samples)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
