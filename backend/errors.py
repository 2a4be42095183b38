"""API errors: every refusal is a 4xx with ``{"error": <name>, "detail": <what to do>}``."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from fedmarket.errors import ChainError, ContractRevert, StoreUnavailableError

# Contract errors a client caused, and the status that says so.
REVERT_STATUS = {
    "TaskMarketInvalidSignature": 403,
    "ERC20InsufficientBalance": 422,
    "ERC20InsufficientAllowance": 422,
    "ERC2612InvalidSigner": 403,
    "ERC2612ExpiredSignature": 422,
    "EnforcedPause": 503,
}


class ApiError(Exception):
    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(f"{status} {error}: {detail}")
        self.status, self.error, self.detail = status, error, detail

    @classmethod
    def from_revert(cls, revert: ContractRevert, *, doing: str) -> ApiError:
        return cls(REVERT_STATUS.get(revert.name, 422), revert.name, f"the market refused {doing}: {revert}")


def _body(error: str, detail) -> dict:
    return {"error": error, "detail": detail}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(_body(exc.error, exc.detail), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'] if p != 'body') or 'body'}: {e['msg']}" for e in exc.errors()
        )
        return JSONResponse(_body("InvalidRequest", problems), status_code=422)

    @app.exception_handler(ChainError)  # all the SDK raises for chain access, ChainUnavailableError too
    async def _chain_unavailable(_request: Request, exc: ChainError) -> JSONResponse:
        # A revert a client caused is mapped where it happens; anything left is the node's fault.
        return JSONResponse(_body("ChainUnavailable", f"the chain could not answer: {exc}"), status_code=503)

    @app.exception_handler(StoreUnavailableError)
    async def _store_unavailable(_request: Request, exc: StoreUnavailableError) -> JSONResponse:
        return JSONResponse(_body("StoreUnavailable", str(exc)), status_code=503)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        name = {404: "NotFound", 405: "MethodNotAllowed"}.get(exc.status_code, "HttpError")
        return JSONResponse(_body(name, str(exc.detail)), status_code=exc.status_code)
