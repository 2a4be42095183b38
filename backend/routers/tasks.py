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
from backend.errors import ApiError
from backend.schemas import CreateTaskRequest
from fedmarket.auth import EXPIRY_HEADER, SIGNATURE_HEADER, recover_signer, validation_upload_message
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


@router.post("", status_code=201, summary="Post a task signed by its owner; the coordinator relays it")
def create_task(body: CreateTaskRequest, services: ServicesDep, chain: ChainDep, store: StoreDep) -> dict:
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
        raise ApiError(422, "WrongCoordinator", f"terms.coordinator must be this coordinator, {chain.address}")
    if chain.chain_time() > body.deadline:
        raise ApiError(422, "SignatureExpired", f"the owner's signature expired at {body.deadline}; sign again")
    balance = chain.token_balance(body.owner)
    if balance < terms.reward_pool:
        raise ApiError(
            422, "InsufficientFunds", f"owner {body.owner} holds {balance} tokens, the reward pool needs {terms.reward_pool}"
        )
    signed = dict(terms=terms, owner=body.owner, deadline=body.deadline, owner_signature=body.signature, permit=body.permit.to_permit())
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
    return {"task_id": result.task_id, "spec_cid": spec_cid, "tx_hash": result.tx_hash}


@router.put("/{task_id}/validation-data", summary="Upload the owner's private validation split (NPZ: X, y)")
async def put_validation_data(
    task_id: TaskId,
    request: Request,
    services: ServicesDep,
    signature: Annotated[str, Header(alias=SIGNATURE_HEADER)],
    expiry: Annotated[int, Header(alias=EXPIRY_HEADER)],
) -> dict:
    settings = services.settings
    limit = settings.max_validation_bytes
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > limit:
            raise ApiError(413, "ValidationDataTooLarge", f"validation data is over the {limit}-byte limit")
    # The checks below talk to the chain and the database: off the event loop.
    return await run_in_threadpool(_store_validation, services, task_id, bytes(body), signature=signature, expiry=expiry)


def _store_validation(services, task_id: int, body: bytes, *, signature: str, expiry: int) -> dict:
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
        chain_id=chain.deployment.chain_id, market=chain.market_address, task_id=task_id, body=body, expiry=expiry
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
            raise ApiError(409, "SignatureReplayed", "this signature was already used; sign the upload again") from None
        services.validation.write(task_id, body)
        session.get(TaskRow, task_id).has_validation_data = True
    return {"task_id": task_id, "samples": samples}


# ---------------------------------------------------------------------- reading


def _task_summary(task: TaskRow) -> dict:
    return {
        "task_id": task.task_id,
        "owner": task.owner,
        "coordinator": task.coordinator,
        "status": task.status,
        "spec_cid": task.spec_cid,
        "terms": task.terms,
        "current_round": task.current_round,
        "model_cid": task.model_cid,
        "has_validation_data": task.has_validation_data,
    }


@router.get("", summary="List tasks, optionally by status (open, completed, cancelled, expired)")
def list_tasks(db: DbDep, status: Annotated[str | None, Query(pattern="^(open|completed|cancelled|expired)$")] = None) -> dict:
    with db.session() as session:
        query = select(TaskRow).order_by(TaskRow.task_id)
        if status:
            query = query.where(TaskRow.status == status)
        return {"tasks": [_task_summary(t) for t in session.scalars(query)]}


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


@router.get("/{task_id}", summary="A task: terms, trainers, current round and phase, metrics per round")
def get_task(task_id: TaskId, db: DbDep, chain: ChainDep) -> dict:
    with db.session() as session:
        task = _get_task(session, task_id)
        rounds = session.scalars(select(RoundRow).where(RoundRow.task_id == task_id).order_by(RoundRow.round))
        history = [
            {
                "round": r.round, "status": r.status, "model_cid": r.model_cid, "new_model_cid": r.new_model_cid,
                "report_cid": r.report_cid, "payout": r.payout, "metrics": r.metrics,
            }
            for r in rounds
        ]  # fmt: skip
        summary = _task_summary(task)
        summary["trainers"] = _joined_trainers(session, task_id)
    phase = chain.phase(task_id) if summary["status"] == TaskState.OPEN else RoundPhase.NONE
    summary["phase"] = phase.name.lower()
    summary["rounds"] = history
    return summary


@router.get("/{task_id}/rounds/{round_no}", summary="One round: commits, reveals, verdicts, payouts, tx hashes")
def get_round(task_id: TaskId, round_no: RoundNo, db: DbDep) -> dict:
    with db.session() as session:
        _get_task(session, task_id)
        row = session.get(RoundRow, (task_id, round_no))
        if row is None:
            raise ApiError(404, "RoundNotFound", f"task {task_id} has no round {round_no} yet")
        submissions = session.scalars(
            select(SubmissionRow).where(SubmissionRow.task_id == task_id, SubmissionRow.round == round_no)
        )
        return {
            "task_id": task_id, "round": round_no, "status": row.status, "model_cid": row.model_cid,
            "new_model_cid": row.new_model_cid, "report_cid": row.report_cid, "rewards_root": row.rewards_root,
            "payout": row.payout, "metrics": row.metrics, "commit_deadline": row.commit_deadline,
            "reveal_deadline": row.reveal_deadline, "started_tx": row.started_tx, "closed_tx": row.closed_tx,
            "submissions": [
                {
                    "trainer": s.trainer, "commitment": s.commitment, "committed_tx": s.committed_tx,
                    "update_hash": s.update_hash, "update_cid": s.update_cid, "revealed_tx": s.revealed_tx,
                    "accepted": s.accepted, "reason": s.reason, "score": s.score, "payout": s.payout,
                    "slashed": s.slashed,
                }
                for s in submissions
            ],
        }  # fmt: skip


@router.get("/{task_id}/rewards/{address}", summary="What an account earned and claimed, with its Merkle proof")
def get_rewards(task_id: TaskId, address: str, db: DbDep, store: StoreDep, chain: ChainDep) -> dict:
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
        return {"task_id": task_id, "account": account, "cumulative": "0", "claimed": str(claimed), "proof": []}
    report = RoundReport.from_json(store.get(latest.report_cid))
    tree = report.rewards_tree()
    amount = report.cumulative.get(account, 0)
    return {
        "task_id": task_id,
        "account": account,
        "round": latest.round,
        "rewards_root": "0x" + tree.root.hex(),
        "cumulative": str(amount),
        "claimed": str(max(claimed, chain.claimed(task_id, account))),
        "proof": ["0x" + p.hex() for p in tree.proof(account)] if amount else [],
    }
