"""The robustness metrics agree with Quantus 0.6.0 (black-box oracle) on the same random draws.

Quantus takes a ``perturb_func``; the tests hand it the noise our metric draws (regenerated here
with plain torch from the documented order: one ``torch.rand``/``torch.randn`` of the inputs' shape
per step, from a generator seeded with ``seed``) and an ``explain_func`` computing the same
explanation, so both evaluate identical perturbed inputs and explanations.
"""
import warnings

import numpy as np
import pytest
import quantus
import torch
from torch import nn

from lrp_lightning.attribution import Gradient
from lrp_lightning.composites import EpsilonPlus
from lrp_lightning.metrics import (
    AvgSensitivity,
    LocalLipschitzEstimate,
    MaxSensitivity,
    RelativeInputStability,
    RelativeOutputStability,
    RelativeRepresentationStability,
)

warnings.filterwarnings("ignore", module="quantus")
pytestmark = pytest.mark.usefixtures("float64_default")


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 4)).double().eval()


def mlp() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(10, 8), nn.ReLU(), nn.Linear(8, 4)).double().eval()


def data(kind: str):
    generator = torch.Generator().manual_seed(3)
    shape = (4, 2, 6, 6) if kind == "cnn" else (4, 10)
    inputs = torch.randn(shape, generator=generator, dtype=torch.float64)
    model = small_cnn() if kind == "cnn" else mlp()
    with torch.no_grad():
        target = model(inputs).argmax(dim=1)
    return model, inputs, target


def gradient_times_input(model, inputs, target):
    return Gradient(model, EpsilonPlus())(inputs, target)[1]


def plain_gradient(model, inputs, target):
    return Gradient(model)(inputs, target)[1]


EXPLAINERS = {"epsilon_plus": gradient_times_input, "gradient": plain_gradient}


def shared_noise(kind: str, shape, steps: int, seed: int, **settings):
    """The draws the metric makes: one tensor of the inputs' shape per step, from a seeded generator."""
    generator = torch.Generator().manual_seed(seed)
    draws = []
    for _ in range(steps):
        if kind == "gaussian":
            draws.append(settings["mean"] + settings["std"] * torch.randn(shape, generator=generator, dtype=torch.float64))
        else:
            low, high = settings["low"], settings["high"]
            draws.append(low + (high - low) * torch.rand(shape, generator=generator, dtype=torch.float64))
    return draws


def quantus_scores(oracle, model, inputs, target, explainer_name, draws):
    """Quantus' scores on the same draws and explanations, one sample per batch: Quantus 0.6.0
    normalises vector explanations (N, D) by the largest magnitude of the whole batch, not per
    sample as the definition (and our metric) does; batches of one make the two agree."""
    steps = len(draws)
    calls = iter(range(steps * inputs.shape[0]))

    def perturb_func(arr, **_):
        call = next(calls)
        return arr + draws[call % steps][call // steps].numpy().reshape(arr.shape)

    def explain_func(model, inputs, targets, **_):
        return EXPLAINERS[explainer_name](model, torch.as_tensor(inputs), torch.as_tensor(targets)).numpy()

    oracle.perturb_func = perturb_func
    return np.asarray(oracle(
        model=model, x_batch=inputs.numpy(), y_batch=target.numpy(), explain_func=explain_func, device="cpu",
        channel_first=True, softmax=False, batch_size=1,
    ), dtype=np.float64)


FAST_DRAWS = 20


def cases(settings_list, kinds=("cnn", "mlp")):
    """Every (kind, settings...) case; the defaults on the CNN, shortened to ``FAST_DRAWS`` draws, run in
    ``make test``, all other cases (the full 200 draws included) under ``-m large``."""
    params = []
    for kind in kinds:
        for index, entry in enumerate(settings_list):
            settings, rest = entry[0], entry[1:]
            if index == 0:
                params.append(pytest.param(kind, {"nr_samples": FAST_DRAWS}, *rest, marks=() if kind == "cnn" else pytest.mark.large))
            params.append(pytest.param(kind, settings, *rest, marks=pytest.mark.large))
    return params


def ours(metric, model, inputs, target):
    metric.update(model, inputs, target)
    return metric.compute().item()


SENSITIVITY_SETTINGS = [
    ({}, {}),
    ({"nr_samples": 7, "lower_bound": 0.05, "upper_bound": 0.3, "abs": True}, {}),
    ({"nr_samples": 9, "normalise": True, "return_nan_when_prediction_changes": True}, {"explainer": "epsilon_plus"}),
]


@pytest.mark.parametrize("metric_class, oracle_class", [
    (AvgSensitivity, quantus.AvgSensitivity), (MaxSensitivity, quantus.MaxSensitivity),
])
@pytest.mark.parametrize("kind, settings, extra", cases(SENSITIVITY_SETTINGS))
def test_sensitivity_matches_quantus(kind, metric_class, oracle_class, settings, extra):
    model, inputs, target = data(kind)
    explainer = extra.get("explainer", "gradient")
    nr_samples = settings.get("nr_samples", 200)
    oracle = oracle_class(disable_warnings=True, **settings)
    lower, upper = settings.get("lower_bound", 0.2), settings.get("upper_bound")
    low, high = (-lower, lower) if upper is None else (lower, upper)
    draws = shared_noise("uniform", inputs.shape, nr_samples, seed=7, low=low, high=high)
    expected = quantus_scores(oracle, model, inputs, target, explainer, draws)
    metric = metric_class(explainer=explainer, seed=7, **settings)
    assert np.isfinite(expected).any()
    np.testing.assert_allclose(ours(metric, model, inputs, target), expected.mean(), rtol=1e-6)


@pytest.mark.parametrize("kind, settings, explainer", cases([
    ({}, "gradient"),
    ({"nr_samples": 6, "perturb_std": 0.3, "normalise": False}, "gradient"),
    ({"nr_samples": 8, "perturb_mean": 0.1, "abs": True, "return_nan_when_prediction_changes": True}, "epsilon_plus"),
]))
def test_local_lipschitz_estimate_matches_quantus(kind, settings, explainer):
    model, inputs, target = data(kind)
    nr_samples = settings.get("nr_samples", 200)
    oracle = quantus.LocalLipschitzEstimate(disable_warnings=True, **settings)
    draws = shared_noise("gaussian", inputs.shape, nr_samples, seed=11, mean=settings.get("perturb_mean", 0.0),
                         std=settings.get("perturb_std", 0.1))
    expected = quantus_scores(oracle, model, inputs, target, explainer, draws)
    metric = LocalLipschitzEstimate(explainer=explainer, seed=11, **settings)
    assert np.isfinite(expected).any()
    np.testing.assert_allclose(ours(metric, model, inputs, target), expected.mean(), rtol=1e-6)


RELATIVE_SETTINGS = [
    ({}, "gradient"),
    ({"nr_samples": 6, "eps_min": 1e-3, "abs": True}, "epsilon_plus"),
    ({"nr_samples": 8, "lower_bound": 0.05, "upper_bound": 0.1, "return_nan_when_prediction_changes": False}, "gradient"),
    # Quantus' normalise_func for these three is the root mean square, not the maximum of the others
    ({"nr_samples": 7, "normalise": True, "abs": True}, "epsilon_plus"),
    ({"nr_samples": 5, "normalise": True}, "gradient"),
]


@pytest.mark.parametrize("metric_class, oracle_class", [
    (RelativeInputStability, quantus.RelativeInputStability),
    (RelativeOutputStability, quantus.RelativeOutputStability),
    (RelativeRepresentationStability, quantus.RelativeRepresentationStability),
])
@pytest.mark.parametrize("kind, settings, explainer", cases(RELATIVE_SETTINGS))
def test_relative_stability_matches_quantus(kind, metric_class, oracle_class, settings, explainer):
    model, inputs, target = data(kind)
    # a wide margin for class 0, so that no draw changes a prediction: the default
    # return_nan_when_prediction_changes=True would otherwise make both sides NaN
    with torch.no_grad():
        model[-1].bias[0] += 50.0
        target = model(inputs).argmax(dim=1)
    nr_samples = settings.get("nr_samples", 200)
    if metric_class is RelativeRepresentationStability:
        settings = {**settings, "layer_names": ["0"] if kind == "mlp" else ["0", "2"]}
    # Quantus takes the noise range as perturb_func_kwargs; the shared draws replace its perturbation anyway
    oracle = oracle_class(disable_warnings=True, **{key: value for key, value in settings.items()
                                                    if key not in ("lower_bound", "upper_bound")})
    draws = shared_noise("uniform", inputs.shape, nr_samples, seed=5, low=settings.get("lower_bound", 0.02),
                         high=settings.get("upper_bound", 0.2))
    expected = quantus_scores(oracle, model, inputs, target, explainer, draws)
    metric = metric_class(explainer=explainer, seed=5, **settings)
    assert np.isfinite(expected).all()
    np.testing.assert_allclose(ours(metric, model, inputs, target), expected.mean(), rtol=1e-6)


ROBUSTNESS = [AvgSensitivity, MaxSensitivity, LocalLipschitzEstimate, RelativeInputStability, RelativeOutputStability,
              RelativeRepresentationStability]


@pytest.mark.parametrize("make, message", [
    (lambda: AvgSensitivity(explainer="no_such_explainer"), "unknown explainer"),
    (lambda: AvgSensitivity(explainer=3), "explainer must be"),
    (lambda: MaxSensitivity(nr_samples=0), "nr_samples"),
    (lambda: AvgSensitivity(lower_bound=-0.1), "lower_bound"),
    (lambda: RelativeInputStability(lower_bound=0.3, upper_bound=0.2), "upper_bound must exceed"),
    (lambda: LocalLipschitzEstimate(perturb_std=0.0), "perturb_std"),
    (lambda: RelativeOutputStability(eps_min=0.0), "eps_min"),
    (lambda: RelativeRepresentationStability(layer_names=[3]), "layer_names"),
])
def test_bad_arguments_raise(make, message):
    with pytest.raises((KeyError, TypeError, ValueError), match=message):
        make()


def test_bad_update_arguments_raise():
    model, inputs, target = data("mlp")
    with pytest.raises(ValueError, match="not modules of the model"):
        RelativeRepresentationStability(layer_names=["9"], nr_samples=2).update(model, inputs, target)
    with pytest.raises(ValueError, match="target must have shape"):
        AvgSensitivity(nr_samples=2).update(model, inputs, target[:2])
    with pytest.raises(ValueError, match="token ids"):
        AvgSensitivity(nr_samples=2).update(model, torch.zeros(4, 10, dtype=torch.long), target)
    with pytest.raises(ValueError, match="explainer returned attributions of shape"):
        AvgSensitivity(explainer=lambda model, x, t: x[:, :3], nr_samples=2).update(model, inputs, target)


@pytest.mark.parametrize("metric_class", ROBUSTNESS)
def test_model_and_global_rng_untouched_and_reset_reseeds(metric_class):
    model, inputs, target = data("cnn")
    model.train()
    state = {key: value.clone() for key, value in model.state_dict().items()}
    rng = torch.get_rng_state()
    metric = metric_class(explainer="epsilon_plus", nr_samples=3, max_batch_size=5, return_nan_when_prediction_changes=False)
    metric.update(model, inputs, target)
    first = metric.compute()
    assert torch.isfinite(first)
    assert torch.equal(torch.get_rng_state(), rng)
    assert model.training and all(module.training for module in model.modules())
    assert all(torch.equal(state[key], value) for key, value in model.state_dict().items())
    assert all(not module._forward_hooks and not module._backward_hooks for module in model.modules())
    metric.reset()
    metric.update(model, inputs, target)
    torch.testing.assert_close(metric.compute(), first, rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("metric_class", ROBUSTNESS)
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nonfinite_input_gives_nan(metric_class, bad):
    model, inputs, target = data("mlp")
    inputs[2, 3] = bad
    metric = metric_class(nr_samples=2, return_nan_when_prediction_changes=False)
    metric.update(model, inputs, target)
    assert torch.isnan(metric.compute())
    metric.reset()
    metric.update(model, inputs[:2], target[:2])
    assert torch.isfinite(metric.compute())
