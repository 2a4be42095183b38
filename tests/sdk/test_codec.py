"""Update and model codec: exact round trips, stable bytes, and named refusals of anything else."""

from __future__ import annotations

import hashlib
import json
import math

import pytest
import safetensors.torch
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedmarket.codec import (
    FORMAT_VERSION,
    apply_delta,
    decode_model,
    decode_update,
    encode_model,
    encode_update,
    state_delta,
    update_norm,
)
from fedmarket.errors import CodecError, NonFiniteUpdateError, UpdateMismatchError
from fedmarket.models import build_model


@pytest.fixture
def model(make_spec):
    return build_model(make_spec())


@pytest.fixture
def delta(model):
    generator = torch.Generator().manual_seed(0)
    return {name: torch.randn(t.shape, generator=generator) for name, t in model.state_dict().items()}


@pytest.fixture
def encode(delta, trainer_address):
    """Encode ``delta`` (or a variant of it) as trainer's update for task 1, round 2."""

    def make(tensors=None, **metadata):
        fields = {"task_id": 1, "round": 2, "trainer": trainer_address, "num_samples": 100, **metadata}
        return encode_update(delta if tensors is None else tensors, **fields)

    return make


def raw_safetensors(tensors, metadata):
    """Bytes written by the reference safetensors writer, to forge blobs the codec would not write."""
    return safetensors.torch.save(tensors, metadata=metadata)


def update_metadata(address, **changes):
    """Update metadata as strings, the way the codec writes it, with ``changes`` applied."""
    fields = {"kind": "update", "format_version": FORMAT_VERSION, "task_id": "1", "round": "2"}
    return {**fields, "trainer": address, "num_samples": "100", **changes}


# --- round trips ---------------------------------------------------------------------------------


def test_update_round_trips_tensors_and_metadata(encode, delta, model, trainer_address):
    update = decode_update(encode(), model=model)
    assert (update.task_id, update.round, update.num_samples) == (1, 2, 100)
    assert update.trainer == trainer_address
    assert update.delta.keys() == delta.keys()
    assert all(torch.equal(update.delta[name], delta[name]) for name in delta)


def test_model_round_trips_into_fresh_model(model, make_spec):
    blob = encode_model(model, metadata={"task_id": "1", "round": "0"})
    fresh = build_model(make_spec(init_seed=99))
    fresh.load_state_dict(decode_model(blob, model=fresh))
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in model.state_dict().items())


def test_decode_accepts_state_dict_as_reference(encode, model):
    assert decode_update(encode(), model=model.state_dict()).num_samples == 100


def test_reference_safetensors_reader_reads_our_blobs(encode, delta):
    loaded = safetensors.torch.load(encode())
    assert all(torch.equal(loaded[name], delta[name]) for name in delta)


def test_encoding_is_deterministic_whatever_dict_order(encode, delta):
    reversed_delta = dict(reversed(list(delta.items())))
    assert encode() == encode(reversed_delta)
    assert hashlib.sha256(encode()).digest() == hashlib.sha256(encode(reversed_delta)).digest()


def test_reencoding_decoded_update_gives_same_bytes(encode, model, trainer_address):
    update = decode_update(encode(), model=model)
    again = encode_update(update.delta, task_id=1, round=2, trainer=trainer_address, num_samples=100)
    assert again == encode()


def test_non_contiguous_tensor_encodes_its_values(model, trainer_address):
    state = model.state_dict()
    weight_name = "0.weight"
    transposed = state[weight_name].t().contiguous().t()  # same values, column-major storage
    assert not transposed.is_contiguous()
    tensors = {**state, weight_name: transposed}
    blob = encode_update(tensors, task_id=1, round=0, trainer=trainer_address, num_samples=1)
    assert torch.equal(decode_update(blob, model=model).delta[weight_name], state[weight_name])


def test_expected_metadata_is_accepted_when_it_matches(encode, model, trainer_address):
    expected = {"task_id": 1, "round": 2, "trainer": "0x" + trainer_address[2:].upper()}
    assert decode_update(encode(), model=model, expected=expected).round == 2


# --- refusals ------------------------------------------------------------------------------------


def test_decode_update_with_wrong_shape_raises_mismatch(encode, delta, model):
    with pytest.raises(UpdateMismatchError, match=r"'0.weight' has shape \(3, 3\), the model needs \(6, 8\)"):
        decode_update(encode({**delta, "0.weight": torch.zeros(3, 3)}), model=model)


def test_decode_update_with_missing_tensor_raises_mismatch(encode, delta, model):
    without_bias = {name: tensor for name, tensor in delta.items() if name != "0.bias"}
    with pytest.raises(UpdateMismatchError, match=r"missing \['0.bias'\]"):
        decode_update(encode(without_bias), model=model)


def test_decode_update_with_extra_tensor_raises_mismatch(encode, delta, model):
    with pytest.raises(UpdateMismatchError, match=r"unexpected \['extra'\]"):
        decode_update(encode({**delta, "extra": torch.zeros(1)}), model=model)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_decode_refuses_non_finite_values(delta, model, trainer_address, value):
    poisoned = {**delta, "0.bias": delta["0.bias"].clone()}
    poisoned["0.bias"][0] = value
    blob = raw_safetensors(poisoned, update_metadata(trainer_address))
    with pytest.raises(NonFiniteUpdateError, match="'0.bias' holds 1 NaN or infinite"):
        decode_update(blob, model=model)


def test_encode_refuses_non_finite_values(encode, delta):
    with pytest.raises(NonFiniteUpdateError):
        encode({**delta, "0.bias": torch.full_like(delta["0.bias"], float("nan"))})


def test_decode_refuses_wrong_dtype(delta, model, trainer_address):
    tensors = {**delta, "0.bias": delta["0.bias"].double()}
    blob = raw_safetensors(tensors, update_metadata(trainer_address))
    with pytest.raises(UpdateMismatchError, match="'0.bias' is torch.float64"):
        decode_update(blob, model=model)


def test_encode_refuses_wrong_dtype(encode, delta):
    with pytest.raises(UpdateMismatchError, match="float32"):
        encode({**delta, "0.bias": delta["0.bias"].half()})


@pytest.mark.parametrize(
    "garbage",
    [
        b"",
        b"\x00",
        b"not safetensors at all",
        b"\xff" * 64,
        (2).to_bytes(8, "little") + b"[]",
        (4).to_bytes(8, "little") + b"null",
    ],
)
def test_decode_refuses_garbage_bytes(model, garbage):
    with pytest.raises(CodecError):
        decode_update(garbage, model=model)


def test_decode_refuses_truncated_update(encode, model):
    with pytest.raises(CodecError):
        decode_update(encode()[:-4], model=model)


def test_decode_refuses_blob_without_metadata(delta, model):
    with pytest.raises(CodecError, match="kind None"):
        decode_update(raw_safetensors(delta, None), model=model)


def test_decode_update_refuses_model_blob(model):
    with pytest.raises(CodecError, match="expected a fedmarket update blob, got kind 'model'"):
        decode_update(encode_model(model), model=model)


def test_decode_model_refuses_update_blob(encode, model):
    with pytest.raises(CodecError, match="got kind 'update'"):
        decode_model(encode(), model=model)


def test_decode_refuses_unknown_format_version(delta, model, trainer_address):
    blob = raw_safetensors(delta, update_metadata(trainer_address, format_version="2"))
    with pytest.raises(CodecError, match="format_version '2'"):
        decode_update(blob, model=model)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("num_samples", "0"),
        ("num_samples", "-5"),
        ("num_samples", "1e3"),
        ("num_samples", " 7"),
        ("round", "01"),
        ("task_id", "one"),
        ("trainer", "0x1234"),
        ("trainer", "alice"),
    ],
)
def test_decode_refuses_unparseable_metadata(delta, model, trainer_address, key, value):
    blob = raw_safetensors(delta, update_metadata(trainer_address, **{key: value}))
    with pytest.raises(CodecError, match=key):
        decode_update(blob, model=model)


def test_decode_refuses_unknown_metadata_key(delta, model, trainer_address):
    blob = raw_safetensors(delta, update_metadata(trainer_address, bonus="1"))
    with pytest.raises(CodecError, match="unknown keys"):
        decode_update(blob, model=model)


@pytest.mark.parametrize(("key", "value"), [("task_id", 9), ("round", 3), ("trainer", "0x" + "b2" * 20)])
def test_decode_refuses_unexpected_metadata(encode, model, key, value):
    with pytest.raises(UpdateMismatchError, match=key):
        decode_update(encode(), model=model, expected={key: value})


@pytest.mark.parametrize(
    "metadata",
    [{"task_id": -1}, {"round": 1.5}, {"num_samples": 0}, {"num_samples": True}, {"trainer": "bob"}],
)
def test_encode_refuses_invalid_metadata(encode, metadata):
    with pytest.raises(CodecError, match="cannot encode"):
        encode(**metadata)


def test_encode_model_refuses_reserved_metadata(model):
    with pytest.raises(CodecError, match="reserved"):
        encode_model(model, metadata={"kind": "update"})


# The fixtures these use are never mutated, so sharing them across examples is safe.
stateless_fixtures = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@stateless_fixtures
@given(position=st.integers(min_value=0), bit=st.integers(min_value=0, max_value=7))
def test_any_flipped_bit_decodes_or_raises_codec_error(encode, model, position, bit):
    blob = bytearray(encode())
    blob[position % len(blob)] ^= 1 << bit
    try:
        decode_update(bytes(blob), model=model)
    except CodecError:
        return


@stateless_fixtures
@given(st.binary(max_size=300))
def test_random_bytes_raise_only_codec_error(model, data):
    try:
        decode_update(data, model=model)
    except CodecError:
        return


# --- tensor arithmetic ---------------------------------------------------------------------------


def test_state_delta_then_apply_delta_restores_new_state(model, delta):
    old = model.state_dict()
    new = apply_delta(old, delta)
    restored = apply_delta(old, state_delta(new, old))
    assert all(torch.allclose(restored[name], new[name]) for name in new)


def test_state_delta_refuses_different_layouts(model):
    old = model.state_dict()
    with pytest.raises(UpdateMismatchError):
        state_delta({k: v for k, v in old.items() if k != "0.bias"}, old)


def test_update_norm_is_global_l2_norm():
    delta = {"a": torch.tensor([3.0]), "b": torch.tensor([[4.0, 0.0]])}
    assert update_norm(delta) == 5.0
    assert update_norm({}) == 0.0


def test_update_norm_matches_flattened_vector(delta):
    flat = torch.cat([tensor.flatten() for tensor in delta.values()]).double()
    assert math.isclose(update_norm(delta), float(flat.norm()), rel_tol=1e-12)


def test_update_header_is_sorted_json(encode):
    blob = encode()
    header = blob[8 : 8 + int.from_bytes(blob[:8], "little")]
    parsed = json.loads(header)
    assert header.rstrip(b" ") == json.dumps(parsed, sort_keys=True, separators=(",", ":")).encode()
    assert parsed["__metadata__"]["kind"] == "update"
