"""`fedmarket-trainer`: take part in fedmarket tasks from the command line.

    fedmarket-trainer tasks [--json]
    fedmarket-trainer join 1 --key 0x...
    fedmarket-trainer run 1 --data my_data.npz --key 0x...
    fedmarket-trainer status 1 --key 0x... [--json]
    fedmarket-trainer claim 1 --key 0x...

Connection settings come from options or the environment: FEDMARKET_RPC_URL,
FEDMARKET_DEPLOYMENT_FILE, FEDMARKET_COORDINATOR_URL, FEDMARKET_TRAINER_KEY (exactly 32 bytes of
hex; it signs locally and is never sent anywhere), FEDMARKET_STATE_DIR, FEDMARKET_TORCH_THREADS
(default 1).

Messages show FMT and ISO 8601 UTC times; `--json` prints base units as decimal strings. `join`,
`run` and `claim` also log to `<state-dir>/<address>/task-<id>/node.log`. Ctrl-C says what is
pending (a commit not yet revealed is slashed after the reveal deadline) and exits 130; the same
command started again resumes from the state dir and the chain.

This module also holds what both node CLIs share (`trainer/validator_cli.py` imports it): key
and connection options, the error guard, event lines, the node log, Ctrl-C, the entry point.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import torch
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TaskID, TextColumn
from rich.table import Table
from rich.text import Text

from fedmarket.chain import MarketClient
from fedmarket.client import CoordinatorClient, CoordinatorError
from fedmarket.consensus import SCALE
from fedmarket.display import LOG_FORMAT, IsoFormatter, fmt, iso_time, package_version, tokens, version_option
from fedmarket.errors import ContractRevert, FedmarketError
from fedmarket.keys import InvalidKeyError, account_from_key
from fedmarket.learning import load_local_data
from fedmarket.ledger import read_round
from fedmarket.protocol import RoundPhase, TaskStatus
from fedmarket.spec import TaskSpec
from fedmarket.store import HttpStore
from fedmarket.uploads import UploadSigner
from trainer.attacks import ATTACKS, attack
from trainer.node import StateDir, TrainerNode
from trainer.round_node import RoundNode, RoundSummary

app = typer.Typer(
    help="Train on your private data for fedmarket tasks and earn tokens.", no_args_is_help=True
)
console = Console()
errors = Console(stderr=True)
# What a node CLI tells its user, also written to the node's log file (attach_node_log).
# Its own handlers only (the file, once attached): the terminal gets these lines from rich.
node_log = logging.getLogger("fedmarket.node")
node_log.setLevel(logging.INFO)
node_log.propagate = False
node_log.addHandler(logging.NullHandler())
_log_file: logging.Handler | None = None
T = TypeVar("T")

RpcOpt = Annotated[str, typer.Option("--rpc-url", envvar="FEDMARKET_RPC_URL", help="JSON-RPC endpoint")]
DeploymentOpt = Annotated[
    Path, typer.Option("--deployment", envvar="FEDMARKET_DEPLOYMENT_FILE", help="deployments/<network>.json")
]
CoordinatorOpt = Annotated[
    str, typer.Option("--coordinator", envvar="FEDMARKET_COORDINATOR_URL", help="coordinator API")
]
KeyOpt = Annotated[
    str | None,
    typer.Option(
        "--key", envvar="FEDMARKET_TRAINER_KEY", help="trainer private key (32 bytes of hex, 0x optional)"
    ),
]
StateOpt = Annotated[
    Path, typer.Option("--state-dir", envvar="FEDMARKET_STATE_DIR", help="where salts and updates are kept")
]
JsonOpt = Annotated[
    bool, typer.Option("--json", help="machine-readable output; amounts in base units, as strings")
]

DEFAULT_RPC = "http://127.0.0.1:8545"
DEFAULT_DEPLOYMENT = Path("deployments/local.json")
DEFAULT_COORDINATOR = "http://127.0.0.1:8000"
DEFAULT_STATE = Path(".fedmarket/trainer")


@app.callback()
def _root(version: Annotated[bool, version_option("fedmarket-trainer")] = False) -> None:
    """Train on your private data for fedmarket tasks and earn tokens."""


def fail(message: str) -> NoReturn:
    errors.print(f"[red]error:[/red] {message}", soft_wrap=True)
    node_log.error(message)
    raise typer.Exit(1)


def print_json(value: Any) -> None:
    """A `--json` output: one JSON document on stdout, nothing else there."""
    typer.echo(json.dumps(value, indent=2))


def _account(key: str | None, role: str = "trainer"):
    if not key:
        fail(f"no {role} key: pass --key 0x... or set FEDMARKET_{role.upper()}_KEY")
    try:
        return account_from_key(key, what=f"the {role} key")
    except InvalidKeyError as exc:
        fail(str(exc))


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
    coordinator: CoordinatorOpt = DEFAULT_COORDINATOR, as_json: JsonOpt = False,
) -> None:  # fmt: skip
    """Open tasks (listed by the coordinator, checked on chain): reward pool, rounds, stake, trainers, phase."""
    chain = _chain(rpc_url, deployment, need_key=False)
    store = HttpStore(coordinator)
    with CoordinatorClient(coordinator) as api:
        listed = _guard(lambda: api.tasks(status="open"))
    rows: list[dict[str, Any]] = []
    for item in listed:
        info = _guard(partial(chain.task, item["task_id"]))
        if info.status != TaskStatus.OPEN:
            continue
        rows.append({
            "task_id": info.task_id, "name": _spec_name(store, item["spec_cid"]), "spec_cid": item["spec_cid"],
            "reward_pool": str(info.terms.reward_pool), "current_round": info.current_round,
            "rounds": info.terms.rounds, "min_stake": str(info.terms.min_stake), "trainers": info.trainer_count,
            "max_trainers": info.terms.max_trainers, "validators": info.validator_count,
            "phase": _guard(partial(chain.phase, info.task_id)).name.lower(),
        })  # fmt: skip
    if as_json:
        print_json(rows)
        return
    table = Table("task", "name", "reward pool (FMT)", "rounds", "stake (FMT)", "trainers", "phase")
    for row in rows:
        table.add_row(
            str(row["task_id"]), row["name"], tokens(int(row["reward_pool"])), f"{row['current_round']}/{row['rounds']}",
            tokens(int(row["min_stake"])), f"{row['trainers']}/{row['max_trainers']}", row["phase"],
        )  # fmt: skip
    console.print(table if rows else "no open tasks")


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
    say(f"[green]joined task {task_id}[/green] as {node.address}")


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
    nodes: list[RoundNode] = []
    with interruptible(nodes, "fedmarket-trainer run"), RunDisplay() as display:
        node = _node(
            task_id, key, rpc_url, deployment, coordinator, state_dir, data=data, poll=poll, attacker=attacker,
            on_event=display.on_event, seed=seed,
        )  # fmt: skip
        nodes.append(node)
        summary = _guard(node.run)
    node.state.write_summary(summary)
    if summary.ejected:
        say(
            "[red]this node's update was rejected and its stake slashed; see `fedmarket-trainer status`[/red]"
        )
    say(f"[green]task {task_id} done[/green]: {done_line(summary, 'revealed')}")


@app.command()
def status(
    task_id: int, key: KeyOpt = None, rpc_url: RpcOpt = DEFAULT_RPC, deployment: DeploymentOpt = DEFAULT_DEPLOYMENT,
    state_dir: StateOpt = DEFAULT_STATE, as_json: JsonOpt = False,
) -> None:  # fmt: skip
    """Rounds taken part in, the consensus on each update, earned, claimable, stake, privacy spent."""
    chain = _chain(rpc_url, deployment, key)
    info = _existing_task(chain, task_id)
    me = chain.signer
    trainer = _guard(lambda: chain.trainer(task_id, me))
    rounds: list[dict[str, Any]] = []
    for saved in StateDir(state_dir, task_id, me).all_rounds():
        settled = _guard(partial(read_round, chain, task_id, saved.round)).settled_trainers.get(me)
        rounds.append({
            "round": saved.round, "committed": saved.committed, "revealed": saved.revealed,
            "outcome": settled.outcome.name.lower() if settled else None,
            "consensus": str(settled.consensus) if settled else None,
            "payout": str(settled.payout) if settled else None, "epsilon": saved.epsilon,
        })  # fmt: skip
    earned = sum(
        e.args["payout"]
        for e in _guard(lambda: list(chain.iter_events("TrainerSettled", task_id=task_id)))
        if e.args["trainer"] == me
    )
    epsilon_total = sum(r["epsilon"] or 0.0 for r in rounds)
    summary: dict[str, Any] = {
        **_task_state(chain, info), "address": me, "joined": trainer.joined, "stake": str(trainer.stake),
        "earned": str(earned), "claimable": str(trainer.claimable), "epsilon": epsilon_total or None,
        "rounds_taken_part": rounds,
    }  # fmt: skip
    if as_json:
        print_json(summary)
        return
    table = Table("round", "revealed", "outcome", "consensus", "payout (FMT)", "epsilon")
    for r in rounds:
        table.add_row(
            str(r["round"]), "yes" if r["revealed"] else "no", r["outcome"] or "-",
            f"{int(r['consensus']) / SCALE:.4f}" if r["consensus"] else "-",
            tokens(int(r["payout"])) if r["payout"] else "-",
            f"{r['epsilon']:.2f}" if r["epsilon"] is not None else "-",
        )  # fmt: skip
    console.print(table)
    console.print(
        f"{_task_line(summary)}: stake {fmt(trainer.stake)}{'' if trainer.joined else ' (not joined)'}, "
        f"earned {fmt(earned)}, claimable {fmt(trainer.claimable)}"
        + (f", privacy spent epsilon {epsilon_total:.2f}" if epsilon_total else ""),
        soft_wrap=True,
    )


def _task_state(chain: MarketClient, info) -> dict:
    """A task's place in time for `status`: round, phase and the phase's deadline (chain time)."""
    phase = _guard(lambda: chain.phase(info.task_id))
    deadline = None
    if info.current_round and phase in PHASE_DEADLINES:
        round_info = _guard(lambda: chain.round(info.task_id, info.current_round))
        deadline = getattr(round_info, PHASE_DEADLINES[phase])
    return {
        "task_id": info.task_id, "status": info.status.name.lower(), "round": info.current_round,
        "rounds": info.terms.rounds, "phase": phase.name.lower(),
        "phase_deadline": iso_time(deadline) if deadline else None,
    }  # fmt: skip


def _task_line(state: dict) -> str:
    until = f" until {state['phase_deadline']}" if state["phase_deadline"] else ""
    return (
        f"task {state['task_id']} ({state['status']}, round {state['round']}/{state['rounds']}, "
        f"phase {state['phase']}{until})"
    )


PHASE_DEADLINES = {
    RoundPhase.COMMIT: "commit_deadline",
    RoundPhase.REVEAL: "reveal_deadline",
    RoundPhase.SCORE_COMMIT: "score_commit_deadline",
    RoundPhase.SCORE_REVEAL: "score_reveal_deadline",
}


@app.command()
def claim(
    task_id: int, key: KeyOpt = None, rpc_url: RpcOpt = DEFAULT_RPC, deployment: DeploymentOpt = DEFAULT_DEPLOYMENT,
    coordinator: CoordinatorOpt = DEFAULT_COORDINATOR, state_dir: StateOpt = DEFAULT_STATE,
) -> None:  # fmt: skip
    """Claim what the contract credited you in the task (no coordinator needed)."""
    node = _node(task_id, key, rpc_url, deployment, coordinator, state_dir, data=None)
    amount = _guard(node.claim)
    say(f"claimed {fmt(amount)}" if amount else "nothing to claim")


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
        task_id=task_id, chain=chain, coordinator=api, data=None,
        store=HttpStore(coordinator, signer=UploadSigner.for_market(chain, task_id)),  # signed here, key stays
        state_root=state_dir, poll_interval=poll, on_event=on_event or event_printer(EVENT_LINES),
        attack=attack(attacker, seed=task_id) if attacker else None, train_seed=seed,
    )  # fmt: skip
    attach_node_log(node.state.path, f"fedmarket-trainer: task {task_id} as {node.address} on {rpc_url}")
    if data is not None:
        spec = _guard(node.spec)
        node.data = _guard(lambda: load_local_data(data, spec))
        say(f"{len(node.data)} local samples from {data} fit task {task_id}")
    return node


def _guard(action: Callable[[], T]) -> T:
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
        event_printer(EVENT_LINES)(kind, info)


# One line per node event; the node's event fields fill the template. These are the events every
# node emits (trainer/round_node.py); each CLI adds its own.
NODE_EVENT_LINES = {
    "resumed": lambda i: f"[cyan]{i['note']}[/cyan]",
    "missed": lambda i: f"[yellow]round {i['round']}: missed ({i['reason']})[/yellow]",
    "claimed": lambda i: f"[green]claimed {fmt(i['amount'])}[/green]",
    "stake_withdrawn": lambda i: f"stake returned: {fmt(i['amount'])}",
}
# Events only the log file gets (a terminal shows them on the live line).
LOG_ONLY_LINES = {"phase": lambda i: f"round {i['round']}: {i['phase']} phase"}
EVENT_LINES = {
    **NODE_EVENT_LINES,
    "epoch": lambda i: f"  round {i['round']}: epoch {i['epoch']} loss {i['loss']:.4f}",
    "training": lambda i: f"round {i['round']}: training {i['epochs']} local epoch(s)",
    "committed": lambda i: f"round {i['round']}: committed",
    "revealed": lambda i: f"round {i['round']}: uploaded {i['cid'][:20]}... and revealed",
    "joined": lambda i: f"joined, staked {fmt(i['stake'])}",
    "ejected": lambda i: f"[red]rejected and slashed in round {i['round']}: no longer in the task[/red]",
}


def event_printer(lines: dict) -> Callable[[str, dict], None]:
    """A node's event sink that prints (and logs) the events `lines` has a template for."""

    def print_event(kind: str, info: dict) -> None:
        if kind in lines:
            say(lines[kind](info))
        elif kind in LOG_ONLY_LINES:
            node_log.info(LOG_ONLY_LINES[kind](info))

    return print_event


def say(message: str) -> None:
    """One line for the user (rich markup), the same words in the node log."""
    console.print(message, soft_wrap=True)
    node_log.info(Text.from_markup(message).plain)


def done_line(summary: RoundSummary, what: str) -> str:
    return (
        f"{what} in rounds {summary.rounds_revealed}, claimed {fmt(summary.claimed)}, "
        f"stake returned {fmt(summary.stake_returned)}, gas {summary.gas_used:,}"
    )


def attach_node_log(directory: Path, started: str) -> Path:
    """Appends this process's node messages, and the SDK's warnings, to `directory`/node.log with
    ISO 8601 UTC timestamps: the record a person reads after the terminal is gone."""
    global _log_file
    path = directory / "node.log"
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(IsoFormatter(LOG_FORMAT))
    for logger in (node_log, logging.getLogger("fedmarket")):  # the SDK's and nodes' warnings too
        if _log_file is not None:
            logger.removeHandler(_log_file)
        logger.addHandler(handler)
    if _log_file is not None:
        _log_file.close()  # one process, one node: a second command in-process (tests) moves the log
    _log_file = handler
    node_log.info("%s (fedmarket %s, pid %d)", started, package_version(), os.getpid())
    return path


class interruptible:  # noqa: N801 - used as a `with` statement, like contextlib's helpers
    """Turns Ctrl-C into one sentence of what is pending in the task and exit code 130, without a
    traceback: the node (once `nodes` holds it) reads its standing from the chain and state dir."""

    def __init__(self, nodes: list[RoundNode], command: str) -> None:
        self.nodes = nodes
        self.command = command

    def __enter__(self) -> interruptible:
        return self

    def __exit__(self, kind, exc, tb) -> None:
        if kind is None or not issubclass(kind, KeyboardInterrupt):
            return
        try:
            message = (
                self.nodes[0].pending(self.command)
                if self.nodes
                else "stopped while starting; nothing was sent"
            )
        except FedmarketError as error:
            message = f"stopped; what is pending could not be read ({error})"
        except KeyboardInterrupt:
            message = "stopped"
        errors.print(f"[yellow]{message}[/yellow]", soft_wrap=True)
        node_log.warning(message)
        raise typer.Exit(130)


def run_app(cli: typer.Typer) -> None:
    """A node CLI's entry point."""
    console_errors = logging.StreamHandler(sys.stderr)
    console_errors.setLevel(logging.WARNING)
    console_errors.setFormatter(IsoFormatter(LOG_FORMAT))
    logging.basicConfig(level=logging.WARNING, handlers=[console_errors])
    # Small models train fastest on one thread, and several nodes may share a host.
    torch.set_num_threads(int(os.environ.get("FEDMARKET_TORCH_THREADS", "1")))
    cli()


def main() -> None:
    run_app(app)


if __name__ == "__main__":
    main()
