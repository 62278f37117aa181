"""EffectiveComplexity equals Quantus 0.6.0's (attributions only, deterministic)."""
import numpy as np
import pytest
import quantus
import torch

from lrp_lightning.metrics import EffectiveComplexity

pytestmark = pytest.mark.usefixtures("float64_default")

SETTINGS = [{}, {"eps": 0.3, "abs": False}, {"eps": 0.5, "normalise": False}]


@pytest.mark.parametrize("setting", SETTINGS)
@pytest.mark.parametrize("kind", ["cnn", "mlp"])
def test_effective_complexity_matches_quantus(
    setting, kind, image_batch, quantus_scores, small_cnn, small_mlp, vector_batch
):
    if kind == "cnn":
        inputs, attributions, target = image_batch((4, 2, 5, 5), attribution_channels=2)
        model = small_cnn(2, 5, 5)
    else:
        inputs, attributions, target = vector_batch()
        model = small_mlp()
    attributions[0] = attributions[0] ** 3  # a sample with another spread of values
    metric = EffectiveComplexity(**setting)
    metric.update(attributions)
    expected = quantus_scores(quantus.EffectiveComplexity(disable_warnings=True, **setting), model, inputs,
                              attributions, target)
    np.testing.assert_allclose(metric.compute().item(), expected.mean(), rtol=1e-6)


def test_effective_complexity_rejects_bad_arguments():
    with pytest.raises(TypeError, match="eps"):
        EffectiveComplexity(eps="small")
    with pytest.raises(TypeError, match="abs"):
        EffectiveComplexity(abs=1)
    with pytest.raises(ValueError, match="attributions"):
        EffectiveComplexity().update(torch.zeros(3))


def test_effective_complexity_is_nan_with_a_nan_attribution():
    attributions = torch.rand(3, 10)
    attributions[1, 4] = float("nan")
    metric = EffectiveComplexity(normalise=False)
    metric.update(attributions)
    assert torch.isnan(metric.compute())
