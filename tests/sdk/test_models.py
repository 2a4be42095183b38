"""Declared models: shape checks before allocation, and the same round-0 weights for everyone."""

from __future__ import annotations

import pytest
import torch

from fedmarket.errors import ModelBuildError
from fedmarket.models import MAX_PARAMETERS, build_model, output_shape, parameter_count
from fedmarket.spec import TaskSpec


def image_spec(**overrides) -> TaskSpec:
    fields = {
        "name": "mnist",
        "input_shape": (1, 28, 28),
        "num_classes": 10,
        "norm_bound": 5.0,
        "layers": [
            {"type": "conv2d", "in_channels": 1, "out_channels": 4, "kernel_size": 3, "padding": 1},
            {"type": "relu"},
            {"type": "maxpool2d", "kernel_size": 2},
            {"type": "flatten"},
            {"type": "dropout", "p": 0.1},
            {"type": "linear", "in_features": 4 * 14 * 14, "out_features": 10},
        ],
    }
    fields.update(overrides)
    return TaskSpec(**fields)


def with_layers(spec: TaskSpec, *layers: dict) -> TaskSpec:
    return TaskSpec(**{**spec.model_dump(), "layers": list(layers)})


def state_equal(first: torch.nn.Module, second: torch.nn.Module) -> bool:
    a, b = first.state_dict(), second.state_dict()
    return a.keys() == b.keys() and all(torch.equal(a[name], b[name]) for name in a)


def test_mlp_builds_and_classifies_a_batch(make_spec):
    model = build_model(make_spec())
    assert model(torch.zeros(5, 8)).shape == (5, 3)


def test_cnn_builds_and_classifies_a_batch():
    model = build_model(image_spec())
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert output_shape(image_spec()) == (10,)


@pytest.mark.parametrize("spec_factory", ["mlp", "cnn"])
def test_parameter_count_matches_built_model(make_spec, spec_factory):
    spec = make_spec(hidden=(7, 5)) if spec_factory == "mlp" else image_spec()
    assert parameter_count(spec) == sum(p.numel() for p in build_model(spec).parameters())


def test_linear_without_bias_has_no_bias_tensor(make_spec):
    spec = with_layers(make_spec(), {"type": "linear", "in_features": 8, "out_features": 3, "bias": False})
    assert list(build_model(spec).state_dict()) == ["0.weight"]


def test_all_tensors_are_float32_even_with_float64_default(make_spec):
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        model = build_model(make_spec())
    finally:
        torch.set_default_dtype(previous)
    assert {tensor.dtype for tensor in model.state_dict().values()} == {torch.float32}


def test_same_seed_builds_identical_weights(make_spec):
    assert state_equal(build_model(make_spec(init_seed=7)), build_model(make_spec(init_seed=7)))


def test_different_seed_builds_different_weights(make_spec):
    assert not state_equal(build_model(make_spec(init_seed=7)), build_model(make_spec(init_seed=8)))


def test_build_model_leaves_global_rng_untouched(make_spec):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_model(make_spec())
    assert torch.equal(torch.rand(3), expected)


def test_linear_with_wrong_input_features_names_layer(make_spec):
    spec = with_layers(
        make_spec(),
        {"type": "linear", "in_features": 8, "out_features": 64},
        {"type": "relu"},
        {"type": "linear", "in_features": 128, "out_features": 3},
    )
    with pytest.raises(ModelBuildError, match=r"layer 2 \(linear\) expects 128 input features, gets 64"):
        build_model(spec)


def test_linear_on_image_without_flatten_asks_for_flatten():
    spec = with_layers(image_spec(), {"type": "linear", "in_features": 784, "out_features": 10})
    with pytest.raises(ModelBuildError, match="add a flatten layer"):
        build_model(spec)


def test_conv_with_wrong_channels_names_layer():
    spec = with_layers(
        image_spec(),
        {"type": "conv2d", "in_channels": 3, "out_channels": 4, "kernel_size": 3},
        {"type": "flatten"},
        {"type": "linear", "in_features": 4 * 26 * 26, "out_features": 10},
    )
    with pytest.raises(ModelBuildError, match=r"layer 0 \(conv2d\) expects 3 input channels, gets 1"):
        build_model(spec)


def test_conv_on_flat_input_is_refused(make_spec):
    spec = with_layers(make_spec(), {"type": "conv2d", "in_channels": 1, "out_channels": 1, "kernel_size": 1})
    with pytest.raises(ModelBuildError, match=r"\(channels, height, width\)"):
        parameter_count(spec)


def test_pooling_window_larger_than_image_is_refused():
    spec = with_layers(
        image_spec(input_shape=(1, 4, 4)),
        {"type": "maxpool2d", "kernel_size": 5},
        {"type": "flatten"},
        {"type": "linear", "in_features": 1, "out_features": 10},
    )
    with pytest.raises(ModelBuildError, match="does not fit its 4x4 input"):
        build_model(spec)


def test_output_not_num_classes_wide_is_refused(make_spec):
    spec = with_layers(make_spec(), {"type": "linear", "in_features": 8, "out_features": 4})
    with pytest.raises(ModelBuildError, match="3 classes"):
        build_model(spec)


def test_model_over_parameter_limit_is_refused_before_allocating(make_spec):
    # 1,000,000 x 1,000,000 float32 weights would need 4 TB: refusing fast proves nothing was allocated.
    spec = make_spec(input_dim=65_536, hidden=(1_000_000,))
    with pytest.raises(ModelBuildError, match="more than the limit of 5,000,000"):
        build_model(spec)
    assert parameter_count(spec) > MAX_PARAMETERS


def test_parameter_limit_can_be_lowered(make_spec):
    spec = make_spec()
    with pytest.raises(ModelBuildError):
        build_model(spec, max_parameters=parameter_count(spec) - 1)
    build_model(spec, max_parameters=parameter_count(spec))


def test_model_error_is_a_value_error(make_spec):
    with pytest.raises(ValueError):
        build_model(with_layers(make_spec(), {"type": "relu"}))
