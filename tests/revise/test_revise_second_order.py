"""Second-order gradients of relevance: d/d(theta, x) of sum(M * R) against central finite differences (float64).

Every rule and composite is checked on a small model at a point away from kinks (ReLU switches, sign changes of
weights and denominators are at distance >> the step), where the relevance is smooth and a central difference with
step h has error O(h^2) (~1e-10 relative with h = 1e-5), far below the 1e-6 tolerance.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from lrp_lightning import attribution, composites, rules
from lrp_lightning.canonizers import SequentialMergeBatchNorm
from lrp_lightning.layer import MatMul, Sum

STEP = 1e-5
TOLERANCE = 1e-6


class ResidualNet(nn.Module):
    """Conv -> ReLU -> AvgPool, a residual Sum, Linear -> ReLU -> Linear: every layer type the seed's rules cover."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.relu = nn.ReLU()
        self.pool = nn.AvgPool2d(2)
        self.sum = Sum()
        self.flatten = nn.Flatten()
        self.hidden = nn.Linear(3 * 2 * 2, 6)
        self.relu2 = nn.ReLU()
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        pooled = self.pool(self.relu(self.conv(x)))
        total = self.sum(torch.stack([pooled, pooled.flip(-1)], dim=-1))
        return self.head(self.relu2(self.hidden(self.flatten(total))))


class TinyAttention(nn.Module):
    """Linear Q, K, V -> softmax(QK^T) V via explicit MatMul modules -> LayerNorm -> GELU -> pooled head."""

    def __init__(self) -> None:
        super().__init__()
        self.query, self.key, self.value = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 4)
        self.scores, self.mix = MatMul(), MatMul()
        self.softmax = nn.Softmax(dim=-1)
        self.norm = nn.LayerNorm(4)
        self.act = nn.GELU()
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        weights = self.softmax(self.scores(self.query(x), self.key(x).transpose(-1, -2)))
        return self.head(self.act(self.norm(self.mix(weights, self.value(x)))).mean(dim=1))


def _relevance_objective(model, composite, inputs, mask, target):
    _, relevance = attribution.Gradient(model, composite, create_graph=True)(inputs, target)
    return (mask * relevance).sum()


def _check_against_finite_differences(model, make_composite, inputs, target, seed=0):
    generator = torch.Generator().manual_seed(seed)
    mask = torch.rand(inputs.shape, generator=generator, dtype=torch.float64)
    inputs = inputs.clone().requires_grad_(True)
    parameters = list(model.parameters())
    objective = _relevance_objective(model, make_composite(), inputs, mask, target)
    grads = torch.autograd.grad(objective, [inputs, *parameters], allow_unused=True)
    assert any(grad is not None and grad.abs().sum() > 0 for grad in grads), "the relevance depends on nothing"
    for index, (tensor, grad) in enumerate(zip([inputs, *parameters], grads)):
        direction = torch.randn(tensor.shape, generator=generator, dtype=torch.float64)
        analytic = 0.0 if grad is None else float((grad * direction).sum())
        values = []
        for sign in (1.0, -1.0):
            with torch.no_grad():
                tensor.add_(sign * STEP * direction)
            values.append(float(_relevance_objective(model, make_composite(), inputs.detach(), mask, target)))
            with torch.no_grad():
                tensor.sub_(sign * STEP * direction)
        numeric = (values[0] - values[1]) / (2 * STEP)
        scale = max(abs(numeric), abs(analytic), 1e-3 * abs(float(objective)), 1e-12)
        assert abs(numeric - analytic) <= TOLERANCE * scale, (index, numeric, analytic)


def _distance_to_kinks(model, inputs):
    """The smallest |pre-activation| and |layer output| of the net: where ReLUs switch and denominators change sign."""
    values = []
    handles = [module.register_forward_hook(lambda module, args, output: values.append(output.detach().abs().min()))
               for module in (model.conv, model.hidden, model.head, model.sum)]
    model(inputs)
    for handle in handles:
        handle.remove()
    return float(min(values))


def _residual_net():
    torch.manual_seed(59)  # a draw whose every pre-activation and sum is at least 1e-2 from zero (asserted)
    model = ResidualNet().double().eval()
    inputs = torch.rand(2, 2, 4, 4, dtype=torch.float64)
    assert _distance_to_kinks(model, inputs) > 1e3 * STEP
    return model, inputs, torch.eye(3, dtype=torch.float64)[[0, 2]]


COMPOSITES = {
    "epsilon_gamma_box": lambda: composites.EpsilonGammaBox(low=-0.5, high=1.5),
    "epsilon_plus": composites.EpsilonPlus,
    "epsilon_plus_flat": composites.EpsilonPlusFlat,
    "epsilon_alpha2_beta1": composites.EpsilonAlpha2Beta1,
    "epsilon_alpha2_beta1_flat": composites.EpsilonAlpha2Beta1Flat,
    "deconvnet": composites.DeconvNet,
    "guided_backprop": composites.GuidedBackprop,
    "excitation_backprop": composites.ExcitationBackprop,
    "beta_smooth": composites.BetaSmooth,
}


@pytest.mark.parametrize("name", sorted(COMPOSITES))
def test_registered_composite_relevance_has_exact_second_order_gradients(name):
    model, inputs, target = _residual_net()
    _check_against_finite_differences(model, COMPOSITES[name], inputs, target)


LINEAR_RULES = {
    "epsilon": lambda: rules.Epsilon(epsilon=1e-3),
    "zplus": rules.ZPlus,
    "alpha_beta": lambda: rules.AlphaBeta(alpha=2.0, beta=1.0),
    "gamma": lambda: rules.Gamma(gamma=0.25),
    "zbox": lambda: rules.ZBox(low=-0.5, high=1.5),
    "wsquare": rules.WSquare,
    "flat": rules.Flat,
}


@pytest.mark.parametrize("name", sorted(LINEAR_RULES))
def test_every_linear_rule_has_exact_second_order_gradients(name):
    model, inputs, target = _residual_net()

    def composite():
        return composites.LayerMapComposite(
            [(nn.AvgPool2d, rules.Norm()), (Sum, rules.Norm()), (nn.ReLU, rules.Pass()), ((nn.Conv2d, nn.Linear), LINEAR_RULES[name]())]
        )

    _check_against_finite_differences(model, composite, inputs, target)


@pytest.mark.parametrize("name", ["attn_lrp", "cp_lrp"])
def test_transformer_composite_relevance_has_exact_second_order_gradients(name):
    torch.manual_seed(0)
    model = TinyAttention().double().eval()
    inputs = torch.randn(2, 3, 4, dtype=torch.float64)
    _check_against_finite_differences(model, composites.get_composite(name), inputs, torch.eye(3, dtype=torch.float64)[[1, 2]])


def test_plain_gradient_attributors_are_differentiable_in_the_callers_input():
    """zennit's semantics: the caller's input is in the graph (not detached) with create_graph=True."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    inputs = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    target = torch.eye(2, dtype=torch.float64)[[0, 1]]
    for attributor in (
        attribution.Gradient(model, create_graph=True),
        attribution.SmoothGrad(model, create_graph=True, noise_level=0.1, n_iter=3, seed=0),
        attribution.IntegratedGradients(model, create_graph=True, n_iter=3),
    ):
        _, relevance = attributor(inputs, target)
        gradient, = torch.autograd.grad(relevance.sum(), inputs)
        assert gradient.abs().sum() > 0, attributor


def test_parameters_keep_requires_grad_and_the_model_is_restored():
    model, inputs, target = _residual_net()
    model.head.weight.requires_grad_(False)
    before = {name: (value.clone(), value.requires_grad) for name, value in model.named_parameters()}
    seen = []
    model.hidden.register_forward_hook(lambda module, args, output: seen.append(module.weight.requires_grad))
    attribution.Gradient(model, composites.EpsilonPlus(), create_graph=True)(inputs, target)
    assert seen == [True]
    for name, value in model.named_parameters():
        assert torch.equal(value, before[name][0]) and value.requires_grad == before[name][1]


# the BatchNorm-merge canonizer: inside a differentiable call the merged weights are functions of the conv's weight
# and bias and of the BatchNorm's gamma and beta, so d/d(theta) of sum(M * R) reaches them
class ConvBatchNormNet(nn.Module):
    """Conv -> BatchNorm -> ReLU -> AvgPool -> Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.norm = nn.BatchNorm2d(3)
        self.relu = nn.ReLU()
        self.pool = nn.AvgPool2d(2)
        self.flatten = nn.Flatten()
        self.head = nn.Linear(3 * 2 * 2, 3)

    def forward(self, x):
        return self.head(self.flatten(self.pool(self.relu(self.norm(self.conv(x))))))


def _conv_batch_norm_net():
    torch.manual_seed(132)  # a draw whose pre-activations and logits are at least 0.1 from zero (asserted)
    model = ConvBatchNormNet().double().eval()
    with torch.no_grad():
        model.norm.weight.uniform_(0.5, 2.0)
        model.norm.bias.uniform_(-0.5, 0.5)
        model.norm.running_mean.uniform_(-0.3, 0.3)
        model.norm.running_var.uniform_(0.5, 2.0)
    inputs = torch.rand(2, 2, 4, 4, dtype=torch.float64)
    smallest = []
    handles = [module.register_forward_hook(lambda module, args, output: smallest.append(output.detach().abs().min()))
               for module in (model.norm, model.head)]
    model(inputs)
    for handle in handles:
        handle.remove()
    assert float(min(smallest)) > 1e4 * STEP  # away from ReLU switches and denominators' sign changes
    return model, inputs, torch.eye(3, dtype=torch.float64)[[0, 2]]


def _canonized_composite():
    return composites.LayerMapComposite(
        [(nn.AvgPool2d, rules.Norm()), (nn.ReLU, rules.Pass()), ((nn.Conv2d, nn.Linear), rules.Epsilon(epsilon=1e-3))],
        canonizers=[SequentialMergeBatchNorm()],
    )


def test_relevance_through_merged_batch_norm_has_exact_second_order_gradients():
    model, inputs, target = _conv_batch_norm_net()
    _check_against_finite_differences(model, _canonized_composite, inputs, target)


def test_merged_batch_norm_parameters_reach_conv_and_batch_norm_and_the_model_is_restored():
    model, inputs, target = _conv_batch_norm_net()
    before = {name: value.clone() for name, value in [*model.named_parameters(), *model.named_buffers()]}
    objects = {name: value for name, value in model.named_parameters()}
    hooks = (dict(model.conv._forward_pre_hooks), dict(model.norm.__dict__))
    attributor = attribution.Gradient(model, _canonized_composite(), create_graph=True)
    _, relevance = attributor(inputs, target)
    grads = torch.autograd.grad(relevance.sum(), [model.conv.weight, model.conv.bias, model.norm.weight, model.norm.bias])
    assert all(grad.abs().sum() > 0 for grad in grads)
    _, plain = attribution.Gradient(model, _canonized_composite())(inputs, target)  # no create_graph: leaves again
    assert torch.allclose(plain, relevance.detach(), rtol=1e-12, atol=1e-14)
    assert {name: value for name, value in model.named_parameters()} == objects
    assert all(torch.equal(value, before[name]) for name, value in [*model.named_parameters(), *model.named_buffers()])
    assert (dict(model.conv._forward_pre_hooks), dict(model.norm.__dict__)) == hooks


def test_a_plain_call_after_a_differentiable_one_under_the_same_canonizer_gives_the_same_relevance():
    """The merged tensors of the differentiable call stay in the layer until its next forward pass: a plain call
    (which freezes the parameters) in between must neither fail nor change the relevance."""
    model, inputs, target = _conv_batch_norm_net()
    with _canonized_composite().context(model):
        _, differentiable_relevance = attribution.Gradient(model, create_graph=True)(inputs, target)
        _, plain = attribution.Gradient(model)(inputs, target)
    assert torch.allclose(plain, differentiable_relevance.detach(), rtol=1e-12, atol=1e-14)
    assert all(parameter.is_leaf and parameter.requires_grad for parameter in model.parameters())
