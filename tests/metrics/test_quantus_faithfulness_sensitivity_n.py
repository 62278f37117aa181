"""SensitivityN equals Quantus 0.6.0's on a small CNN (float64, deterministic).

No MLP comparison: for (N, D) inputs Quantus 0.6.0 computes zero steps and returns an empty list.
"""
import numpy as np
import pytest
import quantus
import torch

from lrp_lightning.metrics import SensitivityN

pytestmark = pytest.mark.usefixtures("float64_default")

SETTINGS = [
    {},
    {"n_max_percentage": 0.5, "features_in_step": 2, "abs": True, "perturb_baseline": 0.2},
    {"n_max_percentage": 0.3, "normalise": False, "perturb_baseline": "white", "softmax": False},
]


@pytest.fixture
def compare(quantus_scores):
    """Call ``compare(setting, model, inputs, attributions, target, chunks)`` to compare ours with Quantus."""

    def compare(setting, model, inputs, attributions, target, chunks=1):
        softmax = setting.get("softmax", True)
        options = {key: value for key, value in setting.items() if key not in ("perturb_baseline", "softmax")}
        metric = SensitivityN(baseline=setting.get("perturb_baseline", "black"), softmax=softmax, **options)
        for part in torch.arange(inputs.shape[0]).chunk(chunks):
            # normalise divides by the batch maximum: give each update the whole batch's scale
            metric.update(model, inputs[part], attributions[part], target[part])
        oracle = quantus.SensitivityN(disable_warnings=True, return_aggregate=False,
                                      **{key: value for key, value in setting.items() if key != "softmax"})
        expected = quantus_scores(oracle, model, inputs, attributions, target, softmax=softmax)
        result = metric.compute()
        np.testing.assert_allclose(result["curve"].numpy(), expected, rtol=1e-6)
        np.testing.assert_allclose(result["mean"].item(), expected.mean(), rtol=1e-6)

    return compare


@pytest.mark.parametrize("setting", SETTINGS)
def test_sensitivity_n_matches_quantus_on_cnn(setting, image_batch, small_cnn, compare):
    inputs, attributions, target = image_batch((5, 1, 6, 6))
    compare(setting, small_cnn(), inputs, attributions, target)


def test_sensitivity_n_pools_samples_across_updates(image_batch, small_cnn, compare):
    inputs, attributions, target = image_batch((6, 1, 6, 6))
    compare({"normalise": False}, small_cnn(), inputs, attributions, target, chunks=3)


def test_sensitivity_n_rejects_bad_arguments(image_batch, small_cnn):
    with pytest.raises(ValueError, match="n_max_percentage"):
        SensitivityN(n_max_percentage=1.5)
    inputs, attributions, target = image_batch((2, 1, 6, 6))
    with pytest.raises(ValueError, match="less than one step"):
        SensitivityN(n_max_percentage=0.05, features_in_step=4).update(small_cnn(), inputs, attributions, target)


def test_sensitivity_n_is_nan_with_a_nan_attribution(image_batch, small_cnn):
    inputs, attributions, target = image_batch((4, 1, 6, 6))
    attributions[2, 0, 1, 1] = float("nan")
    metric = SensitivityN(normalise=False)
    metric.update(small_cnn(), inputs, attributions, target)
    assert torch.isnan(metric.compute()["curve"]).all()
