"""Tasks: post one (relayed, owner-signed), upload its private validation split, and read
its rounds and rewards."""

from __future__ import annotations

from typing import Annotated

from eth_utils import is_address, keccak, to_checksum_address
from fastapi import APIRouter, Header, Path, Query, Request
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool

from backend.db import (
    ChainEventRow,
    EarningRow,
    RoundRow,
    RoundState,
    SubmissionRow,
    TaskRow,
    TaskState,
    UsedSignatureRow,
)
from backend.deps import ChainDep, DbDep, ServicesDep, StoreDep
from backend.errors import ApiError, error_responses
from backend.schemas import (
    CreateTaskRequest,
    RewardsPublic,
    RoundPublic,
    RoundSummary,
    SubmissionPublic,
    TaskCreated,
    TaskList,
    TaskPublic,
    TaskSummary,
    ValidationStored,
    from_row,
    octet_stream,
)
from fedmarket.auth import EXPIRY_HEADER, SIGNATURE_HEADER, recover_signer, validation_upload_message
from fedmarket.chain import SignedTask
from fedmarket.errors import ContractRevert, DataMismatchError, ModelBuildError, SpecError
from fedmarket.models import build_model
from fedmarket.protocol import RoundPhase
from fedmarket.report import RoundReport
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


# The route reads the raw body itself (streamed, size-limited), so FastAPI cannot see it: declared here.
VALIDATION_BODY = {
    **octet_stream(
        "An NPZ archive (numpy.savez, no pickles) with arrays X, shape (n, *input_shape), finite numbers, "
        "and y, shape (n,), integer labels in [0, num_classes); signed by the task owner in the headers"
    ),
    "required": True,
}


@router.put(
    "/{task_id}/validation-data", response_model=ValidationStored,
    responses=error_responses(401, 403, 404, 409, 413, 422, 503),
    openapi_extra={"requestBody": VALIDATION_BODY},
    summary="Upload the owner's private validation split (NPZ: X, y)",
)  # fmt: skip
async def put_validation_data(
    task_id: TaskId,
    request: Request,
    services: ServicesDep,
    signature: Annotated[
        str,
        Header(alias=SIGNATURE_HEADER, description="the owner's EIP-191 signature of the upload statement"),
    ],
    expiry: Annotated[
        int, Header(alias=EXPIRY_HEADER, description="chain time (unix seconds) the signature expires")
    ],
) -> ValidationStored:
    settings = services.settings
    limit = settings.max_validation_bytes
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > limit:
            raise ApiError(413, "ValidationDataTooLarge", f"validation data is over the {limit}-byte limit")
    # The checks below talk to the chain and the database: off the event loop.
    return await run_in_threadpool(
        _store_validation, services, task_id, bytes(body), signature=signature, expiry=expiry
    )


def _store_validation(
    services, task_id: int, body: bytes, *, signature: str, expiry: int
) -> ValidationStored:
    settings, chain, db = services.settings, services.chain, services.db
    with db.session() as session:
        task = session.get(TaskRow, task_id)
        if task is None:
            raise ApiError(404, "TaskNotFound", f"no task {task_id}")
        owner, spec_cid = task.owner, task.spec_cid
    now = chain.chain_time()
    if expiry <= now:
        raise ApiError(401, "SignatureExpired", f"the upload signature expired at {expiry}; sign again")
    if expiry > now + settings.max_signature_age:
        raise ApiError(401, "ExpiryTooFar", f"expiry may be at most {settings.max_signature_age} s ahead")
    message = validation_upload_message(
        chain_id=chain.deployment.chain_id,
        market=chain.market_address,
        task_id=task_id,
        body=body,
        expiry=expiry,
    )
    try:
        signer = recover_signer(message, signature)
    except Exception:  # eth-account raises several types for malformed signatures
        raise ApiError(401, "InvalidSignature", f"{SIGNATURE_HEADER} is not a valid signature") from None
    if signer != owner:
        raise ApiError(403, "NotTaskOwner", f"signed by {signer}; only the task owner {owner} may upload")
    # Keyed by the signed statement, not the signature's bytes: an ECDSA signature has other
    # encodings that recover the same signer (v as 0/1, or s as n - s), each a different string.
    signature_hash = "0x" + keccak(text=message).hex()
    with db.session() as session:
        if session.get(UsedSignatureRow, signature_hash) is not None:
            raise ApiError(409, "SignatureReplayed", "this signature was already used; sign the upload again")
    spec = TaskSpec.from_json(services.store.get(spec_cid))
    try:
        samples = len(services.validation.check(body, spec))
    except DataMismatchError as exc:
        raise ApiError(422, "InvalidValidationData", str(exc)) from None

    with db.session() as session:
        # Claiming the signature first makes two concurrent uploads of it race in the database,
        # where exactly one wins; the file is written only by the winner, inside the transaction.
        session.add(UsedSignatureRow(signature_hash=signature_hash, task_id=task_id))
        try:
            session.flush()
        except IntegrityError:
            raise ApiError(
                409, "SignatureReplayed", "this signature was already used; sign the upload again"
            ) from None
        services.validation.write(task_id, body)
        session.get(TaskRow, task_id).has_validation_data = True
    return ValidationStored(task_id=task_id, samples=samples)


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


@router.get(
    "/{task_id}", response_model=TaskPublic, responses=error_responses(404, 422, 503),
    summary="A task: terms, trainers, current round and phase, metrics per round",
)  # fmt: skip
def get_task(task_id: TaskId, db: DbDep, chain: ChainDep) -> TaskPublic:
    with db.session() as session:
        task = _get_task(session, task_id)
        rounds = session.scalars(select(RoundRow).where(RoundRow.task_id == task_id).order_by(RoundRow.round))
        history = [RoundSummary.model_validate(r) for r in rounds]
        trainers = _joined_trainers(session, task_id)
    # The chain is asked after the session is closed: a slow node never holds a database connection.
    phase = chain.phase(task_id) if task.status == TaskState.OPEN else RoundPhase.NONE
    return from_row(TaskPublic, task, trainers=trainers, phase=phase.name.lower(), rounds=history)


@router.get(
    "/{task_id}/rounds/{round_no}", response_model=RoundPublic, responses=error_responses(404, 422),
    summary="One round: commits, reveals, verdicts, payouts, tx hashes",
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
        return from_row(
            RoundPublic, row, submissions=[SubmissionPublic.model_validate(s) for s in submissions]
        )


# Before the first finalized round there is no root: `round` and `rewards_root` are left out, not null.
@router.get(
    "/{task_id}/rewards/{address}", response_model=RewardsPublic, response_model_exclude_none=True,
    responses=error_responses(404, 422, 503), summary="What an account earned and claimed, with its Merkle proof",
)  # fmt: skip
def get_rewards(
    task_id: TaskId,
    address: Annotated[str, Path(description="the account, 0x-hex, any case")],
    db: DbDep,
    store: StoreDep,
    chain: ChainDep,
) -> RewardsPublic:
    if not is_address(address):
        raise ApiError(422, "InvalidAddress", f"{address!r} is not a 0x-prefixed 20-byte address")
    account = to_checksum_address(address)
    with db.session() as session:
        _get_task(session, task_id)
        latest = session.scalars(
            select(RoundRow)
            .where(RoundRow.task_id == task_id, RoundRow.status == RoundState.FINALIZED)
            .order_by(RoundRow.round.desc())
        ).first()
        earning = session.get(EarningRow, (task_id, account))
        claimed = int(earning.claimed) if earning else 0
    if latest is None or latest.report_cid is None:
        return RewardsPublic(task_id=task_id, account=account, cumulative="0", claimed=str(claimed), proof=[])
    report = RoundReport.from_json(store.get(latest.report_cid))
    tree = report.rewards_tree()
    amount = report.cumulative.get(account, 0)
    return RewardsPublic(
        task_id=task_id,
        account=account,
        round=latest.round,
        rewards_root="0x" + tree.root.hex(),
        cumulative=str(amount),
        claimed=str(max(claimed, chain.claimed(task_id, account))),
        proof=["0x" + p.hex() for p in tree.proof(account)] if amount else [],
    )
