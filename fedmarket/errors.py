"""Errors raised by the fedmarket SDK.

    FedmarketError
    +-- ChainError
    |   +-- ContractRevert          a transaction or call reverted; carries the Solidity error name + args
    |   +-- TransactionFailed       mined with status 0 and no decodable reason
    |   +-- DeploymentNotFoundError no deployments/<network>.json: deploy first
"""

from __future__ import annotations


class FedmarketError(Exception):
    """Root of every error the SDK raises on purpose."""


class ChainError(FedmarketError):
    """Talking to the chain failed."""


class ContractRevert(ChainError):
    """A contract call reverted with a (decoded) custom error, e.g. TaskMarketWrongPhase."""

    def __init__(self, name: str, args: dict, *, selector: str | None = None) -> None:
        self.name = name
        self.args_ = dict(args)
        self.selector = selector
        rendered = ", ".join(f"{k}={v!r}" for k, v in self.args_.items())
        super().__init__(f"{name}({rendered})")

    @property
    def args_dict(self) -> dict:
        return self.args_


class TransactionFailed(ChainError):
    """A transaction was mined but failed without a reason we could decode."""


class DeploymentNotFoundError(ChainError):
    """No deployments file where one was expected."""
