"""zennit 0.5.1's public names and behaviours beyond the composites, checked against zennit as a black-box oracle
(or against hand-computed values), including the three places where we used to differ from zennit."""
import functools
import io
import warnings

import numpy as np
import pytest
import torch
from torch import nn

zennit_attribution = pytest.importorskip("zennit.attribution")
zennit_cmap = pytest.importorskip("zennit.cmap")
zennit_composites = pytest.importorskip("zennit.composites")
zennit_core = pytest.importorskip("zennit.core")
zennit_image = pytest.importorskip("zennit.image")
zennit_rules = pytest.importorskip("zennit.rules")

from lrp_lightning import attribution, canonizers, cmap, composites, core, image, rules, torchvision, types  # noqa: E402


pytestmark = pytest.mark.usefixtures("float64_default")


def assert_relatively_close(expected: torch.Tensor, actual: torch.Tensor, rtol: float = 1e-9) -> None:
    scale = expected.abs().max()
    assert scale > 0
    assert ((expected - actual).abs().max() / scale).item() < rtol


def conv_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 5, 3, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(5 * 6 * 6, 4),
    )


def pixel_box(input: torch.Tensor) -> dict:
    return {"low": torch.full_like(input, input.min().item()), "high": torch.full_like(input, input.max().item())}


# --- the three semantic fixes -------------------------------------------------------------------

def test_mixed_composite_offers_every_module_to_every_sub_composite(attribute):
    model, input = conv_net(), torch.randn(2, 3, 6, 6)
    target = torch.tensor([1, 3])

    def mixed(module):
        return module.MixedComposite([
            module.NameMapComposite([(["0"], (rules if module is composites else zennit_rules).Epsilon())]),
            module.EpsilonGammaBox(**pixel_box(input)),
        ])

    ours = mixed(composites)
    with ours.context(model):
        assert isinstance(ours.rule_map["0"], rules.Epsilon)
        assert isinstance(ours.rule_map["2"], rules.Gamma)  # the box's first layer was layer 0: no ZBox anywhere
        assert not any(isinstance(rule, rules.ZBox) for rule in ours.rule_map.values())
    assert_relatively_close(attribute(mixed(zennit_composites), model, input, target), attribute(ours, model, input, target))


def activation_net() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4).eval(), nn.LeakyReLU(0.2), nn.AvgPool2d(2), nn.ELU(),
        nn.Flatten(), nn.Linear(4 * 2 * 2, 6), nn.Tanh(), nn.Linear(6, 3),
    )


def test_excitation_backprop_keeps_the_plain_gradient_of_activations_and_batch_norm(attribute):
    model, input = activation_net(), torch.randn(3, 3, 6, 6)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    target = torch.tensor([0, 2, 1])
    ours = composites.ExcitationBackprop()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with ours.context(model):
            assert set(ours.rule_map) == {"0", "3", "6", "8"}
        actual = attribute(ours, model, input, target)
    assert_relatively_close(attribute(zennit_composites.ExcitationBackprop(), model, input, target), actual)


class Squash(nn.Module):
    """A non-ReLU activation whose gradient is negative for negative inputs."""

    def forward(self, x):
        return x * x.abs() - 0.5 * x


@pytest.mark.parametrize("activation", [nn.Tanh, nn.LeakyReLU, Squash, functools.partial(nn.LeakyReLU, 0.1, inplace=True)],
                         ids=["tanh", "leaky_relu", "squash", "inplace_leaky_relu"])
@pytest.mark.parametrize("name", ["ReLUGuidedBackprop", "ReLUDeconvNet", "ReLUBetaSmooth"])
def test_relu_rules_on_other_modules_behave_as_zennit(name, activation):
    torch.manual_seed(2)
    input = torch.randn(4, 7, requires_grad=True)
    grad_output = torch.randn(4, 7)
    module = activation()
    results = []
    for rule in (getattr(zennit_rules, name)(), getattr(rules, name)()):
        handles = rule.register(module)
        try:
            results.append(torch.autograd.grad(module(input.clone()), input, grad_output)[0])
        finally:
            handles.remove()
    theirs, ours = results
    if name == "ReLUBetaSmooth" and getattr(module, "inplace", False):
        # zennit reads the input of an in-place module after the module overwrote it
        theirs = grad_output * torch.sigmoid(10.0 * input.detach())
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-12)
    if name == "ReLUGuidedBackprop":
        true_gradient, = torch.autograd.grad(module(input.clone()), input, grad_output)
        torch.testing.assert_close(ours, true_gradient * (grad_output > 0), rtol=0, atol=0)


# --- core: the custom-hook protocol of zennit's how-to ------------------------------------------

class GradTimesInput(core.Hook):
    def forward(self, module, input, output):
        self.stored_tensors["input"] = input

    def backward(self, module, grad_input, grad_output):
        return (self.stored_tensors["input"][0] * grad_input[0],)


class CountingHook(core.Hook):
    """Keeps per-module state: the shape of the module's input."""

    def forward(self, module, input, output):
        self.stored_tensors.setdefault("shapes", []).append(tuple(input[0].shape))


def test_custom_hook_gets_the_true_gradient_and_may_replace_it():
    torch.manual_seed(3)
    module, input = nn.Linear(5, 3), torch.randn(2, 5, requires_grad=True)
    grad_output = torch.randn(2, 3)
    handles = GradTimesInput().register(module)
    try:
        relevance, = torch.autograd.grad(module(input), input, grad_output)
    finally:
        handles.remove()
    torch.testing.assert_close(relevance, input.detach() * (grad_output @ module.weight.detach()), rtol=0, atol=1e-12)

    class Ignore(core.Hook):
        def backward(self, module, grad_input, grad_output):
            return grad_output

    relu = nn.ReLU()
    handles = Ignore().register(relu)
    try:
        passed, = torch.autograd.grad(relu(input), input, torch.ones_like(input))
    finally:
        handles.remove()
    assert torch.equal(passed, torch.ones_like(input))


def test_a_hook_with_only_a_forward_keeps_the_plain_gradient():
    for inplace in (False, True):
        model = nn.Sequential(nn.Linear(3, 3), nn.ReLU(inplace=inplace))
        input = torch.randn(2, 3, requires_grad=True)
        hook = CountingHook()
        handles = hook.register(model[1])
        try:
            hooked, = torch.autograd.grad(model(input).sum(), input)
            shapes = hook.stored_tensors["shapes"]
        finally:
            handles.remove()
        assert torch.equal(hooked, torch.autograd.grad(model(input).sum(), input)[0])
        assert shapes == [(2, 3)]
        assert hook.stored_tensors == {}, "removing the handles drops what the hook stored, as in zennit"


def test_every_module_gets_its_own_copy_of_a_hook():
    model = nn.Sequential(nn.Linear(5, 4), nn.Linear(4, 3))
    template = CountingHook()
    composite = composites.LayerMapComposite([(nn.Linear, template)])
    with composite.context(model):
        copies = dict(composite.rule_map)
        assert set(composite.hook_refs) == set(copies.values()) and template not in composite.hook_refs
        model(torch.randn(2, 5, requires_grad=True))
        assert copies["0"].stored_tensors["shapes"] == [(2, 5)] and copies["1"].stored_tensors["shapes"] == [(2, 4)]
    assert template.stored_tensors == {} and not copies["0"].stored_tensors


def test_param_mod_is_a_context_manager_and_requires_its_parameters():
    module = nn.Linear(3, 2)
    weight = module.weight
    with core.ParamMod(lambda param, name: param.clamp(min=0), zero_params="bias")(module) as modified:
        assert modified is module
        assert torch.equal(module.weight, weight.detach().clamp(min=0)) and torch.equal(module.bias, torch.zeros(2))
    assert module.weight is weight
    with pytest.raises(RuntimeError, match="lacks the parameters"):
        with core.ParamMod(lambda param, name: param, param_keys=["weight", "gain"])(module):
            pass
    assert module.weight is weight


def test_core_helpers_match_zennit():
    values = torch.tensor([[1.0, -2.0, 0.0], [3.0, 0.5, -0.1]])
    for kwargs in ({}, {"epsilon": 0.1}, {"epsilon": 1.0, "clip": True}, {"epsilon": 0.1, "norm_scale": True},
                   {"epsilon": 0.3, "norm_scale": True, "dim": (0,)}):
        assert torch.equal(core.stabilize(values, **kwargs), zennit_core.stabilize(values, **kwargs))
        assert torch.equal(core.Stabilizer(**kwargs)(values), zennit_core.Stabilizer(**kwargs)(values))
    for value, shape in ((3.0, (2, 3)), (torch.arange(2.0), (2, 3)), (torch.ones(1, 3), (2, 3))):
        assert torch.equal(core.expand(value, shape), zennit_core.expand(value, shape))
    assert torch.equal(core.expand(torch.arange(4.0).view(4, 1), (2, 3), cut_batch_dim=True),
                       torch.tensor([[0.0] * 3, [1.0] * 3]))
    with pytest.raises(RuntimeError):
        core.expand(torch.ones(2, 3, 4), (2, 3))
    for names in ("bias", ["bias", "weight"]):
        ours, theirs = (module.zero_wrap(names)(lambda param, name: param + 1) for module in (core, zennit_core))
        for name in ("bias", "weight", "other"):
            assert torch.equal(ours(torch.ones(2), name), theirs(torch.ones(2), name))
    tensor = torch.randn(2, requires_grad=True)
    aliased, = core.Identity.apply(tensor)
    assert torch.equal(aliased, tensor) and aliased.grad_fn is not None


def test_composite_context_and_removable_handle():
    model = nn.Sequential(nn.Linear(3, 2))
    composite = composites.EpsilonPlus()
    context = composite.context(model)
    assert isinstance(context, core.CompositeContext)
    with context as modified:
        assert modified is model and composite.handles
    assert not composite.handles and not model[0]._forward_hooks

    class Undo:
        removed = 0

        def remove(self):
            Undo.removed += 1

    undo = Undo()
    core.RemovableHandle(undo).remove()
    del undo
    assert Undo.removed == 1


def test_basic_hook_default_is_a_stabilized_epsilon_rule():
    torch.manual_seed(4)
    module, input = nn.Linear(4, 3), torch.randn(2, 4)

    def relevance(hook):
        leaf = input.clone().requires_grad_(True)
        handles = hook.register(module)
        try:
            return torch.autograd.grad(module(leaf), leaf, torch.ones(2, 3))[0]
        finally:
            handles.remove()

    assert_relatively_close(relevance(zennit_core.BasicHook()), relevance(core.BasicHook()))
    output = module(input).detach()
    by_hand = input * ((torch.ones(2, 3) / (output + 0.5 * torch.where(output >= 0, 1.0, -1.0))) @ module.weight.detach())
    assert_relatively_close(by_hand, relevance(core.BasicHook(stabilizer=0.5)))


# --- rules' parameter modifiers -----------------------------------------------------------------

def test_param_mods_match_zennit():
    param = torch.tensor([-1.5, 0.0, 2.0])
    for name, kwargs in (("NoMod", {}), ("ClampMod", {"min": 0.0}), ("ClampMod", {"max": 0.0}),
                         ("GammaMod", {"gamma": 0.5, "min": 0.0}), ("GammaMod", {"gamma": 0.3, "max": 0.0})):
        ours, theirs = getattr(rules, name)(**kwargs), getattr(zennit_rules, name)(**kwargs)
        assert torch.equal(ours.modifier(param, "weight"), theirs.modifier(param, "weight"))
    assert rules.NoMod(zero_params="bias").zero_params == ["bias"]
    for zero_params in (None, "weight", ["a", "b"]):
        assert rules.zero_bias(zero_params) == zennit_rules.zero_bias(zero_params)


# --- attribution --------------------------------------------------------------------------------

def test_attribution_helpers_match_zennit():
    obj = object()
    assert attribution.identity(obj) is obj and attribution.constant(obj)(1, key=2) is obj
    torch.manual_seed(5)
    input, mask = torch.randn(2, 3, 4), torch.rand(2, 3, 4) > 0.5
    for kwargs in ({}, {"invert": True}, {"fill_fn": lambda x: x * 0.5 + 1}):
        assert torch.equal(attribution.occlude_independent(input, mask, **kwargs),
                           zennit_attribution.occlude_independent(input, mask, **kwargs))


def test_attributors_take_zennits_arguments():
    model, input = conv_net(), torch.rand(2, 3, 6, 6)
    ones = torch.ones_like
    with zennit_attribution.Gradient(model, attr_output=ones) as attributor:
        _, expected = attributor(input)
    with attribution.Gradient(model, attr_output=ones) as attributor:
        torch.testing.assert_close(attributor(input)[1], expected)
    baseline_fn = functools.partial(torch.full_like, fill_value=0.2)
    with zennit_attribution.IntegratedGradients(model, baseline_fn=baseline_fn, n_iter=5) as attributor:
        _, expected = attributor(input, torch.eye(4)[[1, 1]])
    _, actual = attribution.IntegratedGradients(model, None, None, False, None, baseline_fn, 5)(input, 1)
    torch.testing.assert_close(actual, expected)
    with pytest.raises(ValueError, match="baseline_fn"):
        attribution.IntegratedGradients(model, baseline_fn=baseline_fn, baseline=torch.zeros(1))
    for window in (2.5, "a", None, (2, 2.0)):
        with pytest.raises(TypeError, match="int or a tuple of ints"):
            attribution.Occlusion(model, window=window)
    smooth = attribution.SmoothGrad(model, None, None, False, None, 0.0, 3)
    assert smooth.noise_level == 0.0 and smooth.n_iter == 3


def test_gradient_with_create_graph_is_differentiable():
    model, input = nn.Sequential(nn.Linear(3, 3), nn.Tanh(), nn.Linear(3, 2)), torch.randn(2, 3)
    _, gradient = attribution.Gradient(model, create_graph=True)(input, torch.ones(2, 2))
    assert gradient.requires_grad
    second, = torch.autograd.grad(gradient.sum(), list(model.parameters())[0])
    assert second.abs().sum() > 0


def test_attributor_inactive_gives_plain_gradients():
    model, input = conv_net(), torch.rand(2, 3, 6, 6, requires_grad=True)
    plain, = torch.autograd.grad(model(input), input, torch.eye(4)[[1, 1]])
    for attributor in (attribution.Gradient(model, composites.EpsilonPlusFlat()), attribution.Gradient(model)):
        with attributor:
            with attributor.inactive():
                torch.testing.assert_close(torch.autograd.grad(model(input), input, torch.eye(4)[[1, 1]])[0], plain)


def test_attributor_uses_a_composite_registered_by_the_user():
    model, input = conv_net(), torch.rand(2, 3, 6, 6)
    composite = composites.EpsilonPlusFlat()
    expected = attribution.Gradient(model, composite)(input, 1)[1]
    with composite.context(model):
        torch.testing.assert_close(attribution.Gradient(model, composite)(input, 1)[1], expected)
        assert composite.handles


# --- canonizers, types --------------------------------------------------------------------------

def test_canonizer_base_apply_returns_a_list_and_attributes_are_set_as_given():
    class Nothing(canonizers.Canonizer):
        def apply(self, root_module):
            return super().apply(root_module)

        def remove(self):
            pass

    assert Nothing().apply(nn.Linear(2, 2)) == []
    model = nn.Sequential(nn.Linear(2, 2))

    def doubled(x):
        return 2 * x

    instances = canonizers.AttributeCanonizer(
        lambda name, module: {"forward": doubled} if isinstance(module, nn.Linear) else None
    ).apply(model)
    input = torch.randn(1, 2)
    torch.testing.assert_close(model(input), 2 * input)
    for instance in instances:
        instance.remove()
    assert "forward" not in model[0].__dict__


def test_resnet_block_canonizers_are_public():
    assert set(type(c) for c in torchvision.ResNetCanonizer().canonizers) >= {
        torchvision.ResNetBasicBlockCanonizer, torchvision.ResNetBottleneckCanonizer}


def test_convolution_type_groups():
    assert isinstance(nn.Conv2d(1, 1, 1), types.ConvolutionStandard)
    assert not isinstance(nn.ConvTranspose2d(1, 1, 1), types.ConvolutionStandard)
    assert isinstance(nn.ConvTranspose1d(1, 1, 1), types.ConvolutionTranspose)
    assert all(isinstance(m, types.Convolution) for m in (nn.Conv3d(1, 1, 1), nn.ConvTranspose3d(1, 1, 1)))


# --- colour maps and images ---------------------------------------------------------------------

CMSL_SOURCES = ["000,fff", "00f,80:fff,f00", "0ff,00f,80:000,f00,ff0,fff", "000,a0:f00,fff", "3f:ccc,f0f,000",
                "55:00f,55:ddd,aa:ddd,aa:f00", "ff00ff,00a000", "1f:fff,f0f,000", " 0055a4, 80:FFF,ef4135"]


@pytest.mark.parametrize("source", CMSL_SOURCES)
def test_cmsl_colour_maps_match_zennit(source):
    ours, theirs = cmap.ColorMap(source), zennit_cmap.ColorMap(source)
    assert ours.source == source
    for level in (1.0, 2.0, 0.5, 1.37, 0.0):
        assert np.array_equal(ours.palette(level), theirs.palette(level))
    values = np.random.RandomState(0).rand(3, 50) * 1.2 - 0.1
    np.testing.assert_allclose(ours(values), theirs(values), rtol=0, atol=1e-12)


def test_cmsl_errors_tokens_and_lazy_cache():
    for bad in ("fff", "000,ff", "80:000,10:fff", "xyz,000", "000;fff", "", "100:000,fff"):
        with pytest.raises(RuntimeError, match="Compilation of ColorMap failed"):
            cmap.ColorMap(bad)
    colour_map = cmap.ColorMap("000,fff")
    colour_map.source = "f00,0f0"
    assert colour_map.palette()[0].tolist() == [255, 0, 0]
    assert cmap.CMapToken("index", "80", 4).pos == 4 and cmap.ColorNode(128, np.zeros(3)).index == 128
    cache = cmap.LazyColorMapCache({"reds": "111,f11"})
    assert cache["reds"] is cache["reds"] and cache["reds"].source == "111,f11"
    with pytest.raises(KeyError):
        cache["blues"]


def test_image_cmaps_are_zennits():
    assert sorted(image.CMAPS) == sorted(zennit_image.CMAPS._sources)
    for name in image.CMAPS:
        assert np.array_equal(image.palette(name, 1.5), zennit_image.palette(name, 1.5))
    assert image.get_cmap("1f:fff,f0f,000").source == "1f:fff,f0f,000"
    # the heatmap helpers take CMSL too
    assert cmap.get_cmap("00f,80:fff,f00").source == "00f,80:fff,f00"
    assert image.heatmap(torch.zeros(1, 1, 2, 2), cmap="f00,f00").permute(0, 2, 3, 1).reshape(-1, 3).tolist() == [
        [255, 0, 0]] * 4


@pytest.mark.parametrize("shape", [(5, 1, 3, 4), (5, 3, 4, 5), (7, 2, 2), (5, 3, 4, 3), (10, 1, 2, 2)])
def test_gridify_matches_zennit(shape):
    array = np.random.RandomState(1).randn(*shape)
    assert np.array_equal(image.gridify(array), zennit_image.gridify(array))
    assert np.array_equal(image.gridify(array, shape=(1, shape[0]), fill_value=7.0),
                          zennit_image.gridify(array, shape=(1, shape[0]), fill_value=7.0))


def test_interval_norm_bounds_and_imgify_match_zennit():
    random = np.random.RandomState(2)
    array = random.randn(4, 3, 5, 6)
    for symmetric in (False, True):
        for dim in (None, (2, 3)):
            for ours, theirs in zip(image.interval_norm_bounds(array, symmetric, dim),
                                    zennit_image.interval_norm_bounds(array, symmetric, dim)):
                assert np.array_equal(ours, theirs)
    for obj, kwargs in ((array[0], {}), (array[0].transpose(1, 2, 0), {"symmetric": True}),
                        (array[0], {"vmin": -0.5, "vmax": 0.5}), (array, {"grid": True}),
                        (array, {"grid": (1, 4), "symmetric": True}), (array[:3], {"grid": True, "gridfill": 9})):
        assert np.array_equal(np.asarray(image.imgify(obj, **kwargs)), np.asarray(zennit_image.imgify(obj, **kwargs)))
    single = random.randn(5, 6)
    heatmap = image.imgify(torch.tensor(single), cmap="wred", level=2.0)
    # zennit's palette image cannot be read back with this Pillow; its RGB image of the same values can
    assert heatmap.mode == "P"
    assert np.array_equal(np.asarray(heatmap), np.asarray(zennit_image.imgify(np.stack([single] * 3)))[..., 0])
    assert np.array_equal(np.asarray(heatmap.getpalette()).reshape(-1, 3), zennit_image.palette("wred", 2.0))
    for bad in (np.zeros((2, 2, 2, 2)), np.zeros((4, 5, 5)), np.zeros(5)):
        with pytest.raises(TypeError):
            image.imgify(bad)
    buffer = io.BytesIO()
    image.imsave(buffer, single, format="png", symmetric=True)
    assert buffer.getvalue()[:4] == b"\x89PNG"
