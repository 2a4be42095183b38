"""Liveness: the database, the chain and the store each answer."""

from __future__ import annotations

from fastapi import APIRouter, Response
from sqlalchemy import text

from backend.deps import ChainDep, DbDep, SettingsDep, StoreDep
from backend.schemas import CoordinatorInfo, Health
from fedmarket.cid import cid_of
from fedmarket.errors import ChainError

router = APIRouter(tags=["health"])


# A degraded coordinator answers 503 with the same body, naming what failed: not an ErrorBody.
@router.get(
    "/healthz", response_model=Health,
    responses={503: {"model": Health, "description": "Degraded: a dependency did not answer (its field says why)"}},
    summary="Whether the database, the chain and the store answer",
)  # fmt: skip
def healthz(response: Response, db: DbDep, chain: ChainDep, store: StoreDep) -> Health:
    checks: dict[str, str] = {}
    try:
        with db.session() as session:
            session.execute(text("SELECT 1"))
        checks["db"] = "ok"
    except Exception as exc:  # a health check reports failures instead of raising them
        checks["db"] = f"error: {exc}"
    try:
        checks["chain"] = f"ok (block {chain.block_number()})"
    except ChainError as exc:  # the SDK's one error for chain access (ChainUnavailableError when down)
        checks["chain"] = f"error: {exc}"
    try:
        store.has(cid_of(b""))
        checks["store"] = "ok"
    except Exception as exc:
        checks["store"] = f"error: {exc}"
    healthy = all(v.startswith("ok") for v in checks.values())
    response.status_code = 200 if healthy else 503
    return Health(
        status="ok" if healthy else "degraded", db=checks["db"], chain=checks["chain"], store=checks["store"]
    )


@router.get(
    "/v1/info", response_model=CoordinatorInfo,
    summary="Who this coordinator is: its address (put it in task terms), chain and market",
)  # fmt: skip
def info(chain: ChainDep, settings: SettingsDep) -> CoordinatorInfo:
    allowlist = settings.owner_allowlist
    return CoordinatorInfo(
        coordinator=chain.signer,
        chain_id=chain.deployment.chain_id,
        market=chain.market_address,
        token=chain.token_address,
        deploy_block=chain.deployment.deploy_block,
        orchestrates=(
            "tasks naming this coordinator that were posted through its POST /v1/tasks"
            + (f", or whose owner is one of the {len(allowlist)} in owner_allowlist" if allowlist else "")
            + "; any other task naming it gets no rounds started and no gas from it"
        ),
        owner_allowlist=allowlist,
        relay_deadline_margin=settings.relay_deadline_margin,
        max_blob_bytes=settings.max_blob_bytes,
        upload_quota_bytes_per_hour=settings.upload_quota_bytes_per_hour,
    )
