"""Local training on the bundled digits: it learns, it is reproducible, DP-SGD accounts and cleans up."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fedmarket.datasets import load_dataset, train_test_split
from fedmarket.learning import EvalResult, LocalData, TrainResult, evaluate, proximal_term, train
from fedmarket.models import build_model
from fedmarket.spec import PrivacySettings, TrainingSettings, mlp_spec

SPEC = mlp_spec(name="digits", input_dim=64, num_classes=10, hidden=(32,), init_seed=7)
SGD = TrainingSettings(local_epochs=2, batch_size=32, optimizer="sgd", learning_rate=0.1, momentum=0.9)


@pytest.fixture(scope="module")
def digits() -> tuple[LocalData, LocalData]:
    X, y = load_dataset("digits")
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_fraction=0.25, seed=0)
    return LocalData(X_train, y_train), LocalData(X_test, y_test)


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.detach().clone() for key, value in model.state_dict().items()}


def test_two_epochs_on_digits_beat_the_initial_model(digits):
    train_data, test_data = digits
    model = build_model(SPEC)
    before = evaluate(model, test_data)
    result = train(model, train_data, SGD, seed=1)
    after = evaluate(model, test_data)
    assert isinstance(result, TrainResult)
    assert result.num_samples == len(train_data)
    assert result.epsilon is None
    assert after.accuracy > max(0.8, before.accuracy + 0.5)
    assert after.loss < before.loss


def test_adam_also_trains(digits):
    train_data, test_data = digits
    model = build_model(SPEC)
    adam = TrainingSettings(
        local_epochs=1, batch_size=32, optimizer="adam", learning_rate=0.01, weight_decay=1e-4
    )
    train(model, train_data, adam, seed=1)
    assert evaluate(model, test_data).accuracy > 0.8


def test_the_same_seed_gives_identical_weights_and_another_seed_does_not(digits):
    train_data, _ = digits
    small = LocalData(train_data.X[:300], train_data.y[:300])
    runs = {}
    for name, seed in (("first", 5), ("again", 5), ("other", 6)):
        model = build_model(SPEC)
        train(model, small, SGD, seed=seed)
        runs[name] = weights(model)
    for key in runs["first"]:
        assert torch.equal(runs["first"][key], runs["again"][key])
    assert any(not torch.equal(runs["first"][key], runs["other"][key]) for key in runs["first"])


def test_training_leaves_the_callers_random_state_untouched(digits):
    train_data, _ = digits
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train(build_model(SPEC), LocalData(train_data.X[:100], train_data.y[:100]), SGD, seed=9)
    assert torch.equal(torch.rand(3), expected)


def test_on_epoch_reports_each_epoch_from_one_with_its_mean_loss(digits):
    train_data, _ = digits
    seen: list[tuple[int, float]] = []
    result = train(
        build_model(SPEC), train_data, SGD, seed=1, on_epoch=lambda epoch, loss: seen.append((epoch, loss))
    )
    assert [epoch for epoch, _ in seen] == [1, 2]
    assert seen[1][1] < seen[0][1]
    assert result.loss == seen[-1][1]


def test_dp_training_reports_a_finite_positive_epsilon_and_keeps_the_state_dict_keys(digits):
    train_data, test_data = digits
    model = build_model(SPEC)
    keys = list(model.state_dict())
    before = weights(model)
    privacy = PrivacySettings(noise_multiplier=1.0, max_grad_norm=1.0, delta=1e-5)
    dp = TrainingSettings(local_epochs=1, batch_size=64, optimizer="sgd", learning_rate=0.5)
    result = train(model, train_data, dp, seed=3, privacy=privacy)

    assert result.epsilon is not None and math.isfinite(result.epsilon) and result.epsilon > 0
    assert list(model.state_dict()) == keys
    assert all(not torch.equal(model.state_dict()[key], before[key]) for key in keys)
    # No Opacus residue: no per-sample gradients, hooks or wrapper left on the caller's model.
    assert all(not hasattr(parameter, "grad_sample") for parameter in model.parameters())
    assert all(not module._forward_hooks and not module._backward_hooks for module in model.modules())
    assert evaluate(model, test_data).accuracy > 0.5
    # The model can be trained again without privacy afterwards.
    train(model, train_data, SGD, seed=4)


def test_dp_training_with_zero_noise_reports_infinite_epsilon(digits):
    train_data, _ = digits
    privacy = PrivacySettings(noise_multiplier=0.0, max_grad_norm=1.0, delta=1e-5)
    small = LocalData(train_data.X[:200], train_data.y[:200])
    result = train(build_model(SPEC), small, SGD, seed=3, privacy=privacy)
    assert result.epsilon == math.inf


def test_evaluate_a_zero_model_gives_log_num_classes_loss_and_majority_zero_accuracy(digits):
    _, test_data = digits
    model = build_model(SPEC)
    for parameter in model.parameters():
        torch.nn.init.zeros_(parameter)
    model.train()
    result = evaluate(model, test_data)
    # All logits equal: loss ln(10) per sample; argmax picks class 0 everywhere.
    expected = EvalResult(loss=pytest.approx(math.log(10)), accuracy=pytest.approx(np.mean(test_data.y == 0)))
    assert result == expected
    assert model.training  # mode restored


def test_training_on_no_samples_is_refused():
    empty = LocalData(np.zeros((0, 64), dtype=np.float32), np.zeros(0, dtype=np.int64))
    with pytest.raises(ValueError, match="no local samples"):
        train(build_model(SPEC), empty, SGD, seed=0)


def test_local_data_with_more_samples_than_labels_is_refused():
    with pytest.raises(ValueError, match="3 samples but y has 2 labels"):
        LocalData(np.zeros((3, 64), dtype=np.float32), np.zeros(2, dtype=np.int64))


# --- FedProx's proximal term ------------------------------------------------------------------------


def distance(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return math.sqrt(sum(float(((a[k] - b[k]) ** 2).sum()) for k in a))


def test_the_proximal_term_is_half_mu_times_the_squared_distance_to_the_anchor():
    model = torch.nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 2.0]]))
        model.bias.copy_(torch.tensor([3.0]))
    anchor = {"weight": torch.tensor([[0.0, 0.0]]), "bias": torch.tensor([1.0])}
    assert float(proximal_term(model, anchor, 0.5)) == pytest.approx(0.25 * (1 + 4 + 4))
    assert float(proximal_term(model, anchor, 0.0)) == 0.0
    assert float(proximal_term(model, weights(model), 3.0)) == 0.0


def test_mu_zero_trains_exactly_as_without_the_term(digits):
    train_data, _ = digits
    plain, prox0 = build_model(SPEC), build_model(SPEC)
    train(plain, train_data, SGD, seed=3)
    train(prox0, train_data, SGD.model_copy(update={"proximal_mu": 0.0}), seed=3)
    assert all(
        torch.equal(a, b) for a, b in zip(weights(plain).values(), weights(prox0).values(), strict=True)
    )


def test_a_positive_mu_keeps_the_trained_weights_closer_to_the_global_model(digits):
    train_data, _ = digits
    start = weights(build_model(SPEC))
    moved = {}
    for mu in (0.0, 0.1, 1.0):
        model = build_model(SPEC)
        result = train(model, train_data, SGD.model_copy(update={"proximal_mu": mu}), seed=3)
        moved[mu] = distance(weights(model), start)
        assert math.isfinite(result.loss)
    assert moved[1.0] < moved[0.1] < moved[0.0]


def test_dp_training_with_a_proximal_term_is_refused(digits):
    train_data, _ = digits
    privacy = PrivacySettings(noise_multiplier=1.0, max_grad_norm=1.0, delta=1e-5)
    with pytest.raises(ValueError, match="proximal"):
        train(
            build_model(SPEC),
            train_data,
            SGD.model_copy(update={"proximal_mu": 0.1}),
            seed=1,
            privacy=privacy,
        )
