"""Completeness equals Quantus 0.6.0's on a CNN and an MLP whose arithmetic is exact.

Quantus tests exact float equality of sum(a) and f(x) - f(baseline); ours has tolerances (NumPy's
``isclose`` defaults). Weights, biases, inputs and baselines are multiples of 1/8 small enough that every
sum is exact in float64, so both tests see the same equalities and no tolerance decides an outcome.
"""
import numpy as np
import pytest
import quantus
import torch
from torch import nn

from lrp_lightning.metrics import Completeness

pytestmark = pytest.mark.usefixtures("float64_default")


def dyadic(shape, generator, low=-4, high=5):
    return torch.randint(low, high, shape, generator=generator).double() / 8


def exact_model(kind: str) -> nn.Module:
    generator = torch.Generator().manual_seed(5)
    if kind == "cnn":
        model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 4 * 4, 3))
    else:
        model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(dyadic(parameter.shape, generator))
    return model.double().eval()


def exact_data(kind: str, setting: dict):
    generator = torch.Generator().manual_seed(6)
    shape = (6, 1, 4, 4) if kind == "cnn" else (6, 6)
    inputs = dyadic(shape, generator)
    target = torch.randint(0, 3, (shape[0],), generator=generator)
    model = exact_model(kind)
    baseline = setting.get("perturb_baseline", "black")
    flat = inputs.reshape(shape[0], -1)
    fill = {"black": flat.amin(1), "white": flat.amax(1)}.get(baseline)
    fill = torch.full((shape[0],), float(baseline)) if fill is None else fill
    with torch.no_grad():
        change = (model(inputs) - model(fill.view(-1, *([1] * (inputs.ndim - 1))).expand(shape)))[torch.arange(shape[0]), target]
    # first four: one attribution equals the change, +1 and -1 cancel (so the batch maximum |a| is 1 when
    # |change| <= 1, and normalising changes nothing); last two: off by 1/4
    attributions = torch.zeros(shape, dtype=torch.float64).reshape(shape[0], -1)
    attributions[:, 0] = change.abs() if setting.get("abs") else change
    if not setting.get("abs"):  # with abs, |change| = change only where the change is positive
        attributions[:, 1], attributions[:, 2] = 1.0, -1.0
    attributions[4:, 3] = 0.25
    return model, inputs, attributions.reshape(shape), target, change


SETTINGS = [{}, {"normalise": False, "perturb_baseline": 0.5}, {"abs": True, "normalise": False, "perturb_baseline": -0.5}]


@pytest.mark.parametrize("setting", SETTINGS)
@pytest.mark.parametrize("kind", ["cnn", "mlp"])
def test_completeness_matches_quantus_on_exact_arithmetic(kind, setting, quantus_scores):
    model, inputs, attributions, target, change = exact_data(kind, setting)
    if setting.get("normalise", True):
        assert change.abs().max() <= 1  # the construction needs it
    metric = Completeness(baseline=setting.get("perturb_baseline", "black"),
                          **{k: v for k, v in setting.items() if k != "perturb_baseline"})
    metric.update(model, inputs, attributions, target)
    expected = quantus_scores(quantus.Completeness(disable_warnings=True, **setting), model, inputs, attributions, target)
    assert 0 < expected.mean() < 1  # both outcomes occur
    np.testing.assert_allclose(metric.compute().item(), expected.mean(), rtol=1e-6)


def test_completeness_rejects_negative_tolerance():
    with pytest.raises(ValueError, match="rtol"):
        Completeness(rtol=-1.0)


def test_completeness_is_nan_for_non_finite_scores():
    model, inputs, attributions, target, _ = exact_data("mlp", {})
    inputs[2, 0] = float("nan")
    metric = Completeness()
    metric.update(model, inputs, attributions, target)
    assert torch.isnan(metric.compute())
