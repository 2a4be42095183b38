"""Accounts: everything the index holds about one address, across tasks (its tasks, earnings,
claims, stakes and slashes), for the dashboard's account page and any client."""

from __future__ import annotations

from typing import Annotated, Literal

from eth_utils import is_address, to_checksum_address
from fastapi import APIRouter, Path
from sqlalchemy import or_, select

from backend.db import ChainEventRow, EarningRow, RoundValidatorRow, TaskRow, ValidatorRow
from backend.deps import DbDep, StoreDep
from backend.errors import ApiError, error_responses
from backend.routers.tasks import spec_name, trainer_books
from backend.schemas import AccountPublic, AccountTask

router = APIRouter(prefix="/v1/accounts", tags=["accounts"])

AddressParam = Annotated[str, Path(description="the account, 0x-hex, any case")]


def checksummed(address: str) -> str:
    if not is_address(address):
        raise ApiError(422, "InvalidAddress", f"{address!r} is not a 0x-prefixed 20-byte address")
    return to_checksum_address(address)


def account_task_ids(session, account: str) -> list[int]:
    """The tasks `account` owns, joined (as trainer or validator) or earned in, by id."""
    owned = select(TaskRow.task_id).where(TaskRow.owner == account)
    joined = select(ChainEventRow.task_id).where(
        or_(
            (ChainEventRow.name == "TrainerJoined") & (ChainEventRow.args["trainer"].as_string() == account),
            (ChainEventRow.name == "ValidatorJoined")
            & (ChainEventRow.args["validator"].as_string() == account),
        )
    )
    earned = select(EarningRow.task_id).where(EarningRow.account == account)
    ids = {i for query in (owned, joined, earned) for i in session.scalars(query) if i is not None}
    return sorted(ids)


@router.get(
    "/{address}", response_model=AccountPublic, responses=error_responses(404, 422),
    summary="An account: the tasks it owns, trains or validates in, what it earned, claimed and has staked",
)  # fmt: skip
def get_account(address: AddressParam, db: DbDep, store: StoreDep) -> AccountPublic:
    account = checksummed(address)
    tasks: list[AccountTask] = []
    with db.session() as session:
        for task_id in account_task_ids(session, account):
            task = session.get(TaskRow, task_id)
            if task is None:
                continue
            book = trainer_books(session, task_id).get(account)
            member = session.get(ValidatorRow, (task_id, account))
            earning = session.get(EarningRow, (task_id, account))
            validator_slashed = sum(
                int(v.slashed or 0)
                for v in session.scalars(
                    select(RoundValidatorRow).where(
                        RoundValidatorRow.task_id == task_id, RoundValidatorRow.validator == account
                    )
                )
            )
            roles: list[Literal["owner", "trainer", "validator"]] = []
            if task.owner == account:
                roles.append("owner")
            if book is not None:
                roles.append("trainer")
            if member is not None:
                roles.append("validator")
            as_trainer = int(earning.as_trainer) if earning else 0
            as_validator = int(earning.as_validator) if earning else 0
            claimed = int(earning.claimed) if earning else 0
            tasks.append(
                AccountTask(
                    task_id=task_id, name=spec_name(store, task.spec_cid), status=task.status, roles=roles,
                    earned=str(as_trainer + as_validator), earned_as_trainer=str(as_trainer),
                    earned_as_validator=str(as_validator), claimed=str(claimed),
                    unclaimed=str(as_trainer + as_validator - claimed),
                    stake=str((book.stake if book else 0) + (int(member.stake) if member else 0)),
                    slashed=str(sum(a for _, a in book.slashes) + validator_slashed if book else validator_slashed),
                    refund=task.refund if task.owner == account else None,
                )
            )  # fmt: skip
    if not tasks:
        raise ApiError(
            404, "AccountNotFound", f"{account} owns, trains and validates in no task indexed here"
        )
    earned, claimed = sum(int(t.earned) for t in tasks), sum(int(t.claimed) for t in tasks)
    return AccountPublic(
        account=account, earned=str(earned), claimed=str(claimed), unclaimed=str(earned - claimed),
        stake=str(sum(int(t.stake) for t in tasks)), tasks=tasks,
    )  # fmt: skip
