"""Models with several inputs (beyond zennit 0.5.1): attributors called with a tuple of inputs and
composites on modules called with several tensors or keyword tensors.

The expected relevances are LRP computed by hand in float64: every layer written as a dense matrix
taken from the model's weights (a convolution's matrix is its response to the unit basis), and the
rules' equations applied with plain tensor operations.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lrp_lightning.attribution import Gradient, IntegratedGradients, Occlusion, SmoothGrad
from lrp_lightning.composites import EpsilonGammaBox, EpsilonPlus, LayerMapComposite, NameMapComposite
from lrp_lightning.core import Hook, fast_path
from lrp_lightning.rules import Epsilon, Norm, Pass

EPSILON = 1e-6
LOW, HIGH = -1.5, 2.0


class Add(nn.Module):
    """A user's module adding two tensors, ``a + b``."""

    def forward(self, a, b):
        return a + b


class Concat(nn.Module):
    """A user's module concatenating two tensors along the features."""

    def forward(self, a, b):
        return torch.cat([a, b], dim=1)


class TwoInputNet(nn.Module):
    """An image branch (two convolutions) and a vector branch (a linear layer called with a keyword
    argument), added by a module called with both, then a linear head."""

    def __init__(self, bias: bool = True, join: str = "add") -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 2, 3, padding=1, bias=bias)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(2, 1, 3, padding=1, bias=bias)
        self.act2 = nn.ReLU()
        self.flatten = nn.Flatten()
        self.dense = nn.Linear(5, 16, bias=bias)
        self.act3 = nn.ReLU()
        self.join = Add() if join == "add" else Concat()
        self.head = nn.Linear(16 if join == "add" else 32, 3, bias=bias)

    def forward(self, image, vector):
        features = self.flatten(self.act2(self.conv2(self.act1(self.conv1(image)))))
        return self.head(self.join(features, self.act3(self.dense(input=vector))))


def two_input_net(bias: bool = True, join: str = "add", seed: int = 0) -> TwoInputNet:
    torch.manual_seed(seed)
    model = TwoInputNet(bias, join).double().eval()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.05 * torch.randn_like(param))
    return model


def two_inputs(seed: int = 1) -> tuple:
    generator = torch.Generator().manual_seed(seed)
    image = torch.rand(3, 1, 4, 4, generator=generator, dtype=torch.float64) * (HIGH - LOW) + LOW
    vector = torch.randn(3, 5, generator=generator, dtype=torch.float64)
    return image, vector


# --- LRP by hand --------------------------------------------------------------------------------

def dense(layer: nn.Module, shape: tuple) -> tuple:
    """The layer as ``(W, b)`` acting on flattened samples of ``shape`` (without the batch dim)."""
    if isinstance(layer, nn.Linear):
        bias = torch.zeros(layer.out_features, dtype=torch.float64) if layer.bias is None else layer.bias
        return layer.weight.detach(), bias.detach()
    size = int(torch.tensor(shape).prod())
    basis = torch.eye(size, dtype=torch.float64).reshape(size, *shape)
    response = F.conv2d(basis, layer.weight.detach(), None, layer.stride, layer.padding)
    weight = response.reshape(size, -1).T
    spatial = response.shape[-2] * response.shape[-1]
    bias = torch.zeros(weight.shape[0], dtype=torch.float64) if layer.bias is None else layer.bias.detach().repeat_interleave(spatial)
    return weight, bias


def stab(value, epsilon=EPSILON):
    return value + epsilon * torch.where(value >= 0, 1.0, -1.0).to(value)


def epsilon_rule(a, weight, bias, relevance, epsilon=EPSILON):
    """R_a = a * W^T (R / stab(W a + b))."""
    return a * ((relevance / stab(a @ weight.T + bias, epsilon)) @ weight)


def zplus_rule(a, weight, bias, relevance):
    """z+ = W+ a+ + b+ + W- a-, R_a = a+ * W+^T s + a- * W-^T s with s = R / stab(z+)."""
    w_pos, w_neg = weight.clamp(min=0), weight.clamp(max=0)
    a_pos, a_neg = a.clamp(min=0), a.clamp(max=0)
    ratio = relevance / stab(a_pos @ w_pos.T + bias.clamp(min=0) + a_neg @ w_neg.T)
    return a_pos * (ratio @ w_pos) + a_neg * (ratio @ w_neg)


def gamma_rule(a, weight, bias, relevance, gamma=0.25):
    """For a >= 0: A = W + g W+, B = W + g W-, R_a = a * (A^T s_p + B^T s_n) with
    s_p = R [z > 0] / stab(A a + b + g b+), s_n = R [z < 0] / stab(B a + b + g b-)."""
    assert bool((a >= 0).all())
    boosted_pos, boosted_neg = weight + gamma * weight.clamp(min=0), weight + gamma * weight.clamp(max=0)
    z = a @ weight.T + bias
    ratio_pos = relevance * (z > 0) / stab(a @ boosted_pos.T + bias + gamma * bias.clamp(min=0))
    ratio_neg = relevance * (z < 0) / stab(a @ boosted_neg.T + bias + gamma * bias.clamp(max=0))
    return a * (ratio_pos @ boosted_pos + ratio_neg @ boosted_neg)


def zbox_rule(a, weight, bias, relevance, low, high):
    """d = W a + b - (W+ l + b+) - (W- h + b-), R_a = a W^T s - l W+^T s - h W-^T s, s = R / stab(d)."""
    w_pos, w_neg = weight.clamp(min=0), weight.clamp(max=0)
    low, high = torch.full_like(a, low), torch.full_like(a, high)
    d = a @ weight.T + bias - (low @ w_pos.T + bias.clamp(min=0)) - (high @ w_neg.T + bias.clamp(max=0))
    ratio = relevance / stab(d)
    return a * (ratio @ weight) - low * (ratio @ w_pos) - high * (ratio @ w_neg)


def hand_lrp(model: TwoInputNet, image, vector, output_relevance, first, second, vector_rule, add_epsilon=EPSILON):
    """Per-input LRP of the two-input net: ``first``/``second`` are the rules of the convolutions,
    ``vector_rule`` that of the dense layer; Epsilon on the head, Norm on the sum, ReLUs pass."""
    batch = image.shape[0]
    conv1, bias1 = dense(model.conv1, (1, 4, 4))
    conv2, bias2 = dense(model.conv2, (2, 4, 4))
    linear, linear_bias = dense(model.dense, (5,))
    head, head_bias = dense(model.head, (16,))
    x = image.reshape(batch, -1)
    h1 = (x @ conv1.T + bias1).clamp(min=0)
    h2 = (h1 @ conv2.T + bias2).clamp(min=0)
    v = (vector @ linear.T + linear_bias).clamp(min=0)
    total = h2 + v
    logits = total @ head.T + head_bias
    relevance_total = epsilon_rule(total, head, head_bias, output_relevance(logits))
    ratio = relevance_total / stab(total, add_epsilon)
    relevance_h2, relevance_v = h2 * ratio, v * ratio
    relevance_h1 = second(h1, conv2, bias2, relevance_h2)
    relevance_image = first(x, conv1, bias1, relevance_h1).reshape(image.shape)
    return logits, relevance_image, vector_rule(vector, linear, linear_bias, relevance_v)


def one_hot(index):
    return lambda logits: F.one_hot(torch.full((logits.shape[0],), index), logits.shape[1]).to(logits)


def epsilon_composite(epsilon=EPSILON, add_epsilon=EPSILON):
    return LayerMapComposite([
        ((nn.Conv2d, nn.Linear), Epsilon(epsilon)), (nn.ReLU, Pass()), (Add, Norm(add_epsilon))])


# --- composites on the two-input net, against LRP by hand --------------------------------------------

@pytest.mark.parametrize("closed_form", [True, False], ids=["closed-form", "autograd"])
def test_epsilon_gives_each_input_its_hand_computed_lrp(closed_form):
    model, (image, vector) = two_input_net(), two_inputs()
    logits, expected_image, expected_vector = hand_lrp(model, image, vector, one_hot(2), epsilon_rule, epsilon_rule,
                                                       epsilon_rule)
    with fast_path(closed_form):
        output, (relevance_image, relevance_vector) = Gradient(model, epsilon_composite())((image, vector), 2)
    torch.testing.assert_close(output, logits, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(relevance_image, expected_image, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(relevance_vector, expected_vector, rtol=1e-9, atol=1e-12)


def test_epsilon_plus_gives_each_input_its_hand_computed_lrp():
    model, (image, vector) = two_input_net(), two_inputs()
    _, expected_image, expected_vector = hand_lrp(model, image, vector, one_hot(0), zplus_rule, zplus_rule, epsilon_rule)
    composite = EpsilonPlus(layer_map=[(Add, Norm())])
    _, (relevance_image, relevance_vector) = Gradient(model, composite)((image, vector), 0)
    torch.testing.assert_close(relevance_image, expected_image, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(relevance_vector, expected_vector, rtol=1e-9, atol=1e-12)


def test_epsilon_gamma_box_gives_each_input_its_hand_computed_lrp():
    model, (image, vector) = two_input_net(), two_inputs()

    def zbox(a, weight, bias, relevance):
        return zbox_rule(a, weight, bias, relevance, LOW, HIGH)

    _, expected_image, expected_vector = hand_lrp(model, image, vector, one_hot(1), zbox, gamma_rule, epsilon_rule)
    composite = EpsilonGammaBox(low=LOW, high=HIGH, layer_map=[(Add, Norm())])
    _, (relevance_image, relevance_vector) = Gradient(model, composite)((image, vector), 1)
    torch.testing.assert_close(relevance_image, expected_image, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(relevance_vector, expected_vector, rtol=1e-9, atol=1e-12)


def test_relevance_of_all_inputs_together_is_conserved():
    model, (image, vector) = two_input_net(bias=False), two_inputs()
    composite = epsilon_composite(epsilon=1e-12, add_epsilon=1e-12)
    output, (relevance_image, relevance_vector) = Gradient(model, composite)(
        (image, vector), lambda logits: logits * one_hot(0)(logits))
    total = relevance_image.flatten(1).sum(1) + relevance_vector.sum(1)
    torch.testing.assert_close(total, output[:, 0], rtol=1e-9, atol=1e-12)
    assert bool((relevance_vector.abs().sum(1) > 0).all()) and bool((relevance_image.abs().sum(1) > 0).all())


def test_a_module_without_a_rule_passes_its_plain_gradient_to_every_input():
    model, (image, vector) = two_input_net(join="concat"), two_inputs()
    composite = LayerMapComposite([((nn.Conv2d, nn.Linear), Epsilon()), (nn.ReLU, Pass())])
    _, (relevance_image, relevance_vector) = Gradient(model, composite)((image, vector), 2)
    batch = image.shape[0]
    conv1, bias1 = dense(model.conv1, (1, 4, 4))
    conv2, bias2 = dense(model.conv2, (2, 4, 4))
    linear, linear_bias = dense(model.dense, (5,))
    head, head_bias = dense(model.head, (32,))
    h1 = (image.reshape(batch, -1) @ conv1.T + bias1).clamp(min=0)
    h2 = (h1 @ conv2.T + bias2).clamp(min=0)
    v = (vector @ linear.T + linear_bias).clamp(min=0)
    joined = torch.cat([h2, v], dim=1)
    relevance_joined = epsilon_rule(joined, head, head_bias, one_hot(2)(joined @ head.T))
    expected_image = epsilon_rule(image.reshape(batch, -1), conv1, bias1,
                                  epsilon_rule(h1, conv2, bias2, relevance_joined[:, :16]))
    torch.testing.assert_close(relevance_image, expected_image.reshape(image.shape), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(relevance_vector, epsilon_rule(vector, linear, linear_bias, relevance_joined[:, 16:]),
                               rtol=1e-9, atol=1e-12)


class KeywordLinear(nn.Module):
    def __init__(self, layer: nn.Linear, keyword: bool) -> None:
        super().__init__()
        self.layer, self.keyword = layer, keyword

    def forward(self, x):
        return self.layer(input=x) if self.keyword else self.layer(x)


def test_a_layer_called_with_a_keyword_tensor_gets_its_rule():
    torch.manual_seed(3)
    layer = nn.Linear(6, 4).double()
    x = torch.randn(5, 6, dtype=torch.float64)
    plain = Gradient(KeywordLinear(layer, keyword=True))(x, 1)[1]
    positional = Gradient(KeywordLinear(layer, keyword=False), LayerMapComposite([(nn.Linear, Epsilon(0.1))]))(x, 1)[1]
    keyword = Gradient(KeywordLinear(layer, keyword=True), LayerMapComposite([(nn.Linear, Epsilon(0.1))]))(x, 1)[1]
    expected = epsilon_rule(x, layer.weight.detach(), layer.bias.detach(), one_hot(1)(torch.zeros(5, 4)).double(), 0.1)
    torch.testing.assert_close(keyword, expected, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(positional, expected, rtol=1e-9, atol=1e-12)
    assert not torch.allclose(plain, expected)


class HalvingHook(Hook):
    """zennit's protocol: halve the true gradient of every input."""

    def backward(self, module, grad_input, grad_output):
        return tuple(0.5 * gradient for gradient in grad_input)


def test_a_zennit_protocol_hook_gets_the_gradients_of_all_inputs():
    torch.manual_seed(4)
    a, b = torch.randn(2, 3, dtype=torch.float64, requires_grad=True), torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    scale = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)

    class Product(nn.Module):
        def forward(self, x, y):
            return x * y * scale

    model = Product()
    with NameMapComposite([([""], HalvingHook())]).context(model):
        grad_a, grad_b = torch.autograd.grad(model(a, b).sum(), (a, b))
    torch.testing.assert_close(grad_a, 0.5 * b.detach() * scale)
    torch.testing.assert_close(grad_b, 0.5 * a.detach() * scale)


def test_a_one_input_rule_on_a_module_called_with_two_tensors_raises_and_the_model_is_restored(
    assert_same_state, model_state
):
    model, inputs = two_input_net(), two_inputs()
    before = model_state(model)
    composite = LayerMapComposite([((nn.Conv2d, nn.Linear), Epsilon()), ((nn.ReLU, Add), Pass())])
    with pytest.raises(TypeError, match=r"Pass handles modules with one tensor input.*Add.*argument 0, argument 1"):
        Gradient(model, composite)(inputs, 0)
    assert_same_state(before, model_state(model))
    Gradient(model, epsilon_composite())(inputs, 0)
    assert_same_state(before, model_state(model))


# --- attributors with a tuple of inputs ------------------------------------------------------------

class Separable(nn.Module):
    """``f(x1, x2, idx) = sum(w1 * x1^2) + sum(w2 * x2) + offset[idx]`` per sample, two outputs."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(5)
        self.w1 = nn.Parameter(torch.randn(1, 4, dtype=torch.float64))
        self.w2 = nn.Parameter(torch.randn(1, 3, dtype=torch.float64))
        self.offset = nn.Parameter(torch.randn(7, dtype=torch.float64))
        self.calls = []

    def forward(self, x1, x2, index, scale=None):
        self.calls.append((x1.detach().clone(), x2.detach().clone(), index.clone()))
        score = (self.w1 * x1 ** 2).sum(1) + (self.w2 * x2).sum(1) + self.offset[index]
        if scale is not None:
            score = score * scale
        return torch.stack([score, -score], dim=1)


def separable_inputs() -> tuple:
    generator = torch.Generator().manual_seed(6)
    return (torch.randn(3, 4, generator=generator, dtype=torch.float64),
            torch.randn(3, 3, generator=generator, dtype=torch.float64) * 5,
            torch.tensor([0, 4, 6]))


def test_gradient_explains_every_float_input_and_passes_integer_inputs_through():
    model, (x1, x2, index) = Separable(), separable_inputs()
    output, relevance = Gradient(model)([x1, x2, index], 0)
    assert isinstance(relevance, tuple) and relevance[2] is None
    torch.testing.assert_close(relevance[0], 2 * model.w1.detach() * x1)
    torch.testing.assert_close(relevance[1], model.w2.detach().expand_as(x2))
    torch.testing.assert_close(output[:, 0], (model.w1 * x1 ** 2).sum(1).detach() + (model.w2 * x2).sum(1).detach()
                               + model.offset.detach()[index])


def test_integrated_gradients_integrates_every_input_from_its_own_baseline():
    model, (x1, x2, index) = Separable(), separable_inputs()
    baseline1, n_iter = torch.full_like(x1, 0.5), 7
    attributor = IntegratedGradients(model, n_iter=n_iter, baseline=(baseline1, lambda x: x / 2, None), batch_size=5)
    _, (relevance1, relevance2, relevance_index) = attributor((x1, x2, index), 0)
    mean_alpha = (n_iter + 1) / (2 * n_iter)
    w1, w2 = model.w1.detach(), model.w2.detach()
    torch.testing.assert_close(relevance1, (x1 - baseline1) * 2 * w1 * (baseline1 + mean_alpha * (x1 - baseline1)))
    torch.testing.assert_close(relevance2, (x2 / 2) * w2)
    assert relevance_index is None
    _, (zero_baseline1, _, _) = IntegratedGradients(model, n_iter=n_iter, baseline_fn=torch.zeros_like)((x1, x2, index), 0)
    torch.testing.assert_close(zero_baseline1, x1 * 2 * w1 * mean_alpha * x1)


def test_smoothgrad_noises_every_float_input_by_its_own_range():
    model, (x1, x2, index) = Separable(), separable_inputs()
    n_iter = 400
    _, (relevance1, relevance2, relevance_index) = SmoothGrad(model, noise_level=0.2, n_iter=n_iter, seed=0,
                                                             batch_size=300)((x1, x2, index), 0)
    clean, perturbed = model.calls[0], model.calls[1:]
    rows1 = torch.cat([call[0] for call in perturbed]).reshape(n_iter, 3, 4)
    rows2 = torch.cat([call[1] for call in perturbed]).reshape(n_iter, 3, 3)
    for rows, x in ((rows1, x1), (rows2, x2)):
        std = (rows - x).std(dim=(0, 2))
        expected = 0.2 * (x.amax(1) - x.amin(1))
        torch.testing.assert_close(std, expected, rtol=0.1, atol=0)
    assert torch.equal(torch.cat([call[2] for call in perturbed]).reshape(n_iter, 3), index.expand(n_iter, 3))
    torch.testing.assert_close(relevance1, 2 * model.w1.detach() * rows1.mean(0))
    torch.testing.assert_close(relevance2, model.w2.detach().expand_as(x2))
    assert relevance_index is None and torch.equal(clean[0], x1)


def test_occlusion_occludes_each_input_in_turn():
    model, (x1, x2, index) = Separable(), separable_inputs()
    output, (relevance1, relevance2, relevance_index) = Occlusion(model, window=1, stride=1, batch_size=4)((x1, x2, index), 0)
    torch.testing.assert_close(relevance1, model.w1.detach() * x1 ** 2)
    torch.testing.assert_close(relevance2, model.w2.detach() * x2)
    assert relevance_index is None
    occluded_calls = model.calls[1:]
    assert sum(len(call[0]) for call in occluded_calls) == 3 * (4 + 3)


@pytest.mark.parametrize("attributor", [
    lambda model: SmoothGrad(model, noise_level=0.0, n_iter=2, batch_size=4),
    lambda model: IntegratedGradients(model, n_iter=3, batch_size=4),
    lambda model: Occlusion(model, window=1, stride=1, batch_size=4),
    lambda model: Gradient(model)], ids=["smoothgrad", "integrated", "occlusion", "gradient"])
def test_keyword_tensors_with_the_batch_size_follow_their_sample(attributor):
    model, (x1, x2, index) = Separable(), separable_inputs()
    scale = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)
    _, (scaled, _, _) = attributor(model)((x1, x2, index), 0, scale=scale)
    _, (unscaled, _, _) = attributor(model)((x1, x2, index), 0)
    torch.testing.assert_close(scaled, unscaled * scale[:, None])


def test_a_single_tensor_input_still_gives_a_single_relevance():
    model, (image, vector) = two_input_net(), two_inputs()

    class ImageOnly(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, image):
            return self.model(image, vector)

    _, relevance = Gradient(ImageOnly(), epsilon_composite())(image, 2)
    _, (expected, _) = Gradient(model, epsilon_composite())((image, vector), 2)
    assert isinstance(relevance, torch.Tensor)
    torch.testing.assert_close(relevance, expected, rtol=0, atol=0)


@pytest.mark.parametrize("inputs, error, message", [
    (lambda image, vector: (image, vector[:2]), ValueError, r"share their first \(batch\) dimension"),
    (lambda image, vector: (image, 3.0), TypeError, r"inputs\[1\] is a float, not a tensor"),
    (lambda image, vector: (), ValueError, "empty tuple"),
    (lambda image, vector: (image.long(), vector.long()), TypeError, "none of the inputs is floating point"),
    (lambda image, vector: {"image": image}, TypeError, "a tensor or a tuple of tensors"),
])
def test_bad_input_tuples_raise_the_documented_error_and_leave_the_model_as_it_was(
    inputs, error, message, assert_same_state, model_state
):
    model = two_input_net()
    before = model_state(model)
    for attributor in (Gradient(model, epsilon_composite()), SmoothGrad(model), IntegratedGradients(model), Occlusion(model)):
        with pytest.raises(error, match=message):
            attributor(inputs(*two_inputs()), 0)
    assert_same_state(before, model_state(model))


def test_a_tuple_of_baselines_needs_a_tuple_of_as_many_inputs():
    model, (x1, x2, index) = Separable(), separable_inputs()
    with pytest.raises(ValueError, match="a tuple of 2 baselines needs a tuple of as many inputs"):
        IntegratedGradients(model, baseline=(None, None))((x1, x2, index), 0)


def test_attributors_leave_model_and_random_state_as_they_were(assert_same_state, model_state):
    model, inputs = two_input_net(), two_inputs()
    before, rng = model_state(model), torch.get_rng_state()
    for attributor in (Gradient(model, epsilon_composite()), SmoothGrad(model, epsilon_composite(), n_iter=2),
                       IntegratedGradients(model, epsilon_composite(), n_iter=2), Occlusion(model, window=2, stride=2)):
        attributor(inputs, 0)
        assert_same_state(before, model_state(model))
    assert torch.equal(rng, torch.get_rng_state())


class GradientView(LayerMapComposite):
    """No rules, but the gradient view: the relevance of an input is the input times its gradient."""

    gradient_view = True
    warn_uncovered = False


@pytest.mark.parametrize("attributor", [
    lambda model: Gradient(model, GradientView([])),
    lambda model: SmoothGrad(model, GradientView([]), noise_level=0.0, n_iter=2)], ids=["gradient", "smoothgrad"])
def test_a_gradient_view_composite_multiplies_each_input_by_its_own_gradient(attributor):
    model, (x1, x2, index) = Separable(), separable_inputs()
    _, (relevance1, relevance2, relevance_index) = attributor(model)((x1, x2, index), 0)
    torch.testing.assert_close(relevance1, 2 * model.w1.detach() * x1 * x1)
    torch.testing.assert_close(relevance2, model.w2.detach() * x2)
    assert relevance_index is None
