"""FaithfulnessEstimate equals Quantus 0.6.0's on a small CNN and MLP (float64, deterministic)."""
import numpy as np
import pytest
import quantus
import torch

from lrp_lightning.metrics import FaithfulnessEstimate

pytestmark = pytest.mark.usefixtures("float64_default")

SETTINGS = [
    {},
    {"features_in_step": 2, "abs": True, "perturb_baseline": 0.3},
    {"normalise": False, "perturb_baseline": "white", "softmax": True},
]


def ours(setting: dict) -> FaithfulnessEstimate:
    options = {key: value for key, value in setting.items() if key not in ("perturb_baseline", "softmax")}
    return FaithfulnessEstimate(baseline=setting.get("perturb_baseline", "black"), softmax=setting.get("softmax", False), **options)


@pytest.fixture
def oracle_value(quantus_scores):
    """Call ``oracle_value(setting, model, inputs, attributions, target)`` for Quantus' value."""

    def oracle_value(setting, model, inputs, attributions, target):
        options = {key: value for key, value in setting.items() if key != "softmax"}
        oracle = quantus.FaithfulnessEstimate(disable_warnings=True, **options)
        return quantus_scores(oracle, model, inputs, attributions, target, softmax=setting.get("softmax", False))

    return oracle_value


@pytest.mark.parametrize("setting", SETTINGS)
def test_faithfulness_estimate_matches_quantus_on_cnn(setting, image_batch, small_cnn, oracle_value):
    inputs, attributions, target = image_batch()
    model = small_cnn()
    metric = ours(setting)
    metric.update(model, inputs, attributions, target)
    expected = oracle_value(setting, model, inputs, attributions, target)
    np.testing.assert_allclose(metric.compute().item(), expected.mean(), rtol=1e-6)


@pytest.mark.parametrize("setting", SETTINGS)
def test_faithfulness_estimate_matches_quantus_on_mlp(setting, small_mlp, vector_batch, oracle_value):
    # Quantus 0.6.0 asserts features_in_step divides "1.0" for (N, D) inputs: only steps of 1 run there
    setting = {**setting, "features_in_step": 1}
    inputs, attributions, target = vector_batch()
    model = small_mlp()
    metric = ours(setting)
    metric.update(model, inputs, attributions, target)
    expected = oracle_value(setting, model, inputs, attributions, target)
    np.testing.assert_allclose(metric.compute().item(), expected.mean(), rtol=1e-6)


def test_faithfulness_estimate_rejects_a_step_that_does_not_divide(image_batch, small_cnn):
    inputs, attributions, target = image_batch()
    with pytest.raises(ValueError, match="features_in_step=5 does not divide the 36 locations"):
        FaithfulnessEstimate(features_in_step=5).update(small_cnn(), inputs, attributions, target)
    with pytest.raises(ValueError, match="features_in_step"):
        FaithfulnessEstimate(features_in_step=0)


def test_faithfulness_estimate_is_nan_for_a_sample_with_nan_attributions(image_batch, small_cnn):
    inputs, attributions, target = image_batch()
    attributions[1, 0, 2, 2] = float("nan")
    metric = FaithfulnessEstimate(normalise=False)
    metric.update(small_cnn(), inputs, attributions, target)
    assert torch.isnan(metric.compute())
