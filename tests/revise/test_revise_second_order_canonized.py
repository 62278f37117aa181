"""Second-order gradients through the BatchNorm-merge canonizer: the merged weights are functions of the conv's
weight and bias and of the BatchNorm's gamma and beta inside a differentiable call, so d/d(theta) of sum(M * R)
reaches them; checked against central finite differences in float64 (see test_revise_second_order)."""
from __future__ import annotations

import torch
from torch import nn

from lrp_lightning import attribution, composites, rules
from lrp_lightning.canonizers import SequentialMergeBatchNorm
from test_revise_second_order import STEP, _check_against_finite_differences


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
