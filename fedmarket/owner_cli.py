"""`fedmarket-owner`: post a task from your own data and follow it.

    fedmarket-owner post --data mine.csv --spec spec.yaml --pool 1000 --rounds 3 --shards 3
    fedmarket-owner status 1 [--json]
    fedmarket-owner watch 1
    fedmarket-owner fetch-model 1 [--round 2] --out model.safetensors
    fedmarket-owner report 1 2

`post` checks the data against the spec (the rule every node applies), splits off the owner's
validation split, optionally writes trainer shards, signs the terms and the pool's permit here and
posts only the signatures through the coordinator, which relays the transaction (the owner needs
tokens, no gas). Everything else reads the chain, and the coordinator's store for blobs that are
verified against their on-chain hashes.

Settings come from options or the environment: FEDMARKET_RPC_URL, FEDMARKET_DEPLOYMENT_FILE,
FEDMARKET_COORDINATOR_URL, FEDMARKET_OWNER_KEY (signs locally, never sent anywhere).
"""

from __future__ import annotations

import json
import logging
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from fedmarket.chain import MarketClient, RoundInfo, TaskInfo
from fedmarket.cid import cid_from_digest
from fedmarket.client import CoordinatorClient
from fedmarket.codec import decode_model
from fedmarket.consensus import SCALE
from fedmarket.display import tokens, version_option
from fedmarket.errors import ContractRevert, CorruptBlobError, FedmarketError
from fedmarket.files import atomic_write
from fedmarket.models import build_model
from fedmarket.owner import (
    TermsOptions,
    check_targets,
    joined_accounts,
    load_owner_data,
    load_spec,
    parse_address,
    parse_percent,
    parse_private_key,
    parse_tokens,
    plan_split,
    post_with_split,
    terms_json,
)
from fedmarket.protocol import MAX_WINDOW, RoundPhase, TaskStatus
from fedmarket.report import RoundReport
from fedmarket.rounds import fetch_spec
from fedmarket.store import HttpStore

app = typer.Typer(help="Post fedmarket tasks from your own data and follow them.", no_args_is_help=True)
console = Console()
errors = Console(stderr=True)

RpcOpt = Annotated[str, typer.Option("--rpc-url", envvar="FEDMARKET_RPC_URL", help="JSON-RPC endpoint")]
DeploymentOpt = Annotated[
    Path, typer.Option("--deployment", envvar="FEDMARKET_DEPLOYMENT_FILE", help="deployments/<network>.json")
]
CoordinatorOpt = Annotated[
    str, typer.Option("--coordinator", envvar="FEDMARKET_COORDINATOR_URL", help="coordinator API (and store)")
]
KeyOpt = Annotated[
    str | None,
    typer.Option(
        "--key", envvar="FEDMARKET_OWNER_KEY", help="owner private key, 32 bytes of hex (signs here)"
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="machine output: amounts in base units, as strings")]

DEFAULT_RPC = "http://127.0.0.1:8545"
DEFAULT_DEPLOYMENT = Path("deployments/local.json")
DEFAULT_COORDINATOR = "http://127.0.0.1:8000"
ZERO_HASH = bytes(32)


def fail(message: str) -> NoReturn:
    errors.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


def _guard(action):
    """Runs `action`, turning the errors a user can fix into one red line and exit code 1."""
    try:
        return action()
    except ContractRevert as revert:
        fail(f"the market refused: {revert}")
    except (FedmarketError, OSError) as exc:  # CoordinatorError is a FedmarketError; OSError: files
        fail(str(exc))


def _chain(rpc_url: str, deployment: Path) -> MarketClient:
    return _guard(lambda: MarketClient.connect(rpc_url, deployment))


def _store(coordinator: str, **options: Any) -> HttpStore:
    """The coordinator's store; every blob read from it is checked against its CID."""
    return _guard(lambda: HttpStore(coordinator, **options))


def _task(chain: MarketClient, task_id: int) -> TaskInfo:
    try:
        return chain.task(task_id)
    except ContractRevert as revert:
        if revert.name == "TaskMarketUnknownTask":
            fail(f"task {task_id} does not exist (the market has {chain.task_count()} tasks)")
        fail(f"the market refused: {revert}")
    except FedmarketError as exc:
        fail(str(exc))


@app.callback()
def _root(
    show_version: Annotated[bool, version_option("fedmarket-owner")] = False,
) -> None:
    """Post fedmarket tasks from your own data and follow them."""


# ---------------------------------------------------------------------- post


@app.command()
def post(
    data: Annotated[
        Path, typer.Option("--data", help="your data: NPZ (X, y) or CSV with the spec's label column")
    ],
    spec_file: Annotated[
        Path, typer.Option("--spec", help="model spec, JSON or YAML in the TaskSpec schema")
    ],
    pool: Annotated[str, typer.Option(help="reward pool, FMT (decimals allowed)")] = "1000",
    rounds: Annotated[int, typer.Option(min=1, max=65535)] = 3,
    min_trainers: Annotated[int, typer.Option(min=1, max=65535, help="trainers a round needs")] = 2,
    max_trainers: Annotated[int, typer.Option(min=1, max=65535)] = 10,
    stake: Annotated[str, typer.Option(help="trainer stake, FMT")] = "10",
    validator_stake: Annotated[str, typer.Option(help="least validator stake, FMT")] = "10",
    min_validators: Annotated[int, typer.Option(min=1, max=65535, help="score vectors a round needs")] = 1,
    max_validators: Annotated[int, typer.Option(min=1, max=65535)] = 5,
    validator_share: Annotated[str, typer.Option(help="% of each round's budget paid to validators")] = "10",
    slash: Annotated[str, typer.Option(help="% of a stake burned for a rejected update or a silence")] = "50",
    commit_window: Annotated[int, typer.Option(min=1, max=MAX_WINDOW, help="seconds")] = 120,
    reveal_window: Annotated[int, typer.Option(min=1, max=MAX_WINDOW, help="seconds")] = 60,
    score_window: Annotated[int, typer.Option(min=1, max=MAX_WINDOW, help="seconds")] = 120,
    score_reveal_window: Annotated[int, typer.Option(min=1, max=MAX_WINDOW, help="seconds")] = 60,
    coordinator_address: Annotated[
        str | None, typer.Option(help="the terms' coordinator (default: the one at --coordinator)")
    ] = None,
    validation_fraction: Annotated[float, typer.Option(help="share kept as your validation split")] = 0.2,
    validation_out: Annotated[
        Path | None, typer.Option(help="where the split goes (default data/validator-owner.<npz|csv>)")
    ] = None,
    shards: Annotated[int, typer.Option(min=0, help="also write N trainer shards of the rest")] = 0,
    shards_dir: Annotated[Path, typer.Option(help="where the shards go (trainer-<i>.<npz|csv>)")] = Path(
        "data"
    ),
    alpha: Annotated[
        float | None, typer.Option(help="label skew: Dirichlet(alpha) shards, > 0; default IID")
    ] = None,
    seed: Annotated[int, typer.Option(help="seed of the split and the shards")] = 0,
    force: Annotated[bool, typer.Option(help="replace existing split files")] = False,
    key: KeyOpt = None,
    rpc_url: RpcOpt = DEFAULT_RPC,
    deployment: DeploymentOpt = DEFAULT_DEPLOYMENT,
    coordinator: CoordinatorOpt = DEFAULT_COORDINATOR,
) -> None:
    """Check your data against the spec, keep a validation split, write shards, post the task."""
    if not key:
        fail("no owner key: pass --key 0x... or set FEDMARKET_OWNER_KEY")
    owner = _guard(lambda: parse_private_key(key))
    options = _guard(
        lambda: TermsOptions(
            pool=parse_tokens(pool, what="--pool"), rounds=rounds, min_trainers=min_trainers,
            max_trainers=max_trainers, stake=parse_tokens(stake, what="--stake"),
            validator_stake=parse_tokens(validator_stake, what="--validator-stake"),
            min_validators=min_validators, max_validators=max_validators,
            validator_share_bps=parse_percent(validator_share, what="--validator-share"),
            slash_bps=parse_percent(slash, what="--slash"), commit_window=commit_window,
            reveal_window=reveal_window, score_window=score_window, score_reveal_window=score_reveal_window,
        )
    )  # fmt: skip
    spec = _guard(lambda: load_spec(spec_file))
    local = _guard(lambda: load_owner_data(data, spec))
    target = validation_out or Path("data") / f"validator-owner.{spec.data.format}"
    files = _guard(
        lambda: plan_split(
            local, validation_path=target, validation_fraction=validation_fraction, shards=shards,
            shards_dir=shards_dir, alpha=alpha, seed=seed,
        )
    )  # fmt: skip
    _guard(lambda: check_targets(files, overwrite=force))
    console.print(f"{len(local)} samples from {data} fit spec {spec.name!r}")

    market = _chain(rpc_url, deployment)
    with CoordinatorClient(coordinator) as api:
        if coordinator_address:
            address = _guard(lambda: parse_address(coordinator_address, what="--coordinator-address"))
        else:
            address = _guard(api.info)["coordinator"]
        terms = _guard(lambda: options.to_terms(spec, address))
        posted = _guard(
            lambda: post_with_split(api, market, spec=spec, terms=terms, owner=owner, data=local, files=files)
        )
    task_id = posted["task_id"]
    console.print(
        f"[green]task {task_id} posted[/green]: spec {posted['spec_cid']}, tx {posted['tx_hash']}",
        highlight=False,
    )
    console.print(
        f"pool {tokens(terms.reward_pool)} FMT over {terms.rounds} round{'s' if terms.rounds > 1 else ''}, "
        f"owner {owner.address}",
        highlight=False,
    )
    validation, *trainers = files
    console.print(
        f"your validation split: {validation.path} ({len(validation.rows)} samples; it stays on this machine)",
        highlight=False,
    )
    for shard in trainers:
        console.print(f"trainer shard: {shard.path} ({len(shard.rows)} samples)", highlight=False)
    console.print("next:", highlight=False)
    console.print(
        f"  FEDMARKET_VALIDATOR_KEY=<your owner key> fedmarket-validator run {task_id} --data {validation.path}",
        highlight=False, markup=False,
    )  # fmt: skip
    shard_hint = trainers[0].path if trainers else f"<their data>.{spec.data.format}"
    console.print(
        f"  trainers: fedmarket-trainer run {task_id} --data {shard_hint}", highlight=False, markup=False
    )
    console.print(f"  follow it: fedmarket-owner watch {task_id}", highlight=False)


# ---------------------------------------------------------------------- status and watch


def rounds_done(chain: MarketClient, info: TaskInfo) -> int:
    """Rounds finalized or aborted: every started round but an open current one."""
    if info.current_round == 0:
        return 0
    return info.current_round - (0 if chain.round(info.task_id, info.current_round).closed else 1)


def _phase(chain: MarketClient, info: TaskInfo) -> RoundPhase:
    return chain.phase(info.task_id) if info.status == TaskStatus.OPEN else RoundPhase.NONE


@app.command()
def status(
    task_id: int, as_json: JsonOpt = False, rpc_url: RpcOpt = DEFAULT_RPC,
    deployment: DeploymentOpt = DEFAULT_DEPLOYMENT, coordinator: CoordinatorOpt = DEFAULT_COORDINATOR,
) -> None:  # fmt: skip
    """Terms, phase, rounds done, trainers and validators, pool: from the chain (the spec's name
    from the coordinator's store, verified)."""
    chain = _chain(rpc_url, deployment)
    info = _task(chain, task_id)
    phase = _guard(lambda: _phase(chain, info))
    done = _guard(lambda: rounds_done(chain, info))
    trainers, validators = _guard(lambda: joined_accounts(chain, task_id))
    with _store(coordinator, retries=1) as store:
        try:
            name: str | None = fetch_spec(store, info.terms.spec_hash).name
        except FedmarketError:  # the spec is not in this store, or it is down: the rest still stands
            name = None
    terms = info.terms
    result: dict[str, Any] = {
        "task_id": task_id, "name": name, "owner": info.owner, "status": info.status.name.lower(),
        "phase": phase.name.lower(), "current_round": info.current_round, "rounds_done": done,
        "rounds": terms.rounds, "pool": str(info.pool), "unclaimed": str(info.unclaimed),
        "spec_cid": cid_from_digest(terms.spec_hash),
        "model_cid": cid_from_digest(info.model_hash) if info.model_hash != ZERO_HASH else None,
        "trainer_count": info.trainer_count,
        "trainers": [{"trainer": a, "stake": str(stake)} for a, stake in trainers.items()],
        "validator_count": info.validator_count,
        "validators": [{"validator": a, "stake": str(stake)} for a, stake in validators.items()],
        "terms": terms_json(terms),
    }  # fmt: skip
    if as_json:
        print(json.dumps(result, indent=2))
        return
    console.print(
        f"task {task_id} {name or '(spec unavailable)'!r}: {result['status']}, round {info.current_round}/"
        f"{terms.rounds} ({done} done), phase {result['phase']}",
        highlight=False,
    )
    console.print(
        f"pool left {tokens(info.pool)} of {tokens(terms.reward_pool)} FMT, "
        f"unclaimed {tokens(info.unclaimed)} FMT; owner {info.owner}",
        highlight=False,
    )
    console.print(
        f"trainers {info.trainer_count} (need {terms.min_trainers}, at most {terms.max_trainers}), stake "
        f"{tokens(terms.min_stake)} FMT; validators {info.validator_count} (need {terms.min_validators}, "
        f"at most {terms.max_validators}), stake at least {tokens(terms.min_validator_stake)} FMT, "
        f"{terms.validator_share_bps / 100:g}% of each round's budget; slash {terms.slash_bps / 100:g}%",
        highlight=False,
    )
    console.print(
        f"windows: commit {terms.commit_window} s, reveal {terms.reveal_window} s, score {terms.score_window} s, "
        f"score reveal {terms.score_reveal_window} s; spec {result['spec_cid']}",
        highlight=False,
    )
    table = Table("role", "account", "stake (FMT)")
    for role, joined in (("trainer", trainers), ("validator", validators)):
        for account, stake in joined.items():
            table.add_row(role, account, tokens(stake))
    if table.row_count:
        console.print(table)


def round_state(round_info: RoundInfo, phase: RoundPhase | None) -> str:
    """A round's state in one word: the live phase, or how it ended."""
    if round_info.aborted:
        return "aborted"
    if round_info.closed:
        return "published" if round_info.model_published else "finalized"
    return phase.name.lower() if phase is not None else "open"


@dataclass(frozen=True)
class RoundsView:
    """What `watch` shows: a title line, one row per round, and whether the task is over."""

    title: str
    rows: tuple[tuple[str, ...], ...]
    ended: bool

    def table(self) -> Table:
        table = Table(
            "round", "state", "commits", "reveals", "score commits", "score reveals", "paid (FMT)", "model",
            title=self.title,
        )  # fmt: skip
        for row in self.rows:
            table.add_row(*row)
        return table


def rounds_view(chain: MarketClient, task_id: int) -> RoundsView:
    """The task's rounds from the chain, and whether anything is left to watch."""
    info = chain.task(task_id)
    phase = _phase(chain, info)
    rows, last = [], None
    for round_no in range(1, info.current_round + 1):
        last = chain.round(task_id, round_no)
        live = phase if round_no == info.current_round and not last.closed else None
        rows.append((
            str(round_no), round_state(last, live), str(last.commit_count), str(last.reveal_count),
            str(last.score_commit_count), str(last.score_reveal_count),
            tokens(last.payout) if last.closed else "-",
            cid_from_digest(last.new_model_hash)[:20] + "..." if last.model_published else "-",
        ))  # fmt: skip
    title = (
        f"task {task_id}: {info.status.name.lower()}, round {info.current_round}/{info.terms.rounds}, "
        f"trainers {info.trainer_count}, validators {info.validator_count}, pool left {tokens(info.pool)} FMT"
    )
    # A completed task's last model may be published after the status changed: wait for it.
    awaiting_model = last is not None and last.closed and not last.aborted and not last.model_published
    return RoundsView(title, tuple(rows), info.status != TaskStatus.OPEN and not awaiting_model)


@app.command()
def watch(
    task_id: int,
    interval: Annotated[float, typer.Option(min=0.1, help="seconds between refreshes")] = 2.0,
    rpc_url: RpcOpt = DEFAULT_RPC,
    deployment: DeploymentOpt = DEFAULT_DEPLOYMENT,
) -> None:
    """A live table of the task's rounds, until the task ends (or Ctrl-C). Without a terminal
    (a log), the table is printed again each time it changes."""
    chain = _chain(rpc_url, deployment)
    _task(chain, task_id)
    shown: RoundsView | None = None
    live = Live(console=console, auto_refresh=False) if console.is_terminal else None
    try:
        with live or nullcontext():
            while True:
                view = _guard(lambda: rounds_view(chain, task_id))
                if view != shown and live is not None:
                    live.update(view.table(), refresh=True)
                elif view != shown:
                    console.print(view.table())
                shown = view
                if view.ended:
                    break
                time.sleep(interval)
    except KeyboardInterrupt:
        console.print("stopped watching; the task goes on")
        return
    console.print(f"task {task_id} is over", highlight=False)


# ---------------------------------------------------------------------- fetch-model and report


def _published_round(chain: MarketClient, info: TaskInfo, round_no: int | None) -> RoundInfo:
    if round_no is not None:
        if not 1 <= round_no <= info.current_round:
            fail(f"task {info.task_id} has no round {round_no} (rounds started: {info.current_round})")
        picked = chain.round(info.task_id, round_no)
        if not picked.model_published:
            fail(
                f"round {round_no} of task {info.task_id} has no published model ({round_state(picked, None)})"
            )
        return picked
    for candidate in range(info.current_round, 0, -1):
        picked = chain.round(info.task_id, candidate)
        if picked.model_published:
            return picked
    fail(f"task {info.task_id} has no published model yet (rounds started: {info.current_round})")


@app.command("fetch-model")
def fetch_model(
    task_id: int,
    out: Annotated[Path, typer.Option("--out", help="where to write the model (safetensors)")],
    round_no: Annotated[
        int | None, typer.Option("--round", help="that round's model (default: the latest)")
    ] = None,
    rpc_url: RpcOpt = DEFAULT_RPC,
    deployment: DeploymentOpt = DEFAULT_DEPLOYMENT,
    coordinator: CoordinatorOpt = DEFAULT_COORDINATOR,
) -> None:
    """Download a published model, verified against its on-chain hash; a mismatch writes nothing."""
    chain = _chain(rpc_url, deployment)
    info = _task(chain, task_id)
    picked = _guard(lambda: _published_round(chain, info, round_no))
    cid = cid_from_digest(picked.new_model_hash)
    with _store(coordinator) as store:
        try:
            blob = store.get(cid)  # verified against the CID, i.e. the on-chain newModelHash
        except CorruptBlobError:
            fail(
                f"the model of round {picked.round_no} from {coordinator} does not match its on-chain hash "
                f"0x{picked.new_model_hash.hex()}: refused, nothing written"
            )
        except FedmarketError as exc:
            fail(str(exc))
        spec = _guard(lambda: fetch_spec(store, info.terms.spec_hash))
    _guard(lambda: decode_model(blob, model=build_model(spec)))  # the spec's layout, finite weights
    written = atomic_write(out, blob)
    console.print(
        f"round {picked.round_no} model {cid} ({len(blob):,} bytes) verified against the chain, written to {written}",
        highlight=False,
    )


def _share(entry: str) -> str:
    return f"{int(entry) / SCALE:.4f}" if entry.isdigit() else entry


@app.command()
def report(
    task_id: int,
    round_no: Annotated[int, typer.Argument(metavar="ROUND", help="round number, from 1")],
    as_json: Annotated[
        bool, typer.Option("--json", help="the report itself (amounts in base units)")
    ] = False,
    rpc_url: RpcOpt = DEFAULT_RPC,
    deployment: DeploymentOpt = DEFAULT_DEPLOYMENT,
    coordinator: CoordinatorOpt = DEFAULT_COORDINATOR,
) -> None:
    """A settled round: submissions, outcomes, consensus, payouts and every validator's scores."""
    chain = _chain(rpc_url, deployment)
    info = _task(chain, task_id)
    if not 1 <= round_no <= info.current_round:
        fail(f"task {task_id} has no round {round_no} (rounds started: {info.current_round})")
    picked = _guard(lambda: chain.round(task_id, round_no))
    if picked.report_hash == ZERO_HASH:
        fail(f"round {round_no} of task {task_id} has no report yet ({round_state(picked, None)})")
    with _store(coordinator) as store:
        blob = _guard(lambda: store.get(cid_from_digest(picked.report_hash)))  # verified against the chain
    found = _guard(lambda: RoundReport.from_json(blob))
    if found.report_hash() != picked.report_hash or (found.task_id, found.round) != (task_id, round_no):
        fail(f"the report of round {round_no} is not the one the chain names: refused")
    if as_json:
        print(json.dumps(found.model_dump(mode="json"), indent=2))
        return
    console.print(
        f"task {task_id} round {round_no}: budget {tokens(found.budget)} FMT, paid "
        f"{tokens(found.payout)} FMT; {found.aggregation} of {found.model_cid[:20]}... -> "
        f"{found.new_model_cid[:20]}...",
        highlight=False,
    )
    submissions = Table("trainer", "outcome", "consensus", "payout (FMT)", "slashed (FMT)", "samples")
    for s in found.submissions:
        submissions.add_row(
            s.trainer, s.outcome.value, f"{s.consensus / SCALE:.4f}", tokens(s.payout),
            tokens(s.slashed), str(s.num_samples),
        )  # fmt: skip
    console.print(submissions)
    validators = Table("validator", "revealed", "agreement", "payout (FMT)", "slashed (FMT)")
    for v in found.validators:
        validators.add_row(
            v.validator, "yes" if v.revealed else "no", f"{v.agreement / SCALE:.4f}", tokens(v.payout),
            tokens(v.slashed),
        )  # fmt: skip
    console.print(validators)
    scorers = [v.validator for v in found.validators if v.revealed]
    scores = Table("scores (share of each validator's value)", *(f"{v[:10]}..." for v in scorers))
    for s in found.submissions:
        scores.add_row(s.trainer, *(_share(s.scores[v]) if v in s.scores else "-" for v in scorers))
    console.print(scores)


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    app()


if __name__ == "__main__":
    main()
