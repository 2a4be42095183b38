"""API errors: every refusal is a 4xx (or a 503 when the chain is down) with the body
``{"error": <name>, "detail": <what to do>}`` (:class:`backend.schemas.ErrorBody`). Each route
declares the statuses it can refuse with through :func:`error_responses`."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from backend.schemas import ErrorBody
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
    def __init__(
        self, status: int, error: str, detail: str, *, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(f"{status} {error}: {detail}")
        self.status, self.error, self.detail = status, error, detail
        self.headers = headers or {}

    @classmethod
    def from_revert(cls, revert: ContractRevert, *, doing: str) -> ApiError:
        return cls(REVERT_STATUS.get(revert.name, 422), revert.name, f"the market refused {doing}: {revert}")


# What each refusal status means across the API; the `error` name in the body says exactly why.
STATUS_MEANING = {
    400: "Malformed input the route checks itself (InvalidCID, EmptyBlob, InvalidUploadHeader, "
    "SizeMismatch, HashMismatch)",
    401: "The upload is unsigned and not a blob the chain names, or its signature is malformed, expired, "
    "or valid for too long",
    403: "Signed by someone who may not do this (NotAParticipant, TaskNotOpen, TaskMarketInvalidSignature)",
    404: "No such resource, or not indexed yet (TaskNotFound, RoundNotFound, BlobNotFound)",
    408: "The upload sent nothing for upload_read_timeout seconds, or took longer than upload_timeout",
    409: "Already done with this signature (SignatureReplayed): sign again",
    413: "The body is over this coordinator's size limit",
    422: "A malformed field, parameter or header (InvalidRequest), or input refused on its merits",
    429: "Too many uploads in flight (UploadsBusy, TooManyUploads: retry after Retry-After) or the "
    "uploader's hourly quota is spent (UploadQuotaExceeded)",
    500: "The coordinator's own copy failed verification (CorruptBlob)",
    503: "The chain cannot answer (ChainUnavailable) or the market is paused (EnforcedPause)",
}


def error_responses(*statuses: int, body: bool = True) -> dict[int | str, dict[str, Any]]:
    """`responses=` for the refusals a route can return, so the schema shows their ErrorBody
    (and our 422 replaces FastAPI's HTTPValidationError). HEAD answers carry no body: `body=False`."""
    return {
        status: {"description": STATUS_MEANING[status], **({"model": ErrorBody} if body else {})}
        for status in statuses
    }


def _body(error: str, detail: str) -> dict:
    return ErrorBody(error=error, detail=detail).model_dump()


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(_body(exc.error, exc.detail), status_code=exc.status, headers=exc.headers)

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
