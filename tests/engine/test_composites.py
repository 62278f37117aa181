"""Properties of the attribution engine that hold independently of any oracle."""
import copy
import warnings

import pytest
import torch

from lrp_lightning import canonizers, composites, rules
from lrp_lightning.composites import COMPOSITES, get_composite
from lrp_lightning.core import Composite, Stabilizer
from lrp_lightning.layer import Sum
from lrp_lightning.torchvision import ResNetCanonizer, VGGCanonizer
from lrp_lightning.types import Convolution

from engine_models import (
    assert_same_state,
    attribute,
    cnn_with_batch_norm,
    conv1d_net,
    mlp,
    model_state,
    randomize_batch_norms,
    resnet18,
    small_vgg_bn,
)

NAMES = sorted(COMPOSITES)


pytestmark = pytest.mark.usefixtures("float64_default")


def build(name: str, input: torch.Tensor, **kwargs):
    if name == "epsilon_gamma_box":
        kwargs.update(low=torch.full_like(input, -5.0), high=torch.full_like(input, 5.0))
    return get_composite(name)(**kwargs)


def test_registry_holds_the_eleven_composites():
    assert set(COMPOSITES) == {
        "epsilon_gamma_box", "epsilon_plus", "epsilon_plus_flat", "epsilon_alpha2_beta1",
        "epsilon_alpha2_beta1_flat", "deconvnet", "guided_backprop", "excitation_backprop", "beta_smooth",
        "attn_lrp", "cp_lrp",
    }


def test_unknown_composite_name_lists_registered_names():
    with pytest.raises(KeyError, match="epsilon_gamma_box.*epsilon_plus"):
        get_composite("epsilon_gama_box")
    with pytest.raises(KeyError, match="unknown composite 'nope'; registered composites: .*beta_smooth"):
        COMPOSITES["nope"]
    assert "nope" not in COMPOSITES and COMPOSITES.get("nope") is None


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


# the stabilizer absorbs a fraction eps / z of the relevance by design; a tiny one isolates the rule itself
@pytest.mark.parametrize("rule", [rules.Epsilon(1e-12, zero_params="bias"), rules.ZPlus(1e-12, zero_params="bias"),
                                  rules.Gamma(0.25, 1e-12, zero_params="bias")],
                         ids=lambda rule: type(rule).__name__)
@pytest.mark.parametrize("net", ["mlp", "cnn"])
def test_rules_conserve_relevance_on_bias_free_relu_nets(rule, net):
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


@pytest.mark.parametrize(
    "build_model, canonizer, shape",
    [
        (cnn_with_batch_norm, canonizers.SequentialMergeBatchNorm, (3, 12, 12)),
        (small_vgg_bn, VGGCanonizer, (3, 32, 32)),
        (resnet18, ResNetCanonizer, (3, 32, 32)),
    ],
)
def test_canonized_forward_equals_original_and_is_undone_exactly(build_model, canonizer, shape):
    torch.manual_seed(2)
    model = randomize_batch_norms(build_model(), eps=1e-5)
    input = torch.randn(2, *shape)
    before = model_state(model)
    expected = model(input)
    instances = canonizer().apply(model)
    assert instances
    canonized = model(input)
    for instance in reversed(instances):
        instance.remove()
    torch.testing.assert_close(canonized, expected, rtol=1e-12, atol=1e-12)
    assert_same_state(before, model_state(model))
    assert torch.equal(model(input), expected)


def test_merge_batch_norm_works_with_default_eps_and_bias_free_convolution():
    torch.manual_seed(3)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, bias=False), torch.nn.BatchNorm2d(4)).eval()
    randomize_batch_norms(model, eps=1e-5)
    input = torch.randn(2, 3, 6, 6)
    expected = model(input)
    instances = canonizers.SequentialMergeBatchNorm().apply(model)
    assert model[0].bias is not None
    torch.testing.assert_close(model(input), expected, rtol=1e-12, atol=1e-12)
    for instance in instances:
        instance.remove()
    assert model[0].bias is None and "forward" not in model[1].__dict__


def test_named_merge_batch_norm_and_unknown_names():
    model = cnn_with_batch_norm()
    input = torch.randn(2, 3, 12, 12)
    expected = model(input)
    instances = canonizers.NamedMergeBatchNorm([(("0",), "1"), (("6",), "7")]).apply(model)
    assert len(instances) == 2
    torch.testing.assert_close(model(input), expected, rtol=1e-12, atol=1e-12)
    for instance in instances:
        instance.remove()
    with pytest.raises(KeyError, match="nope"):
        canonizers.NamedMergeBatchNorm([(("nope",), "1")]).apply(model)


@pytest.mark.parametrize("name", NAMES)
def test_context_restores_model_bitwise(name):
    torch.manual_seed(4)
    model = cnn_with_batch_norm()
    model.train()
    model[0].weight.requires_grad_(False)
    model[11].weight.grad = torch.randn_like(model[11].weight)
    before = model_state(model)
    input = torch.randn(2, 3, 12, 12)
    composite = build(name, input, canonizers=[canonizers.SequentialMergeBatchNorm()])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        attribute(composite, model, input, torch.tensor([0, 1]))
    assert_same_state(before, model_state(model))


@pytest.mark.parametrize("name", ["epsilon_gamma_box", "guided_backprop"])
def test_context_restores_model_after_exception(name):
    model = resnet18()
    before = model_state(model)
    input = torch.randn(1, 3, 32, 32, requires_grad=True)
    composite = build(name, input, canonizers=[ResNetCanonizer()])
    with pytest.raises(RuntimeError, match="boom"):
        with composite.context(model) as modified:
            torch.autograd.grad(modified(input).sum(), input)
            raise RuntimeError("boom")
    assert_same_state(before, model_state(model))
    assert composite.rule_map == {} and not composite.handles


def test_register_twice_is_refused_and_remove_is_idempotent():
    model = mlp()
    composite = composites.EpsilonPlus()
    composite.register(model)
    with pytest.raises(RuntimeError, match="already registered"):
        composite.register(model)
    composite.remove()
    composite.remove()
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


@pytest.mark.parametrize("name", NAMES)
def test_inplace_relus_give_the_same_relevance_as_out_of_place(name):
    torch.manual_seed(5)
    inplace, out_of_place = cnn_with_batch_norm(inplace=True), cnn_with_batch_norm(inplace=False)
    out_of_place.load_state_dict(inplace.state_dict())
    input = torch.randn(3, 3, 12, 12)
    target = torch.tensor([0, 3, 4])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = attribute(build(name, input, canonizers=[canonizers.SequentialMergeBatchNorm()]), out_of_place, input, target)
        actual = attribute(build(name, input, canonizers=[canonizers.SequentialMergeBatchNorm()]), inplace, input, target)
    torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-12)


class _TwiceUsed(torch.nn.Module):
    def __init__(self, shared: bool):
        super().__init__()
        self.first = torch.nn.Linear(6, 6)
        self.second = self.first if shared else copy.deepcopy(self.first)
        self.relu = torch.nn.ReLU()
        self.relu2 = self.relu if shared else torch.nn.ReLU()
        self.head = torch.nn.Linear(6, 2)

    def forward(self, x):
        return self.head(self.relu2(self.second(self.relu(self.first(x)))))


@pytest.mark.parametrize("name", ["epsilon_plus", "epsilon_alpha2_beta1", "excitation_backprop", "beta_smooth"])
def test_module_called_twice_is_attributed_per_call(name):
    torch.manual_seed(6)
    shared = _TwiceUsed(shared=True).eval()
    unrolled = _TwiceUsed(shared=False).eval()
    unrolled.load_state_dict(shared.state_dict(), strict=False)
    unrolled.second.load_state_dict(shared.first.state_dict())
    input = torch.randn(4, 6)
    target = torch.tensor([0, 1, 1, 0])
    expected = attribute(build(name, input), unrolled, input, target)
    actual = attribute(build(name, input), shared, input, target)
    torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-12)


def test_uncovered_layers_are_named_in_a_warning():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    composite = composites.EpsilonPlus()
    with pytest.warns(UserWarning, match=r"no rule covers these layers.*\b1\b"):
        with composite.context(model):
            assert composite.uncovered == ["1"]


def test_relu_only_composites_do_not_warn_about_linear_layers():
    model = mlp()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with composites.GuidedBackprop().context(model):
            pass


def test_inactive_gives_plain_gradient():
    torch.manual_seed(7)
    model = mlp()
    input = torch.randn(3, 10, requires_grad=True)
    composite = composites.EpsilonAlpha2Beta1()
    with composite.context(model):
        with composite.inactive():
            gradient, = torch.autograd.grad(model(input).sum(), input)
        modified, = torch.autograd.grad(model(input).sum(), input)
    plain, = torch.autograd.grad(model(input).sum(), input)
    torch.testing.assert_close(gradient, plain)
    assert not torch.allclose(modified, plain)


def test_rule_map_names_every_hooked_layer():
    model = resnet18()
    composite = composites.EpsilonPlusFlat(canonizers=[ResNetCanonizer()])
    with composite.context(model):
        rule_map = dict(composite.rule_map)
    assert isinstance(rule_map["conv1"], rules.Flat)
    assert isinstance(rule_map["layer1.0.conv2"], rules.ZPlus)
    assert isinstance(rule_map["layer1.0.canonizer_sum"], rules.Norm)
    assert isinstance(rule_map["avgpool"], rules.Norm)
    assert isinstance(rule_map["fc"], rules.Epsilon)
    assert isinstance(rule_map["layer1.0.bn1"], rules.Pass)
    assert "maxpool" not in rule_map
    assert repr(rule_map["fc"]) == "Epsilon(epsilon=1e-06, zero_params=None)"


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


def test_zbox_per_channel_bounds_equal_full_size_bounds():
    torch.manual_seed(8)
    model = cnn_with_batch_norm()
    input = torch.rand(2, 3, 12, 12)
    low, high = torch.tensor([-1.0, -2.0, -0.5]).view(1, 3, 1, 1), torch.tensor([1.0, 2.0, 1.5]).view(1, 3, 1, 1)
    full = composites.EpsilonGammaBox(low.expand_as(input).clone(), high.expand_as(input).clone())
    per_channel = composites.EpsilonGammaBox(low, high)
    target = torch.tensor([1, 2])
    torch.testing.assert_close(attribute(per_channel, model, input, target), attribute(full, model, input, target))


def test_stabilizer_moves_denominators_away_from_zero_with_sign_of_zero_positive():
    values = torch.tensor([-2.0, -1e-9, 0.0, 1e-9, 3.0])
    epsilon = 1e-6
    torch.testing.assert_close(
        Stabilizer(epsilon)(values), torch.tensor([-2.0 - epsilon, -1e-9 - epsilon, epsilon, 1e-9 + epsilon, 3.0 + epsilon])
    )
    torch.testing.assert_close(
        Stabilizer(epsilon, clip=True)(values), torch.tensor([-2.0, -epsilon, epsilon, epsilon, 3.0])
    )
    assert Stabilizer.ensure(0.5).epsilon == 0.5 and Stabilizer.ensure(torch.abs) is torch.abs
    with pytest.raises(TypeError, match="float or a callable"):
        Stabilizer.ensure("big")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_stabilizer_is_exactly_d_plus_signed_epsilon_and_sign_of_negative_zero_is_positive(dtype):
    generator = torch.Generator().manual_seed(0)
    values = torch.cat([torch.randn(4096, generator=generator), torch.tensor([0.0, -0.0, 1e-30, -1e-30, 1e30])]).to(dtype)
    for epsilon in (1e-6, 0.25, 0.0):
        stabilized = Stabilizer(epsilon)(values)
        shift = torch.tensor([epsilon if value >= 0 else -epsilon for value in values.tolist()], dtype=dtype)
        assert torch.equal(stabilized, values + shift)
        assert not torch.signbit(stabilized[values == 0]).any()


def test_sum_layer_and_norm_rule_split_relevance_proportionally():
    layer = Sum(dim=-1)
    input = torch.tensor([[[1.0, 3.0], [2.0, -1.0]]], requires_grad=True)
    composite = composites.LayerMapComposite([(Sum, rules.Norm(stabilizer=1e-12))])
    with composite.context(layer):
        relevance, = torch.autograd.grad(layer(input), input, torch.tensor([[4.0, 10.0]]))
    torch.testing.assert_close(relevance, torch.tensor([[[1.0, 3.0], [20.0, -10.0]]]))


def test_composite_without_grad_leaves_forward_unchanged():
    model = mlp()
    input = torch.randn(2, 10)
    expected = model(input)
    with composites.EpsilonGammaBox(low=-torch.ones(1), high=torch.ones(1)).context(model):
        with torch.no_grad():
            assert torch.equal(model(input), expected)
        assert torch.equal(model(input.requires_grad_()).detach(), expected)


def test_custom_composite_subclass_with_mapping():
    class OnlyLinear(Composite):
        def mapping(self, ctx, name, module):
            return rules.Epsilon(0.25) if isinstance(module, torch.nn.Linear) else None

    model = mlp()
    composite = OnlyLinear()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with composite.context(model):
            assert sorted(composite.rule_map) == ["0", "2", "4"]
