"""The metrics agree with Quantus 0.6.0 (black-box oracle) where the definitions coincide."""
import warnings

import numpy as np
import pytest
import quantus
import torch
from torch import nn

from lrp_lightning.metrics import (
    Complexity,
    PixelFlipping,
    RegionPerturbation,
    RelevanceMassAccuracy,
    RelevanceRankAccuracy,
    Sparseness,
)

warnings.filterwarnings("ignore", module="quantus")


# Quantus builds its torch tensors in the default dtype; float64 makes the comparisons exact
pytestmark = pytest.mark.usefixtures("float64_default")


def small_cnn(channels: int, height: int, width: int, classes: int = 5) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(channels, 4, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * height * width, classes),
    ).double().eval()


def random_batch(shape: tuple[int, ...], attribution_channels: int, seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(shape, generator=generator, dtype=torch.float64)
    n, _, h, w = shape
    attributions = torch.randn((n, attribution_channels, h, w), generator=generator, dtype=torch.float64)
    target = torch.randint(0, 5, (n,), generator=generator)
    return inputs, attributions, target


@pytest.mark.parametrize(
    "shape, attribution_channels, patch_size, steps, order, baseline, softmax",
    [
        ((3, 3, 8, 8), 1, 4, 4, "morf", 0.0, False),
        ((3, 3, 8, 8), 3, 2, 10, "lerf", 0.5, False),
        ((2, 3, 9, 7), 1, 2, 20, "morf", -1.0, False),
        ((2, 3, 9, 7), 3, 3, 9, "lerf", 0.0, True),
        ((2, 3, 10, 7), 1, 4, 6, "morf", 0.0, False),
    ],
)
def test_region_perturbation_matches_quantus(shape, attribution_channels, patch_size, steps, order, baseline, softmax):
    inputs, attributions, target = random_batch(shape, attribution_channels)
    model = small_cnn(*shape[1:])
    oracle = quantus.RegionPerturbation(
        patch_size=patch_size, order=order, regions_evaluation=steps, abs=False, normalise=False,
        perturb_baseline=baseline, disable_warnings=True,
    )
    expected = np.asarray(oracle(model, inputs.numpy(), target.numpy(), a_batch=attributions.numpy(),
                                 softmax=softmax, device="cpu"))
    metric = RegionPerturbation(patch_size=patch_size, steps=steps, order=order, baseline=baseline, softmax=softmax)
    metric.update(model, inputs, attributions, target)
    result = metric.compute()
    expected_curve = np.concatenate([[0.0], expected.mean(axis=0)])
    np.testing.assert_allclose(result["curve"].numpy(), expected_curve, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(result["aopc"].item(), expected_curve.mean(), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("features_in_step, baseline", [(1, 0.0), (4, 0.3), (6, -0.5)])
def test_pixel_flipping_matches_quantus_on_single_channel_images(features_in_step, baseline):
    shape = (3, 1, 6, 6)
    inputs, attributions, target = random_batch(shape, 1, seed=2)
    model = small_cnn(*shape[1:])
    oracle = quantus.PixelFlipping(
        features_in_step=features_in_step, abs=False, normalise=False, perturb_baseline=baseline,
        disable_warnings=True,
    )
    scores_after_steps = np.asarray(oracle(model, inputs.numpy(), target.numpy(), a_batch=attributions.numpy(),
                                           softmax=False, device="cpu"))
    with torch.no_grad():
        unperturbed = model(inputs)[torch.arange(shape[0]), target].numpy()
    expected_curve = np.concatenate([[0.0], (unperturbed[:, None] - scores_after_steps).mean(axis=0)])
    metric = PixelFlipping(features_in_step=features_in_step, baseline=baseline)
    metric.update(model, inputs, attributions, target)
    result = metric.compute()
    np.testing.assert_allclose(result["curve"].numpy(), expected_curve, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(result["aopc"].item(), expected_curve.mean(), rtol=1e-6, atol=1e-9)


def quantus_attribution_scores(oracle, attributions: torch.Tensor, mask: torch.Tensor = None) -> np.ndarray:
    """Run a Quantus metric that reads only attributions (and a mask); the model is never used."""
    n = attributions.shape[0]
    inputs = np.zeros(tuple(attributions.shape), dtype=np.float64)
    scores = oracle(
        model=None, x_batch=inputs, y_batch=np.zeros(n, dtype=np.int64), a_batch=attributions.numpy(),
        s_batch=None if mask is None else mask.numpy().astype(np.float64), channel_first=True,
    )
    return np.asarray(scores)


@pytest.mark.parametrize("channels", [1, 3])
def test_sparseness_and_complexity_match_quantus(channels):
    generator = torch.Generator().manual_seed(3)
    attributions = torch.randn((4, channels, 7, 5), generator=generator, dtype=torch.float64)
    attributions[0] = attributions[0] ** 5
    for ours, oracle in [
        (Sparseness(), quantus.Sparseness(normalise=False, disable_warnings=True)),
        (Complexity(), quantus.Complexity(normalise=False, disable_warnings=True)),
    ]:
        expected = quantus_attribution_scores(oracle, attributions)
        ours.update(attributions[:2])
        ours.update(attributions[2:])
        np.testing.assert_allclose(ours.compute().item(), expected.mean(), rtol=1e-5)


@pytest.mark.parametrize("metric_class, oracle_class", [
    (RelevanceMassAccuracy, quantus.RelevanceMassAccuracy),
    (RelevanceRankAccuracy, quantus.RelevanceRankAccuracy),
])
def test_localisation_metrics_match_quantus(metric_class, oracle_class):
    generator = torch.Generator().manual_seed(4)
    attributions = torch.rand((5, 1, 8, 8), generator=generator, dtype=torch.float64) - 0.2
    mask = torch.zeros((5, 1, 8, 8), dtype=torch.bool)
    mask[:, :, 2:6, 1:4] = True
    mask[3] = torch.rand((1, 8, 8), generator=generator) > 0.5
    oracle = oracle_class(normalise=False, abs=False, disable_warnings=True)
    expected = quantus_attribution_scores(oracle, attributions, mask)
    metric = metric_class()
    metric.update(attributions, mask)
    np.testing.assert_allclose(metric.compute().item(), expected.mean(), rtol=1e-6)
