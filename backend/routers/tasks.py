"""Tasks: post one (relayed, owner-signed), and read its trainers, validators, rounds, status in
words, learning curve, standings and the earnings of an account."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Annotated

from eth_utils import is_address, to_checksum_address
from fastapi import APIRouter, Path, Query
from sqlalchemy import select

from backend.dashboard.evaluation import evaluate_model, evaluation_set
from backend.dashboard.status import TaskProgress, status_text, submission_reason
from backend.db import (
    ChainEventRow,
    EarningRow,
    RoundRow,
    RoundState,
    RoundValidatorRow,
    SubmissionRow,
    TaskRow,
    TaskState,
    ValidatorRow,
)
from backend.deps import ChainDep, DbDep, ServicesDep, SettingsDep, StoreDep
from backend.errors import ApiError, error_responses
from backend.indexer import FLAG_NAMES
from backend.schemas import (
    CreateTaskRequest,
    EarningsPublic,
    MetricPoint,
    RoundPublic,
    RoundSummary,
    RoundValidatorPublic,
    Slash,
    SubmissionPublic,
    TaskCreated,
    TaskList,
    TaskMetrics,
    TaskPublic,
    TaskStandings,
    TaskSummary,
    TaskValidator,
    TrainerStanding,
    ValidatorStanding,
    from_row,
)
from fedmarket.chain import MarketClient, SignedTask
from fedmarket.consensus import normalized_scores
from fedmarket.errors import (
    ChainError,
    ContractRevert,
    ModelBuildError,
    SpecError,
    StoreError,
)
from fedmarket.ledger import address_order
from fedmarket.models import build_model
from fedmarket.protocol import RoundPhase
from fedmarket.report import SubmissionOutcome
from fedmarket.scoring import SCORE_UNIT
from fedmarket.spec import TaskSpec
from fedmarket.store import ContentStore

router = APIRouter(prefix="/v1/tasks", tags=["tasks"])

# Ids the database can hold (SQLite integers are signed 64-bit) and round numbers the market can.
TaskId = Annotated[int, Path(ge=0, lt=2**63, description="the market's task id")]
RoundNo = Annotated[int, Path(ge=0, lt=2**16, description="round number, from 1")]


# ---------------------------------------------------------------------- posting


@router.post(
    "", status_code=201, response_model=TaskCreated, responses=error_responses(403, 422, 503),
    summary="Post a task signed by its owner; the coordinator relays it",
)  # fmt: skip
def create_task(
    body: CreateTaskRequest, services: ServicesDep, chain: ChainDep, store: StoreDep
) -> TaskCreated:
    try:
        spec = TaskSpec.model_validate(body.spec)
        build_model(spec)  # shapes and size limits, before anything is written
    except (SpecError, ModelBuildError, ValueError) as exc:
        raise ApiError(422, "InvalidSpec", str(exc)) from None
    terms = body.terms.to_terms()
    if spec.spec_hash() != terms.spec_hash:
        raise ApiError(
            422, "SpecHashMismatch",
            f"terms.spec_hash is 0x{terms.spec_hash.hex()} but the spec's canonical JSON hashes to "
            f"0x{spec.spec_hash().hex()}; sign terms with TaskSpec.spec_hash()",
        )  # fmt: skip
    if terms.coordinator != chain.address:
        raise ApiError(
            422, "WrongCoordinator", f"terms.coordinator must be this coordinator, {chain.address}"
        )
    latest = chain.chain_time()
    if latest > body.deadline:
        raise ApiError(
            422, "SignatureExpired", f"the owner's signature expired at {body.deadline}; sign again"
        )
    margin = services.settings.relay_deadline_margin
    for what, deadline in (("signature", body.deadline), ("permit", body.permit.deadline)):
        if deadline < latest + margin:
            raise ApiError(
                422, "DeadlineTooSoon",
                f"the owner's {what} expires at {deadline}, {deadline - latest} s after the latest block "
                f"({latest}); the relay needs {margin} s for the transaction to be mined: sign with a "
                "later deadline",
            )  # fmt: skip
    balance = chain.token_balance(body.owner)
    if balance < terms.reward_pool:
        raise ApiError(
            422,
            "InsufficientFunds",
            f"owner {body.owner} holds {balance} tokens, the reward pool needs {terms.reward_pool}",
        )
    signed = SignedTask(terms, body.owner, body.deadline, body.signature, body.permit.to_permit()).as_kwargs()
    try:
        chain.simulate_create_task_for(**signed)
    except ContractRevert as revert:
        raise ApiError.from_revert(revert, doing="this task") from None
    spec_cid = store.put(spec.to_canonical_json())
    try:
        result = chain.create_task_for(**signed)
    except ContractRevert as revert:
        raise ApiError.from_revert(revert, doing="this task") from None
    services.indexer.sync()  # the task is readable through the API as soon as this returns
    return TaskCreated(task_id=result.task_id, spec_cid=spec_cid, tx_hash=result.tx_hash)


# ---------------------------------------------------------------------- reading

_specs: dict[str, TaskSpec] = {}  # spec CID -> spec: a CID names one spec forever


def task_spec(store: ContentStore, spec_cid: str) -> TaskSpec | None:
    """The task's spec from this store (verified against its CID); None when it lacks it."""
    if spec_cid not in _specs:
        try:
            _specs[spec_cid] = TaskSpec.from_json(store.get(spec_cid))
        except (StoreError, SpecError):
            return None
    return _specs[spec_cid]


def spec_name(store: ContentStore, spec_cid: str) -> str | None:
    spec = task_spec(store, spec_cid)
    return spec.name if spec else None


@dataclass
class TrainerBook:
    """A trainer's seat and stake in a task, folded from its events (the contract's own books)."""

    joined: bool = False
    stake: int = 0
    slashes: list[tuple[int, int]] = field(default_factory=list)  # (round, amount burned)


TRAINER_EVENTS = ("TrainerJoined", "TrainerLeft", "TrainerSlashed", "StakeWithdrawn")


def trainer_books(session, task_id: int) -> dict[str, TrainerBook]:
    """Every trainer that ever joined the task; the joined ones in the order they (last) joined."""
    books: dict[str, TrainerBook] = {}
    events = session.scalars(
        select(ChainEventRow)
        .where(ChainEventRow.task_id == task_id, ChainEventRow.name.in_(TRAINER_EVENTS))
        .order_by(ChainEventRow.block_number, ChainEventRow.log_index)
    )
    for event in events:
        args = event.args
        if event.name == "TrainerJoined":
            book = books.pop(args["trainer"], TrainerBook())  # a rejoin moves to the end
            books[args["trainer"]] = book
            book.joined, book.stake = True, book.stake + int(args["stake"])
        elif (
            seat := books.get(args["account" if event.name == "StakeWithdrawn" else "trainer"])
        ) is not None:
            seat.joined = False
            if event.name == "TrainerSlashed":
                seat.stake -= int(args["amount"])
                seat.slashes.append((args["round"], int(args["amount"])))
            else:  # TrainerLeft takes the whole stake back, StakeWithdrawn whatever is left
                seat.stake = 0
    return books


def _get_task(session, task_id: int) -> TaskRow:
    task = session.get(TaskRow, task_id)
    if task is None:
        raise ApiError(404, "TaskNotFound", f"no task {task_id} (is the indexer caught up?)")
    return task


@dataclass
class _TaskFacts:
    """What the index says about a task, read in one session: enough for its summary."""

    task: TaskRow
    trainers: list[str]  # joined now, in the order they joined
    validators: list[TaskValidator]  # joined now, in the order they joined
    rounds: list[RoundSummary]
    rounds_closed: int
    current: RoundRow | None
    commits: int = 0
    reveals: int = 0
    score_commits: int = 0
    score_reveals: int = 0


def _facts(session, task: TaskRow) -> _TaskFacts:
    task_id = task.task_id
    rounds = list(
        session.scalars(select(RoundRow).where(RoundRow.task_id == task_id).order_by(RoundRow.round))
    )
    validators = session.scalars(
        select(ValidatorRow)
        .where(ValidatorRow.task_id == task_id, ValidatorRow.joined.is_(True))
        .order_by(ValidatorRow.joined_block, ValidatorRow.validator)
    )
    facts = _TaskFacts(
        task=task,
        trainers=[t for t, book in trainer_books(session, task_id).items() if book.joined],
        validators=[TaskValidator.model_validate(row) for row in validators],
        rounds=[RoundSummary.model_validate(r) for r in rounds],
        rounds_closed=sum(r.status != RoundState.STARTED for r in rounds),
        current=next((r for r in rounds if r.round == task.current_round), None),
    )
    if facts.current is not None:
        where = (SubmissionRow.task_id == task_id, SubmissionRow.round == task.current_round)
        submissions = list(session.scalars(select(SubmissionRow).where(*where)))
        facts.commits = len(submissions)
        facts.reveals = sum(s.update_hash is not None for s in submissions)
        scorers = list(
            session.scalars(
                select(RoundValidatorRow).where(
                    RoundValidatorRow.task_id == task_id, RoundValidatorRow.round == task.current_round
                )
            )
        )
        facts.score_commits = len(scorers)
        facts.score_reveals = sum(v.revealed_tx is not None for v in scorers)
    return facts


PHASE_DEADLINES = {
    RoundPhase.COMMIT: "commit_deadline",
    RoundPhase.REVEAL: "reveal_deadline",
    RoundPhase.SCORE_COMMIT: "score_commit_deadline",
    RoundPhase.SCORE_REVEAL: "score_reveal_deadline",
}


def _phase(chain: MarketClient, task: TaskRow) -> RoundPhase:
    return chain.phase(task.task_id) if task.status == TaskState.OPEN else RoundPhase.NONE


def _summary_fields(facts: _TaskFacts, phase: RoundPhase | None, store: ContentStore) -> dict:
    """The computed fields of TaskSummary; `phase` None when the chain did not answer."""
    task, terms, current = facts.task, facts.task.terms, facts.current
    progress = TaskProgress(
        status=TaskState(task.status), phase=phase, current_round=task.current_round,
        trainers=len(facts.trainers), min_trainers=terms["min_trainers"],
        validators=len(facts.validators), min_validators=terms["min_validators"],
        commits=facts.commits, reveals=facts.reveals,
        score_commits=facts.score_commits, score_reveals=facts.score_reveals,
        published=current is None or current.status != RoundState.FINALIZED or current.new_model_cid is not None,
    )  # fmt: skip
    deadline = getattr(current, PHASE_DEADLINES[phase]) if current and phase in PHASE_DEADLINES else None
    return {
        "name": spec_name(store, task.spec_cid),
        "phase": phase.name.lower() if phase is not None else None,
        "phase_deadline": deadline,
        "trainers_joined": len(facts.trainers),
        "validators_joined": len(facts.validators),
        "rounds_closed": facts.rounds_closed,
        "status_text": status_text(progress),
    }


@router.get(
    "", response_model=TaskList, responses=error_responses(422),
    summary="List tasks, optionally by status (open, completed, cancelled, expired)",
)  # fmt: skip
def list_tasks(
    db: DbDep,
    chain: ChainDep,
    store: StoreDep,
    status: Annotated[TaskState | None, Query(description="only tasks in this status")] = None,
) -> TaskList:
    with db.session() as session:
        query = select(TaskRow).order_by(TaskRow.task_id)
        if status is not None:
            query = query.where(TaskRow.status == status)
        every = [_facts(session, task) for task in session.scalars(query)]
    # The list works without the chain (it is an index): the open tasks' phases are then unknown.
    try:
        chain_time: int | None = chain.chain_time()
        phases = {f.task.task_id: _phase(chain, f.task) for f in every}
    except ChainError:
        chain_time = None
        phases = {f.task.task_id: RoundPhase.NONE for f in every if f.task.status != TaskState.OPEN}
    summaries = [
        from_row(TaskSummary, f.task, **_summary_fields(f, phases.get(f.task.task_id), store)) for f in every
    ]
    return TaskList(tasks=summaries, chain_time=chain_time)


@router.get(
    "/{task_id}", response_model=TaskPublic, responses=error_responses(404, 422, 503),
    summary="A task: terms, trainers, validators, current round and phase, every round, status in words",
)  # fmt: skip
def get_task(task_id: TaskId, db: DbDep, chain: ChainDep, store: StoreDep) -> TaskPublic:
    with db.session() as session:
        facts = _facts(session, _get_task(session, task_id))
    # The chain is asked after the session is closed: a slow node never holds a database connection.
    phase = _phase(chain, facts.task)
    return from_row(
        TaskPublic, facts.task, trainers=facts.trainers, validators=facts.validators, rounds=facts.rounds,
        chain_time=chain.chain_time(), **_summary_fields(facts, phase, store),
    )  # fmt: skip


FLAG_VALUES = {name: value for value, name in FLAG_NAMES.items()}


def _shares(row: RoundValidatorRow) -> dict[str, str] | None:
    """A revealed vector as the consensus rule normalizes it (fedmarket.consensus.normalized_scores)."""
    if row.scores is None:
        return None
    trainers = sorted(row.scores, key=address_order)
    vector = [FLAG_VALUES.get(row.scores[t]) or int(row.scores[t]) for t in trainers]
    [normalized] = normalized_scores(trainers=trainers, validators=[row.validator], scores=[vector])
    return {t: _share(t, row, n) for t, n in zip(trainers, normalized, strict=True)}


def _share(trainer: str, row: RoundValidatorRow, normalized: int) -> str:
    if trainer.lower() == row.validator.lower():
        return "self"  # a validator's entry for itself counts for nothing
    entry = (row.scores or {})[trainer]
    return entry if entry in FLAG_VALUES else str(normalized)


def _entries_by_trainer(validators: list[RoundValidatorRow]) -> dict[str, list[str]]:
    """Each trainer's entries in the revealed vectors (a validator's entry for itself left out)."""
    entries: dict[str, list[str]] = {}
    for row in validators:
        for trainer, entry in (row.scores or {}).items():
            if trainer.lower() != row.validator.lower():
                entries.setdefault(trainer, []).append(entry)
    return entries


@router.get(
    "/{task_id}/rounds/{round_no}", response_model=RoundPublic, responses=error_responses(404, 422),
    summary="One round: deadlines, commits, reveals, scores, consensus, payouts, slashes, tx hashes",
)  # fmt: skip
def get_round(task_id: TaskId, round_no: RoundNo, db: DbDep) -> RoundPublic:
    with db.session() as session:
        _get_task(session, task_id)
        row = session.get(RoundRow, (task_id, round_no))
        if row is None:
            raise ApiError(404, "RoundNotFound", f"task {task_id} has no round {round_no} yet")
        submissions = session.scalars(
            select(SubmissionRow).where(SubmissionRow.task_id == task_id, SubmissionRow.round == round_no)
        )
        validators = list(
            session.scalars(
                select(RoundValidatorRow).where(
                    RoundValidatorRow.task_id == task_id, RoundValidatorRow.round == round_no
                )
            )
        )
        entries = _entries_by_trainer(validators)
        # Both lists in the contract's order: ascending addresses, as in every score vector.
        return from_row(
            RoundPublic,
            row,
            submissions=[
                from_row(SubmissionPublic, s, reason=submission_reason(s.outcome, entries.get(s.trainer, [])))
                for s in sorted(submissions, key=lambda s: address_order(s.trainer))
            ],
            validators=[
                from_row(RoundValidatorPublic, v, shares=_shares(v))
                for v in sorted(validators, key=lambda v: address_order(v.validator))
            ],
        )


@router.get(
    "/{task_id}/metrics", response_model=TaskMetrics, responses=error_responses(404, 422),
    summary="The task's learning curve: per round, the validators' loss drop and (with an evaluation set "
    "on this coordinator) each published model's accuracy and loss",
)  # fmt: skip
def get_metrics(task_id: TaskId, db: DbDep, store: StoreDep, settings: SettingsDep) -> TaskMetrics:
    with db.session() as session:
        task = _get_task(session, task_id)
        rounds = list(
            session.scalars(select(RoundRow).where(RoundRow.task_id == task_id).order_by(RoundRow.round))
        )
        submissions = list(session.scalars(select(SubmissionRow).where(SubmissionRow.task_id == task_id)))
        scorers = list(session.scalars(select(RoundValidatorRow).where(RoundValidatorRow.task_id == task_id)))
    spec = task_spec(store, task.spec_cid)
    evaluation, note = (
        evaluation_set(settings.data_dir, task_id, spec)
        if spec is not None
        else (None, "this coordinator's store lacks the task's spec: nothing to evaluate")
    )

    def measured(model_cid: str | None) -> dict:
        result = (
            evaluate_model(store, spec, evaluation, model_cid) if spec and evaluation and model_cid else None
        )
        return (
            {"accuracy": result.accuracy, "loss": result.loss} if result else {"accuracy": None, "loss": None}
        )

    points = []
    if rounds:
        initial = rounds[0].model_cid if rounds[0].round == 1 else None
        points.append(
            MetricPoint(round=0, status=None, model_cid=initial, closed_at=None, revealed=0, aggregated=0,
                        loss_drop=None, **measured(initial))
        )  # fmt: skip
    for row in rounds:
        mine = [s for s in submissions if s.round == row.round]
        votes = [v for v in scorers if v.round == row.round and v.scores is not None]
        points.append(
            MetricPoint(
                round=row.round, status=row.status, model_cid=row.new_model_cid, closed_at=row.closed_at,
                revealed=sum(s.update_hash is not None for s in mine),
                aggregated=sum(s.outcome in AGGREGATED for s in mine),
                loss_drop=_loss_drop(votes) if row.status == RoundState.FINALIZED else None,
                **measured(row.new_model_cid),
            )
        )  # fmt: skip
    return TaskMetrics(
        task_id=task_id, evaluation_samples=len(evaluation.data) if evaluation else None,
        evaluation=note, points=points,
    )  # fmt: skip


AGGREGATED = (SubmissionOutcome.ACCEPTED, SubmissionOutcome.WORTHLESS)


def _loss_drop(votes: list[RoundValidatorRow]) -> float | None:
    """The validators' median of the loss improvement they measured, in loss units: a validator's
    entries (SCORE_UNITs each) add up to the value of the whole round on its data (Shapley values
    are efficient; an entry within noise is 0)."""
    totals = [
        sum(
            int(e)
            for t, e in (v.scores or {}).items()
            if e not in FLAG_VALUES and t.lower() != v.validator.lower()
        )
        * SCORE_UNIT
        for v in votes
    ]
    return statistics.median(totals) if totals else None


VALIDATOR_SLASH_REASON = "committed scores and never revealed them: slashed and removed"


@router.get(
    "/{task_id}/standings", response_model=TaskStandings, responses=error_responses(404, 422),
    summary="Who earned what: the trainers' leaderboard (stake, slashes and why), the validators, the refund",
)  # fmt: skip
def get_standings(task_id: TaskId, db: DbDep) -> TaskStandings:
    with db.session() as session:
        task = _get_task(session, task_id)
        books = trainer_books(session, task_id)
        earnings = {
            e.account: e for e in session.scalars(select(EarningRow).where(EarningRow.task_id == task_id))
        }
        submissions = list(session.scalars(select(SubmissionRow).where(SubmissionRow.task_id == task_id)))
        scorers = list(session.scalars(select(RoundValidatorRow).where(RoundValidatorRow.task_id == task_id)))
        members = list(
            session.scalars(
                select(ValidatorRow)
                .where(ValidatorRow.task_id == task_id)
                .order_by(ValidatorRow.joined_block, ValidatorRow.validator)
            )
        )
    none = EarningRow(as_trainer="0", as_validator="0", claimed="0")
    trainers = []
    for trainer, book in books.items():
        mine = {s.round: s for s in submissions if s.trainer == trainer}
        slashes = [
            Slash(
                round=round_no, amount=str(amount),
                reason=submission_reason(
                    mine[round_no].outcome if round_no in mine else None,
                    _entries_by_trainer([v for v in scorers if v.round == round_no]).get(trainer, []),
                ),
            )
            for round_no, amount in book.slashes
        ]  # fmt: skip
        earning = earnings.get(trainer, none)
        trainers.append(
            TrainerStanding(
                trainer=trainer, joined=book.joined, stake=str(book.stake), earned=earning.as_trainer,
                claimed=earning.claimed, submitted=len(mine),
                accepted=sum(s.outcome == SubmissionOutcome.ACCEPTED for s in mine.values()),
                slashed=str(sum(amount for _, amount in book.slashes)), slashes=slashes,
            )
        )  # fmt: skip
    trainers.sort(key=lambda t: -int(t.earned))  # stable: equal earnings keep the join order
    validators = []
    for member in members:
        mine_v = sorted((v for v in scorers if v.validator == member.validator), key=lambda v: v.round)
        agreements = [int(v.agreement) for v in mine_v if v.agreement is not None]
        earning = earnings.get(member.validator, none)
        validators.append(
            ValidatorStanding(
                validator=member.validator, joined=member.joined, stake=member.stake,
                rounds_scored=sum(v.revealed_tx is not None for v in mine_v),
                agreement=str(sum(agreements) // len(agreements)) if agreements else None,
                earned=earning.as_validator, claimed=earning.claimed,
                slashed=str(sum(int(v.slashed or 0) for v in mine_v)),
                slashes=[
                    Slash(round=v.round, amount=v.slashed, reason=VALIDATOR_SLASH_REASON) for v in mine_v if v.slashed
                ],
            )
        )  # fmt: skip
    return TaskStandings(
        task_id=task_id, owner=task.owner, refund=task.refund, trainers=trainers, validators=validators
    )


@router.get(
    "/{task_id}/earnings/{address}", response_model=EarningsPublic, responses=error_responses(404, 422, 503),
    summary="What an account earned in a task (as trainer and validator), claimed, and can claim now",
)  # fmt: skip
def get_earnings(
    task_id: TaskId,
    address: Annotated[str, Path(description="the account, 0x-hex, any case")],
    db: DbDep,
    chain: ChainDep,
) -> EarningsPublic:
    if not is_address(address):
        raise ApiError(422, "InvalidAddress", f"{address!r} is not a 0x-prefixed 20-byte address")
    account = to_checksum_address(address)
    with db.session() as session:
        _get_task(session, task_id)
        earning = session.get(EarningRow, (task_id, account))
        as_trainer = int(earning.as_trainer) if earning else 0
        as_validator = int(earning.as_validator) if earning else 0
        claimed = int(earning.claimed) if earning else 0
    claimable = chain.claimable(task_id, account)
    return EarningsPublic(
        task_id=task_id,
        account=account,
        earned=str(as_trainer + as_validator),
        earned_as_trainer=str(as_trainer),
        earned_as_validator=str(as_validator),
        claimed=str(claimed),
        claimable=str(claimable),
    )
