"""The LRP rules (lrp_lightning.rules): relevance conservation, LRP-0 as gradient x input, the box
rule's bounds, the Norm rule's proportional split and the rules' argument checks."""
import pytest
import torch

from lrp_lightning import composites, rules
from lrp_lightning.layer import Sum
from lrp_lightning.types import Convolution


pytestmark = pytest.mark.usefixtures("float64_default")


def test_lrp0_equals_gradient_times_input_on_relu_net():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 6, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(6 * 6 * 6, 8),
        torch.nn.ReLU(), torch.nn.Linear(8, 3),
    ).eval()
    input = torch.randn(4, 3, 8, 8)
    target = torch.tensor([0, 1, 2, 0])
    composite = composites.LayerMapComposite(
        [(torch.nn.ReLU, rules.Pass()), ((torch.nn.Linear, torch.nn.Conv2d), rules.Epsilon(epsilon=0.0))]
    )
    one_hot = torch.nn.functional.one_hot(target, 3).to(input)
    leaf = input.clone().requires_grad_()
    with composite.context(model):
        output = model(leaf)
        # initial relevance = the target logit, so that LRP-0 relevance is in units of the logit
        relevance, = torch.autograd.grad(output, leaf, output.detach() * one_hot)
    leaf = input.clone().requires_grad_()
    gradient, = torch.autograd.grad(model(leaf), leaf, one_hot)
    torch.testing.assert_close(relevance, gradient * input, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("rule", [rules.Epsilon(1e-12, zero_params="bias"), rules.ZPlus(1e-12, zero_params="bias"),
                                  rules.Gamma(0.25, 1e-12, zero_params="bias")],
                         ids=lambda rule: type(rule).__name__)
@pytest.mark.parametrize("net", ["mlp", "cnn"])
def test_rules_conserve_relevance_on_bias_free_relu_nets(rule, net, attribute, conv1d_net, mlp):
    torch.manual_seed(1)
    if net == "mlp":
        model, input = mlp(bias=False), torch.randn(5, 10)
    else:
        model, input = conv1d_net(bias=False), torch.randn(5, 2, 20)
    composite = composites.LayerMapComposite(composites.layer_map_base() + [((torch.nn.Linear, Convolution), rule)])
    target = torch.tensor([0, 1, 2, 0, 1])
    relevance = attribute(composite, model, input, target)
    # one unit of relevance enters at each sample's target
    total = relevance.flatten(1).sum(1)
    torch.testing.assert_close(total, torch.ones(5), rtol=1e-4, atol=0)


@pytest.mark.parametrize("alpha, beta", [(1.0, 1.0), (3.0, 1.0), (-1.0, -2.0), (0.5, -0.5)])
def test_alpha_beta_rejects_invalid_parameters(alpha, beta):
    with pytest.raises(ValueError, match="alpha"):
        rules.AlphaBeta(alpha, beta)


def test_zbox_bounds_that_do_not_broadcast_raise_in_forward():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3))
    composite = composites.EpsilonGammaBox(low=torch.zeros(1, 4, 1, 1), high=torch.ones(1, 4, 1, 1))
    with composite.context(model):
        with pytest.raises(ValueError, match=r"does not broadcast.*\(1, 3, 1, 1\)"):
            model(torch.randn(1, 3, 5, 5, requires_grad=True))


def test_zbox_per_channel_bounds_equal_full_size_bounds(attribute, cnn_with_batch_norm):
    torch.manual_seed(8)
    model = cnn_with_batch_norm()
    input = torch.rand(2, 3, 12, 12)
    low, high = torch.tensor([-1.0, -2.0, -0.5]).view(1, 3, 1, 1), torch.tensor([1.0, 2.0, 1.5]).view(1, 3, 1, 1)
    full = composites.EpsilonGammaBox(low.expand_as(input).clone(), high.expand_as(input).clone())
    per_channel = composites.EpsilonGammaBox(low, high)
    target = torch.tensor([1, 2])
    torch.testing.assert_close(attribute(per_channel, model, input, target), attribute(full, model, input, target))


def test_sum_layer_and_norm_rule_split_relevance_proportionally():
    layer = Sum(dim=-1)
    input = torch.tensor([[[1.0, 3.0], [2.0, -1.0]]], requires_grad=True)
    composite = composites.LayerMapComposite([(Sum, rules.Norm(stabilizer=1e-12))])
    with composite.context(layer):
        relevance, = torch.autograd.grad(layer(input), input, torch.tensor([[4.0, 10.0]]))
    torch.testing.assert_close(relevance, torch.tensor([[[1.0, 3.0], [20.0, -10.0]]]))
