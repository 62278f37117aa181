"""IROF equals Quantus 0.6.0's on a small CNN with SLIC superpixels (float64, deterministic).

Quantus 0.6.0's IROF calls ``np.trapz``, which NumPy 2.4 no longer has: the test aliases it to
``np.trapezoid`` (the same rule) for the oracle. Quantus' IROF runs on single-channel images only (its
mask shape assertion fails otherwise), so the images are single-channel. Only numeric baselines are
compared: Quantus' IROF replaces superpixels of the whole batch at once and takes "mean", "black" and
"white" over the whole batch (as perturbed so far), so a sample's value depends on the others; ours are
each sample's own clean mean, minimum and maximum.
"""
import numpy as np
import pytest
import quantus
import torch

from lrp_lightning.metrics import IROF

pytestmark = pytest.mark.usefixtures("float64_default")

SETTINGS = [
    {"perturb_baseline": 0.0},
    {"abs": True, "perturb_baseline": 0.5},
    {"normalise": False, "perturb_baseline": -0.3, "softmax": False},
]


@pytest.fixture
def numpy_trapz(monkeypatch):
    monkeypatch.setattr(np, "trapz", np.trapezoid, raising=False)


@pytest.mark.parametrize("setting", SETTINGS)
def test_irof_matches_quantus_on_cnn(setting, numpy_trapz, image_batch, quantus_scores, small_cnn):
    inputs, attributions, target = image_batch((3, 1, 16, 16))
    model = small_cnn(1, 16, 16)
    softmax = setting.get("softmax", True)
    options = {key: value for key, value in setting.items() if key not in ("perturb_baseline", "softmax")}
    metric = IROF(baseline=setting["perturb_baseline"], softmax=softmax, **options)
    metric.update(model, inputs, attributions, target)
    oracle = quantus.IROF(disable_warnings=True, return_aggregate=False,
                          **{key: value for key, value in setting.items() if key != "softmax"})
    expected = quantus_scores(oracle, model, inputs, attributions, target, softmax=softmax)
    np.testing.assert_allclose(metric.compute().item(), expected.mean(), rtol=1e-6)


def test_irof_takes_segments_from_a_callable(image_batch, small_cnn):
    inputs, attributions, target = image_batch((2, 1, 4, 4))
    model = small_cnn(1, 4, 4)

    def halves(images):
        labels = torch.zeros(images.shape[0], 4, 4, dtype=torch.long)
        labels[:, :, 2:] = 7  # labels need not be consecutive
        return labels

    metric = IROF(segmentation_method=halves, baseline=0.0, normalise=False, softmax=False)
    metric.update(model, inputs, attributions, target)
    expected = []
    with torch.no_grad():
        for x, a, t in zip(inputs, attributions, target):
            left, right = a[0, :, :2].mean(), a[0, :, 2:].mean()
            first = (slice(None), slice(None), slice(0, 2)) if left >= right else (slice(None), slice(None), slice(2, 4))
            once = x.clone()
            once[first] = 0.0
            scores = [model(once[None])[0, t] / model(x[None])[0, t], model(torch.zeros_like(x)[None])[0, t] / model(x[None])[0, t]]
            expected.append(2 - (scores[0] + scores[1]) / 2)
    torch.testing.assert_close(metric.compute(), torch.stack(expected).mean())


def test_irof_refuses_non_images_and_bad_segmentations(image_batch, small_cnn):
    with pytest.raises(ValueError, match="segmentation_method"):
        IROF(segmentation_method="felzenszwalb")
    with pytest.raises(ValueError, match="needs images"):
        IROF().update(lambda x: x, torch.zeros(2, 5, dtype=torch.long), torch.zeros(2, 5), torch.zeros(2, dtype=torch.long))
    inputs, attributions, target = image_batch((2, 1, 4, 4))
    with pytest.raises(ValueError, match="integer labels"):
        IROF(segmentation_method=lambda x: torch.zeros(2, 3, 3)).update(small_cnn(1, 4, 4), inputs, attributions, target)


def test_irof_is_nan_for_a_nan_attribution(image_batch, small_cnn):
    inputs, attributions, target = image_batch((2, 1, 16, 16))
    attributions[1, 0, 5, 5] = float("nan")
    metric = IROF(normalise=False)
    metric.update(small_cnn(1, 16, 16), inputs, attributions, target)
    assert torch.isnan(metric.compute())
