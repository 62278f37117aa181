"""Tests for lrp_lightning.attribution: attributors, target handling, registry, side effects."""
import importlib.util

import numpy as np
import pytest
import torch
from torch import nn

from lrp_lightning.attribution import (ATTRIBUTORS, Attributor, Gradient, IntegratedGradients,
                                       Occlusion, SmoothGrad, get_attributor, grad_outputs,
                                       register_attributor)


HAS_LRP_COMPOSITES = importlib.util.find_spec("lrp_lightning.composites") is not None


def smooth_cnn(seed: int = 0, classes: int = 5) -> nn.Module:
    """A small smooth CNN on (N, 3, 8, 8) inputs."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(), nn.Conv2d(4, 4, 3, stride=2),
                         nn.Softplus(), nn.Flatten(), nn.Linear(4 * 3 * 3, classes)).eval()


def relu_cnn(seed: int = 0) -> nn.Module:
    """A small ReLU CNN (what LRP composites are made for)."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1),
                         nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(4 * 4 * 4, 5)).eval()


def training_model(seed: int = 0) -> nn.Module:
    """A model in training mode with BatchNorm (updates buffers) and Dropout (draws randomness)."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5),
                          nn.Flatten(), nn.Linear(4 * 6 * 6, 5))
    model[0].weight.requires_grad_(False)
    model[-1].weight.grad = torch.randn_like(model[-1].weight)
    return model.train()


def inputs(n: int = 3, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 8, 8, generator=generator)


def reference_gradient(model: nn.Module, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    gradient, = torch.autograd.grad((model(x) * weights).sum(), x)
    return gradient


def one_hot(indices, classes=5):
    return torch.nn.functional.one_hot(torch.as_tensor(indices), classes).float()


def make_attributor(name: str, model: nn.Module, composite=None) -> Attributor:
    options = {"smoothgrad": {"n_iter": 4, "batch_size": 5},
               "integrated_gradients": {"n_iter": 4, "batch_size": 5},
               "occlusion": {"window": 4, "stride": 4, "batch_size": 5}}
    return get_attributor(name)(model, composite, **options.get(name, {}))


# --- targets -----------------------------------------------------------------------------------

@pytest.mark.parametrize("target, weights", [
    (torch.tensor([0, 3, 4]), one_hot([0, 3, 4])),
    (2, one_hot([2, 2, 2])),
    (np.int64(3), one_hot([3, 3, 3])),
    ([4, 0, 2], one_hot([4, 0, 2])),
    (np.array([1, 1, 0]), one_hot([1, 1, 0])),
    (torch.tensor(1), one_hot([1, 1, 1])),
    (one_hot([4, 1, 0]) * 2.5, one_hot([4, 1, 0]) * 2.5),
    (torch.tensor([1.0, -1.0, 0.0, 0.0, 0.5]), torch.tensor([1.0, -1.0, 0.0, 0.0, 0.5]).expand(3, 5)),
])
def test_gradient_equals_autograd_of_selected_output(target, weights):
    model, x = smooth_cnn(), inputs()
    output, relevance = Gradient(model)(x, target)
    assert torch.equal(output, model(x).detach())
    assert not output.requires_grad and not relevance.requires_grad
    assert relevance.shape == x.shape
    torch.testing.assert_close(relevance, reference_gradient(model, x, weights), rtol=0, atol=0)


def test_callable_targets_explain_the_prediction():
    model, x = smooth_cnn(), inputs()
    predicted = model(x).argmax(1)
    expected = reference_gradient(model, x, one_hot(predicted))
    for target in (lambda out: out.argmax(1), lambda out: one_hot(out.argmax(1))):
        _, relevance = Gradient(model)(x, target)
        torch.testing.assert_close(relevance, expected, rtol=0, atol=0)
        _, relevance = Gradient(model, attr_output=target)(x)
        torch.testing.assert_close(relevance, expected, rtol=0, atol=0)


def test_default_attr_output_is_the_output_itself_as_in_zennit():
    from zennit.attribution import Gradient as ZennitGradient

    model, x = smooth_cnn(), inputs()
    expected = reference_gradient(model, x, model(x).detach())
    with ZennitGradient(model) as attributor:
        _, zennit_relevance = attributor(x)
    torch.testing.assert_close(zennit_relevance, expected)
    for relevance in (Gradient(model)(x)[1], Gradient(model)(x, None)[1]):
        torch.testing.assert_close(relevance, expected, rtol=0, atol=0)
    # a call's attr_output wins over the attributor's default
    torch.testing.assert_close(Gradient(model, attr_output=2)(x, 0)[1], Gradient(model)(x, 0)[1], rtol=0, atol=0)


def test_class_indices_select_along_dim_1_of_spatial_outputs():
    output = torch.zeros(2, 3, 4, 4)
    weights = grad_outputs(torch.tensor([2, 0]), output)
    assert torch.equal(weights[0, 2], torch.ones(4, 4)) and torch.equal(weights[1, 0], torch.ones(4, 4))
    assert weights.sum() == 32


@pytest.mark.parametrize("target, error", [
    (torch.tensor([0, 5, 1]), ValueError),        # class out of range
    (-1, ValueError),
    (torch.tensor([0, 1]), ValueError),           # wrong number of indices
    (torch.ones(3, 4), ValueError),               # float tensor not broadcastable to (3, 5)
    ("cat", TypeError),
    (1.5, TypeError),
    (True, TypeError),
    (lambda out: (lambda o: o), TypeError),
])
def test_bad_target_raises(target, error):
    with pytest.raises(error):
        Gradient(smooth_cnn())(inputs(), target)


# --- SmoothGrad ---------------------------------------------------------------------------------

@pytest.mark.parametrize("batch_size", [1, 4, 64])
def test_smoothgrad_without_noise_equals_gradient(batch_size):
    model, x, target = smooth_cnn(), inputs(), torch.tensor([0, 1, 2])
    output, expected = Gradient(model)(x, target)
    smooth_output, relevance = SmoothGrad(model, noise_level=0.0, n_iter=5, batch_size=batch_size)(x, target)
    torch.testing.assert_close(smooth_output, output)
    torch.testing.assert_close(relevance, expected, rtol=1e-5, atol=1e-7)


def test_smoothgrad_noise_has_the_documented_scale():
    # f(x) = sum(x^3): E[grad f(x + e)] = 3 (x^2 + sigma^2) with sigma = noise_level * (max - min).
    model = CubeSum()
    x = torch.tensor([[0.0, 1.0, 2.0, 4.0], [-1.0, 0.0, 0.0, 1.0]])
    sigma = 0.2 * torch.tensor([[4.0], [2.0]])
    _, relevance = SmoothGrad(model, noise_level=0.2, n_iter=20000, seed=0, batch_size=40000)(x, 0)
    expected = 3 * (x ** 2 + sigma ** 2)
    torch.testing.assert_close(relevance, expected, rtol=0.05, atol=0.05)


class CubeSum(nn.Module):
    def forward(self, x):
        return (x ** 3).sum(1, keepdim=True)


def test_smoothgrad_is_reproducible_with_a_seed_and_varies_without():
    model, x = smooth_cnn(), inputs()
    first = SmoothGrad(model, n_iter=6, seed=3)(x, 1)[1]
    assert torch.equal(first, SmoothGrad(model, n_iter=6, seed=3)(x, 1)[1])
    assert not torch.equal(first, SmoothGrad(model, n_iter=6, seed=4)(x, 1)[1])
    assert not torch.equal(first, SmoothGrad(model, n_iter=6)(x, 1)[1])


def test_smoothgrad_on_a_linear_model_equals_the_weights():
    torch.manual_seed(0)
    model = nn.Linear(6, 3)
    x = torch.randn(4, 6)
    _, relevance = SmoothGrad(model, noise_level=0.5, n_iter=7, seed=0)(x, 2)
    torch.testing.assert_close(relevance, model.weight[2].detach().expand(4, 6))


# --- IntegratedGradients ------------------------------------------------------------------------

@pytest.mark.parametrize("baseline", [
    None, torch.full((1, 3, 1, 1), 0.3), lambda x: x.mean(dim=(2, 3), keepdim=True).expand_as(x)])
def test_integrated_gradients_completeness(baseline):
    model, x, target = smooth_cnn(), inputs(), torch.tensor([0, 2, 4])
    output, relevance = IntegratedGradients(model, baseline=baseline, n_iter=200, batch_size=256)(x, target)
    if baseline is None:
        reference = torch.zeros_like(x)
    elif callable(baseline):
        reference = baseline(x)
    else:
        reference = baseline.expand_as(x)
    weights = one_hot(target)
    score_change = ((output - model(reference).detach()) * weights).sum(1)
    assert torch.equal(output, model(x).detach())
    torch.testing.assert_close(relevance.flatten(1).sum(1), score_change, rtol=0.01, atol=1e-4)


def test_integrated_gradients_matches_zennit_and_is_chunk_invariant():
    from zennit.attribution import IntegratedGradients as ZennitIntegratedGradients

    model, x, weights = smooth_cnn(), inputs(), one_hot([1, 2, 3])
    with ZennitIntegratedGradients(model, n_iter=7) as attributor:
        _, expected = attributor(x, weights)
    for batch_size in (2, 100):
        _, relevance = IntegratedGradients(model, n_iter=7, batch_size=batch_size)(x, weights)
        torch.testing.assert_close(relevance, expected, rtol=1e-4, atol=1e-6)


def test_integrated_gradients_rejects_a_baseline_of_the_wrong_shape():
    with pytest.raises(ValueError, match="baseline"):
        IntegratedGradients(smooth_cnn(), baseline=torch.zeros(2, 2))(inputs(), 0)


# --- Occlusion ----------------------------------------------------------------------------------

def linear_image_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4)).eval()


def window_contribution_loop(weight, x, fill, window, stride):
    """Mean over covering windows of sum_{i in window} w_i (x_i - fill), by explicit loops."""
    n, _, height, width = x.shape
    total, count = torch.zeros(n, height, width), torch.zeros(height, width)
    tops = sorted(set(list(range(0, height - window + 1, stride)) + [height - window]))
    lefts = sorted(set(list(range(0, width - window + 1, stride)) + [width - window]))
    for top in tops:
        for left in lefts:
            region = (slice(None), slice(None), slice(top, top + window), slice(left, left + window))
            contribution = (weight[region[1:]] * (x - fill)[region]).flatten(1).sum(1)
            total[:, top:top + window, left:left + window] += contribution[:, None, None]
            count[top:top + window, left:left + window] += 1
    return (total / count).unsqueeze(1).expand_as(x)


@pytest.mark.parametrize("window, stride, fill", [(4, 4, 0.0), (2, 2, 0.7), (3, 2, 0.0), (3, 3, -1.0)])
def test_occlusion_on_a_linear_model_equals_the_window_contribution(window, stride, fill):
    model, x = linear_image_model(), inputs()
    weight = model[1].weight[2].detach().view(3, 8, 8)
    output, relevance = Occlusion(model, window=window, stride=stride, fill=fill, batch_size=7)(x, 2)
    assert torch.equal(output, model(x).detach())
    torch.testing.assert_close(relevance, window_contribution_loop(weight, x, fill, window, stride),
                               rtol=1e-5, atol=1e-5)


def test_occlusion_non_overlapping_windows_sum_to_window_size_times_contribution():
    model, x = linear_image_model(), inputs()
    _, relevance = Occlusion(model, window=4, stride=4)(x, 1)
    per_channel_pixel = relevance[:, 0]
    total_contribution = ((model[1].weight[1].detach().view(3, 8, 8) * x).flatten(1).sum(1))
    torch.testing.assert_close(per_channel_pixel.flatten(1).sum(1), 16 * total_contribution,
                               rtol=1e-5, atol=1e-5)


def test_occlusion_on_tabular_inputs_and_tensor_fill():
    torch.manual_seed(0)
    model = nn.Linear(6, 2)
    x, fill = torch.randn(4, 6), torch.randn(6)
    _, relevance = Occlusion(model, window=1, stride=1, fill=fill)(x, 0)
    torch.testing.assert_close(relevance, model.weight[0].detach() * (x - fill))
    _, relevance = Occlusion(model, window=(2,), stride=(2,))(x, 1)
    pair_sums = (model.weight[1].detach() * x).view(4, 3, 2).sum(2)
    torch.testing.assert_close(relevance, pair_sums.repeat_interleave(2, dim=1))


@pytest.mark.parametrize("batch_window, batch_stride", [(1, 1), (2, 2), (5, 1)])
def test_occlusion_takes_a_full_shape_window_and_ignores_its_batch_entry(batch_window, batch_stride):
    model, x = linear_image_model(), inputs()
    expected = Occlusion(model, window=(3, 4, 4), stride=(3, 2, 2))(x, 1)[1]
    full = Occlusion(model, window=(batch_window, 3, 4, 4), stride=(batch_stride, 3, 2, 2))(x, 1)[1]
    assert torch.equal(full, expected)
    assert torch.equal(Occlusion(model, window=(len(x), 3, 8, 8), stride=(len(x), 3, 8, 8))(x, 1)[1],
                       Occlusion(model, window=(3, 8, 8), stride=(3, 8, 8))(x, 1)[1])


def test_occlusion_rejects_a_window_or_fill_that_does_not_fit():
    with pytest.raises(ValueError, match="window"):
        Occlusion(linear_image_model(), window=(1, 2, 2, 2, 2), stride=(1, 2, 2, 2, 2))(inputs(), 0)
    with pytest.raises(ValueError, match="window"):
        Occlusion(linear_image_model(), window=(2, 2), stride=(2,))(inputs(), 0)
    with pytest.raises(ValueError, match="fill"):
        Occlusion(linear_image_model(), fill=torch.zeros(2, 2))(inputs(), 0)


# --- composites ---------------------------------------------------------------------------------

def zennit_composite():
    from zennit.composites import EpsilonPlus

    return EpsilonPlus()


def test_gradient_with_a_composite_matches_zennit_and_is_removed_afterwards():
    from zennit.attribution import Gradient as ZennitGradient

    model, x, weights = relu_cnn(), inputs(), one_hot([0, 1, 2])
    with ZennitGradient(model, zennit_composite()) as attributor:
        _, expected = attributor(x, weights)
    with Gradient(model, zennit_composite()) as attributor:
        _, relevance = attributor(x, torch.tensor([0, 1, 2]))
    torch.testing.assert_close(relevance, expected, rtol=1e-5, atol=1e-7)
    _, plain = Gradient(model)(x, torch.tensor([0, 1, 2]))
    torch.testing.assert_close(plain, reference_gradient(model, x, weights), rtol=0, atol=0)
    assert not torch.allclose(plain, relevance)


@pytest.mark.skipif(not HAS_LRP_COMPOSITES, reason="lrp_lightning.composites not in the tree yet")
@pytest.mark.parametrize("name", ["epsilon_plus", "epsilon_alpha2_beta1", "guided_backprop"])
def test_gradient_with_lrp_lightning_composites_matches_zennit(name):
    from zennit.attribution import Gradient as ZennitGradient
    from zennit.composites import COMPOSITES as ZENNIT_COMPOSITES

    from lrp_lightning.composites import get_composite

    model, x, weights = relu_cnn(), inputs(), one_hot([0, 1, 2])
    with ZennitGradient(model, ZENNIT_COMPOSITES[name]()) as attributor:
        _, expected = attributor(x, weights)
    _, relevance = Gradient(model, get_composite(name)())(x, weights)
    torch.testing.assert_close(relevance, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", ["smoothgrad", "integrated_gradients"])
def test_path_attributors_apply_the_composite(name):
    model, x = relu_cnn(), inputs()
    options = {"smoothgrad": {"noise_level": 0.0}, "integrated_gradients": {"baseline": lambda v: v}}
    # noise 0 / baseline = input with 1 step: every copy is x itself, so the mean is the LRP gradient
    _, expected = Gradient(model, zennit_composite())(x, 1)
    attributor = get_attributor(name)(model, zennit_composite(), n_iter=3, **options[name])
    _, relevance = attributor(x, 1)
    if name == "integrated_gradients":
        assert torch.equal(relevance, torch.zeros_like(x))  # (x - b) = 0
    else:
        torch.testing.assert_close(relevance, expected, rtol=1e-5, atol=1e-7)


def test_occlusion_ignores_the_composite():
    model, x = relu_cnn(), inputs()
    plain = Occlusion(model, window=4, stride=4)(x, 0)[1]
    torch.testing.assert_close(Occlusion(model, zennit_composite(), window=4, stride=4)(x, 0)[1], plain)


# --- side effects -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(ATTRIBUTORS))
@pytest.mark.parametrize("with_composite", [False, True])
def test_model_and_random_state_are_left_unchanged(
    name, with_composite, assert_rng_equal, assert_same_module_state, module_state, random_state
):
    model, x = training_model(), inputs()
    composite = zennit_composite() if with_composite else None
    model_before, random_before = module_state(model), random_state()
    make_attributor(name, model, composite)(x, torch.tensor([0, 1, 2]))
    with make_attributor(name, model, composite) as attributor:
        attributor(x, 1)
        attributor(x, None)
    assert_same_module_state(model_before, module_state(model))
    assert_rng_equal(random_before, random_state())


@pytest.mark.parametrize("name", sorted(ATTRIBUTORS))
def test_model_is_restored_when_the_call_raises(
    name, assert_rng_equal, assert_same_module_state, module_state, random_state
):
    model, x = training_model(), inputs()
    model_before, random_before = module_state(model), random_state()
    with pytest.raises(ValueError):
        with make_attributor(name, model, zennit_composite()) as attributor:
            attributor(x, 7)
    assert_same_module_state(model_before, module_state(model))
    assert_rng_equal(random_before, random_state())


def test_inputs_are_not_modified_and_inference_mode_is_handled():
    model, x = smooth_cnn(), inputs()
    x_before = x.clone()
    _, expected = Gradient(model)(x, 0)
    with torch.inference_mode():
        inference_x = x.clone()
        _, relevance = IntegratedGradients(model, n_iter=1)(inference_x, 0)
    assert torch.equal(x, x_before) and not x.requires_grad
    torch.testing.assert_close(relevance, x * expected)


def test_entering_twice_raises():
    attributor = Gradient(smooth_cnn())
    with attributor:
        with pytest.raises(RuntimeError):
            attributor.__enter__()


# --- registry -----------------------------------------------------------------------------------

def test_registry_names_and_lookup():
    assert ATTRIBUTORS["gradient"] is Gradient
    assert ATTRIBUTORS["smoothgrad"] is SmoothGrad
    assert ATTRIBUTORS["integrated_gradients"] is IntegratedGradients
    assert ATTRIBUTORS["occlusion"] is Occlusion
    with pytest.raises(KeyError, match="integrated_gradients"):
        get_attributor("saliency")


def test_register_attributor_adds_a_class():
    @register_attributor("test_times_input")
    class TimesInput(Gradient):
        def forward(self, inputs, target):
            output, gradient = super().forward(inputs, target)
            return output, gradient * inputs

    try:
        model, x = smooth_cnn(), inputs()
        _, relevance = get_attributor("test_times_input")(model)(x, 0)
        torch.testing.assert_close(relevance, x * Gradient(model)(x, 0)[1])
    finally:
        del ATTRIBUTORS["test_times_input"]


@pytest.mark.parametrize("cls, kwargs", [
    (SmoothGrad, {"n_iter": 0}), (SmoothGrad, {"noise_level": -0.1}), (IntegratedGradients, {"batch_size": 0}),
    (Occlusion, {"batch_size": 0})])
def test_bad_settings_raise(cls, kwargs):
    with pytest.raises(ValueError):
        cls(smooth_cnn(), **kwargs)


@pytest.mark.skipif(not HAS_LRP_COMPOSITES, reason="lrp_lightning.composites not in the tree yet")
@pytest.mark.parametrize("name", sorted(ATTRIBUTORS))
@pytest.mark.parametrize("train", [False, True])
def test_lrp_lightning_composite_with_canonizer_leaves_model_unchanged(
    name, train, assert_rng_equal, assert_same_module_state, module_state, random_state
):
    from lrp_lightning.canonizers import SequentialMergeBatchNorm
    from lrp_lightning.composites import get_composite

    model, x = training_model().train(train), inputs()
    composite = get_composite("epsilon_gamma_box")(low=x.min(), high=x.max(),
                                                   canonizers=[SequentialMergeBatchNorm()])
    model_before, random_before = module_state(model), random_state()
    with make_attributor(name, model, composite) as attributor:
        _, relevance = attributor(x, torch.tensor([0, 1, 2]))
    assert relevance.shape == x.shape and torch.isfinite(relevance).all()
    with pytest.raises(ValueError):
        make_attributor(name, model, composite)(x, 9)
    assert_same_module_state(model_before, module_state(model))
    assert_rng_equal(random_before, random_state())


@pytest.mark.skipif(not HAS_LRP_COMPOSITES, reason="lrp_lightning.composites not in the tree yet")
def test_smoothgrad_without_noise_equals_lrp_with_an_lrp_lightning_composite():
    from zennit.attribution import Gradient as ZennitGradient
    from zennit.composites import EpsilonPlusFlat as ZennitEpsilonPlusFlat

    from lrp_lightning.composites import get_composite

    model, x, weights = relu_cnn(), inputs(), one_hot([3, 0, 1])
    with ZennitGradient(model, ZennitEpsilonPlusFlat()) as attributor:
        _, expected = attributor(x, weights)
    _, relevance = SmoothGrad(model, get_composite("epsilon_plus_flat")(), noise_level=0.0, n_iter=3,
                              batch_size=4)(x, torch.tensor([3, 0, 1]))
    torch.testing.assert_close(relevance, expected, rtol=1e-4, atol=1e-6)


class FlagRecordingLinear(nn.Linear):
    """A linear layer that records whether its weight requires grad when it is called."""

    def forward(self, input):
        self.seen = self.weight.requires_grad
        return super().forward(input)


def test_parameters_are_frozen_during_a_call_without_create_graph_only():
    torch.manual_seed(0)
    model = nn.Sequential(FlagRecordingLinear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    model[2].bias.requires_grad_(False)
    flags = [p.requires_grad for p in model.parameters()]
    x = torch.randn(2, 3)
    _, relevance = Gradient(model)(x, 1)
    assert model[0].seen is False
    assert [p.requires_grad for p in model.parameters()] == flags
    _, differentiable = Gradient(model, create_graph=True)(x, 1)
    assert model[0].seen is True
    torch.testing.assert_close(relevance, differentiable.detach(), rtol=0, atol=0)
    model[0].forward = lambda input: (_ for _ in ()).throw(RuntimeError("broken"))
    with pytest.raises(RuntimeError, match="broken"):
        Gradient(model)(x, 1)
    assert [p.requires_grad for p in model.parameters()] == flags
