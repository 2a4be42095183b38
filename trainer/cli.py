"""`fedmarket-trainer`: take part in fedmarket tasks from the command line.

    fedmarket-trainer tasks
    fedmarket-trainer join 1 --key 0x...
    fedmarket-trainer run 1 --data my_data.npz --key 0x...
    fedmarket-trainer status 1 --key 0x...
    fedmarket-trainer claim 1 --key 0x...

Connection settings come from options or the environment: FEDMARKET_RPC_URL,
FEDMARKET_DEPLOYMENT_FILE, FEDMARKET_COORDINATOR_URL, FEDMARKET_TRAINER_KEY (the key signs
locally and is never sent anywhere), FEDMARKET_STATE_DIR, FEDMARKET_TORCH_THREADS (default 1).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import torch
import typer
from eth_account import Account
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TaskID, TextColumn
from rich.table import Table

from fedmarket.chain import MarketClient
from fedmarket.client import CoordinatorClient, CoordinatorError
from fedmarket.consensus import SCALE
from fedmarket.errors import ContractRevert, FedmarketError
from fedmarket.learning import load_local_data
from fedmarket.ledger import read_round
from fedmarket.protocol import TaskStatus
from fedmarket.spec import TaskSpec
from fedmarket.store import HttpStore
from trainer.attacks import ATTACKS, attack
from trainer.node import StateDir, TrainerNode

app = typer.Typer(
    help="Train on your private data for fedmarket tasks and earn tokens.", no_args_is_help=True
)
console = Console()
errors = Console(stderr=True)
ONE_TOKEN = 10**18

RpcOpt = Annotated[str, typer.Option("--rpc-url", envvar="FEDMARKET_RPC_URL", help="JSON-RPC endpoint")]
DeploymentOpt = Annotated[
    Path, typer.Option("--deployment", envvar="FEDMARKET_DEPLOYMENT_FILE", help="deployments/<network>.json")
]
CoordinatorOpt = Annotated[
    str, typer.Option("--coordinator", envvar="FEDMARKET_COORDINATOR_URL", help="coordinator API")
]
KeyOpt = Annotated[
    str | None, typer.Option("--key", envvar="FEDMARKET_TRAINER_KEY", help="trainer private key (0x...)")
]
StateOpt = Annotated[
    Path, typer.Option("--state-dir", envvar="FEDMARKET_STATE_DIR", help="where salts and updates are kept")
]

DEFAULT_RPC = "http://127.0.0.1:8545"
DEFAULT_DEPLOYMENT = Path("deployments/local.json")
DEFAULT_COORDINATOR = "http://127.0.0.1:8000"
DEFAULT_STATE = Path(".fedmarket/trainer")


def tokens(amount: int) -> str:
    return f"{amount / ONE_TOKEN:,.4f}"


def fail(message: str) -> None:
    errors.print(f"[red]error:[/red] {message}")
    raise typer.Exit(1)


def _account(key: str | None, role: str = "trainer"):
    if not key:
        fail(f"no {role} key: pass --key 0x... or set FEDMARKET_{role.upper()}_KEY")
    try:
        return Account.from_key(key)
    except Exception:  # eth-account raises several types for a malformed key
        fail(f"the {role} key is not a valid private key (expected 32 bytes of 0x-hex)")


def _chain(
    rpc_url: str, deployment: Path, key: str | None = None, *, need_key: bool = True, role: str = "trainer"
) -> MarketClient:
    account = _account(key, role) if need_key or key else None
    try:
        client = MarketClient.connect(rpc_url, deployment)
    except (
        FedmarketError
    ) as exc:  # no deployments file, wrong chain, node unreachable (ChainUnavailableError)
        fail(str(exc))
    return client.with_account(account) if account else client


def _existing_task(chain: MarketClient, task_id: int):
    try:
        return chain.task(task_id)
    except ContractRevert as revert:
        if revert.name == "TaskMarketUnknownTask":
            fail(f"task {task_id} does not exist (the market has {chain.task_count()} tasks)")
        raise


@app.command()
def tasks(
    rpc_url: RpcOpt = DEFAULT_RPC, deployment: DeploymentOpt = DEFAULT_DEPLOYMENT,
    coordinator: CoordinatorOpt = DEFAULT_COORDINATOR,
) -> None:  # fmt: skip
    """Open tasks: reward pool, rounds, stake, trainers joined, phase."""
    chain = _chain(rpc_url, deployment, need_key=False)
    table = Table("task", "name", "reward pool", "rounds", "stake", "trainers", "phase")
    store = HttpStore(coordinator)
    with CoordinatorClient(coordinator) as api:
        listed = _guard(lambda: api.tasks(status="open"))
    for item in listed:
        info = chain.task(item["task_id"])
        if info.status != TaskStatus.OPEN:
            continue
        table.add_row(
            str(info.task_id), _spec_name(store, item["spec_cid"]), tokens(info.terms.reward_pool),
            f"{info.current_round}/{info.terms.rounds}", tokens(info.terms.min_stake),
            f"{info.trainer_count}/{info.terms.max_trainers}", chain.phase(info.task_id).name.lower(),
        )  # fmt: skip
    console.print(table)


def _spec_name(store: HttpStore, spec_cid: str) -> str:
    try:
        return TaskSpec.from_json(store.get(spec_cid)).name
    except (
        FedmarketError
    ):  # spec not in the store, or not a valid spec: one such task must not hide the others
        return "(spec unavailable)"


@app.command()
def join(
    task_id: int, key: KeyOpt = None, rpc_url: RpcOpt = DEFAULT_RPC, deployment: DeploymentOpt = DEFAULT_DEPLOYMENT,
    coordinator: CoordinatorOpt = DEFAULT_COORDINATOR, state_dir: StateOpt = DEFAULT_STATE,
) -> None:  # fmt: skip
    """Approve and stake the task's minimum stake."""
    node = _node(task_id, key, rpc_url, deployment, coordinator, state_dir, data=None)
    _guard(node.ensure_joined)
    console.print(f"[green]joined task {task_id}[/green] as {node.address}")


@app.command()
def run(
    task_id: int,
    data: Annotated[Path, typer.Option("--data", help="your local data: NPZ (X, y) or CSV, as the task declares")],
    key: KeyOpt = None, rpc_url: RpcOpt = DEFAULT_RPC, deployment: DeploymentOpt = DEFAULT_DEPLOYMENT,
    coordinator: CoordinatorOpt = DEFAULT_COORDINATOR, state_dir: StateOpt = DEFAULT_STATE,
    poll: Annotated[float, typer.Option(help="seconds between chain polls")] = 0.5,
    attacker: Annotated[str | None, typer.Option(help=f"demo only: misbehave ({', '.join(ATTACKS)})", hidden=True)] = None,
    seed: Annotated[int | None, typer.Option(help="demo only: reproducible training", hidden=True)] = None,
) -> None:  # fmt: skip
    """Join if needed, then train every round until the task ends; claim at the end."""
    with RunDisplay() as display:
        node = _node(
            task_id, key, rpc_url, deployment, coordinator, state_dir, data=data, poll=poll, attacker=attacker,
            on_event=display.on_event, seed=seed,
        )  # fmt: skip
        summary = _guard(node.run)
    node.state.write_summary(summary)
    if summary.ejected:
        console.print(
            "[red]this node's update was rejected and its stake slashed; see `fedmarket-trainer status`[/red]"
        )
    console.print(
        f"[green]task {task_id} done[/green]: revealed in rounds {summary.rounds_revealed}, "
        f"claimed {tokens(summary.claimed)} FMT, stake returned {tokens(summary.stake_returned)} FMT, gas {summary.gas_used:,}"
    )


@app.command()
def status(
    task_id: int, key: KeyOpt = None, rpc_url: RpcOpt = DEFAULT_RPC, deployment: DeploymentOpt = DEFAULT_DEPLOYMENT,
    state_dir: StateOpt = DEFAULT_STATE,
) -> None:  # fmt: skip
    """Rounds taken part in, the consensus on each update, earned, claimable, stake, privacy spent."""
    chain = _chain(rpc_url, deployment, key)
    info = _existing_task(chain, task_id)
    me = chain.signer
    trainer = chain.trainer(task_id, me)
    table = Table("round", "revealed", "outcome", "consensus", "payout", "epsilon")
    epsilon_total = 0.0
    for saved in StateDir(state_dir, task_id, me).all_rounds():
        settled = read_round(chain, task_id, saved.round).settled_trainers.get(me)
        epsilon_total += saved.epsilon or 0.0
        table.add_row(
            str(saved.round), "yes" if saved.revealed else "no", settled.outcome.name.lower() if settled else "-",
            f"{settled.consensus / SCALE:.4f}" if settled else "-", tokens(settled.payout) if settled else "-",
            f"{saved.epsilon:.2f}" if saved.epsilon is not None else "-",
        )  # fmt: skip
    earned = sum(
        e.args["payout"]
        for e in chain.iter_events("TrainerSettled", task_id=task_id)
        if e.args["trainer"] == me
    )
    console.print(table)
    console.print(
        f"task {task_id} ({info.status.name.lower()}, round {info.current_round}/{info.terms.rounds}, "
        f"phase {chain.phase(task_id).name.lower()}): stake {tokens(trainer.stake)} FMT"
        f"{'' if trainer.joined else ' (not joined)'}, earned {tokens(earned)} FMT, "
        f"claimable {tokens(trainer.claimable)} FMT"
        + (f", privacy spent epsilon {epsilon_total:.2f}" if epsilon_total else "")
    )


@app.command()
def claim(
    task_id: int, key: KeyOpt = None, rpc_url: RpcOpt = DEFAULT_RPC, deployment: DeploymentOpt = DEFAULT_DEPLOYMENT,
    coordinator: CoordinatorOpt = DEFAULT_COORDINATOR, state_dir: StateOpt = DEFAULT_STATE,
) -> None:  # fmt: skip
    """Claim what the contract credited you in the task (no coordinator needed)."""
    node = _node(task_id, key, rpc_url, deployment, coordinator, state_dir, data=None)
    amount = _guard(node.claim)
    console.print(f"claimed {tokens(amount)} FMT" if amount else "nothing to claim")


def _node(
    task_id,
    key,
    rpc_url,
    deployment,
    coordinator,
    state_dir,
    *,
    data,
    poll=0.5,
    attacker=None,
    on_event=None,
    seed=None,
) -> TrainerNode:
    chain = _chain(rpc_url, deployment, key)
    _existing_task(chain, task_id)
    api = CoordinatorClient(coordinator)
    node = TrainerNode(
        task_id=task_id, chain=chain, coordinator=api, store=HttpStore(coordinator), data=None,
        state_root=state_dir, poll_interval=poll, on_event=on_event or event_printer(EVENT_LINES),
        transform_update=attack(attacker, seed=task_id) if attacker else None, train_seed=seed,
    )  # fmt: skip
    if data is not None:
        spec = _guard(node.spec)
        node.data = _guard(lambda: load_local_data(data, spec))
        console.print(f"{len(node.data)} local samples from {data} fit task {task_id}")
    return node


def _guard(action):
    """Runs `action`, turning the errors a user can fix into one red line and exit code 1."""
    try:
        return action()
    except ContractRevert as revert:
        fail(f"the market refused: {revert}")
    except CoordinatorError as exc:
        fail(str(exc))
    except (FedmarketError, FileNotFoundError) as exc:
        fail(str(exc))


class RunDisplay:
    """A live line per round on a terminal (phase, local epoch, loss); every event is also printed
    as a plain line, so logs of a node without a terminal read the same."""

    def __init__(self) -> None:
        self.progress = Progress(
            SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            console=console, disable=not console.is_terminal,
        )  # fmt: skip
        self._rounds: dict[int, TaskID] = {}

    def __enter__(self) -> RunDisplay:
        self.progress.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.progress.stop()

    def _row(self, round_no: int, total: int | None = None) -> TaskID:
        if round_no not in self._rounds:
            self._rounds[round_no] = self.progress.add_task(f"round {round_no}", total=total)
        elif total is not None:
            self.progress.update(self._rounds[round_no], total=total)
        return self._rounds[round_no]

    def on_event(self, kind: str, info: dict) -> None:
        round_no = int(info.get("round") or 0)
        if kind == "phase" and round_no:
            self.progress.update(self._row(round_no), description=f"round {round_no}: {info['phase']}")
        elif kind == "training":
            self.progress.update(
                self._row(round_no, total=info["epochs"]), description=f"round {round_no}: training"
            )
        elif kind == "epoch":
            self.progress.update(
                self._row(round_no),
                advance=1,
                description=f"round {round_no}: training, loss {info['loss']:.4f}",
            )
        if kind != "phase":
            event_printer(EVENT_LINES)(kind, info)


# One line per node event; the node's event fields fill the template. These are the events every
# node emits (trainer/round_node.py); each CLI adds its own.
NODE_EVENT_LINES = {
    "missed": lambda i: f"[yellow]round {i['round']}: missed ({i['reason']})[/yellow]",
    "claimed": lambda i: f"[green]claimed {tokens(i['amount'])} FMT[/green]",
    "stake_withdrawn": lambda i: f"stake returned: {tokens(i['amount'])} FMT",
}
EVENT_LINES = {
    **NODE_EVENT_LINES,
    "epoch": lambda i: f"  round {i['round']}: epoch {i['epoch']} loss {i['loss']:.4f}",
    "training": lambda i: f"round {i['round']}: training {i['epochs']} local epoch(s)",
    "committed": lambda i: f"round {i['round']}: committed",
    "revealed": lambda i: f"round {i['round']}: uploaded {i['cid'][:20]}... and revealed",
    "joined": lambda i: f"joined, staked {tokens(i['stake'])} FMT",
    "ejected": lambda i: f"[red]rejected and slashed in round {i['round']}: no longer in the task[/red]",
}


def event_printer(lines: dict) -> Callable[[str, dict], None]:
    """A node's event sink that prints the events `lines` has a template for."""

    def print_event(kind: str, info: dict) -> None:
        if kind in lines:
            console.print(lines[kind](info))

    return print_event


def run_app(cli: typer.Typer) -> None:
    """A node CLI's entry point."""
    logging.basicConfig(level=logging.WARNING)
    # Small models train fastest on one thread, and several nodes may share a host.
    torch.set_num_threads(int(os.environ.get("FEDMARKET_TORCH_THREADS", "1")))
    cli()


def main() -> None:
    run_app(app)


if __name__ == "__main__":
    main()
