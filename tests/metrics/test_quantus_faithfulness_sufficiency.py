"""Sufficiency equals Quantus 0.6.0's on a small CNN and MLP (float64, deterministic).

The attributions form two clusters (two base maps plus small noise), so that neighbourhoods are neither
empty nor everything, and the predicted classes differ inside them.
"""
import numpy as np
import pytest
import quantus
import torch

from lrp_lightning.metrics import Sufficiency

pytestmark = pytest.mark.usefixtures("float64_default")

SETTINGS = [{}, {"threshold": 0.7, "abs": False}, {"threshold": 0.5, "normalise": False}]


def clustered(attributions: torch.Tensor) -> torch.Tensor:
    generator = torch.Generator().manual_seed(3)
    n = attributions.shape[0]
    bases = torch.randn((2,) + tuple(attributions.shape[1:]), generator=generator, dtype=torch.float64)
    members = torch.arange(n) % 2
    return bases[members] + 0.3 * torch.randn(attributions.shape, generator=generator, dtype=torch.float64)


@pytest.mark.parametrize("setting", SETTINGS)
@pytest.mark.parametrize("kind", ["cnn", "mlp"])
def test_sufficiency_matches_quantus(kind, setting, image_batch, quantus_scores, small_cnn, small_mlp, vector_batch):
    if kind == "cnn":
        inputs, attributions, target = image_batch((10, 1, 3, 3))
        model = small_cnn(1, 3, 3)
    else:
        inputs, attributions, target = vector_batch((10, 12))
        model = small_mlp()
    attributions = clustered(attributions)
    metric = Sufficiency(**setting)
    metric.update(model, inputs, attributions)
    expected = quantus_scores(quantus.Sufficiency(disable_warnings=True, **setting), model, inputs, attributions, target)
    assert 0 < expected.mean() < 1
    np.testing.assert_allclose(metric.compute().item(), expected.mean(), rtol=1e-6)


def test_sufficiency_rejects_bad_arguments():
    with pytest.raises(ValueError, match="distance_func"):
        Sufficiency(distance_func="euclidean")  # Quantus 0.6.0 raises a TypeError for it
    with pytest.raises(ValueError, match="threshold"):
        Sufficiency(threshold=-0.1)


def test_sufficiency_is_nan_for_a_sample_with_nan_attributions(image_batch, small_cnn):
    inputs, attributions, _ = image_batch((4, 1, 3, 3))
    attributions[3, 0, 0, 0] = float("nan")
    metric = Sufficiency(normalise=False)
    metric.update(small_cnn(1, 3, 3), inputs, attributions)
    assert torch.isnan(metric.compute())
