"""MonotonicityCorrelation equals Quantus 0.6.0's on the same random draws (small CNN and MLP, float64).

Quantus draws its uniform fills from NumPy's global generator; we draw from a seeded torch.Generator.
To share the draws, the test regenerates ours (the order the class documents) and hands them to Quantus
through a ``perturb_func`` that replays them: Quantus calls it once per (step, draw), steps outer, for the
whole batch, with the flat (N, L) inputs and each sample's step indices (N, features_in_step).
No |f(x)| here falls below eps: Quantus 0.6.0 raises a NumPy assignment error as soon as one does, so
that branch (no division by f(x)^2) is not compared.
"""
import numpy as np
import pytest
import quantus
import torch

from lrp_lightning.metrics import MonotonicityCorrelation

pytestmark = pytest.mark.usefixtures("float64_default")


def replaying_perturb_func(draws: np.ndarray, low: float, high: float):
    calls = []
    num_draws = draws.shape[2]

    def perturb(arr, indices, indexed_axes=None, **kwargs):
        step, draw = divmod(len(calls), num_draws)
        calls.append(step)
        out = np.array(arr, copy=True)
        values = low + (high - low) * draws[:, step, draw, 0]
        for sample in range(out.shape[0]):
            out[sample, np.asarray(indices)[sample]] = values[sample]
        return out

    return perturb


@pytest.fixture
def compare(quantus_scores):
    """Call ``compare(model, inputs, attributions, target, setting, seed)`` to compare ours with Quantus."""

    def compare(model, inputs, attributions, target, setting, seed=3):
        nr_samples = setting.get("nr_samples", 100)
        features_in_step = setting.get("features_in_step", 1)
        low, high = setting.get("uniform_low", 0.0), setting.get("uniform_high", 1.0)
        metric = MonotonicityCorrelation(seed=seed, **setting)
        metric.update(model, inputs, attributions, target)
        steps = inputs[0].numel() // features_in_step
        draws = torch.rand((inputs.shape[0], steps, nr_samples, 1), generator=torch.Generator().manual_seed(seed))
        oracle_options = {key: value for key, value in setting.items()
                          if key not in ("uniform_low", "uniform_high", "softmax")}
        oracle = quantus.MonotonicityCorrelation(
            perturb_func=replaying_perturb_func(draws.numpy(), low, high), disable_warnings=True, **oracle_options
        )
        expected = quantus_scores(oracle, model, inputs, attributions, target, softmax=setting.get("softmax", True))
        np.testing.assert_allclose(metric.compute().item(), expected.mean(), rtol=1e-6)

    return compare


SETTINGS = [
    {},
    {"nr_samples": 7, "features_in_step": 3, "abs": False, "uniform_low": -1.0, "uniform_high": 2.0},
    {"nr_samples": 5, "eps": 1e-3, "normalise": False, "softmax": False},
]


@pytest.mark.parametrize("setting", SETTINGS)
def test_monotonicity_correlation_matches_quantus_on_cnn(setting, image_batch, small_cnn, compare):
    inputs, attributions, target = image_batch((3, 1, 3, 3))
    compare(small_cnn(1, 3, 3), inputs, attributions, target, setting)


@pytest.mark.parametrize("setting", SETTINGS)
def test_monotonicity_correlation_matches_quantus_on_mlp(setting, small_mlp, vector_batch, compare):
    setting = {**setting, "features_in_step": 1}  # Quantus 0.6.0 takes steps of 1 only for (N, D) inputs
    inputs, attributions, target = vector_batch((3, 6))
    compare(small_mlp(6), inputs, attributions, target, setting)


def test_monotonicity_correlation_is_reproducible_and_leaves_the_global_generator_alone(image_batch, small_cnn):
    inputs, attributions, target = image_batch((2, 1, 3, 3))
    model = small_cnn(1, 3, 3)
    state = torch.get_rng_state()
    values = []
    for _ in range(2):
        metric = MonotonicityCorrelation(nr_samples=4, seed=9)
        metric.update(model, inputs, attributions, target)
        values.append(metric.compute())
    assert torch.equal(values[0], values[1])
    assert torch.equal(state, torch.get_rng_state())


def test_monotonicity_correlation_rejects_bad_arguments():
    with pytest.raises(ValueError, match="nr_samples"):
        MonotonicityCorrelation(nr_samples=0)
    with pytest.raises(ValueError, match="uniform_high"):
        MonotonicityCorrelation(uniform_low=1.0, uniform_high=0.0)
    with pytest.raises(ValueError, match="token-id"):
        MonotonicityCorrelation().update(lambda x: x, torch.zeros(2, 4, dtype=torch.long), torch.rand(2, 4),
                                         torch.zeros(2, dtype=torch.long))


def test_monotonicity_correlation_is_nan_for_nan_attributions(image_batch, small_cnn):
    inputs, attributions, target = image_batch((2, 1, 3, 3))
    attributions[0, 0, 1, 1] = float("nan")
    metric = MonotonicityCorrelation(nr_samples=2, normalise=False)
    metric.update(small_cnn(1, 3, 3), inputs, attributions, target)
    assert torch.isnan(metric.compute())
