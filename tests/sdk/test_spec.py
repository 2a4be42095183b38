"""Task specs: one canonical byte string per spec, and named refusals for invalid ones."""

from __future__ import annotations

import hashlib
import json

import pytest
from pydantic import ValidationError

from fedmarket.cid import cid_of, digest_from_cid
from fedmarket.errors import SpecError
from fedmarket.spec import DropoutLayer, LinearLayer, PrivacySettings, TaskSpec, TrainingSettings


def test_canonical_json_round_trips(make_spec):
    spec = make_spec(privacy={"noise_multiplier": 1.1, "max_grad_norm": 1.0, "delta": 1e-5})
    reloaded = TaskSpec.from_json(spec.to_canonical_json())
    assert reloaded == spec
    assert reloaded.to_canonical_json() == spec.to_canonical_json()


def test_canonical_json_is_sorted_compact_utf8(make_spec):
    spec = make_spec(description="Ziffern erkennen: ä")
    raw = spec.to_canonical_json()
    parsed = json.loads(raw)
    assert raw == json.dumps(parsed, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    assert "ä".encode() in raw


def test_spec_hash_is_stable_across_field_order_and_number_spelling(make_spec):
    spec = make_spec()
    document = json.loads(spec.to_canonical_json())
    reordered = dict(reversed(list(document.items())))
    reordered["training"] = dict(reversed(list(document["training"].items())))
    reordered["norm_bound"] = int(document["norm_bound"])  # 10 instead of 10.0
    assert TaskSpec.from_json(json.dumps(reordered, indent=2)).spec_hash() == spec.spec_hash()


def test_spec_hash_is_sha256_of_canonical_json_and_its_cid(make_spec):
    spec = make_spec()
    assert spec.spec_hash() == hashlib.sha256(spec.to_canonical_json()).digest()
    assert digest_from_cid(cid_of(spec.to_canonical_json())) == spec.spec_hash()


def test_spec_hash_changes_with_any_term(make_spec):
    assert make_spec().spec_hash() != make_spec(training={"learning_rate": 0.02}).spec_hash()


def test_defaults_are_written_into_canonical_json(make_spec):
    document = json.loads(make_spec().to_canonical_json())
    assert document["aggregation"]["method"] == "fedavg"
    assert document["privacy"] is None


def test_mlp_spec_declares_hidden_layers_with_activation_and_dropout(make_spec):
    spec = make_spec(hidden=(16, 8), activation="tanh", dropout=0.25)
    assert [layer.type for layer in spec.layers] == [
        "linear",
        "tanh",
        "dropout",
        "linear",
        "tanh",
        "dropout",
        "linear",
    ]
    assert spec.layers[-1] == LinearLayer(in_features=8, out_features=3)


def test_spec_is_frozen(make_spec):
    spec = make_spec()
    with pytest.raises(ValidationError):
        spec.name = "renamed"
    assert isinstance(spec.layers, tuple)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"training": {"learning_rate": 0}}, "training.learning_rate"),
        ({"training": {"optimizer": "rmsprop"}}, "training.optimizer"),
        ({"training": {"lr": 0.1}}, "training.lr"),
        ({"aggregation": {"trim_ratio": 0.5}}, "aggregation.trim_ratio"),
        ({"aggregation": {"method": "mean"}}, "aggregation.method"),
        ({"scoring": {"harm_threshold": 0.1}}, "scoring.harm_threshold"),
        ({"scoring": {"base_share": 1.5}}, "scoring.base_share"),
        ({"norm_bound": 0}, "norm_bound"),
        ({"norm_bound": float("inf")}, "norm_bound"),
        ({"num_classes": 1}, "num_classes"),
        ({"input_dim": 0}, "input_shape.0"),
        ({"dropout": 1.0}, "layers.2.dropout.p"),
        ({"privacy": {"noise_multiplier": 1.0, "max_grad_norm": 1.0, "delta": 0.5}}, "privacy.delta"),
        ({"data": {"format": "parquet"}}, "data.format"),
        ({"init_seed": -1}, "init_seed"),
        ({"name": ""}, "name"),
        ({"unknown_field": 1}, "unknown_field"),
    ],
)
def test_invalid_spec_raises_spec_error_naming_field(make_spec, overrides, field):
    with pytest.raises(SpecError) as caught:
        make_spec(**overrides)
    assert caught.value.field == field
    assert field in str(caught.value)


def test_from_json_unknown_layer_type_names_the_layer(make_spec):
    document = json.loads(make_spec().to_canonical_json())
    document["layers"][1] = {"type": "lstm"}
    with pytest.raises(SpecError, match="lstm") as caught:
        TaskSpec.from_json(json.dumps(document))
    assert caught.value.field == "layers.1"


def test_from_json_nested_layer_error_names_full_path(make_spec):
    document = json.loads(make_spec().to_canonical_json())
    del document["layers"][0]["out_features"]
    with pytest.raises(SpecError) as caught:
        TaskSpec.from_json(json.dumps(document))
    assert caught.value.field == "layers.0.linear.out_features"


def test_from_json_refuses_malformed_json():
    with pytest.raises(SpecError, match="Invalid JSON"):
        TaskSpec.from_json(b"{not json")


def test_from_json_refuses_nan(make_spec):
    text = make_spec().to_canonical_json().decode().replace('"norm_bound":10.0', '"norm_bound":NaN')
    with pytest.raises(SpecError) as caught:
        TaskSpec.from_json(text)
    assert caught.value.field == "norm_bound"


def test_spec_error_lists_all_problems(make_spec):
    with pytest.raises(SpecError) as caught:
        make_spec(norm_bound=-1, training={"batch_size": 0})
    assert {field for field, _ in caught.value.problems} == {"norm_bound", "training.batch_size"}


@pytest.mark.parametrize(
    ("model", "fields"),
    [
        (TrainingSettings, {"momentum": 1.0}),
        (PrivacySettings, {"noise_multiplier": 1.0, "max_grad_norm": 0, "delta": 1e-5}),
        (DropoutLayer, {"p": -0.1}),
    ],
)
def test_settings_built_directly_raise_spec_error(model, fields):
    with pytest.raises(SpecError):
        model(**fields)


def test_spec_error_is_a_value_error(make_spec):
    with pytest.raises(ValueError):
        make_spec(num_classes=0)
