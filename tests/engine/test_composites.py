"""The composites (lrp_lightning.composites) and their contexts, independently of any oracle: the registry,
bitwise restoration of the model (also after an exception), in-place and twice-called modules, the
warnings about uncovered layers, the rule map. The rules, canonizers and the stabilizer have test files of
their own (test_rules.py, test_canonizers.py, test_core.py)."""
import copy
import warnings

import pytest
import torch

from lrp_lightning import canonizers, composites, rules
from lrp_lightning.composites import COMPOSITES, get_composite
from lrp_lightning.core import Composite
from lrp_lightning.torchvision import ResNetCanonizer


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


# the stabilizer absorbs a fraction eps / z of the relevance by design; a tiny one isolates the rule itself


@pytest.mark.parametrize("name", NAMES)
def test_context_restores_model_bitwise(name, assert_same_state, attribute, cnn_with_batch_norm, model_state):
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
def test_context_restores_model_after_exception(name, assert_same_state, model_state, resnet18):
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


def test_register_twice_is_refused_and_remove_is_idempotent(mlp):
    model = mlp()
    composite = composites.EpsilonPlus()
    composite.register(model)
    with pytest.raises(RuntimeError, match="already registered"):
        composite.register(model)
    composite.remove()
    composite.remove()
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


@pytest.mark.parametrize("name", NAMES)
def test_inplace_relus_give_the_same_relevance_as_out_of_place(name, attribute, cnn_with_batch_norm):
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
def test_module_called_twice_is_attributed_per_call(name, attribute):
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


def test_relu_only_composites_do_not_warn_about_linear_layers(mlp):
    model = mlp()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with composites.GuidedBackprop().context(model):
            pass


def test_inactive_gives_plain_gradient(mlp):
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


def test_rule_map_names_every_hooked_layer(resnet18):
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


def test_composite_without_grad_leaves_forward_unchanged(mlp):
    model = mlp()
    input = torch.randn(2, 10)
    expected = model(input)
    with composites.EpsilonGammaBox(low=-torch.ones(1), high=torch.ones(1)).context(model):
        with torch.no_grad():
            assert torch.equal(model(input), expected)
        assert torch.equal(model(input.requires_grad_()).detach(), expected)


def test_custom_composite_subclass_with_mapping(mlp):
    class OnlyLinear(Composite):
        def mapping(self, ctx, name, module):
            return rules.Epsilon(0.25) if isinstance(module, torch.nn.Linear) else None

    model = mlp()
    composite = OnlyLinear()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with composite.context(model):
            assert sorted(composite.rule_map) == ["0", "2", "4"]
