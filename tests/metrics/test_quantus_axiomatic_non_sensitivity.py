"""NonSensitivity equals Quantus 0.6.0's on a small CNN and MLP (float64, deterministic).

The CNN's inputs hold exact zeros at some pixels so that replacing them by a zero baseline changes
nothing: both sets of the symmetric difference are then non-empty. Only features_in_step=1 is compared:
Quantus 0.6.0 raises a broadcasting ValueError for larger steps (it XORs per-step with per-feature arrays).
"""
import numpy as np
import pytest
import quantus
import torch

from lrp_lightning.metrics import NonSensitivity

pytestmark = pytest.mark.usefixtures("float64_default")

SETTINGS = [
    {},
    {"eps": 0.3, "perturb_baseline": 0.0},
    {"eps": 0.05, "abs": False, "normalise": False, "softmax": False, "perturb_baseline": "white"},
]


@pytest.fixture
def compare(quantus_scores):
    """Call ``compare(setting, model, inputs, attributions, target)`` to compare ours with Quantus."""

    def compare(setting, model, inputs, attributions, target):
        softmax = setting.get("softmax", True)
        options = {key: value for key, value in setting.items() if key not in ("perturb_baseline", "softmax")}
        metric = NonSensitivity(baseline=setting.get("perturb_baseline", "black"), softmax=softmax, **options)
        metric.update(model, inputs, attributions, target)
        oracle = quantus.NonSensitivity(disable_warnings=True, **{k: v for k, v in setting.items() if k != "softmax"})
        expected = quantus_scores(oracle, model, inputs, attributions, target, softmax=softmax)
        np.testing.assert_allclose(metric.compute().item(), expected.mean(), rtol=1e-6)

    return compare


@pytest.mark.parametrize("setting", SETTINGS)
def test_non_sensitivity_matches_quantus_on_cnn(setting, image_batch, small_cnn, compare):
    inputs, attributions, target = image_batch((3, 1, 4, 4))
    inputs[:, :, 0, :2] = 0.0
    attributions[:, :, 3, 1:] = 0.0
    compare(setting, small_cnn(1, 4, 4), inputs, attributions, target)


@pytest.mark.parametrize("setting", SETTINGS)
def test_non_sensitivity_matches_quantus_on_mlp(setting, small_mlp, vector_batch, compare):
    inputs, attributions, target = vector_batch()
    compare(setting, small_mlp(), inputs, attributions, target)


def test_non_sensitivity_rejects_bad_arguments(image_batch, small_cnn):
    with pytest.raises(ValueError, match="eps"):
        NonSensitivity(eps=-1.0)
    inputs, attributions, target = image_batch((2, 1, 4, 4))
    with pytest.raises(ValueError, match="does not divide"):
        NonSensitivity(features_in_step=3).update(small_cnn(1, 4, 4), inputs, attributions, target)


def test_non_sensitivity_is_nan_with_an_infinite_attribution(image_batch, small_cnn):
    inputs, attributions, target = image_batch((2, 1, 4, 4))
    attributions[0, 0, 0, 0] = -float("inf")
    metric = NonSensitivity(normalise=False)
    metric.update(small_cnn(1, 4, 4), inputs, attributions, target)
    assert torch.isnan(metric.compute())
