"""Infidelity equals Quantus 0.6.0's on a small CNN (float64, deterministic baselines).

No MLP comparison: Quantus 0.6.0's Infidelity cuts square patches and runs on images only.
"""
import numpy as np
import pytest
import quantus
import torch

from lrp_lightning.metrics import Infidelity

pytestmark = pytest.mark.usefixtures("float64_default")

CASES = [
    ((3, 1, 8, 8), 1, {}),
    ((3, 1, 8, 8), 1, {"perturb_patch_sizes": [2, 4], "abs": True, "perturb_baseline": 0.3}),
    ((3, 1, 6, 6), 1, {"perturb_patch_sizes": [1], "normalise": True, "perturb_baseline": "white", "softmax": True}),
    ((2, 2, 4, 4), 2, {"perturb_patch_sizes": [2]}),
]


@pytest.mark.parametrize("shape, attribution_channels, setting", CASES)
def test_infidelity_matches_quantus_on_cnn(
    shape, attribution_channels, setting, image_batch, quantus_scores, small_cnn
):
    inputs, attributions, target = image_batch(shape, attribution_channels)
    model = small_cnn(*shape[1:])
    softmax = setting.get("softmax", False)
    options = {key: value for key, value in setting.items() if key not in ("perturb_baseline", "softmax")}
    metric = Infidelity(baseline=setting.get("perturb_baseline", "black"), softmax=softmax, **options)
    metric.update(model, inputs, attributions, target)
    oracle = quantus.Infidelity(disable_warnings=True, **{k: v for k, v in setting.items() if k != "softmax"})
    expected = quantus_scores(oracle, model, inputs, attributions, target, softmax=softmax)
    np.testing.assert_allclose(metric.compute().item(), expected.mean(), rtol=1e-6)


def test_infidelity_rejects_bad_arguments_and_token_ids():
    with pytest.raises(ValueError, match="loss_func"):
        Infidelity(loss_func="l1")
    with pytest.raises(ValueError, match="perturb_patch_sizes"):
        Infidelity(perturb_patch_sizes=[])
    with pytest.raises(ValueError, match="token ids"):
        Infidelity(baseline=0).update(lambda x: x, torch.zeros(2, 5, dtype=torch.long), torch.zeros(2, 5),
                                      torch.zeros(2, dtype=torch.long))


def test_infidelity_is_nan_when_an_input_is_infinite(image_batch, small_cnn):
    inputs, attributions, target = image_batch((2, 1, 8, 8))
    inputs[0, 0, 3, 3] = float("inf")
    metric = Infidelity(baseline=0.0)
    metric.update(small_cnn(1, 8, 8), inputs, attributions, target)
    assert torch.isnan(metric.compute())
