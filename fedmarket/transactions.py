"""Send transactions from one local key and turn reverts into named Python errors.

:class:`TransactionSender` owns the nonce of its account (one process may send many
transactions from many threads), estimates gas (which surfaces reverts before anything is
sent), signs locally (keys never leave the process), waits for the receipt and returns it.
:class:`RevertDecoder` maps revert data to ``ContractRevert("TaskMarketWrongPhase", {...})``
using the custom errors declared in the ABIs, never a bare selector.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

from eth_abi import decode as abi_decode
from eth_account.signers.local import LocalAccount
from eth_utils import function_signature_to_4byte_selector, to_checksum_address
from web3 import Web3
from web3.exceptions import ContractCustomError, ContractLogicError, ContractPanicError, Web3RPCError

from fedmarket.errors import ContractRevert, TransactionFailed

_ERROR_STRING = {"name": "Error", "inputs": [{"name": "message", "type": "string"}]}
_PANIC = {"name": "Panic", "inputs": [{"name": "code", "type": "uint256"}]}


def _abi_type(param: dict) -> str:
    """Canonical ABI type of a parameter, expanding tuples (structs)."""
    kind = param["type"]
    if kind.startswith("tuple"):
        return "(" + ",".join(_abi_type(c) for c in param["components"]) + ")" + kind[len("tuple") :]
    return kind


class RevertDecoder:
    """Decodes revert data with every custom error found in the given ABIs."""

    def __init__(self, abis: Iterable[list[dict]]) -> None:
        self._errors: dict[bytes, dict] = {}
        for entry in (_ERROR_STRING, _PANIC, *(e for abi in abis for e in abi if e.get("type") == "error")):
            signature = f"{entry['name']}({','.join(_abi_type(p) for p in entry['inputs'])})"
            self._errors[function_signature_to_4byte_selector(signature)] = entry

    def decode(self, data: bytes | str | None) -> ContractRevert:
        if isinstance(data, str):
            data = bytes.fromhex(data.removeprefix("0x"))
        if not data or len(data) < 4:
            return ContractRevert("UnknownRevert", {}, selector=None)
        selector, payload = data[:4], data[4:]
        entry = self._errors.get(selector)
        if entry is None:
            return ContractRevert("UnknownRevert", {"data": "0x" + data.hex()}, selector="0x" + selector.hex())
        values = abi_decode([_abi_type(p) for p in entry["inputs"]], payload)
        args = {
            p["name"] or f"arg{i}": _plain(_checksummed(p["type"], v))
            for i, (p, v) in enumerate(zip(entry["inputs"], values))
        }
        return ContractRevert(entry["name"], args, selector="0x" + selector.hex())

    def from_exception(self, exc: Exception) -> ContractRevert:
        """Revert of a web3 exception raised by a call or a gas estimate."""
        data = getattr(exc, "data", None)
        if isinstance(data, dict):  # some providers nest it
            data = data.get("data")
        if isinstance(data, str) and data.startswith("0x"):
            return self.decode(data)
        return ContractRevert("UnknownRevert", {"message": str(exc)}, selector=None)


def _checksummed(abi_type: str, value: Any) -> Any:
    """Addresses (also in arrays) as checksummed strings, as everywhere else in the SDK."""
    if abi_type == "address":
        return to_checksum_address(value)
    if abi_type.startswith("address[") and isinstance(value, (list, tuple)):
        return [_checksummed(abi_type[: abi_type.rindex("[")], v) for v in value]
    return value


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


REVERT_EXCEPTIONS = (ContractCustomError, ContractPanicError, ContractLogicError)


class TransactionSender:
    """Signs and sends transactions for one account; thread-safe nonce handling."""

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
        return self._send(lambda params: fn.build_transaction(params), gas=gas, value=value)

    def deploy(self, abi: list[dict], bytecode: str, *args):
        """Deploy a contract; returns (address, receipt)."""
        factory = self.w3.eth.contract(abi=abi, bytecode=bytecode)
        receipt = self._send(lambda params: factory.constructor(*args).build_transaction(params))
        return receipt["contractAddress"], receipt

    def send_value(self, to: str, value: int):
        return self._send(lambda params: {**params, "to": to, "gas": 21_000}, value=value)

    def call(self, fn, **params):
        """Run a view or a dry run; reverts come back as ContractRevert."""
        try:
            return fn.call({"from": self.address, **params})
        except REVERT_EXCEPTIONS as exc:
            raise self.decoder.from_exception(exc) from None

    def _send(self, build, *, gas: int | None = None, value: int = 0):
        with self._lock:
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
                    tx["gas"] = int((tx.get("gas") or self.w3.eth.estimate_gas(tx)) * self._gas_margin)
            except REVERT_EXCEPTIONS as exc:
                raise self.decoder.from_exception(exc) from None
            signed = self.account.sign_transaction(tx)
            try:
                tx_hash = self.w3.eth.send_raw_transaction(signed.raw_transaction)
            except Web3RPCError:
                self._next_nonce = None  # resync from the node on the next send
                raise
            self._next_nonce += 1
        receipt = self.w3.eth.wait_for_transaction_receipt(
            tx_hash, timeout=self._receipt_timeout, poll_latency=self._receipt_poll
        )
        if receipt["status"] != 1:
            raise self._failure(tx, receipt)
        return receipt

    def _failure(self, tx: dict, receipt) -> Exception:
        """Replays a mined-but-reverted transaction to recover its revert reason."""
        replay = {k: tx[k] for k in ("from", "to", "data", "value") if k in tx}
        try:
            self.w3.eth.call(replay, receipt["blockNumber"] - 1)
        except REVERT_EXCEPTIONS as exc:
            return self.decoder.from_exception(exc)
        return TransactionFailed(f"transaction {receipt['transactionHash'].hex()} reverted without a reason")
