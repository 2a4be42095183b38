"""ABI decoding: event logs and revert data of the market and its token, as Python values.

Pure functions of the ABIs and the bytes: nothing here talks to a node, so the chain client
(:mod:`fedmarket.chain`) and the sender (:mod:`fedmarket.transactions`) share one decoder each.

- :class:`EventDecoder` turns one contract's logs into :class:`ChainEvent` (arguments by their
  Solidity names; checksummed addresses, ``bytes``, dicts for structs, ``TaskTerms`` for terms).
- :class:`RevertDecoder` turns revert data into ``ContractRevert("TaskMarketWrongPhase", {...})``
  using the custom errors declared in the ABIs, never a bare selector.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from eth_abi import decode as abi_decode
from eth_utils import function_signature_to_4byte_selector, keccak, to_checksum_address
from web3 import Web3
from web3.exceptions import ContractCustomError, ContractLogicError, ContractPanicError

from fedmarket.errors import ContractRevert
from fedmarket.protocol import TaskTerms

__all__ = ["REVERT_EXCEPTIONS", "ChainEvent", "EventDecoder", "RevertDecoder", "abi_type"]

# What web3 raises when a call or a gas estimate reverts; RevertDecoder.from_exception reads them.
REVERT_EXCEPTIONS = (ContractCustomError, ContractPanicError, ContractLogicError)

_ERROR_STRING = {"name": "Error", "inputs": [{"name": "message", "type": "string"}]}
_PANIC = {"name": "Panic", "inputs": [{"name": "code", "type": "uint256"}]}


def abi_type(param: dict) -> str:
    """Canonical ABI type of a parameter, expanding tuples (structs): what signatures hash."""
    kind = param["type"]
    if kind.startswith("tuple"):
        return "(" + ",".join(abi_type(c) for c in param["components"]) + ")" + kind[len("tuple") :]
    return kind


def _signature(entry: dict) -> str:
    return f"{entry['name']}({','.join(abi_type(p) for p in entry['inputs'])})"


# ------------------------------------------------------------------------------------ events


@dataclass(frozen=True)
class ChainEvent:
    """One decoded log of the market (or token): ``args`` by Solidity name, Python values."""

    name: str
    args: dict[str, Any]
    block_number: int
    tx_hash: str
    log_index: int

    @property
    def task_id(self) -> int | None:
        """The event's ``taskId``, or None for events that are not about one task."""
        return self.args.get("taskId")


def _is_dynamic(abi_type: str) -> bool:
    return abi_type in ("string", "bytes") or abi_type.endswith("]") or abi_type.startswith("tuple")


def _to_python(param: dict, value: Any) -> Any:
    """ABI-decoded value -> what Python code wants: checksummed addresses, bytes, dicts, TaskTerms."""
    kind = param["type"]
    if kind.endswith("]"):
        inner = {**param, "type": kind[: kind.rindex("[")], "internalType": ""}
        return [_to_python(inner, item) for item in value]
    if kind == "tuple":
        components = param["components"]
        if param.get("internalType", "").endswith(".TaskTerms"):
            return TaskTerms(*(_to_python(c, v) for c, v in zip(components, value, strict=True)))
        return {c["name"]: _to_python(c, v) for c, v in zip(components, value, strict=True)}
    if kind == "address":
        return to_checksum_address(value)
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    return value


class EventDecoder:
    """Decodes the logs one contract emits, with the events declared in its ABI."""

    def __init__(self, abi: list[dict], address: str) -> None:
        self.address = to_checksum_address(address)
        self.by_topic: dict[bytes, dict] = {}
        self.by_name: dict[str, dict] = {}
        for entry in abi:
            if entry.get("type") != "event" or entry.get("anonymous"):
                continue
            self.by_topic[keccak(text=_signature(entry))] = entry
            self.by_name[entry["name"]] = entry

    def topic(self, name: str) -> bytes:
        return keccak(text=_signature(self.entry(name)))

    def entry(self, name: str) -> dict:
        try:
            return self.by_name[name]
        except KeyError:
            raise ValueError(f"no event {name!r} in the ABI; known events: {sorted(self.by_name)}") from None

    def decode(self, log_entry) -> ChainEvent | None:
        """The decoded event, or None when the log is not from this contract or not in its ABI."""
        if to_checksum_address(log_entry["address"]) != self.address or not log_entry["topics"]:
            return None
        entry = self.by_topic.get(bytes(log_entry["topics"][0]))
        if entry is None:
            return None
        indexed = [p for p in entry["inputs"] if p.get("indexed")]
        plain = [p for p in entry["inputs"] if not p.get("indexed")]
        values: dict[str, Any] = {}
        for param, topic in zip(indexed, log_entry["topics"][1:], strict=True):
            kind = abi_type(param)
            # An indexed dynamic value is stored as its keccak256 hash: keep the hash.
            values[param["name"]] = (
                bytes(topic) if _is_dynamic(kind) else _to_python(param, abi_decode([kind], bytes(topic))[0])
            )
        decoded = abi_decode([abi_type(p) for p in plain], bytes(log_entry["data"]))
        for param, value in zip(plain, decoded, strict=True):
            values[param["name"]] = _to_python(param, value)
        args = {p["name"]: values[p["name"]] for p in entry["inputs"]}  # declaration order
        return ChainEvent(
            name=entry["name"],
            args=args,
            block_number=int(log_entry["blockNumber"]),
            tx_hash=Web3.to_hex(log_entry["transactionHash"]),
            log_index=int(log_entry["logIndex"]),
        )


# ------------------------------------------------------------------------------------ reverts


class RevertDecoder:
    """Decodes revert data with every custom error found in the given ABIs."""

    def __init__(self, abis: Iterable[list[dict]]) -> None:
        self._errors: dict[bytes, dict] = {}
        for entry in (_ERROR_STRING, _PANIC, *(e for abi in abis for e in abi if e.get("type") == "error")):
            self._errors[function_signature_to_4byte_selector(_signature(entry))] = entry

    def decode(self, data: bytes | str | None) -> ContractRevert:
        if isinstance(data, str):
            data = bytes.fromhex(data.removeprefix("0x"))
        if not data or len(data) < 4:
            return ContractRevert("UnknownRevert", {}, selector=None)
        selector, payload = data[:4], data[4:]
        entry = self._errors.get(selector)
        if entry is None:
            return ContractRevert(
                "UnknownRevert", {"data": "0x" + data.hex()}, selector="0x" + selector.hex()
            )
        values = abi_decode([abi_type(p) for p in entry["inputs"]], payload)
        args = {
            p["name"] or f"arg{i}": _plain(_checksummed(p["type"], v))
            for i, (p, v) in enumerate(zip(entry["inputs"], values, strict=True))
        }
        return ContractRevert(entry["name"], args, selector="0x" + selector.hex())

    def from_exception(self, exc: Exception) -> ContractRevert:
        """Revert of a web3 exception raised by a call or a gas estimate (one of REVERT_EXCEPTIONS)."""
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
