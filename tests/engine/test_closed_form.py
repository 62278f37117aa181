"""The closed-form backward of every rule agrees with its generic autograd formulation."""
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from lrp_lightning import closed_form, composites, rules
from lrp_lightning.core import Stabilizer, fast_path



pytestmark = pytest.mark.usefixtures("float64_default")


LAYERS = {
    "linear": (lambda: torch.nn.Linear(7, 5), (7,)),
    "linear_nobias": (lambda: torch.nn.Linear(7, 5, bias=False), (7,)),
    "linear_3d_input": (lambda: torch.nn.Linear(7, 5), (3, 7)),
    "conv1d": (lambda: torch.nn.Conv1d(3, 4, 3, stride=2, padding=1), (3, 11)),
    "conv2d": (lambda: torch.nn.Conv2d(3, 4, 3, padding=1), (3, 6, 6)),
    "conv2d_strided_dilated": (lambda: torch.nn.Conv2d(3, 4, 3, stride=2, padding=2, dilation=2), (3, 9, 9)),
    "conv2d_groups": (lambda: torch.nn.Conv2d(4, 6, 3, groups=2, bias=False), (4, 6, 6)),
    "conv3d": (lambda: torch.nn.Conv3d(2, 3, 2), (2, 4, 4, 4)),
    "conv_transpose1d": (lambda: torch.nn.ConvTranspose1d(3, 4, 3, stride=2), (3, 5)),
    "conv_transpose2d": (lambda: torch.nn.ConvTranspose2d(3, 2, 3, stride=2, padding=1, output_padding=1), (3, 4, 4)),
    "conv_transpose2d_groups": (lambda: torch.nn.ConvTranspose2d(4, 2, 2, groups=2), (4, 3, 3)),
    "conv_transpose3d": (lambda: torch.nn.ConvTranspose3d(2, 2, 2), (2, 3, 3, 3)),
}


def make_rules(shape):
    low, high = -3 * torch.ones(1, *shape), 3 * torch.ones(1, *shape)
    return {
        "epsilon": lambda zp: rules.Epsilon(1e-6, zero_params=zp),
        "zplus": lambda zp: rules.ZPlus(zero_params=zp),
        "alpha2beta1": lambda zp: rules.AlphaBeta(2.0, 1.0, zero_params=zp),
        "alpha1beta0": lambda zp: rules.AlphaBeta(1.0, 0.0, zero_params=zp),
        "gamma": lambda zp: rules.Gamma(0.25, zero_params=zp),
        "zbox": lambda zp: rules.ZBox(low, high, zero_params=zp),
        "flat": lambda zp: rules.Flat(zero_params=zp),
        "wsquare": lambda zp: rules.WSquare(zero_params=zp),
    }


RULE_NAMES = ["epsilon", "zplus", "alpha2beta1", "alpha1beta0", "gamma", "zbox", "flat", "wsquare"]


def relevance(rule, layer, input, grad_output, fast, follow_inplace=False):
    model = torch.nn.Sequential(layer, torch.nn.ReLU(inplace=True)) if follow_inplace else layer
    composite = composites.NameMapComposite([(("0",) if follow_inplace else ("",), rule)])
    leaf = input.clone().requires_grad_()
    with fast_path(fast), composite.context(model):
        output = model(leaf)
        result, = torch.autograd.grad(output, leaf, grad_output)
    return result


@pytest.mark.parametrize("zero_params", [None, "bias"])
@pytest.mark.parametrize("sign", ["mixed", "nonnegative"])
@pytest.mark.parametrize("rule_name", RULE_NAMES)
@pytest.mark.parametrize("layer_name", sorted(LAYERS))
def test_closed_form_equals_generic(layer_name, rule_name, sign, zero_params):
    build, shape = LAYERS[layer_name]
    torch.manual_seed(0)
    layer = build()
    assert closed_form.supports(layer)
    input = torch.randn(2, *shape)
    if sign == "nonnegative":
        input = input.clamp(min=0)
    grad_output = torch.randn_like(layer(input))
    rule = make_rules(shape)[rule_name](zero_params)
    expected = relevance(rule, layer, input, grad_output, fast=False)
    actual = relevance(rule, layer, input, grad_output, fast=True)
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-9 * expected.abs().max().item())


@pytest.mark.parametrize("rule_name", ["epsilon", "gamma", "zbox"])
def test_closed_form_recomputes_an_output_overwritten_in_place(rule_name):
    torch.manual_seed(1)
    layer = torch.nn.Conv2d(3, 4, 3, padding=1)
    input = torch.randn(2, 3, 5, 5)
    grad_output = torch.randn(2, 4, 5, 5)
    rule = make_rules((3, 5, 5))[rule_name](None)
    expected = relevance(rule, layer, input, grad_output, fast=False, follow_inplace=True)
    actual = relevance(rule, layer, input, grad_output, fast=True, follow_inplace=True)
    torch.testing.assert_close(actual, expected, rtol=1e-8, atol=1e-12)


def test_unsupported_layers_take_the_generic_path():
    reflect = torch.nn.Conv2d(2, 2, 3, padding=1, padding_mode="reflect")
    assert not closed_form.supports(reflect)
    torch.manual_seed(2)
    input = torch.randn(1, 2, 4, 4)
    grad_output = torch.randn(1, 2, 4, 4)
    rule = rules.Gamma()
    torch.testing.assert_close(
        relevance(rule, reflect, input, grad_output, fast=True), relevance(rule, reflect, input, grad_output, fast=False)
    )


def test_composites_agree_between_paths_on_a_resnet(attribute, resnet18):
    from lrp_lightning.torchvision import ResNetCanonizer

    torch.manual_seed(3)
    model = resnet18()
    input = torch.rand(2, 3, 32, 32)
    target = torch.tensor([0, 4])
    for name in ["epsilon_gamma_box", "epsilon_plus_flat", "epsilon_alpha2_beta1"]:
        kwargs = {"low": torch.zeros(1, 3, 1, 1), "high": torch.ones(1, 3, 1, 1)} if name == "epsilon_gamma_box" else {}
        with fast_path(False):
            expected = attribute(composites.COMPOSITES[name](canonizers=[ResNetCanonizer()], **kwargs), model, input, target)
        actual = attribute(composites.COMPOSITES[name](canonizers=[ResNetCanonizer()], **kwargs), model, input, target)
        torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-9 * expected.abs().max().item())


def _custom_stabilizer(denominator: torch.Tensor) -> torch.Tensor:
    return denominator + 1e-3 * torch.where(denominator >= 0, 1.0, -1.0)


@pytest.mark.parametrize(
    "rule",
    [rules.Epsilon(_custom_stabilizer), rules.AlphaBeta(2.0, 1.0, _custom_stabilizer), rules.ZPlus(_custom_stabilizer),
     rules.Gamma(0.25, _custom_stabilizer), rules.Flat(_custom_stabilizer)],
    ids=lambda rule: type(rule).__name__,
)
@pytest.mark.parametrize("sign", ["mixed", "nonnegative"])
def test_closed_form_with_a_callable_stabilizer_equals_generic(rule, sign):
    torch.manual_seed(4)
    layer = torch.nn.Conv2d(3, 4, 3, padding=1)
    input = torch.randn(2, 3, 5, 5)
    if sign == "nonnegative":
        input = input.clamp(min=0)
    grad_output = torch.randn(2, 4, 5, 5)
    expected = relevance(rule, layer, input, grad_output, fast=False)
    torch.testing.assert_close(relevance(rule, layer, input, grad_output, fast=True), expected, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("name", ["epsilon_gamma_box", "epsilon_alpha2_beta1", "epsilon_plus_flat"])
def test_cached_derived_weights_follow_in_place_weight_updates(name, attribute):
    torch.manual_seed(5)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 4, 3), torch.nn.ReLU(),
        torch.nn.Flatten(), torch.nn.Linear(4, 2),
    )
    input = torch.rand(2, 3, 5, 5)
    target = torch.tensor([0, 1])
    kwargs = {"low": torch.zeros(1), "high": torch.ones(1)} if name == "epsilon_gamma_box" else {}
    composite = composites.COMPOSITES[name](**kwargs)
    with composite.context(model):
        leaf = input.clone().requires_grad_()
        torch.autograd.grad(model(leaf), leaf, torch.eye(2)[target])
        with torch.no_grad():
            for layer in (model[0], model[2]):
                layer.weight.mul_(-1.5)
        leaf = input.clone().requires_grad_()
        after_update, = torch.autograd.grad(model(leaf), leaf, torch.eye(2)[target])
    assert not composite.rule_map
    fresh = attribute(composites.COMPOSITES[name](**kwargs), model, input, target)
    torch.testing.assert_close(after_update, fresh)


class ConvolutionWeights(TorchDispatchMode):
    """Records the weight shapes of the forward convolutions and of the transposed maps (convolution input
    gradients) run while it is active."""

    def __init__(self):
        super().__init__()
        self.forward = []
        self.transposed = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten.convolution.default and not args[6]:
            self.forward.append(tuple(args[1].shape))
        elif func is torch.ops.aten.convolution_backward.default:
            self.transposed.append(tuple(args[2].shape))
        return func(*args, **(kwargs or {}))


def test_zbox_bounds_term_is_computed_once_and_follows_changed_bounds():
    """``W+ l + W- h`` does not depend on the input: computed in the first call only, and again when the bounds
    (or the weights) change in place."""
    torch.manual_seed(6)
    layer = torch.nn.Conv2d(3, 4, 3)
    low, high = -torch.rand(1, 3, 1, 1), torch.rand(1, 3, 1, 1)
    rule = rules.ZBox(low, high)
    grad_output = torch.randn(2, 4, 4, 4)
    convolutions = ConvolutionWeights()

    def fresh_relevance(input):
        return relevance(rules.ZBox(low.clone(), high.clone()), layer, input, grad_output, fast=True)

    handles = rule.register(layer)
    try:
        for step in range(3):
            input = torch.rand(2, 3, 6, 6) * 2 - 1
            if step == 2:
                with torch.no_grad():
                    rule.low.mul_(2.0)  # the bounds the rule holds, changed in place
                    low.mul_(2.0)
            leaf = input.clone().requires_grad_()
            with convolutions:
                output = layer(leaf)
                result, = torch.autograd.grad(output, leaf, grad_output)
            torch.testing.assert_close(result, fresh_relevance(input), rtol=1e-10, atol=1e-12)
    finally:
        handles.remove()
    bounds_maps = [shape for shape in convolutions.forward if shape[1] == 6]  # on [low, high] stacked on the channels
    assert len(bounds_maps) == 2, "the first call and the call after the bounds changed"


def gamma_by_the_equation(layer, input, output, grad_output, gamma, epsilon, zero_bias):
    """DESIGN's Gamma for a non-negative input, written out here: ``A = W + γW⁺``, ``B = W + γW⁻``, the
    outputs with ``z > 0`` divided by ``stab(A x + b + γb⁺)``, those with ``z < 0`` by ``stab(B x + b + γb⁻)``,
    ``z = 0`` passing nothing, ``R_x = x ⊙ (Aᵀ s_p + Bᵀ s_n)`` (the transposed maps by autograd)."""
    def forward(x, weight, bias=None):
        if isinstance(layer, torch.nn.Linear):
            return torch.nn.functional.linear(x, weight, bias)
        return torch.nn.functional.conv2d(x, weight, bias, padding=layer.padding)

    weight = layer.weight.detach()
    bias = None if layer.bias is None or zero_bias else layer.bias.detach()
    a, b = weight + gamma * weight.clamp(min=0), weight + gamma * weight.clamp(max=0)
    z_p = forward(input, a, None if bias is None else bias + gamma * bias.clamp(min=0))
    z_n = forward(input, b, None if bias is None else bias + gamma * bias.clamp(max=0))

    def stab(d):
        return d + epsilon * torch.where(d >= 0, 1.0, -1.0).to(d)

    s_p = grad_output * (output > 0) / stab(z_p)
    s_n = grad_output * (output < 0) / stab(z_n)
    leaf = input.clone().requires_grad_()
    transposed_a, = torch.autograd.grad(forward(leaf, a), leaf, s_p)
    transposed_b, = torch.autograd.grad(forward(leaf, b), leaf, s_n)
    return input * (transposed_a + transposed_b)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("zero_params", [None, "bias"])
@pytest.mark.parametrize("layer_name", ["linear", "conv2d"])
def test_fused_gamma_kernel_equals_the_in_place_path(layer_name, zero_params, bias):
    """The pure function compiled on CUDA computes what the CPU path computes, and both what the Gamma
    equation gives (float64, written out in the test)."""
    from lrp_lightning import fused

    torch.manual_seed(6)
    layer = torch.nn.Linear(7, 5, bias=bias) if layer_name == "linear" else torch.nn.Conv2d(3, 4, 3, padding=1, bias=bias)
    layer = layer.double()
    shape = (7,) if layer_name == "linear" else (3, 5, 5)
    input = torch.rand(2, *shape, dtype=torch.float64)
    output = layer(input).detach()
    grad_output = torch.randn_like(output)
    output.view(-1)[:3] = 0.0  # outputs with z = 0 pass nothing
    rule = rules.Gamma(0.3, zero_params=zero_params)
    map_ = closed_form.LinearMap(layer)
    expected = closed_form.gamma(map_, input, output, grad_output, False, 0.3, rule.stabilizer, zero_params)

    weight, effective_bias = closed_form._params(map_, closed_form._as_name_list(zero_params))
    original = layer.bias.detach() if bias else None
    bias_pos = None if effective_bias is None else effective_bias + 0.3 * effective_bias.clamp(min=0)
    bias_neg = None if effective_bias is None else effective_bias + 0.3 * effective_bias.clamp(max=0)
    zeros = torch.zeros(output.shape[map_.channel_dim])
    shift_pos = closed_form._difference(bias_pos, original, 1.0)
    shift_neg = closed_form._difference(bias_neg, original, 1.3)
    stacked = fused.gamma_stacked(
        output,
        map_.apply(input, map_.weight_pos),
        grad_output,
        closed_form._channels(zeros if shift_pos is None else shift_pos, map_, output),
        closed_form._channels(zeros if shift_neg is None else shift_neg, map_, output),
        0.3,
        rule.stabilizer.epsilon,
        map_.channel_dim,
    )
    actual = map_.apply_transposed(stacked, map_.concatenated([weight, map_.weight_pos], map_.weight_out_dim), input) * input
    torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-12)
    independent = gamma_by_the_equation(layer, input, output, grad_output, 0.3, rule.stabilizer.epsilon, zero_params == "bias")
    torch.testing.assert_close(actual, independent, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(expected, independent, rtol=1e-10, atol=1e-12)


def test_the_fused_branch_of_gamma_equals_the_in_place_branch(monkeypatch):
    """The code path taken on CUDA (here with the eager kernel) gives the CPU path's relevance."""
    torch.manual_seed(7)
    layer = torch.nn.Conv2d(3, 4, 3, padding=1)
    input = torch.rand(2, 3, 5, 5)
    grad_output = torch.randn(2, 4, 5, 5)
    rule = rules.Gamma(0.25)
    expected = relevance(rule, layer, input, grad_output, fast=True)
    monkeypatch.setattr(closed_form, "_fused_eligible", lambda output, layer, stabilizer: True)
    torch.testing.assert_close(relevance(rule, layer, input, grad_output, fast=True), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("rule", [rules.Epsilon(), rules.Gamma(0.25)], ids=["epsilon", "gamma"])
def test_output_changed_in_place_downstream_is_not_recomputed_on_the_cpu(rule):
    torch.manual_seed(21)
    model = torch.nn.Sequential(
        torch.nn.ReLU(), torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(inplace=True), torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 2)
    )
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    handles = rule.copy().register(model[1])
    try:
        output = model(x)
        convolutions = ConvolutionWeights()
        with convolutions:
            relevance, = torch.autograd.grad(output[:, 0].sum(), x)
    finally:
        handles.remove()
    # no forward map of the layer is run again; Gamma's one extra map W+ x (4 channels) remains
    assert sum(shape[0] for shape in convolutions.forward) == (0 if isinstance(rule, rules.Epsilon) else 4)
    with fast_path(False):
        handles = rule.copy().register(model[1])
        try:
            expected, = torch.autograd.grad(model(x)[:, 0].sum(), x)
        finally:
            handles.remove()
    torch.testing.assert_close(relevance, expected)


class SameStabilizer(Stabilizer):
    """The plain stabilizer under another type: the fast paths that fold it into other operations do not apply."""


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gamma_with_the_plain_stabilizer_folded_into_its_denominators_is_bitwise_the_stabilized_path(dtype):
    """For x >= 0 the plain stabilizer's epsilon is added with the bias shifts (the signs of the denominators are
    those of the output) and the output's sign enters as float masks; the values are bit for bit those of
    stabilizing the denominators and selecting with boolean masks."""
    torch.manual_seed(7)
    layer = torch.nn.Conv2d(3, 6, 3, padding=1).to(dtype)
    with torch.no_grad():
        layer.bias.copy_(torch.tensor([0.5, -0.5, 0.0, 1e-7, -1e-7, 2.0], dtype=dtype))
    input = torch.rand(2, 3, 5, 5, dtype=dtype)
    input[0, :, 0, 0] = 0.0
    grad_output = torch.randn(2, 6, 5, 5, dtype=dtype)
    folded = relevance(rules.Gamma(0.25, stabilizer=Stabilizer(1e-6)), layer, input, grad_output, fast=True)
    stabilized = relevance(rules.Gamma(0.25, stabilizer=SameStabilizer(1e-6)), layer, input, grad_output, fast=True)
    assert torch.equal(folded, stabilized)
    generic = relevance(rules.Gamma(0.25, stabilizer=Stabilizer(1e-6)), layer, input, grad_output, fast=False)
    torch.testing.assert_close(folded, generic, rtol=1e-5 if dtype == torch.float32 else 1e-10, atol=1e-7)


def test_gamma_runs_one_transposed_map_where_no_relevance_reaches_its_negative_outputs(attribute):
    """``s_n = 0`` after a ReLU: ``(W + gamma W+)^T s_p`` (the layer's width) instead of the stacked map of
    ``[W; W+]`` (twice the width); where relevance reaches negative outputs the stacked map remains. Both equal the
    generic path."""
    torch.manual_seed(22)
    # relevance reaches the first convolution only where its output is positive (the next rule multiplies by the
    # ReLU's output), the second one also at its negative outputs
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 6, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(6, 4, 3), torch.nn.Flatten(),
        torch.nn.Linear(4 * 3 * 3, 2),
    )
    composite = composites.NameMapComposite([
        (("0", "2"), rules.Gamma(0.25)), (("1",), rules.Pass()), (("4",), rules.Epsilon()),
    ])
    input = torch.rand(3, 3, 5, 5)
    target = torch.tensor([0, 1, 0])
    leaf = input.clone().requires_grad_()
    maps = ConvolutionWeights()
    with composite.context(model):
        output = model(leaf)
        with maps:
            actual, = torch.autograd.grad(output, leaf, torch.eye(2)[target])
    assert maps.transposed == [(8, 6, 3, 3), (6, 3, 3, 3)]
    with fast_path(False):
        expected = attribute(composite, model, input, target)
    torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-12)


def test_gamma_shortcut_is_checked_per_call_not_assumed():
    """The same layer followed by a ReLU gets relevance at a negative output from elsewhere (here: directly):
    the stacked map is taken, and the result is the generic one."""
    torch.manual_seed(23)
    layer = torch.nn.Conv2d(3, 4, 3, padding=1)
    input = torch.rand(2, 3, 5, 5)
    output = layer(input).detach()
    grad_output = torch.randn_like(output).mul_(output > 0)
    negative = (output < 0).nonzero()[0].tolist()
    maps = ConvolutionWeights()
    with maps:
        vanishing = relevance(rules.Gamma(0.25), layer, input, grad_output, fast=True)
    grad_output[tuple(negative)] = 1.0
    with maps:
        reaching = relevance(rules.Gamma(0.25), layer, input, grad_output, fast=True)
    assert maps.transposed == [(4, 3, 3, 3), (8, 3, 3, 3)]
    torch.testing.assert_close(reaching, relevance(rules.Gamma(0.25), layer, input, grad_output, fast=False))
    grad_output[tuple(negative)] = 0.0
    torch.testing.assert_close(vanishing, relevance(rules.Gamma(0.25), layer, input, grad_output, fast=False))


@pytest.mark.parametrize("epsilon", [1e-6, 0.0])
def test_gamma_passes_nothing_through_zero_outputs_on_either_path(epsilon):
    """Outputs ``z = 0`` pass nothing, also with relevance arriving there, and divide by no zero."""
    torch.manual_seed(24)
    layer = torch.nn.Conv2d(3, 4, 1, bias=False)
    input = torch.rand(2, 3, 4, 4)
    input[:, :, 0, 0] = 0.0  # every output at (0, 0) is 0, and so is gamma W+ x there
    output = layer(input).detach()
    for grad_output in (torch.randn_like(output).mul_(output >= 0), torch.randn_like(output)):
        grad_output[:, :, 0, 0] = 1.0
        actual = relevance(rules.Gamma(0.25, stabilizer=epsilon), layer, input, grad_output, fast=True)
        assert torch.isfinite(actual).all()
        expected = relevance(rules.Gamma(0.25, stabilizer=epsilon), layer, input, grad_output, fast=False)
        # the generic path divides 0 by 0 at those outputs when eps = 0; it agrees everywhere else
        finite = expected.isfinite()
        assert finite.all() or epsilon == 0.0
        torch.testing.assert_close(actual[finite], expected[finite])


@pytest.mark.parametrize("epsilon", [0.25, 0.0])
def test_gamma_shortcut_divides_by_no_zero_at_negative_outputs(epsilon):
    """With ``z = -eps`` (or ``eps = 0``) and ``W+ x = 0`` the positive side's denominator ``z + gamma W+ x + eps``
    is 0 at a negative output that receives no relevance; that must not turn into NaN."""
    layer = torch.nn.Conv2d(1, 2, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([-0.5, 1.0]).view(2, 1, 1, 1))
    input = torch.full((1, 1, 2, 2), 0.5)
    grad_output = torch.stack([torch.zeros(2, 2), torch.ones(2, 2)])[None]  # none at the negative channel
    rule = rules.Gamma(0.25, stabilizer=epsilon)
    actual = relevance(rule, layer, input, grad_output, fast=True)
    assert torch.isfinite(actual).all()
    torch.testing.assert_close(actual, relevance(rule, layer, input, grad_output, fast=False))


@pytest.mark.parametrize(
    "values, expected",
    [([0.0, 1.0], False), ([-0.0, 2.0], False), ([1.0, -1e-300], True), ([float("nan"), 1.0], True), ([], False)],
    ids=["nonnegative", "negative-zero", "tiny-negative", "nan", "empty"],
)
def test_negative_probe_on_the_cpu(values, expected):
    """The minimum's sign decides; NaN counts as negative (the signed path is exact for every input)."""
    assert bool(closed_form.NegativeProbe(torch.tensor(values))) is expected


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_zplus_with_the_plain_stabilizer_on_nonnegative_inputs_is_bitwise_the_stabilized_path(dtype):
    """``W+ x + b+ >= 0`` for ``x >= 0``: the plain stabilizer is the addition of epsilon, bit for bit, zero
    denominators included."""
    torch.manual_seed(25)
    layer = torch.nn.Conv2d(3, 4, 3, padding=1).to(dtype)
    with torch.no_grad():
        layer.bias.copy_(torch.tensor([0.5, -0.5, 0.0, 1e-7], dtype=dtype))
    input = torch.rand(2, 3, 5, 5, dtype=dtype)
    input[0] = 0.0  # denominators b+ (0 for two channels)
    grad_output = torch.randn(2, 4, 5, 5, dtype=dtype)
    folded = relevance(rules.ZPlus(Stabilizer(1e-6)), layer, input, grad_output, fast=True)
    stabilized = relevance(rules.ZPlus(SameStabilizer(1e-6)), layer, input, grad_output, fast=True)
    assert torch.equal(folded, stabilized)


@pytest.mark.parametrize("rule_name", ["flat", "wsquare"])
def test_spread_rules_compute_their_denominator_once_per_sample_shape(rule_name):
    """``V 1 + c`` depends on neither the input's values nor its batch: computed in the first call, not for another
    batch of the same sample shape, again for a new sample shape and after an in-place weight update; every call
    equals a fresh rule's generic relevance. Flat's transposed map is that of one all-ones channel."""
    torch.manual_seed(26)
    layer = torch.nn.Conv2d(3, 4, 3, padding=1)
    rule = make_rules((3, 5, 5))[rule_name](None)
    handles = rule.register(layer)
    forward_counts = []
    try:
        for step, shape in enumerate([(2, 3, 5, 5), (5, 3, 5, 5), (2, 3, 6, 6), (2, 3, 6, 6)]):
            if step == 3:
                with torch.no_grad():
                    layer.weight.mul_(-1.5)
            input = torch.randn(shape)
            grad_output = torch.randn(shape[0], 4, *shape[2:])
            leaf = input.clone().requires_grad_()
            convolutions = ConvolutionWeights()
            output = layer(leaf)
            with convolutions:
                actual, = torch.autograd.grad(output, leaf, grad_output)
            forward_counts.append(len(convolutions.forward))
            assert convolutions.transposed == [(1, 1, 3, 3) if rule_name == "flat" else (4, 3, 3, 3)]
            fresh = make_rules((3, 5, 5))[rule_name](None)
            torch.testing.assert_close(actual, relevance(fresh, layer, input, grad_output, fast=False))
    finally:
        handles.remove()
    assert forward_counts == [1, 0, 1, 1]


def test_flat_on_a_linear_layer_spreads_the_summed_ratio_over_every_input():
    torch.manual_seed(27)
    layer = torch.nn.Linear(7, 5)
    input = torch.randn(3, 2, 7)
    grad_output = torch.randn(3, 2, 5)
    actual = relevance(rules.Flat(), layer, input, grad_output, fast=True)
    torch.testing.assert_close(actual, relevance(rules.Flat(), layer, input, grad_output, fast=False))
    assert actual.is_contiguous()


@pytest.mark.parametrize("rule_name", RULE_NAMES)
def test_an_unbatched_convolution_call_equals_the_batched_one(rule_name):
    """Convolutions accept inputs without a batch dimension; those calls take the generic path."""
    torch.manual_seed(28)
    layer = torch.nn.Conv2d(3, 4, 3)
    input = torch.rand(3, 5, 5)
    grad_output = torch.randn(4, 3, 3)
    unbatched = relevance(make_rules((3, 5, 5))[rule_name](None), layer, input, grad_output, fast=True)
    batched = relevance(make_rules((3, 5, 5))[rule_name](None), layer, input[None], grad_output[None], fast=True)
    torch.testing.assert_close(unbatched, batched[0])
