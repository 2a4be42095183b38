"""HTTP client of the coordinator's task API, for task owners and trainer nodes.

Owners sign locally and send signatures, never keys: :meth:`CoordinatorClient.post_task` takes
a spec, terms and the owner's key, signs the EIP-712 terms and the EIP-2612 permit in this
process, and posts only the signatures.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import httpx
from eth_account import Account

from fedmarket.chain import MarketClient, SignedTask
from fedmarket.errors import FedmarketError
from fedmarket.protocol import TaskTerms
from fedmarket.spec import TaskSpec


class CoordinatorError(FedmarketError):
    """The coordinator refused a request; `error` is its machine-readable reason."""

    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(f"coordinator refused ({status} {error}): {detail}")
        self.status, self.error, self.detail = status, error, detail


class CoordinatorUnreachableError(CoordinatorError):
    """The coordinator did not answer: nothing listens at the URL, or the connection failed or timed out."""

    def __init__(self, base_url: str, reason: str) -> None:
        FedmarketError.__init__(
            self,
            f"cannot reach the coordinator at {base_url} ({reason}): is it running, and is the URL right?",
        )
        self.status, self.error, self.detail = 0, "Unreachable", reason


TOKEN_FIELDS = ("reward_pool", "min_stake", "min_validator_stake")  # beyond 2**53: decimal strings


def task_request_body(spec: TaskSpec, signed: SignedTask) -> dict:
    """The JSON of `POST /v1/tasks`: the spec, the terms and the owner's signatures (no key).
    Amounts travel as decimal strings, bytes as 0x-hex."""
    terms, permit = signed.terms, signed.permit
    return {
        "spec": spec.model_dump(mode="json"),
        "terms": {
            name: "0x" + value.hex() if isinstance(value, bytes) else str(value) if name in TOKEN_FIELDS else value
            for name, value in dataclasses.asdict(terms).items()
        },
        "owner": signed.owner,
        "deadline": signed.deadline,
        "signature": "0x" + signed.owner_signature.hex(),
        "permit": {
            "value": str(permit.value), "deadline": permit.deadline, "v": permit.v,
            "r": "0x" + permit.r.hex(), "s": "0x" + permit.s.hex(),
        },
    }  # fmt: skip


class CoordinatorClient:
    def __init__(
        self, base_url: str, *, timeout: float = 60.0, transport: httpx.BaseTransport | None = None
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> CoordinatorClient:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _request(self, method: str, path: str, **kwargs) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:  # refused, reset, timed out, or not an http(s) URL
            raise CoordinatorUnreachableError(self.base_url, str(exc) or type(exc).__name__) from exc
        if response.status_code >= 400:
            try:
                body = response.json()
                raise CoordinatorError(
                    response.status_code, body.get("error", "Error"), str(body.get("detail", ""))
                )
            except ValueError:
                raise CoordinatorError(response.status_code, "Error", response.text[:300]) from None
        return response.json()

    # ------------------------------------------------------------------ reads

    def health(self) -> dict:
        return self._request("GET", "/healthz")

    def info(self) -> dict:
        """The coordinator's address (the `coordinator` of task terms), chain id and market."""
        return self._request("GET", "/v1/info")

    def tasks(self, status: str | None = None) -> list[dict]:
        return self._request("GET", "/v1/tasks", params={"status": status} if status else None)["tasks"]

    def task(self, task_id: int) -> dict:
        return self._request("GET", f"/v1/tasks/{task_id}")

    def round(self, task_id: int, round_no: int) -> dict:
        return self._request("GET", f"/v1/tasks/{task_id}/rounds/{round_no}")

    def earnings(self, task_id: int, address: str) -> dict:
        """What `address` earned in the task (as trainer and validator), claimed, and can claim."""
        return self._request("GET", f"/v1/tasks/{task_id}/earnings/{address}")

    # ------------------------------------------------------------------ owner actions

    def post_task(
        self, *, spec: TaskSpec, terms: TaskTerms, owner_key, market: MarketClient, valid_for: int = 3600
    ) -> dict:
        """Signs the terms and the pool's permit with `owner_key` here, then posts the signatures."""
        owner = Account.from_key(owner_key)
        signed = market.with_account(owner).sign_create_task(terms, deadline=market.chain_time() + valid_for)
        body = task_request_body(spec, signed)
        return self._request("POST", "/v1/tasks", json=body)
