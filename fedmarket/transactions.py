"""Send transactions from one local key, and the one boundary between web3's transport and the SDK.

:class:`TransactionSender` owns the nonce of its account (one process may send many
transactions from many threads), estimates gas (which surfaces reverts before anything is
sent), signs locally (keys never leave the process), waits for the receipt and returns it.
Decoding reverts and logs lives in :mod:`fedmarket.abi`.

:func:`map_transport_errors` is where a failure to talk to the node becomes
:class:`~fedmarket.errors.ChainUnavailableError` (as ``httpx`` maps ``httpcore``'s errors in one
place). Every request the SDK makes of a node runs inside it: the sender's, the client's
(:mod:`fedmarket.chain`) and the deployer's. It lives here, the lowest layer that talks to the
node, so that both the client and :mod:`fedmarket.deploy` can use it without an import cycle.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import cast

import requests
from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.exceptions import (
    BadResponseFormat,
    ProviderConnectionError,
    RequestTimedOut,
    TimeExhausted,
    Web3RPCError,
)
from web3.types import TxParams

from fedmarket.abi import REVERT_EXCEPTIONS, RevertDecoder
from fedmarket.errors import ChainUnavailableError, TransactionFailed

__all__ = ["TransactionSender", "map_transport_errors"]

# What web3 7 lets through when the node is down, slow or broken. The HTTP provider raises
# requests' errors unwrapped (ConnectionError, Timeout, HTTPError: all OSErrors; it retries Timeout
# and HTTPError of idempotent methods first); other providers raise OSError or ProviderConnectionError; a
# JSON-RPC error answer is a Web3RPCError (reverts are ContractLogicError, which is not one), and
# an answer that is not JSON-RPC is BadResponseFormat. TimeExhausted is not here: the node answered,
# the transaction just was not mined in time (TransactionSender raises TransactionFailed for it).
_TRANSPORT_ERRORS = (
    requests.RequestException,
    OSError,
    Web3RPCError,
    BadResponseFormat,
    ProviderConnectionError,
)


@contextmanager
def map_transport_errors(w3: Web3, doing: str | None = None) -> Iterator[None]:
    """Run node requests; a transport failure leaves as ChainUnavailableError naming the endpoint.

    ``ContractRevert``, ``TransactionFailed`` and every other SDK error pass through unchanged.
    """
    try:
        yield
    except _TRANSPORT_ERRORS as exc:
        raise ChainUnavailableError(endpoint=_endpoint(w3), reason=_reason(exc), doing=doing) from exc


def _endpoint(w3: Web3) -> str:
    return str(getattr(w3.provider, "endpoint_uri", None) or type(w3.provider).__name__)


def _reason(exc: BaseException) -> str:
    """The bottom of an error chain (``[Errno 111] Connection refused``), not requests' wrappers."""
    if isinstance(exc, Web3RPCError):
        return f"the node answered with an error: {exc.message}"
    seen = {id(exc)}
    while True:
        # requests wraps urllib3's MaxRetryError in args[0], which keeps the socket error in .reason
        candidates = (exc.__cause__, getattr(exc, "reason", None), *exc.args[:1], exc.__context__)
        inner = next((c for c in candidates if isinstance(c, BaseException) and id(c) not in seen), None)
        if inner is None:
            return str(exc) or type(exc).__name__
        seen.add(id(inner))
        exc = inner


class TransactionSender:
    """Signs and sends transactions for one account; thread-safe nonce handling.

    Raises ``ContractRevert`` (named), ``TransactionFailed`` (refused by the node, mined but
    failed, or not mined in time) or ``ChainUnavailableError``; never a web3 or requests error.
    """

    def __init__(
        self,
        w3: Web3,
        account: LocalAccount,
        *,
        decoder: RevertDecoder,
        receipt_timeout: float = 120.0,
        receipt_poll: float = 0.02,
        gas_margin: float = 1.25,
    ) -> None:
        self.w3 = w3
        self.account = account
        self.address = account.address
        self.decoder = decoder
        self._receipt_timeout = receipt_timeout
        # web3 polls every 0.1 s by default; a local node mines in milliseconds. Public chains
        # can pass a slower poll.
        self._receipt_poll = receipt_poll
        self._gas_margin = gas_margin
        self._lock = threading.Lock()
        self._next_nonce: int | None = None
        self._chain_id: int | None = None

    def transact(self, fn, *, gas: int | None = None, value: int = 0):
        """Send a contract function call; returns the receipt or raises ContractRevert."""
        return self._send(fn.fn_name, lambda params: fn.build_transaction(params), gas=gas, value=value)

    def deploy(self, abi: list[dict], bytecode: str, *args):
        """Deploy a contract; returns (address, receipt)."""
        factory = self.w3.eth.contract(abi=abi, bytecode=bytecode)
        receipt = self._send(
            "constructor", lambda params: factory.constructor(*args).build_transaction(params)
        )
        return receipt["contractAddress"], receipt

    def send_value(self, to: str, value: int):
        return self._send("ETH transfer", lambda params: {**params, "to": to, "gas": 21_000}, value=value)

    def call(self, fn, **params):
        """Run a view or a dry run; reverts come back as ContractRevert."""
        with map_transport_errors(self.w3, f"calling {fn.fn_name}"):
            try:
                return fn.call({"from": self.address, **params})
            except REVERT_EXCEPTIONS as exc:
                raise self.decoder.from_exception(exc) from None

    def _send(self, name: str, build: Callable[[dict], dict], *, gas: int | None = None, value: int = 0):
        with map_transport_errors(self.w3, f"sending {name} from {self.address}"):
            with self._lock:
                tx = self._build(build, gas=gas, value=value)
                tx_hash = self._submit(name, self.account.sign_transaction(tx).raw_transaction)
            try:
                receipt = self.w3.eth.wait_for_transaction_receipt(
                    tx_hash, timeout=self._receipt_timeout, poll_latency=self._receipt_poll
                )
            except TimeExhausted:
                raise TransactionFailed(
                    f"{name} from {self.address} was sent but not mined within {self._receipt_timeout} s; "
                    "it may still be mined: check it before sending again",
                    tx_hash=Web3.to_hex(tx_hash),
                ) from None
            if receipt["status"] != 1:
                raise self._failure(tx, receipt)
            return receipt

    def _build(self, build: Callable[[dict], dict], *, gas: int | None, value: int) -> dict:
        """The transaction with nonce, chain id and gas filled in (held under the lock)."""
        if self._next_nonce is None:
            self._next_nonce = self.w3.eth.get_transaction_count(self.address, "pending")
        if self._chain_id is None:
            self._chain_id = self.w3.eth.chain_id  # fixed for the connection's life: ask once
        params = {"from": self.address, "nonce": self._next_nonce, "chainId": self._chain_id, "value": value}
        if gas is not None:
            params["gas"] = gas
        try:
            tx = build(params)  # web3 estimates gas here, which surfaces a revert
            if gas is None:
                tx["gas"] = int(
                    (tx.get("gas") or self.w3.eth.estimate_gas(cast(TxParams, tx))) * self._gas_margin
                )
        except REVERT_EXCEPTIONS as exc:
            raise self.decoder.from_exception(exc) from None
        return tx

    def _submit(self, name: str, raw: bytes):
        """eth_sendRawTransaction; on any failure the nonce is read from the node again next time,
        since a request that failed in transit may still have reached it."""
        try:
            tx_hash = self.w3.eth.send_raw_transaction(raw)
        except _TRANSPORT_ERRORS as exc:
            self._next_nonce = None
            if isinstance(exc, Web3RPCError) and not isinstance(exc, RequestTimedOut):
                raise TransactionFailed(
                    f"the node refused {name} from {self.address}: {exc.message}"
                ) from exc
            raise
        assert self._next_nonce is not None, "_build fills the nonce first"
        self._next_nonce += 1
        return tx_hash

    def _failure(self, tx: dict, receipt) -> Exception:
        """Replays a mined-but-reverted transaction to recover its revert reason."""
        replay = {k: tx[k] for k in ("from", "to", "data", "value") if k in tx}
        # At the block it was mined in first: that block's clock is the one a deadline check saw
        # (at the block before, a deadline that passed at inclusion still looks valid); then at
        # the block before, for a revert that a later transaction of the same block would hide.
        for block in (receipt["blockNumber"], receipt["blockNumber"] - 1):
            try:
                self.w3.eth.call(cast(TxParams, replay), block)
            except REVERT_EXCEPTIONS as exc:
                return self.decoder.from_exception(exc)
        return TransactionFailed(f"transaction {receipt['transactionHash'].hex()} reverted without a reason")
