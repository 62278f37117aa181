"""Selectivity equals Quantus 0.6.0's on a small CNN (float64, deterministic).

Not compared with baseline "mean": Quantus recomputes that mean on the already-perturbed image at every
step, ours is the clean image's mean (documented in docs/metrics_quantus.md).
"""
import numpy as np
import pytest
import quantus
import torch

from lrp_lightning.metrics import Selectivity

pytestmark = pytest.mark.usefixtures("float64_default")

CASES = [
    ((3, 1, 16, 12), {}),
    ((3, 1, 7, 5), {"patch_size": 2, "abs": True, "perturb_baseline": 0.5}),
    ((2, 1, 9, 7), {"patch_size": 3, "normalise": False, "perturb_baseline": "white", "softmax": False}),
]


@pytest.mark.parametrize("shape, setting", CASES)
def test_selectivity_matches_quantus_on_cnn(shape, setting, image_batch, quantus_scores, small_cnn):
    inputs, attributions, target = image_batch(shape)
    model = small_cnn(*shape[1:])
    softmax = setting.get("softmax", True)
    options = {key: value for key, value in setting.items() if key not in ("perturb_baseline", "softmax")}
    metric = Selectivity(baseline=setting.get("perturb_baseline", "black"), softmax=softmax, **options)
    metric.update(model, inputs, attributions, target)
    oracle = quantus.Selectivity(disable_warnings=True, **{k: v for k, v in setting.items() if k != "softmax"})
    expected = np.stack(quantus_scores(oracle, model, inputs, attributions, target, softmax=softmax)).mean(axis=0)
    result = metric.compute()
    np.testing.assert_allclose(result["curve"].numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(result["auc"].item(), np.trapezoid(expected), rtol=1e-6)


def test_selectivity_rejects_a_bad_patch_size_and_a_changed_curve_length(image_batch, small_cnn):
    with pytest.raises(ValueError, match="patch_size"):
        Selectivity(patch_size=0)
    metric = Selectivity(patch_size=2)
    inputs, attributions, target = image_batch((2, 1, 6, 6))
    metric.update(small_cnn(1, 6, 6), inputs, attributions, target)
    inputs, attributions, target = image_batch((2, 1, 8, 8))
    with pytest.raises(ValueError, match="call reset"):
        metric.update(small_cnn(1, 8, 8), inputs, attributions, target)


def test_selectivity_curve_is_nan_once_a_sample_has_infinite_attributions(image_batch, small_cnn):
    inputs, attributions, target = image_batch((2, 1, 6, 6))
    attributions[0, 0, 0, 0] = float("inf")
    metric = Selectivity(patch_size=3, normalise=False)
    metric.update(small_cnn(1, 6, 6), inputs, attributions, target)
    assert torch.isnan(metric.compute()["curve"]).all()
