"""Continuity equals Quantus 0.6.0's (black-box oracle) on fixed inputs (deterministic: translations, no draws).

Both explain with the same function (our attributors, handed to Quantus as ``explain_func``). The
shifts ``2 W / nr_steps`` are integers here: Quantus translates with OpenCV, whose interpolation
weights for fractional shifts are rounded to 1/32. Quantus 0.6.0 ignores ``perturb_baseline`` (its
translation always fills with "black", checked below), so the other baselines are checked by hand.
Its ``return_nan_when_prediction_changes=True`` path uses ``np.NaN``, which NumPy 2 no longer has:
the test aliases it to ``np.nan`` for the oracle. Single-channel square images: Quantus' translation
handles only those.
"""
import numpy as np
import pytest
import quantus
import torch
from torch import nn

from lrp_lightning.attribution import Gradient
from lrp_lightning.composites import EpsilonPlus
from lrp_lightning.metrics import Continuity
from lrp_lightning.metrics.continuity import translate, translation_shifts

pytestmark = pytest.mark.usefixtures("float64_default")
NUM_CLASSES = 4


@pytest.fixture
def numpy_nan(monkeypatch):
    monkeypatch.setattr(np, "NaN", np.nan, raising=False)


def model_and_data(kind: str, side: int, num_samples: int = 4, margin: float = 0.0):
    torch.manual_seed(0)
    if kind == "cnn":
        layers = [nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * side * side, NUM_CLASSES)]
    else:
        layers = [nn.Flatten(), nn.Linear(side * side, 8), nn.ReLU(), nn.Linear(8, NUM_CLASSES)]
    model = nn.Sequential(*layers).double().eval()
    with torch.no_grad():
        model[-1].bias[0] += margin
    inputs = torch.randn(num_samples, 1, side, side, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():
        target = model(inputs).argmax(dim=1)
    return model, inputs, target


EXPLAIN = {
    "gradient": lambda model, inputs, target: Gradient(model)(inputs, target)[1],
    "epsilon_plus": lambda model, inputs, target: Gradient(model, EpsilonPlus())(inputs, target)[1],
}


def quantus_continuity(model, inputs, target, explainer, batch_size=64, **settings):
    def explain_func(model, inputs, targets, **_):
        return EXPLAIN[explainer](model, torch.as_tensor(inputs), torch.as_tensor(targets)).numpy()

    return np.asarray(quantus.Continuity(disable_warnings=True, **settings)(
        model, inputs.numpy(), target.numpy(), explain_func=explain_func, device="cpu", channel_first=True,
        batch_size=batch_size,
    ), dtype=np.float64)


CASES = [
    (14, {}, "gradient"),  # Quantus' 28 steps: shifts of one pixel on 14x14 images
    (12, {"nr_steps": 6, "abs": False}, "epsilon_plus"),
    (12, {"nr_steps": 3, "normalise": False, "return_nan_when_prediction_changes": True}, "gradient"),
]


@pytest.mark.parametrize("kind", ["cnn", "mlp"])
@pytest.mark.parametrize("side, settings, explainer", CASES)
def test_continuity_matches_quantus(kind, side, settings, explainer, numpy_nan):
    model, inputs, target = model_and_data(kind, side, margin=50.0)  # no prediction changes: no NaN
    expected = quantus_continuity(model, inputs, target, explainer, **settings)
    metric = Continuity(explainer=explainer, max_batch_size=5, **settings)
    metric.update(model, inputs, target)
    assert np.isfinite(expected).all()
    np.testing.assert_allclose(metric.compute().item(), expected.mean(), rtol=1e-6)


def test_nan_when_prediction_changes_matches_quantus_per_sample(numpy_nan):
    """Batches of one on both sides (the normalisation couples a batch), so the NaN pattern is compared per sample."""
    model, inputs, target = model_and_data("cnn", 8, num_samples=6, margin=0.4)
    settings = {"nr_steps": 8, "return_nan_when_prediction_changes": True}
    expected = quantus_continuity(model, inputs, target, "gradient", batch_size=1, **settings)
    ours = []
    for index in range(inputs.shape[0]):
        metric = Continuity(**settings)
        metric.update(model, inputs[index : index + 1], target[index : index + 1])
        ours.append(metric.compute().item())
    assert np.isnan(expected).any() and np.isfinite(expected).any()
    np.testing.assert_allclose(ours, expected, rtol=1e-6)


def test_quantus_fills_black_whatever_the_baseline():
    model, inputs, target = model_and_data("cnn", 12, margin=50.0)
    black = quantus_continuity(model, inputs, target, "gradient", nr_steps=3)
    np.testing.assert_array_equal(quantus_continuity(model, inputs, target, "gradient", nr_steps=3, perturb_baseline=0.5),
                                  black)


def test_translation_by_hand_baselines_and_shifts():
    image = torch.arange(1.0, 5.0).view(1, 1, 1, 4)
    assert translate(image, torch.tensor(-1.0), 1).flatten().tolist() == [-1.0, 1.0, 2.0, 3.0]
    assert translate(image, torch.tensor(0.0), 1.5).flatten().tolist() == [0.0, 0.5, 1.5, 2.5]
    assert translation_shifts(14, 28) == [float(k) for k in range(-13, 15)]
    model, inputs, target = model_and_data("cnn", 8, margin=50.0)
    values = {}
    for baseline in ("black", 0.5, "mean"):
        metric = Continuity(nr_steps=4, perturb_baseline=baseline)
        metric.update(model, inputs, target)
        values[baseline] = metric.compute().item()
    assert len(set(values.values())) == 3  # the baseline reaches the translated images


@pytest.mark.parametrize("make, error, message", [
    (lambda: Continuity(explainer="no_such_explainer"), KeyError, "unknown explainer"),
    (lambda: Continuity(nr_steps=0), ValueError, "nr_steps"),
    (lambda: Continuity(abs=None), TypeError, "abs"),
    (lambda: Continuity(perturb_baseline="grey"), ValueError, "unknown baseline"),
    (lambda: Continuity(return_nan_when_prediction_changes=1), TypeError, "return_nan_when_prediction_changes"),
])
def test_bad_arguments_raise(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_bad_update_arguments_raise():
    model, inputs, target = model_and_data("cnn", 8)
    with pytest.raises(ValueError, match="needs floating images"):
        Continuity(nr_steps=2).update(model, inputs.flatten(1), target)
    with pytest.raises(ValueError, match="needs floating images"):
        Continuity(nr_steps=2).update(model, torch.zeros(4, 1, 8, 8, dtype=torch.long), target)
    with pytest.raises(ValueError, match="target must have shape"):
        Continuity(nr_steps=2).update(model, inputs, target[:2])


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nonfinite_input_gives_nan_and_reset_recovers(bad):
    model, inputs, target = model_and_data("cnn", 8)
    inputs[2, 0, 3, 3] = bad
    metric = Continuity(nr_steps=4)
    metric.update(model, inputs, target)
    assert torch.isnan(metric.compute())
    metric.reset()
    metric.update(model, inputs[:2], target[:2])
    assert torch.isfinite(metric.compute())


def test_model_and_global_rng_untouched():
    model, inputs, target = model_and_data("cnn", 8)
    model.train()
    state = {key: value.clone() for key, value in model.state_dict().items()}
    rng = torch.get_rng_state()
    metric = Continuity(explainer="epsilon_plus", nr_steps=4, max_batch_size=3)
    metric.update(model, inputs, target)
    assert torch.isfinite(metric.compute())
    assert torch.equal(torch.get_rng_state(), rng)
    assert model.training and all(module.training for module in model.modules())
    assert all(torch.equal(state[key], value) for key, value in model.state_dict().items())
    assert all(not module._forward_hooks and not module._backward_hooks for module in model.modules())
