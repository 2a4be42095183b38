"""Updates and models on the wire: safetensors, never pickle.

An update is a trainer's weight delta against the round's global model; a model blob is a full
``state_dict``. Both are safetensors files (a JSON header, then raw little-endian float32), so
decoding never runs code, whoever sent the bytes. The header's ``__metadata__`` says what the
blob is (``kind``, ``format_version``) and, for updates, whose it is (``task_id``, ``round``,
``trainer``, ``num_samples``).

Encoding is deterministic: the same tensors and metadata always give the same bytes (sorted
header, tensors in name order), so the sha256 a trainer commits to on-chain can be recomputed by
anyone. The reference ``safetensors`` writer is not used for that reason: it orders metadata
differently from one process to the next.

Decoding trusts nothing: the tensor names must be exactly the model's, with its shapes, float32,
all finite, and the metadata must parse; anything else raises a named
:class:`~fedmarket.errors.CodecError`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from safetensors.torch import load as parse_safetensors  # parses tensors only: no pickle, no code
from torch import Tensor, nn

from fedmarket.errors import CodecError, NonFiniteUpdateError, UpdateMismatchError

__all__ = [
    "FORMAT_VERSION",
    "Update",
    "apply_delta",
    "decode_model",
    "decode_update",
    "encode_model",
    "encode_update",
    "state_delta",
    "update_norm",
]

FORMAT_VERSION = "1"
"""Version of the metadata layout; a decoder refuses versions it does not know."""

_CONTAINER_KEYS = frozenset({"kind", "format_version"})  # written by the codec, never by callers
_UPDATE_FIELDS = ("task_id", "round", "trainer", "num_samples")
_DECIMAL = re.compile(r"0|[1-9][0-9]{0,77}")  # fits a uint256, no sign, spaces or leading zeros
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")

TensorMap = Mapping[str, Tensor]


@dataclass(frozen=True)
class Update:
    """A decoded update that passed every check: the delta plus who made it, when, from how much data."""

    delta: dict[str, Tensor]
    task_id: int
    round: int
    trainer: str
    num_samples: int


# --- updates -------------------------------------------------------------------------------------


def encode_update(delta: TensorMap, *, task_id: int, round: int, trainer: str, num_samples: int) -> bytes:
    """The bytes of an update: ``delta`` (float32, finite) with its task, round, trainer and sample count.

    ``trainer`` is the trainer's 0x-address; ``num_samples`` the number of local samples it
    trained on (FedAvg weighs by it).
    """
    _require(_is_int(task_id, minimum=0), f"task_id must be an int >= 0, got {task_id!r}")
    _require(_is_int(round, minimum=0), f"round must be an int >= 0, got {round!r}")
    _require(_is_int(num_samples, minimum=1), f"num_samples must be an int >= 1, got {num_samples!r}")
    _require(
        isinstance(trainer, str) and _ADDRESS.fullmatch(trainer) is not None,
        f"trainer must be a 0x-prefixed 20-byte hex address, got {trainer!r}",
    )
    fields = {"task_id": task_id, "round": round, "trainer": trainer, "num_samples": num_samples}
    return _encode(delta, kind="update", metadata={key: str(value) for key, value in fields.items()})


def decode_update(
    data: bytes, *, model: nn.Module | TensorMap, expected: Mapping[str, Any] | None = None
) -> Update:
    """Parse and check an update against the round's model; refuse anything malformed.

    ``model`` is the global model (or its ``state_dict``) the delta applies to. ``expected`` may
    pin any of ``task_id``, ``round``, ``trainer`` (compared case-insensitively) and
    ``num_samples``; a different value raises ``UpdateMismatchError``.
    """
    tensors, metadata = _decode(data, kind="update")
    unknown = sorted(metadata.keys() - _CONTAINER_KEYS - set(_UPDATE_FIELDS))
    if unknown:
        raise CodecError(f"update metadata has unknown keys {unknown}; updates carry {list(_UPDATE_FIELDS)}")
    update = Update(
        delta=tensors,
        task_id=_parse_decimal(metadata, "task_id", minimum=0),
        round=_parse_decimal(metadata, "round", minimum=0),
        trainer=_parse_address(metadata, "trainer"),
        num_samples=_parse_decimal(metadata, "num_samples", minimum=1),
    )
    _check_expected(update, expected or {})
    _check_layout(tensors, _state(model))
    _check_values(tensors)
    return update


# --- models --------------------------------------------------------------------------------------


def encode_model(
    model_or_state_dict: nn.Module | TensorMap, *, metadata: Mapping[str, str] | None = None
) -> bytes:
    """The bytes of a full model (e.g. a round's global model), with optional string metadata."""
    extra = dict(metadata or {})
    reserved = sorted(_CONTAINER_KEYS & extra.keys())
    _require(not reserved, f"metadata keys {reserved} are reserved by the codec; choose other names")
    _require(
        all(isinstance(key, str) and isinstance(value, str) for key, value in extra.items()),
        "metadata keys and values must be strings",
    )
    return _encode(_state(model_or_state_dict), kind="model", metadata=extra)


def decode_model(data: bytes, *, model: nn.Module | TensorMap) -> dict[str, Tensor]:
    """The checked ``state_dict`` in a model blob, ready for ``model.load_state_dict(...)``."""
    tensors, _ = _decode(data, kind="model")
    _check_layout(tensors, _state(model))
    _check_values(tensors)
    return tensors


# --- tensor arithmetic ---------------------------------------------------------------------------


def state_delta(new: TensorMap, old: TensorMap) -> dict[str, Tensor]:
    """``new - old`` per tensor: what a trainer sends after training ``old`` into ``new``."""
    _check_layout(new, old)
    return {name: new[name].detach() - old[name].detach() for name in sorted(old)}


def apply_delta(state: TensorMap, delta: TensorMap) -> dict[str, Tensor]:
    """``state + delta`` per tensor: the next global model from an aggregated delta."""
    _check_layout(delta, state)
    return {name: state[name].detach() + delta[name].detach() for name in sorted(state)}


def update_norm(delta: TensorMap) -> float:
    """Global L2 norm of a delta (all tensors as one vector), accumulated in float64."""
    return math.sqrt(sum(float(torch.sum(tensor.detach().double() ** 2)) for tensor in delta.values()))


# --- container -----------------------------------------------------------------------------------


def _encode(tensors: TensorMap, *, kind: str, metadata: Mapping[str, str]) -> bytes:
    """Write a safetensors file byte-for-byte deterministically: sorted header, tensors in name order."""
    _check_values(tensors)
    header: dict[str, Any] = {"__metadata__": {**metadata, "kind": kind, "format_version": FORMAT_VERSION}}
    payloads: list[bytes] = []
    offset = 0
    for name in sorted(tensors):
        _require(
            isinstance(name, str) and bool(name) and name != "__metadata__", f"invalid tensor name {name!r}"
        )
        tensor = tensors[name].detach().cpu().contiguous()
        raw = tensor.numpy().astype("<f4", copy=False).tobytes()
        end = offset + len(raw)
        header[name] = {"dtype": "F32", "shape": list(tensor.shape), "data_offsets": [offset, end]}
        payloads.append(raw)
        offset = end
    head = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("ascii")
    head += b" " * (-len(head) % 8)  # data starts 8-byte aligned, as the format recommends
    return len(head).to_bytes(8, "little") + head + b"".join(payloads)


def _decode(data: bytes, *, kind: str) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Tensors and metadata of a fedmarket blob of ``kind``; ``CodecError`` for anything else."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise CodecError(f"a {kind} blob is bytes, got {type(data).__name__}")
    data = bytes(data)
    try:
        tensors = parse_safetensors(data)
        header = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])
    except Exception as exc:  # parsers meet hostile bytes here; any failure means "not safetensors"
        raise CodecError(f"not a valid safetensors {kind} blob ({exc}); fetch it again or refuse it") from exc
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(metadata, dict):
        metadata = {}
    if metadata.get("kind") != kind:
        raise CodecError(f"expected a fedmarket {kind} blob, got kind {metadata.get('kind')!r}")
    if metadata.get("format_version") != FORMAT_VERSION:
        raise CodecError(
            f"{kind} blob has format_version {metadata.get('format_version')!r}; this SDK reads "
            f"{FORMAT_VERSION!r}: upgrade fedmarket or re-encode the blob"
        )
    return tensors, metadata


# --- checks --------------------------------------------------------------------------------------


def _state(model: nn.Module | TensorMap) -> TensorMap:
    return model.state_dict() if isinstance(model, nn.Module) else model


def _check_layout(tensors: TensorMap, reference: TensorMap) -> None:
    """Same tensor names as ``reference``, each with the same shape."""
    missing = sorted(reference.keys() - tensors.keys())
    extra = sorted(tensors.keys() - reference.keys())
    if missing or extra:
        raise UpdateMismatchError(
            f"tensors do not match the model: missing {missing}, unexpected {extra}; "
            "encode against this round's global model"
        )
    for name in sorted(reference):
        if tuple(tensors[name].shape) != tuple(reference[name].shape):
            raise UpdateMismatchError(
                f"tensor {name!r} has shape {tuple(tensors[name].shape)}, the model needs "
                f"{tuple(reference[name].shape)}"
            )


def _check_values(tensors: TensorMap) -> None:
    """Every tensor float32 and finite."""
    for name in sorted(tensors):
        tensor = tensors[name]
        if not isinstance(tensor, Tensor):
            raise CodecError(f"{name!r} is a {type(tensor).__name__}, not a tensor")
        if tensor.dtype != torch.float32:
            raise UpdateMismatchError(f"tensor {name!r} is {tensor.dtype}, fedmarket tensors are float32")
        bad = int((~torch.isfinite(tensor)).sum())
        if bad:
            raise NonFiniteUpdateError(
                f"tensor {name!r} holds {bad} NaN or infinite value(s); training diverged, "
                "lower the learning rate (and refuse this tensor)"
            )


def _check_expected(update: Update, expected: Mapping[str, Any]) -> None:
    unknown = sorted(expected.keys() - set(_UPDATE_FIELDS))
    if unknown:
        raise ValueError(f"expected may only name {list(_UPDATE_FIELDS)}, got {unknown}")
    for key, want in expected.items():
        got = getattr(update, key)
        same = got.lower() == str(want).lower() if key == "trainer" else got == want
        if not same:
            raise UpdateMismatchError(f"update metadata {key} is {got!r}, expected {want!r}")


def _parse_decimal(metadata: Mapping[str, str], key: str, *, minimum: int) -> int:
    text = metadata.get(key)
    if not isinstance(text, str) or _DECIMAL.fullmatch(text) is None or int(text) < minimum:
        raise CodecError(f"update metadata {key} must be a decimal integer >= {minimum}, got {text!r}")
    return int(text)


def _parse_address(metadata: Mapping[str, str], key: str) -> str:
    text = metadata.get(key)
    if not isinstance(text, str) or _ADDRESS.fullmatch(text) is None:
        raise CodecError(f"update metadata {key} must be a 0x-prefixed 20-byte hex address, got {text!r}")
    return text


def _is_int(value: object, *, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise CodecError(f"cannot encode: {message}")
