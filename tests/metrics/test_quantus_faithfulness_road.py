"""ROAD equals Quantus 0.6.0's (black-box oracle) on the same noise draws, and agrees with it statistically on its own.

Quantus' ROAD takes a ``perturb_func``; the equality tests hand it Quantus' own
``noisy_linear_imputation`` with ``noise=0`` plus the noise our metric draws (regenerated here with
plain torch from the documented order: one ``torch.randn`` of a sample's shape per (sample,
percentage) pair, sample-major), so the imputation is Quantus' and both evaluate identical images.
Quantus' own noise comes from NumPy's global generator, which our metric (torch.Generator, global
RNG untouched) cannot share; so the default perturbation is compared statistically: the mean
accuracy over many seeds must agree within 3 standard errors. The imputation alone is compared
with Quantus' to 1e-10 (it is a linear solve, deterministic). Images are single-channel where
Quantus ranks values (ours rank locations, channels summed; they coincide for one channel).
"""
import math

import numpy as np
import pytest
import quantus
import torch
from quantus.functions.perturb_func import noisy_linear_imputation
from torch import nn

from lrp_lightning.metrics import ROAD
from lrp_lightning.metrics._imputation import linear_imputation

pytestmark = pytest.mark.usefixtures("float64_default")
NUM_CLASSES = 4


def model_and_data(kind: str, num_samples: int = 6, side: int = 6):
    torch.manual_seed(0)
    if kind == "cnn":
        model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * side * side, NUM_CLASSES))
    else:
        model = nn.Sequential(nn.Flatten(), nn.Linear(side * side, 8), nn.ReLU(), nn.Linear(8, NUM_CLASSES))
    model = model.double().eval()
    generator = torch.Generator().manual_seed(1)
    inputs = torch.randn(num_samples, 1, side, side, generator=generator, dtype=torch.float64)
    attributions = torch.randn(num_samples, 1, side, side, generator=generator, dtype=torch.float64)
    with torch.no_grad():
        target = model(inputs).argmax(dim=1)
    target[0] = (target[0] + 1) % NUM_CLASSES  # one sample wrong from the start
    return model, inputs, attributions, target


def shared_noise_oracle(inputs, percentages, noise, seed):
    """Quantus' imputation (noise 0) plus our documented draws; Quantus calls it percentage-major, sample-minor."""
    generator = torch.Generator().manual_seed(seed)
    draws = [[torch.randn(inputs.shape[1:], generator=generator, dtype=inputs.dtype) for _ in percentages]
             for _ in range(inputs.shape[0])]
    calls = iter(range(inputs.shape[0] * len(percentages)))

    def perturb_func(arr, indices, **_):
        call = next(calls)
        percentage, sample = divmod(call, inputs.shape[0])
        imputed = noisy_linear_imputation(arr, indices=indices, noise=0.0)
        flat = imputed.reshape(arr.shape[0], -1)
        flat[:, indices] += noise * draws[sample][percentage].numpy().reshape(arr.shape[0], -1)[:, indices]
        return flat.reshape(arr.shape)

    return perturb_func


SETTINGS = [
    {},
    {"percentages": [10, 35, 50, 90], "noise": 0.5, "abs": True},
    {"percentages": [5, 20, 60, 95], "noise": 1.0, "normalise": False},
]


@pytest.mark.parametrize("kind", ["cnn", "mlp"])
@pytest.mark.parametrize("settings", SETTINGS)
def test_road_matches_quantus_on_shared_noise(kind, settings):
    model, inputs, attributions, target = model_and_data(kind)
    percentages = settings.get("percentages", list(range(1, 100, 2)))
    noise = settings.get("noise", 0.01)
    oracle = quantus.ROAD(disable_warnings=True, perturb_func=shared_noise_oracle(inputs, percentages, noise, seed=3),
                          **settings)
    expected = oracle(model, inputs.numpy(), target.numpy(), a_batch=attributions.numpy(), device="cpu",
                      channel_first=True)
    metric = ROAD(seed=3, max_batch_size=7, **settings)
    metric.update(model, inputs, attributions, target)
    result = metric.compute()
    assert list(expected) == percentages
    curve = np.array(list(expected.values()))
    assert 0 < curve.min() < 1 or curve.max() < 1  # the removal changes some predictions: a curve that can fail
    np.testing.assert_allclose(result["curve"].numpy(), curve, rtol=1e-6)
    np.testing.assert_allclose(result["auc"].item(), np.trapezoid(curve, np.array(percentages) / 100), rtol=1e-6)


@pytest.mark.parametrize("shape, fraction", [((1, 6, 6), 0.5), ((3, 8, 8), 0.99), ((2, 16, 12), 0.3)])
def test_imputation_equals_quantus(shape, fraction):
    generator = np.random.RandomState(0)
    image = generator.randn(*shape)
    num_pixels = shape[1] * shape[2]
    indices = generator.permutation(num_pixels)[: int(fraction * num_pixels)]
    removed = torch.zeros(num_pixels, dtype=torch.bool)
    removed[torch.from_numpy(indices)] = True
    ours = linear_imputation(torch.from_numpy(image)[None], removed.view(1, *shape[1:]))[0]
    np.testing.assert_allclose(ours.numpy(), noisy_linear_imputation(image, indices=indices, noise=0.0), rtol=0, atol=1e-10)


@pytest.mark.large  # 2 x 40 runs of both metrics
def test_road_with_its_own_noise_agrees_statistically_with_quantus():
    """Quantus draws its noise from NumPy's global generator, which cannot be shared with a
    torch.Generator: the mean accuracy over 40 seeds each must agree within 3 standard errors."""
    model, inputs, attributions, target = model_and_data("cnn")
    settings = {"percentages": [20, 50, 80], "noise": 1.0}
    ours, theirs = [], []
    for seed in range(40):
        metric = ROAD(seed=seed, **settings)
        metric.update(model, inputs, attributions, target)
        ours.append(metric.compute()["curve"].mean().item())
        np.random.seed(seed)
        result = quantus.ROAD(disable_warnings=True, **settings)(
            model, inputs.numpy(), target.numpy(), a_batch=attributions.numpy(), device="cpu", channel_first=True)
        theirs.append(float(np.mean(list(result.values()))))
    standard_error = math.sqrt(np.var(ours, ddof=1) / len(ours) + np.var(theirs, ddof=1) / len(theirs))
    assert np.std(ours) > 0 and np.std(theirs) > 0  # the noise does change predictions
    assert abs(np.mean(ours) - np.mean(theirs)) <= 3 * standard_error


@pytest.mark.parametrize("make, error, message", [
    (lambda: ROAD(percentages=[]), ValueError, "percentages must be a non-empty"),
    (lambda: ROAD(percentages=[10, 100]), ValueError, "below 100"),
    (lambda: ROAD(percentages=[-1]), ValueError, "percentages must be >= 0"),
    (lambda: ROAD(noise=-0.1), ValueError, "noise"),
    (lambda: ROAD(abs=1), TypeError, "abs"),
    (lambda: ROAD(max_batch_size=0), ValueError, "max_batch_size"),
])
def test_bad_arguments_raise(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_bad_inputs_raise():
    model, inputs, attributions, target = model_and_data("mlp")
    with pytest.raises(ValueError, match="needs images"):
        ROAD().update(model, inputs.flatten(1), attributions.flatten(1), target)
    with pytest.raises(ValueError, match="needs images"):
        ROAD().update(model, torch.zeros(2, 5, dtype=torch.long), torch.zeros(2, 5), target[:2])
    with pytest.raises(ValueError, match="target must have shape"):
        ROAD(percentages=[10]).update(model, inputs, attributions, target[:2])


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("where", ["inputs", "attributions"])
def test_nonfinite_sample_gives_nan_and_reset_recovers(bad, where):
    model, inputs, attributions, target = model_and_data("cnn")
    (inputs if where == "inputs" else attributions)[2, 0, 1, 1] = bad
    metric = ROAD(percentages=[10, 50])
    metric.update(model, inputs, attributions, target)
    assert torch.isnan(metric.compute()["curve"]).all()
    metric.reset()
    metric.update(model, inputs[:2], attributions[:2], target[:2])
    assert torch.isfinite(metric.compute()["curve"]).all()


def test_model_and_global_rng_untouched_reset_reseeds_and_chunks_agree():
    model, inputs, attributions, target = model_and_data("cnn")
    model.train()
    state = {key: value.clone() for key, value in model.state_dict().items()}
    rng = torch.get_rng_state()
    metric = ROAD(percentages=[20, 60], noise=1.0, max_batch_size=3)
    metric.update(model, inputs, attributions, target)
    first = metric.compute()["curve"]
    assert torch.equal(torch.get_rng_state(), rng)
    assert model.training and all(module.training for module in model.modules())
    assert all(torch.equal(state[key], value) for key, value in model.state_dict().items())
    metric.reset()
    metric.update(model, inputs, attributions, target)
    torch.testing.assert_close(metric.compute()["curve"], first, rtol=0, atol=0)
    whole = ROAD(percentages=[20, 60], noise=1.0)
    whole.update(model, inputs, attributions, target)
    torch.testing.assert_close(whole.compute()["curve"], first, rtol=0, atol=0)
