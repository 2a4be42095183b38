"""Tasks: post one (relayed, owner-signed), and read its trainers, validators, rounds and the
earnings of an account."""

from __future__ import annotations

from typing import Annotated

from eth_utils import is_address, to_checksum_address
from fastapi import APIRouter, Path, Query
from sqlalchemy import select

from backend.db import (
    ChainEventRow,
    EarningRow,
    RoundRow,
    RoundValidatorRow,
    SubmissionRow,
    TaskRow,
    TaskState,
    ValidatorRow,
)
from backend.deps import ChainDep, DbDep, ServicesDep, StoreDep
from backend.errors import ApiError, error_responses
from backend.schemas import (
    CreateTaskRequest,
    EarningsPublic,
    RoundPublic,
    RoundSummary,
    RoundValidatorPublic,
    SubmissionPublic,
    TaskCreated,
    TaskList,
    TaskPublic,
    TaskSummary,
    TaskValidator,
    from_row,
)
from fedmarket.chain import SignedTask
from fedmarket.errors import ContractRevert, ModelBuildError, SpecError
from fedmarket.ledger import address_order
from fedmarket.models import build_model
from fedmarket.protocol import RoundPhase
from fedmarket.spec import TaskSpec

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
    if chain.chain_time() > body.deadline:
        raise ApiError(
            422, "SignatureExpired", f"the owner's signature expired at {body.deadline}; sign again"
        )
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


@router.get(
    "", response_model=TaskList, responses=error_responses(422),
    summary="List tasks, optionally by status (open, completed, cancelled, expired)",
)  # fmt: skip
def list_tasks(
    db: DbDep, status: Annotated[TaskState | None, Query(description="only tasks in this status")] = None
) -> TaskList:
    with db.session() as session:
        query = select(TaskRow).order_by(TaskRow.task_id)
        if status is not None:
            query = query.where(TaskRow.status == status)
        return TaskList(tasks=[TaskSummary.model_validate(t) for t in session.scalars(query)])


def _get_task(session, task_id: int) -> TaskRow:
    task = session.get(TaskRow, task_id)
    if task is None:
        raise ApiError(404, "TaskNotFound", f"no task {task_id} (is the indexer caught up?)")
    return task


def _joined_trainers(session, task_id: int) -> list[str]:
    joined: dict[str, None] = {}
    events = session.scalars(
        select(ChainEventRow)
        .where(ChainEventRow.task_id == task_id)
        .order_by(ChainEventRow.block_number, ChainEventRow.log_index)
    )
    for event in events:
        if event.name == "TrainerJoined":
            joined[event.args["trainer"]] = None
        elif event.name in ("TrainerLeft", "TrainerSlashed"):
            joined.pop(event.args["trainer"], None)
    return list(joined)


def _joined_validators(session, task_id: int) -> list[TaskValidator]:
    rows = session.scalars(
        select(ValidatorRow)
        .where(ValidatorRow.task_id == task_id, ValidatorRow.joined.is_(True))
        .order_by(ValidatorRow.joined_block, ValidatorRow.validator)
    )
    return [TaskValidator.model_validate(row) for row in rows]


@router.get(
    "/{task_id}", response_model=TaskPublic, responses=error_responses(404, 422, 503),
    summary="A task: terms, trainers, validators, current round and phase, every round",
)  # fmt: skip
def get_task(task_id: TaskId, db: DbDep, chain: ChainDep) -> TaskPublic:
    with db.session() as session:
        task = _get_task(session, task_id)
        rounds = session.scalars(select(RoundRow).where(RoundRow.task_id == task_id).order_by(RoundRow.round))
        history = [RoundSummary.model_validate(r) for r in rounds]
        trainers = _joined_trainers(session, task_id)
        validators = _joined_validators(session, task_id)
    # The chain is asked after the session is closed: a slow node never holds a database connection.
    phase = chain.phase(task_id) if task.status == TaskState.OPEN else RoundPhase.NONE
    return from_row(
        TaskPublic, task, trainers=trainers, validators=validators, phase=phase.name.lower(), rounds=history
    )


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
        validators = session.scalars(
            select(RoundValidatorRow).where(
                RoundValidatorRow.task_id == task_id, RoundValidatorRow.round == round_no
            )
        )
        # Both lists in the contract's order: ascending addresses, as in every score vector.
        return from_row(
            RoundPublic,
            row,
            submissions=[
                SubmissionPublic.model_validate(s)
                for s in sorted(submissions, key=lambda s: address_order(s.trainer))
            ],
            validators=[
                RoundValidatorPublic.model_validate(v)
                for v in sorted(validators, key=lambda v: address_order(v.validator))
            ],
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
