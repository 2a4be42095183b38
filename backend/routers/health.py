"""Liveness: the database, the chain and the store each answer."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from backend.deps import ChainDep, DbDep, StoreDep
from fedmarket.cid import cid_of
from fedmarket.errors import ChainError

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz(db: DbDep, chain: ChainDep, store: StoreDep) -> JSONResponse:
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
    return JSONResponse({"status": "ok" if healthy else "degraded", **checks}, status_code=200 if healthy else 503)


@router.get("/v1/info", summary="Who this coordinator is: its address (put it in task terms), chain and market")
def info(chain: ChainDep) -> dict:
    return {
        "coordinator": chain.address,
        "chain_id": chain.deployment.chain_id,
        "market": chain.market_address,
        "token": chain.token_address,
        "deploy_block": chain.deployment.deploy_block,
    }
