"""The randomisation metrics agree with Quantus 0.6.0 (black-box oracle) on the same randomisations and draws.

Both re-initialise the layers the same way (torch's RNG seeded with ``seed + 1``, then each layer's
``reset_parameters``), so MPRT and EfficientMPRT compare on identical randomised models. RandomLogit's
other classes are drawn by Quantus from its own NumPy RNG: the test records the classes Quantus asks to
explain and hands the same ones to our metric. Quantus' SmoothMPRT ignores a custom ``explain_func``
(it calls its built-in explainers), so SmoothMPRT is checked against its definition on top of the
Quantus-verified MPRT, with the same noise draws.
"""
import copy
import warnings

import numpy as np
import pytest
import quantus
import torch
from quantus.functions.similarity_func import correlation_spearman
from quantus.functions.similarity_func import ssim as quantus_ssim
from torch import nn

from lrp_lightning.attribution import Gradient
from lrp_lightning.composites import EpsilonPlus
from lrp_lightning.metrics import (
    MPRT,
    EfficientModelParameterRandomisation,
    EfficientMPRT,
    ModelParameterRandomisation,
    RandomLogit,
    SmoothModelParameterRandomisation,
    SmoothMPRT,
)
from lrp_lightning.metrics._randomisation import ssim_rows

warnings.filterwarnings("ignore", module="quantus")
pytestmark = pytest.mark.usefixtures("float64_default")


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 64, 4)).eval()


def mlp() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 4)).eval()


def data(kind: str):
    generator = torch.Generator().manual_seed(2)
    shape = (5, 1, 8, 8) if kind == "cnn" else (5, 12)
    inputs = torch.randn(shape, generator=generator)
    target = torch.tensor([0, 1, 2, 3, 1])
    return (small_cnn() if kind == "cnn" else mlp()), inputs, target


def lrp_explain(model, inputs, targets, **_):
    return Gradient(model, EpsilonPlus())(torch.as_tensor(inputs), torch.as_tensor(targets))[1].numpy()


def gradient_explain(model, inputs, targets, **_):
    return Gradient(model)(torch.as_tensor(inputs), torch.as_tensor(targets))[1].numpy()


EXPLAIN = {"epsilon_plus": lrp_explain, "gradient": gradient_explain}


def run_quantus(oracle, model, inputs, target, explain, **call):
    return oracle(model=model, x_batch=inputs.numpy(), y_batch=target.numpy(), explain_func=explain, device="cpu",
                  channel_first=True, **call)


@pytest.mark.parametrize("kind", ["cnn", pytest.param("mlp", marks=pytest.mark.large)])
@pytest.mark.parametrize("settings, explainer", [
    ({}, "epsilon_plus"),
    ({"layer_order": "independent", "abs": False}, "gradient"),
    ({"layer_order": "bottom_up", "normalise": False, "skip_layers": True}, "epsilon_plus"),
])
def test_mprt_matches_quantus(kind, settings, explainer):
    model, inputs, target = data(kind)
    before = copy.deepcopy(model.state_dict())
    expected = run_quantus(quantus.MPRT(disable_warnings=True, **settings), model, inputs, target, EXPLAIN[explainer])
    expected_curve = np.array([np.mean(values) for values in expected.values()])
    metric = MPRT(explainer=explainer, **settings)
    metric.update(model, inputs[:2], target[:2])
    metric.update(model, inputs[2:], target[2:])
    result = metric.compute()
    np.testing.assert_allclose(result["curve"].numpy(), expected_curve, rtol=1e-6)
    assert metric.layers == list(expected)[1:]
    for flag, key in [("return_average_correlation", "average"), ("return_last_correlation", "last")]:
        if flag == "return_average_correlation" and settings.get("skip_layers"):
            continue  # Quantus refuses the average without the layer-wise steps
        scores = run_quantus(quantus.MPRT(disable_warnings=True, **settings, **{flag: True}), model, inputs, target,
                             EXPLAIN[explainer])
        np.testing.assert_allclose(result[key].item(), np.mean(scores), rtol=1e-6)
    assert all(torch.equal(value, before[key]) for key, value in model.state_dict().items())
    assert ModelParameterRandomisation is MPRT


@pytest.mark.parametrize("kind", ["cnn", pytest.param("mlp", marks=pytest.mark.large)])
@pytest.mark.parametrize("settings", [{}, {"layer_order": "top_down", "abs": True}, {"normalise": True, "n_bins": 20}])
def test_efficient_mprt_matches_quantus(kind, settings):
    model, inputs, target = data(kind)
    oracle_settings = {key: value for key, value in settings.items() if key != "n_bins"}
    if "n_bins" in settings:
        oracle_settings["complexity_func_kwargs"] = {"n_bins": settings["n_bins"]}
    expected = run_quantus(quantus.EfficientMPRT(disable_warnings=True, **oracle_settings), model, inputs, target,
                           lrp_explain)
    metric = EfficientMPRT(explainer="epsilon_plus", **settings)
    metric.update(model, inputs, target)
    np.testing.assert_allclose(metric.compute().item(), np.mean(expected), rtol=1e-6)
    assert EfficientModelParameterRandomisation is EfficientMPRT


@pytest.mark.parametrize("kind", ["cnn", pytest.param("mlp", marks=pytest.mark.large)])
@pytest.mark.parametrize("settings", [{"similarity_func": "spearman"}, {"similarity_func": "spearman", "abs": True},
                                      {"similarity_func": "spearman", "normalise": False}])
def test_random_logit_matches_quantus(kind, settings):
    """Quantus' default similarity (ssim) flattens each map to 1-D and normalises by the batch's largest
    magnitude; Spearman (scale-free) is compared here on images, the ssim default on vectors below."""
    model, inputs, target = data(kind)
    explained = []

    def recording_explain(model, inputs, targets, **_):
        explained.append(np.asarray(targets))
        return lrp_explain(model, inputs, targets)

    oracle_settings = {**settings, "similarity_func": correlation_spearman}
    expected = run_quantus(quantus.RandomLogit(disable_warnings=True, num_classes=4, **oracle_settings), model, inputs,
                           target, recording_explain)
    others = torch.as_tensor(explained[1])
    assert not bool((others == target).any())
    metric = RandomLogit(explainer="epsilon_plus", num_classes=4, **settings)
    metric._other_classes = lambda target: others
    metric.update(model, inputs, target)
    np.testing.assert_allclose(metric.compute().item(), np.mean(expected), rtol=1e-6)


def test_random_logit_default_ssim_matches_quantus_on_vectors():
    """One sample per Quantus batch: its batch-wide normalisation is then the per-sample one."""
    model, inputs, target = data("mlp")
    explained = []

    def recording_explain(model, inputs, targets, **_):
        explained.append(np.asarray(targets))
        return gradient_explain(model, inputs, targets)

    expected = run_quantus(quantus.RandomLogit(disable_warnings=True, num_classes=4), model, inputs, target,
                           recording_explain, batch_size=1)
    others = torch.as_tensor(np.concatenate(explained[1::2]))
    metric = RandomLogit(num_classes=4)
    metric._other_classes = lambda target: others
    metric.update(model, inputs, target)
    np.testing.assert_allclose(metric.compute().item(), np.mean(expected), rtol=1e-6)


def test_ssim_of_maps_matches_quantus_ssim():
    generator = torch.Generator().manual_seed(4)
    first = torch.randn(3, 9, 11, generator=generator)
    second = 2 * torch.randn(3, 9, 11, generator=generator) + first
    expected = [quantus_ssim(a.numpy(), b.numpy()) for a, b in zip(first, second)]
    np.testing.assert_allclose(ssim_rows(first, second).numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(ssim_rows(first[:, None], second[:, None]).numpy(), expected, rtol=1e-6)


@pytest.mark.parametrize("settings", [{"nr_samples": 4}, {"nr_samples": 3, "layer_order": "top_down", "noise_magnitude": 0.3}])
def test_smooth_mprt_is_mprt_of_noise_averaged_explanations(settings):
    model, inputs, target = data("cnn")
    metric = SmoothMPRT(explainer="epsilon_plus", **settings)
    noise = metric._draw_noise(inputs)
    metric._draw_noise = lambda inputs: noise

    def smoothed(model, inputs, target):
        return torch.stack([Gradient(model, EpsilonPlus())(inputs + delta, target)[1] for delta in noise]).mean(dim=0)

    reference = MPRT(explainer=smoothed, layer_order=settings.get("layer_order", "bottom_up"))
    metric.update(model, inputs, target)
    reference.update(model, inputs, target)
    result, expected = metric.compute(), reference.compute()
    np.testing.assert_allclose(result["curve"].numpy(), expected["curve"].numpy(), rtol=1e-6)
    sigma = settings.get("noise_magnitude", 0.1) * (inputs.flatten(1).amax(1) - inputs.flatten(1).amin(1))
    stds = torch.stack([delta.flatten(1).std(dim=1) for delta in noise]).mean(dim=0)
    np.testing.assert_allclose(stds.numpy(), sigma.numpy(), rtol=0.25)  # 64 draws per sample: the scale, roughly
    assert SmoothModelParameterRandomisation is SmoothMPRT


RANDOMISATION = [MPRT, SmoothMPRT, EfficientMPRT, RandomLogit]


@pytest.mark.parametrize("make, message", [
    (lambda: MPRT(layer_order="sideways"), "layer_order"),
    (lambda: MPRT(similarity_func="cosine"), "similarity_func"),
    (lambda: SmoothMPRT(nr_samples=0), "nr_samples"),
    (lambda: SmoothMPRT(noise_magnitude=-1.0), "noise_magnitude"),
    (lambda: EfficientMPRT(n_bins=0), "n_bins"),
    (lambda: RandomLogit(num_classes=1), "num_classes"),
    (lambda: RandomLogit(explainer=["gradient"]), "explainer must be"),
])
def test_bad_arguments_raise(make, message):
    with pytest.raises((KeyError, TypeError, ValueError), match=message):
        make()


def test_bad_update_arguments_raise():
    model, inputs, target = data("mlp")
    with pytest.raises(ValueError, match="must be an nn.Module"):
        MPRT().update(lambda x: x, inputs, target)
    with pytest.raises(ValueError, match="num_classes"):
        RandomLogit(num_classes=3, similarity_func="spearman").update(model, inputs, target)
    with pytest.raises(ValueError, match="ssim compares"):
        RandomLogit(num_classes=4).update(nn.Linear(5, 4), inputs[:, :5], target)


@pytest.mark.parametrize("metric_class", RANDOMISATION)
def test_user_model_and_global_rng_untouched(metric_class):
    model, inputs, target = data("cnn")
    model.train()
    state = copy.deepcopy(model.state_dict())
    rng = torch.get_rng_state()
    extra = {"nr_samples": 2} if metric_class is SmoothMPRT else {"num_classes": 4} if metric_class is RandomLogit else {}
    metric = metric_class(explainer="epsilon_plus", **extra)
    metric.update(model, inputs, target)
    metric.compute()
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(module.training for module in model.modules())
    assert all(torch.equal(value, state[key]) for key, value in model.state_dict().items())
    assert all(not module._forward_hooks and not module._backward_hooks for module in model.modules())


@pytest.mark.parametrize("metric_class", RANDOMISATION)
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nonfinite_input_gives_nan(metric_class, bad):
    model, inputs, target = data("mlp")
    inputs[1, 3] = bad
    extra = {"nr_samples": 2} if metric_class is SmoothMPRT else {"num_classes": 4} if metric_class is RandomLogit else {}
    if metric_class is RandomLogit:
        extra["similarity_func"] = "spearman"
    metric = metric_class(**extra)
    metric.update(model, inputs, target)
    value = metric.compute()
    value = value["last"] if isinstance(value, dict) else value
    assert torch.isnan(value)
