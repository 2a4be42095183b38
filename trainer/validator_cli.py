"""`fedmarket-validator`: score fedmarket tasks on your own held-out data and earn tokens.

    fedmarket-validator join 1 --data my_split.npz --key 0x...
    fedmarket-validator run 1 --data my_split.npz --key 0x...
    fedmarket-validator status 1 --key 0x...
    fedmarket-validator claim 1 --key 0x...

At join the validator commits the sha256 of its data (canonical layout, see
`fedmarket.learning.LocalData.canonical_hash`); it scores every round on that data and can never
swap it. Connection settings as for `fedmarket-trainer`; the key comes from --key or
FEDMARKET_VALIDATOR_KEY and signs locally.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from fedmarket.consensus import FLAGS, SCALE
from fedmarket.learning import load_local_data
from fedmarket.ledger import read_round
from fedmarket.rounds import fetch_spec
from fedmarket.store import HttpStore
from trainer.attacks import BAD_VALIDATORS, bad_validator
from trainer.cli import (
    DEFAULT_COORDINATOR,
    DEFAULT_DEPLOYMENT,
    DEFAULT_RPC,
    NODE_EVENT_LINES,
    CoordinatorOpt,
    DeploymentOpt,
    RpcOpt,
    _chain,
    _existing_task,
    _guard,
    event_printer,
    run_app,
    tokens,
)
from trainer.validator_node import ScoreStateDir, ValidatorNode

app = typer.Typer(
    help="Score fedmarket rounds on your own held-out data and earn tokens.", no_args_is_help=True
)
console = Console()

KeyOpt = Annotated[
    str | None, typer.Option("--key", envvar="FEDMARKET_VALIDATOR_KEY", help="validator private key (0x...)")
]
StateOpt = Annotated[
    Path,
    typer.Option("--state-dir", envvar="FEDMARKET_STATE_DIR", help="where score vectors and salts are kept"),
]
DataOpt = Annotated[
    Path, typer.Option("--data", help="your held-out data: NPZ (X, y) or CSV, as the task declares")
]
StakeOpt = Annotated[float | None, typer.Option(help="FMT to stake (default: the task's minimum)")]
DEFAULT_STATE = Path(".fedmarket/validator")


def _node(task_id, key, rpc_url, deployment, coordinator, state_dir, data, *, stake=None, poll=0.5, bad=None):
    chain = _chain(rpc_url, deployment, key, role="validator")
    info = _existing_task(chain, task_id)
    store = HttpStore(coordinator)
    spec = _guard(lambda: fetch_spec(store, info.terms.spec_hash))
    local = _guard(lambda: load_local_data(data, spec))
    console.print(f"{len(local)} held-out samples from {data} fit task {task_id}")
    return ValidatorNode(
        task_id=task_id, chain=chain, store=store, data=local, state_root=state_dir,
        stake=int(stake * 10**18) if stake is not None else None, poll_interval=poll, on_event=event_printer(EVENT_LINES),
        rewrite_vector=bad_validator(bad, seed=task_id) if bad else None, reveal=bad != "lazy",
    )  # fmt: skip


@app.command()
def join(
    task_id: int, data: DataOpt, key: KeyOpt = None, stake: StakeOpt = None, rpc_url: RpcOpt = DEFAULT_RPC,
    deployment: DeploymentOpt = DEFAULT_DEPLOYMENT, coordinator: CoordinatorOpt = DEFAULT_COORDINATOR,
    state_dir: StateOpt = DEFAULT_STATE,
) -> None:  # fmt: skip
    """Stake and commit to your data's hash (for good: another split is another validator)."""
    node = _node(task_id, key, rpc_url, deployment, coordinator, state_dir, data, stake=stake)
    _guard(node.ensure_joined)
    console.print(
        f"[green]validating task {task_id}[/green] as {node.address} on data {node.data_hash.hex()[:16]}..."
    )


@app.command()
def run(
    task_id: int, data: DataOpt, key: KeyOpt = None, stake: StakeOpt = None, rpc_url: RpcOpt = DEFAULT_RPC,
    deployment: DeploymentOpt = DEFAULT_DEPLOYMENT, coordinator: CoordinatorOpt = DEFAULT_COORDINATOR,
    state_dir: StateOpt = DEFAULT_STATE, poll: Annotated[float, typer.Option(help="seconds between chain polls")] = 0.5,
    bad_validator: Annotated[
        str | None, typer.Option(help=f"demo only: misbehave ({', '.join(BAD_VALIDATORS)})", hidden=True)
    ] = None,
) -> None:  # fmt: skip
    """Join if needed, then score every round until the task ends; claim at the end."""
    node = _node(
        task_id,
        key,
        rpc_url,
        deployment,
        coordinator,
        state_dir,
        data,
        stake=stake,
        poll=poll,
        bad=bad_validator,
    )
    summary = _guard(node.run)
    node.state.write_summary(summary)
    if summary.ejected:
        console.print(
            "[red]this validator was slashed (committed scores and did not reveal) and removed[/red]"
        )
    console.print(
        f"[green]task {task_id} done[/green]: revealed scores in rounds {summary.rounds_revealed}, "
        f"claimed {tokens(summary.claimed)} FMT, stake returned {tokens(summary.stake_returned)} FMT, gas {summary.gas_used:,}"
    )


@app.command()
def status(
    task_id: int, key: KeyOpt = None, rpc_url: RpcOpt = DEFAULT_RPC, deployment: DeploymentOpt = DEFAULT_DEPLOYMENT,
    state_dir: StateOpt = DEFAULT_STATE,
) -> None:  # fmt: skip
    """Per round: flags raised, agreement with consensus, payout; then stake and claimable."""
    chain = _chain(rpc_url, deployment, key, role="validator")
    info = _existing_task(chain, task_id)
    me = chain.signer
    table = Table("round", "revealed", "flags", "agreement", "payout")
    for saved in ScoreStateDir(state_dir, task_id, me).all_rounds():
        settled = read_round(chain, task_id, saved.round).settled_validators.get(me)
        table.add_row(
            str(saved.round), "yes" if saved.revealed else "no", str(sum(1 for e in saved.scores if e in FLAGS)),
            f"{settled.agreement / SCALE:.3f}" if settled else "-", tokens(settled.payout) if settled else "-",
        )  # fmt: skip
    validator = chain.validator(task_id, me)
    console.print(table)
    console.print(
        f"task {task_id} ({info.status.name.lower()}, round {info.current_round}/{info.terms.rounds}, "
        f"phase {chain.phase(task_id).name.lower()}): stake {tokens(validator.stake)} FMT"
        f"{'' if validator.joined else ' (not joined)'}, claimable {tokens(validator.claimable)} FMT"
    )


@app.command()
def claim(
    task_id: int, key: KeyOpt = None, rpc_url: RpcOpt = DEFAULT_RPC, deployment: DeploymentOpt = DEFAULT_DEPLOYMENT,
) -> None:  # fmt: skip
    """Claim what the contract credited you in the task."""
    chain = _chain(rpc_url, deployment, key, role="validator")
    _existing_task(chain, task_id)
    amount = chain.claimable(task_id)
    if not amount:
        console.print("nothing to claim")
        return
    _guard(lambda: chain.claim(task_id))
    console.print(f"claimed {tokens(amount)} FMT")


EVENT_LINES = {
    **NODE_EVENT_LINES,
    "joined": lambda i: (
        f"joined as validator, staked {tokens(i['stake'])} FMT, data {i['data_hash'][:16]}..."
    ),
    "scoring": lambda i: f"round {i['round']}: scoring {i['updates']} update(s)",
    "committed": lambda i: f"round {i['round']}: scores committed ({i['flags']} flagged)",
    "revealed": lambda i: f"round {i['round']}: scores revealed",
    "ejected": lambda i: f"[red]slashed in round {i['round']}: no longer a validator[/red]",
}


def main() -> None:
    run_app(app)


if __name__ == "__main__":
    main()
