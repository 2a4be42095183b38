"""`fedmarket-validator`: score fedmarket tasks on your own held-out data and earn tokens.

    fedmarket-validator join 1 --data my_split.npz --key 0x...
    fedmarket-validator run 1 --data my_split.npz --key 0x...
    fedmarket-validator status 1 --key 0x... [--json]
    fedmarket-validator claim 1 --key 0x...

At join the validator commits the sha256 of its data (canonical layout, see
`fedmarket.learning.LocalData.canonical_hash`); it scores every round on that data and can never
swap it. Connection settings, messages, the node log and Ctrl-C as for `fedmarket-trainer`; the
key comes from --key or FEDMARKET_VALIDATOR_KEY and signs locally. Committed scores not revealed
by the score-reveal deadline are slashed: Ctrl-C says how long is left.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from fedmarket.consensus import FLAGS, SCALE
from fedmarket.display import fmt, parse_tokens, tokens, version_option
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
    JsonOpt,
    RpcOpt,
    _chain,
    _existing_task,
    _guard,
    _task_line,
    _task_state,
    attach_node_log,
    done_line,
    event_printer,
    fail,
    interruptible,
    print_json,
    run_app,
    say,
)
from trainer.round_node import RoundNode
from trainer.validator_node import ScoreStateDir, ValidatorNode

app = typer.Typer(
    help="Score fedmarket rounds on your own held-out data and earn tokens.", no_args_is_help=True
)
console = Console()

KeyOpt = Annotated[
    str | None,
    typer.Option(
        "--key", envvar="FEDMARKET_VALIDATOR_KEY", help="validator private key (32 bytes of hex, 0x optional)"
    ),
]
StateOpt = Annotated[
    Path,
    typer.Option("--state-dir", envvar="FEDMARKET_STATE_DIR", help="where score vectors and salts are kept"),
]
DataOpt = Annotated[
    Path, typer.Option("--data", help="your held-out data: NPZ (X, y) or CSV, as the task declares")
]
StakeOpt = Annotated[str | None, typer.Option(help="FMT to stake, e.g. 12.5 (default: the task's minimum)")]
DEFAULT_STATE = Path(".fedmarket/validator")


@app.callback()
def _root(version: Annotated[bool, version_option("fedmarket-validator")] = False) -> None:
    """Score fedmarket rounds on your own held-out data and earn tokens."""


def _node(task_id, key, rpc_url, deployment, coordinator, state_dir, data, *, stake=None, poll=0.5, bad=None):
    try:
        stake_units = parse_tokens(stake) if stake is not None else None
    except ValueError as exc:
        fail(f"--stake: {exc}")
    chain = _chain(rpc_url, deployment, key, role="validator")
    info = _existing_task(chain, task_id)
    store = HttpStore(coordinator)
    spec = _guard(lambda: fetch_spec(store, info.terms.spec_hash))
    local = _guard(lambda: load_local_data(data, spec))
    node = ValidatorNode(
        task_id=task_id, chain=chain, store=store, data=local, state_root=state_dir,
        stake=stake_units, poll_interval=poll, on_event=event_printer(EVENT_LINES),
        rewrite_vector=bad_validator(bad, seed=task_id) if bad else None, reveal=bad != "lazy",
    )  # fmt: skip
    attach_node_log(node.state.path, f"fedmarket-validator: task {task_id} as {node.address} on {rpc_url}")
    say(f"{len(local)} held-out samples from {data} fit task {task_id}")
    return node


@app.command()
def join(
    task_id: int, data: DataOpt, key: KeyOpt = None, stake: StakeOpt = None, rpc_url: RpcOpt = DEFAULT_RPC,
    deployment: DeploymentOpt = DEFAULT_DEPLOYMENT, coordinator: CoordinatorOpt = DEFAULT_COORDINATOR,
    state_dir: StateOpt = DEFAULT_STATE,
) -> None:  # fmt: skip
    """Stake and commit to your data's hash (for good: another split is another validator)."""
    node = _node(task_id, key, rpc_url, deployment, coordinator, state_dir, data, stake=stake)
    _guard(node.ensure_joined)
    say(f"[green]validating task {task_id}[/green] as {node.address} on data {node.data_hash.hex()[:16]}...")


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
    nodes: list[RoundNode] = []
    with interruptible(nodes, "fedmarket-validator run"):
        node = _node(
            task_id, key, rpc_url, deployment, coordinator, state_dir, data, stake=stake, poll=poll, bad=bad_validator
        )  # fmt: skip
        nodes.append(node)
        summary = _guard(node.run)
    node.state.write_summary(summary)
    if summary.ejected:
        say("[red]this validator was slashed (committed scores and did not reveal) and removed[/red]")
    say(f"[green]task {task_id} done[/green]: {done_line(summary, 'revealed scores')}")


@app.command()
def status(
    task_id: int, key: KeyOpt = None, rpc_url: RpcOpt = DEFAULT_RPC, deployment: DeploymentOpt = DEFAULT_DEPLOYMENT,
    state_dir: StateOpt = DEFAULT_STATE, as_json: JsonOpt = False,
) -> None:  # fmt: skip
    """Per round: flags raised, agreement with consensus, payout; then stake and claimable."""
    chain = _chain(rpc_url, deployment, key, role="validator")
    info = _existing_task(chain, task_id)
    me = chain.signer
    rounds: list[dict[str, Any]] = []
    for saved in ScoreStateDir(state_dir, task_id, me).all_rounds():
        ledger = _guard(partial(read_round, chain, task_id, saved.round))
        settled = ledger.settled_validators.get(me)
        rounds.append({
            "round": saved.round, "committed": saved.committed, "revealed": saved.revealed,
            "flags": sum(1 for e in saved.scores if e in FLAGS), "reasons": saved.reasons,
            "agreement": str(settled.agreement) if settled else None,
            "payout": str(settled.payout) if settled else None,
        })  # fmt: skip
    validator = _guard(lambda: chain.validator(task_id, me))
    summary: dict[str, Any] = {
        **_task_state(chain, info), "address": me, "joined": validator.joined, "stake": str(validator.stake),
        "claimable": str(validator.claimable), "data_hash": validator.data_hash.hex() if validator.joined else None,
        "rounds_scored": rounds,
    }  # fmt: skip
    if as_json:
        print_json(summary)
        return
    table = Table("round", "revealed", "flags", "agreement", "payout (FMT)")
    for r in rounds:
        table.add_row(
            str(r["round"]), "yes" if r["revealed"] else "no", str(r["flags"]),
            f"{int(r['agreement']) / SCALE:.3f}" if r["agreement"] else "-",
            tokens(int(r["payout"])) if r["payout"] else "-",
        )  # fmt: skip
    console.print(table)
    console.print(
        f"{_task_line(summary)}: stake {fmt(validator.stake)}{'' if validator.joined else ' (not joined)'}, "
        f"claimable {fmt(validator.claimable)}",
        soft_wrap=True,
    )


@app.command()
def claim(
    task_id: int, key: KeyOpt = None, rpc_url: RpcOpt = DEFAULT_RPC, deployment: DeploymentOpt = DEFAULT_DEPLOYMENT,
) -> None:  # fmt: skip
    """Claim what the contract credited you in the task."""
    chain = _chain(rpc_url, deployment, key, role="validator")
    _existing_task(chain, task_id)
    amount = _guard(lambda: chain.claimable(task_id))
    if not amount:
        console.print("nothing to claim")
        return
    _guard(lambda: chain.claim(task_id))
    console.print(f"claimed {fmt(amount)}")


EVENT_LINES = {
    **NODE_EVENT_LINES,
    "joined": lambda i: f"joined as validator, staked {fmt(i['stake'])}, data {i['data_hash'][:16]}...",
    "scoring": lambda i: f"round {i['round']}: scoring {i['updates']} update(s)",
    "committed": lambda i: f"round {i['round']}: scores committed ({i['flags']} flagged)",
    "revealed": lambda i: f"round {i['round']}: scores revealed",
    "ejected": lambda i: f"[red]slashed in round {i['round']}: no longer a validator[/red]",
}


def main() -> None:
    run_app(app)


if __name__ == "__main__":
    main()
