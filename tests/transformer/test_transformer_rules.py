"""The gradient-view rules of the transformer composites, each against its equation written out
explicitly in float64 (DESIGN.md, "Transformers")."""
import pytest
import torch

from lrp_lightning import types
from lrp_lightning.transformer import gradient_rules
from lrp_lightning.composites import COMPOSITES, AttnLRP, CPLRP
from lrp_lightning.layer import GatedMul, MatMul, Mul

pytestmark = pytest.mark.usefixtures("float64_default")

EPS = 0.05  # large enough that the stabilizer visibly matters


def stab(d, eps=EPS):
    return d + eps * torch.where(d >= 0, 1.0, -1.0)


def hooked_gradients(rule, module, inputs, grad_output, wrt=None):
    """Modified gradients of ``wrt`` (default: all ``inputs``) with ``rule`` attached to ``module``."""
    handles = rule.register(module)
    try:
        output = module(*inputs)
        return output.detach(), torch.autograd.grad(output, inputs if wrt is None else wrt, grad_output)
    finally:
        handles.remove()


def test_affine_epsilon_on_linear_is_epsilon_lrp_in_the_gradient_view():
    torch.manual_seed(0)
    linear = torch.nn.Linear(5, 4)
    x = torch.randn(3, 5, requires_grad=True)
    g = torch.randn(3, 4)
    z, (g_x,) = hooked_gradients(gradient_rules.AffineEpsilon(EPS), linear, (x,), g)
    W, b = linear.weight.detach(), linear.bias.detach()
    z_ref = x.detach() @ W.T + b
    R_z = z_ref * g
    R_x = x.detach() * ((R_z / stab(z_ref)) @ W)  # R_x = x * W^T (R_z / stab(z))
    torch.testing.assert_close(x.detach() * g_x, R_x, rtol=1e-12, atol=1e-14)
    # the stabilizer made a difference: this is not the plain gradient
    assert not torch.allclose(g_x, g @ W)


def test_affine_epsilon_on_conv2d_and_batch_norm():
    torch.manual_seed(1)
    conv = torch.nn.Conv2d(2, 3, 3, padding=1)
    x = torch.randn(2, 2, 5, 5, requires_grad=True)
    g = torch.randn(2, 3, 5, 5)
    z, (g_x,) = hooked_gradients(gradient_rules.AffineEpsilon(EPS), conv, (x,), g)
    u = g * z / stab(z)
    # W^T u: the input-gradient of the convolution without bias, applied to u
    expected = torch.nn.grad.conv2d_input(x.shape, conv.weight.detach(), u, padding=1)
    torch.testing.assert_close(g_x, expected, rtol=1e-12, atol=1e-14)

    norm = torch.nn.BatchNorm1d(4).eval()
    norm.running_mean.uniform_(-1, 1)
    norm.running_var.uniform_(0.5, 2)
    norm.weight.data.uniform_(-2, 2)
    x = torch.randn(6, 4, requires_grad=True)
    g = torch.randn(6, 4)
    z, (g_x,) = hooked_gradients(gradient_rules.AffineEpsilon(EPS), norm, (x,), g)
    scale = norm.weight.detach() / torch.sqrt(norm.running_var + norm.eps)
    torch.testing.assert_close(g_x, scale * g * z / stab(z), rtol=1e-12, atol=1e-14)


def test_affine_epsilon_on_hugging_face_conv1d():
    pytorch_utils = pytest.importorskip("transformers.pytorch_utils")
    torch.manual_seed(2)
    conv1d = pytorch_utils.Conv1D(4, 5)  # nf=4 outputs, nx=5 inputs, weight (5, 4)
    conv1d.bias.data.normal_()
    assert isinstance(conv1d, types.Affine)
    x = torch.randn(2, 3, 5, requires_grad=True)
    g = torch.randn(2, 3, 4)
    z, (g_x,) = hooked_gradients(gradient_rules.AffineEpsilon(EPS), conv1d, (x,), g)
    W = conv1d.weight.detach()
    z_ref = x.detach() @ W + conv1d.bias.detach()
    torch.testing.assert_close(g_x, (g * z_ref / stab(z_ref)) @ W.T, rtol=1e-12, atol=1e-14)


def test_affine_gamma_gives_the_gamma_relevance_of_signed_inputs():
    torch.manual_seed(3)
    gamma = 0.5
    linear = torch.nn.Linear(6, 4)
    x = torch.randn(5, 6, requires_grad=True)
    g = torch.randn(5, 4)
    _, (g_x,) = hooked_gradients(gradient_rules.AffineGamma(gamma, stabilizer=EPS), linear, (x,), g)
    W, b, xd = linear.weight.detach(), linear.bias.detach(), x.detach()
    A, B = W + gamma * W.clamp(min=0), W + gamma * W.clamp(max=0)
    b_p, b_n = b + gamma * b.clamp(min=0), b + gamma * b.clamp(max=0)
    x_p, x_n = xd.clamp(min=0), xd.clamp(max=0)
    z = xd @ W.T + b
    R = z * g
    z_p = x_p @ A.T + b_p + x_n @ B.T
    z_n = x_p @ B.T + b_n + x_n @ A.T
    s_p, s_n = R * (z > 0) / stab(z_p), R * (z < 0) / stab(z_n)
    R_x = x_p * (s_p @ A + s_n @ B) + x_n * (s_p @ B + s_n @ A)
    torch.testing.assert_close(xd * g_x, R_x, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("activation", [torch.nn.GELU(), torch.nn.SiLU(), torch.nn.Tanh(), torch.nn.Sigmoid()])
def test_identity_rule_passes_relevance_unchanged(activation):
    torch.manual_seed(4)
    x = torch.randn(4, 7, requires_grad=True)
    g = torch.randn(4, 7)
    y, (g_x,) = hooked_gradients(gradient_rules.IdentityRule(EPS), activation, (x,), g)
    xd = x.detach()
    torch.testing.assert_close(g_x, g * y / stab(xd), rtol=1e-12, atol=1e-14)
    # R_x = R_y wherever |x| >> epsilon
    far = xd.abs() > 100 * EPS
    torch.testing.assert_close((xd * g_x)[far], (y * g)[far], rtol=0.02, atol=0)


def test_hugging_face_activations_are_elementwise_activations():
    activations = pytest.importorskip("transformers.activations")
    names = ["NewGELUActivation", "GELUActivation", "QuickGELUActivation"]
    if hasattr(activations, "SiLUActivation"):  # transformers >= 4.53
        names.append("SiLUActivation")
    for name in names:
        assert isinstance(getattr(activations, name)(), types.ElementwiseActivation), name
    assert not isinstance(torch.nn.Linear(2, 2), types.ElementwiseActivation)
    assert isinstance(torch.nn.ReLU(), types.ElementwiseActivation)


def centring(n):
    return torch.eye(n) - torch.full((n, n), 1.0 / n)


def test_layer_norm_rule_holds_sigma_constant_and_applies_epsilon():
    torch.manual_seed(5)
    n = 6
    norm = torch.nn.LayerNorm(n, eps=1e-3)
    norm.weight.data.normal_()
    norm.bias.data.normal_()
    x = torch.randn(3, n, requires_grad=True)
    g = torch.randn(3, n)
    y, (g_x,) = hooked_gradients(gradient_rules.LayerNormEpsilon(EPS), norm, (x,), g)
    w = norm.weight.detach()
    for row in range(3):
        xr = x.detach()[row]
        sigma = torch.sqrt(((xr - xr.mean()) ** 2).mean() + 1e-3)
        J = torch.diag(w) @ centring(n) / sigma  # y = J x + b with sigma held constant
        torch.testing.assert_close(J @ xr + norm.bias.detach(), y[row], rtol=1e-12, atol=1e-12)
        R_y = y[row] * g[row]
        expected = xr * (J.T @ (R_y / stab(y[row])))
        torch.testing.assert_close(xr * g_x[row], expected, rtol=1e-12, atol=1e-14)


class TinyRMSNorm(torch.nn.Module):
    """An RMSNorm as Hugging Face writes it (matched by class name and ``variance_epsilon``)."""

    def __init__(self, size, eps=1e-5):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(size))
        self.variance_epsilon = eps

    def forward(self, x):
        return self.weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)


class TinyGemmaRMSNorm(TinyRMSNorm):
    """An RMSNorm scaling by ``1 + weight``, as Gemma's does."""

    def forward(self, x):
        return (1 + self.weight) * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)


@pytest.mark.parametrize("build", [lambda: torch.nn.RMSNorm(5, eps=1e-4), lambda: TinyRMSNorm(5, eps=1e-4), lambda: TinyGemmaRMSNorm(5, eps=1e-4)])
def test_rms_norm_rule_holds_rms_constant_and_applies_epsilon(build):
    torch.manual_seed(6)
    norm = build()
    if isinstance(norm, torch.nn.RMSNorm):
        norm.weight.data.normal_()
    assert isinstance(norm, types.RMSNorm)
    scale = norm.weight.detach() + (1 if isinstance(norm, TinyGemmaRMSNorm) else 0)
    x = torch.randn(2, 3, 5, requires_grad=True)
    g = torch.randn(2, 3, 5)
    y, (g_x,) = hooked_gradients(gradient_rules.RMSNormEpsilon(EPS), norm, (x,), g)
    xd = x.detach()
    rms = torch.sqrt((xd**2).mean(-1, keepdim=True) + 1e-4)
    # y = diag(w / rms) x, so R_x = x * w / rms * R_y / stab(y)
    expected = xd * scale / rms * (y * g) / stab(y)
    torch.testing.assert_close(xd * g_x, expected, rtol=1e-12, atol=1e-14)


def test_uniform_rule_halves_matmul_relevance_between_the_factors():
    torch.manual_seed(7)
    a = torch.randn(2, 3, 4, requires_grad=True)
    b = torch.randn(2, 4, 5, requires_grad=True)
    g = torch.randn(2, 3, 5)
    y, (g_a, g_b) = hooked_gradients(gradient_rules.UniformProduct(EPS), MatMul(), (a, b), g)
    ad, bd = a.detach(), b.detach()
    R_y = y * g
    # epsilon-LRP on each factor with the other held fixed, then half of it
    R_a = 0.5 * ad * ((R_y / stab(y)) @ bd.transpose(1, 2))
    R_b = 0.5 * bd * (ad.transpose(1, 2) @ (R_y / stab(y)))
    torch.testing.assert_close(ad * g_a, R_a, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(bd * g_b, R_b, rtol=1e-12, atol=1e-14)
    # conservation up to the stabilizer: sum R_a + sum R_b = sum R_y * y / stab(y)
    torch.testing.assert_close(R_a.sum() + R_b.sum(), (R_y * y / stab(y)).sum())
    # the second factor given by keyword counts as a factor too
    handles = gradient_rules.UniformProduct(EPS).register(matmul := MatMul())
    try:
        g_a_keyword, = torch.autograd.grad(matmul(a, b=b), a, g)
    finally:
        handles.remove()
    torch.testing.assert_close(g_a_keyword, g_a)


def test_uniform_rule_gives_a_single_variable_factor_everything():
    torch.manual_seed(8)
    a = torch.randn(3, 4, requires_grad=True)
    weight = torch.nn.Parameter(torch.randn(4, 2))
    constant = torch.randn(4, 2)
    g = torch.randn(3, 2)
    for other in (weight, constant):
        y, (g_a,) = hooked_gradients(gradient_rules.UniformProduct(EPS), MatMul(), (a, other), g, wrt=(a,))
        torch.testing.assert_close(g_a, (g * y / stab(y)) @ other.detach().T, rtol=1e-12, atol=1e-14)


def test_uniform_rule_on_broadcast_elementwise_product():
    torch.manual_seed(9)
    a = torch.randn(4, 3, requires_grad=True)
    b = torch.randn(3, requires_grad=True)
    g = torch.randn(4, 3)
    y, (g_a, g_b) = hooked_gradients(gradient_rules.UniformProduct(EPS), Mul(), (a.mul(1), b.mul(1)), g)
    u = g * y / stab(y)
    torch.testing.assert_close(g_a, 0.5 * u * b.detach(), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(g_b, 0.5 * (u * a.detach()).sum(0), rtol=1e-12, atol=1e-14)


def test_attn_lrp_softmax_rule_is_taylor_at_the_input_without_bias():
    torch.manual_seed(10)
    x = torch.randn(3, 5, requires_grad=True)
    c = torch.randn(3, 5)
    model = torch.nn.Sequential(torch.nn.Softmax(dim=-1))
    with AttnLRP(epsilon=EPS).context(model):
        s = model(x)
        g_x, = torch.autograd.grad(s, x, c)  # the consumer's gradient at s is c: R_s = s * c
    s = s.detach()
    R_s = s * c
    expected = x.detach() * (R_s - s * R_s.sum(-1, keepdim=True))
    torch.testing.assert_close(x.detach() * g_x, expected, rtol=1e-12, atol=1e-14)


def test_cp_lrp_holds_attention_weights_constant():
    torch.manual_seed(11)
    scores = torch.randn(2, 4, 4, requires_grad=True)
    v = torch.randn(2, 4, 3, requires_grad=True)

    class Attention(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.softmax = torch.nn.Softmax(dim=-1)
            self.context = MatMul()

        def forward(self, scores, v):
            return self.context(self.softmax(scores), v)

    model = Attention()
    g = torch.randn(2, 4, 3)
    with CPLRP(epsilon=EPS).context(model):
        y = model(scores, v)
        g_scores, g_v = torch.autograd.grad(y, (scores, v), g, allow_unused=True)
    weights = torch.softmax(scores.detach(), -1)
    assert g_scores is None  # no relevance into queries and keys
    # attention is linear in v: LRP-epsilon with the weights fixed, no halving
    torch.testing.assert_close(g_v, weights.transpose(1, 2) @ (g * y / stab(y)), rtol=1e-12, atol=1e-14)
    with AttnLRP(epsilon=EPS).context(model):
        y = model(scores, v)
        _, g_v_attn = torch.autograd.grad(y, (scores, v), g)
    torch.testing.assert_close(g_v_attn, 0.5 * g_v, rtol=1e-12, atol=1e-14)


class TinyBlock(torch.nn.Module):
    """One hand-written attention block with explicit products (the first-milestone model)."""

    def __init__(self, dim=6, bias=True):
        super().__init__()
        self.norm = torch.nn.LayerNorm(dim, bias=bias)
        self.q, self.k, self.v = (torch.nn.Linear(dim, dim, bias=bias) for _ in range(3))
        self.scores, self.context = MatMul(), MatMul()
        self.softmax = torch.nn.Softmax(dim=-1)
        self.gate, self.up, self.down = (torch.nn.Linear(dim, dim, bias=bias) for _ in range(3))
        self.act, self.mul = torch.nn.SiLU(), Mul()
        self.head = torch.nn.Linear(dim, 3, bias=bias)

    def forward(self, x):
        h = self.norm(x)
        q, k, v = self.q(h), self.k(h), self.v(h)
        attention = self.softmax(self.scores(q, k.transpose(-2, -1)) / q.shape[-1] ** 0.5)
        x = x + self.context(attention, v)
        x = x + self.down(self.mul(self.act(self.gate(x)), self.up(x)))
        return self.head(x.mean(1))


def test_composites_map_each_layer_to_its_rule():
    model = TinyBlock()
    expected = {
        "norm": gradient_rules.LayerNormEpsilon, "q": gradient_rules.AffineEpsilon, "scores": gradient_rules.UniformProduct,
        "context": gradient_rules.UniformProduct, "act": gradient_rules.IdentityRule, "mul": gradient_rules.UniformProduct,
        "head": gradient_rules.AffineEpsilon,
    }
    for composite, softmax_rule in ((AttnLRP(), None), (CPLRP(), gradient_rules.ConstantAttention)):
        with composite.context(model):
            types_by_name = {name: type(rule) for name, rule in composite.rule_map.items()}
            assert composite.uncovered == []
        for name, rule in expected.items():
            assert types_by_name[name] is rule, name
        assert types_by_name.get("softmax") is softmax_rule
        assert composite.gradient_view is True
    assert isinstance(AttnLRP(gamma=0.25).mapping({}, "q", model.q), gradient_rules.AffineGamma)
    custom = gradient_rules.AffineEpsilon(0.5)
    assert AttnLRP(layer_map=[(torch.nn.Linear, custom)]).mapping({}, "q", model.q) is custom
    assert COMPOSITES["attn_lrp"] is AttnLRP and COMPOSITES["cp_lrp"] is CPLRP
    with pytest.raises(ValueError, match='"auto", None or a list'):
        AttnLRP(canonizers="torchvision")


def test_cp_lrp_conserves_on_the_bias_free_tiny_block_and_attn_lrp_does_not():
    torch.manual_seed(12)
    model = TinyBlock(bias=False).eval()
    x = torch.randn(2, 4, 6, requires_grad=True)
    totals = {}
    for composite in (CPLRP(epsilon=1e-12), AttnLRP(epsilon=1e-12)):
        with composite.context(model):
            output = model(x)
            g_x, = torch.autograd.grad(output[:, 0].sum(), x)
        totals[type(composite).__name__] = ((x * g_x).sum() / output[:, 0].sum()).item()
    assert totals["CPLRP"] == pytest.approx(1.0, abs=1e-9)
    assert abs(totals["AttnLRP"] - 1.0) > 1e-3


def test_rules_leave_no_grad_mode_call_unchanged():
    model = TinyBlock()
    x = torch.randn(2, 4, 6)
    expected = model(x)
    with AttnLRP().context(model), torch.no_grad():
        assert torch.equal(model(x), expected)


def test_output_modified_in_place_is_recomputed_and_both_modified_raise():
    torch.manual_seed(13)
    linear = torch.nn.Linear(4, 3)
    x = torch.randn(2, 4, requires_grad=True)
    g = torch.randn(2, 3)
    rule = gradient_rules.AffineEpsilon(EPS)
    _, (expected,) = hooked_gradients(rule, linear, (x,), g)
    handles = rule.register(linear)
    try:
        inputs = x * 1
        output = linear(inputs)
        clean = output.detach().clone()
        result = output.mul(1)
        with torch.no_grad():
            output.add_(1.0)  # an unhooked in-place change of the saved output
        gradient, = torch.autograd.grad(result, x, g)
        torch.testing.assert_close(gradient, expected)
        output = linear(inputs)
        with torch.no_grad():
            output.add_(1.0)
            inputs.add_(1.0)
        with pytest.raises(RuntimeError, match="both modified in place or freed"):
            torch.autograd.grad(output, x, g)
    finally:
        handles.remove()
    assert torch.equal(clean, linear(x.detach()))


def test_affine_gamma_on_hugging_face_conv1d_equals_its_linear_equivalent():
    pytorch_utils = pytest.importorskip("transformers.pytorch_utils")
    torch.manual_seed(14)
    conv1d = pytorch_utils.Conv1D(4, 5)
    conv1d.weight.data.normal_()
    conv1d.bias.data.normal_()
    linear = torch.nn.Linear(5, 4)
    linear.weight.data.copy_(conv1d.weight.detach().T)
    linear.bias.data.copy_(conv1d.bias.detach())
    x = torch.randn(3, 5, requires_grad=True)
    g = torch.randn(3, 4)
    _, (generic,) = hooked_gradients(gradient_rules.AffineGamma(0.25, stabilizer=EPS), conv1d, (x,), g)
    _, (closed,) = hooked_gradients(gradient_rules.AffineGamma(0.25, stabilizer=EPS), linear, (x,), g)
    torch.testing.assert_close(generic, closed, rtol=1e-10, atol=1e-13)


def test_output_modified_in_place_after_its_input_was_freed_raises():
    torch.manual_seed(15)
    linear = torch.nn.Linear(4, 3).requires_grad_(False)
    x = torch.randn(2, 4, requires_grad=True)
    handles = gradient_rules.AffineEpsilon(EPS).register(linear)
    try:
        output = linear(x * 1)  # nothing keeps the input: the weight needs no gradient
        with torch.no_grad():
            output.add_(1.0)
        with pytest.raises(RuntimeError, match="modified in place or freed"):
            torch.autograd.grad(output, x, torch.ones(2, 3))
    finally:
        handles.remove()


class PythonReLU(torch.nn.Module):
    """An activation written in Python (as Hugging Face's are): its rule keeps the output."""

    def forward(self, input):
        return input.clamp(min=0)


@pytest.mark.parametrize("activation", [torch.nn.ReLU(), torch.nn.ReLU(inplace=True), PythonReLU()], ids=["recomputed", "recomputed-inplace", "kept"])
def test_identity_rule_recomputes_or_keeps_the_output_and_leaves_the_input_intact(activation):
    rule = gradient_rules.IdentityRule(EPS)
    assert rule.saves_output_of(activation) is isinstance(activation, PythonReLU)
    torch.manual_seed(16)
    model = torch.nn.Sequential(torch.nn.Linear(4, 5), activation, torch.nn.Linear(5, 2))
    x = torch.randn(3, 4, requires_grad=True)
    g = torch.randn(3, 2)
    handles = rule.register(model[1])
    try:
        gradient, = torch.autograd.grad(model(x), x, g)
    finally:
        handles.remove()
    with torch.no_grad():
        hidden = model[0](x)
        activated = torch.relu(hidden)
        g_hidden = (g @ model[2].weight) * activated / (hidden + EPS * torch.where(hidden >= 0, 1.0, -1.0))
        expected = g_hidden @ model[0].weight
    torch.testing.assert_close(gradient, expected)


@pytest.mark.parametrize("rows", ["one position", "every position"])
def test_frozen_vocabulary_projection_maps_only_the_rows_that_receive_gradient(rows):
    """A language model explained at one position: its head (a Linear widening 8x or more) gets gradient at that
    position only, and the rule maps only those rows (the rest of g_x is zero, as the dense product gives)."""
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(16)
    head = torch.nn.Linear(4, 40).requires_grad_(False)
    x = torch.randn(2, 6, 4, requires_grad=True)
    g = torch.zeros(2, 6, 40)
    if rows == "one position":
        g[:, -1] = torch.randn(2, 40)
    else:
        g = torch.randn(2, 6, 40)
    W, b = head.weight, head.bias
    z = x.detach() @ W.T + b
    handles = gradient_rules.AffineEpsilon(EPS).register(head)
    try:
        output = head(x)
        with FlopCounterMode(display=False) as counter:
            g_x, = torch.autograd.grad(output, x, g)
    finally:
        handles.remove()
    torch.testing.assert_close(g_x, (g * z / stab(z)) @ W, rtol=1e-12, atol=1e-14)
    mapped_rows = 2 if rows == "one position" else 12
    assert counter.get_total_flops() == 2 * mapped_rows * 40 * 4


def test_vocabulary_projection_with_trainable_weights_keeps_its_weight_gradient():
    torch.manual_seed(17)
    head = torch.nn.Linear(4, 40)
    x = torch.randn(2, 6, 4, requires_grad=True)
    g = torch.zeros(2, 6, 40)
    g[:, -1] = torch.randn(2, 40)
    z = (x @ head.weight.T + head.bias).detach()
    z_, (g_x, g_w) = hooked_gradients(gradient_rules.AffineEpsilon(EPS), head, (x,), g, wrt=(x, head.weight))
    scaled = g * z / stab(z)
    torch.testing.assert_close(g_x, scaled @ head.weight.detach(), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(g_w, scaled.flatten(0, 1).T @ x.detach().flatten(0, 1), rtol=1e-12, atol=1e-14)


class GatedBlock(torch.nn.Module):
    """A Llama-style gated MLP, ``down(act(gate(x)) * up(x))``, its product an explicit GatedMul."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(21)
        self.gate = torch.nn.Linear(4, 6, bias=False)
        self.up = torch.nn.Linear(4, 6, bias=False)
        self.down = torch.nn.Linear(6, 3, bias=False)
        self.act = torch.nn.SiLU()
        self.product = GatedMul()

    def forward(self, x):
        return self.down(self.product(self.act(self.gate(x)), self.up(x)))


def gated_block_gradients(composite, block, x, grad_output):
    """The modified gradients arriving at the gate and at the value (the product's two inputs) and at the
    input of ``block``."""
    seen = {}

    def keep(module, args):
        for name, tensor in zip(("gate", "value"), args):
            tensor.retain_grad()
            seen[name] = tensor

    handle = block.product.register_forward_pre_hook(keep)
    try:
        with composite.context(block):
            leaf = x.clone().requires_grad_(True)
            block(leaf).backward(grad_output)
    finally:
        handle.remove()
    return seen["gate"].grad, seen["value"].grad, leaf.grad


def test_cp_lrp_constant_gate_gives_the_gate_nothing_and_the_value_epsilon_lrp_whole():
    """CP-LRP's ConstantGate: ``y = gate * value`` with the gate held constant: no relevance enters the
    gate's branch, and the value gets LRP-epsilon whole, ``R_value = value * gate * R_y / stab(y)``, i.e.
    ``g_value = gate * g_y * y / stab(y)``, with ``g_y = W_down^T(g_z * z / stab(z))`` from the
    epsilon rule of the down projection (``z`` the block output, ``g_z`` the gradient given to it)."""
    block = GatedBlock()
    x = torch.randn(5, 4)
    grad_output = torch.randn(5, 3)
    gate_gradient, value_gradient, input_gradient = gated_block_gradients(CPLRP(epsilon=EPS), block, x, grad_output)
    with torch.no_grad():
        gate, value = block.act(block.gate(x)), block.up(x)
        y = gate * value
        z = block.down(y)
    g_y = (grad_output * z / stab(z)) @ block.down.weight
    assert gate_gradient is None or torch.count_nonzero(gate_gradient) == 0
    torch.testing.assert_close(value_gradient, gate * g_y * y / stab(y))
    # the gate branch adds nothing: the input gradient is the value path's alone, the up projection's
    # epsilon rule applied to g_value (up(x) = u, g_x = W_up^T(g_value * u / stab(u)))
    torch.testing.assert_close(input_gradient, (value_gradient * value / stab(value)) @ block.up.weight)
    # AttnLRP's uniform rule, by contrast, gives the gate half: g_gate = 1/2 value * g_y * y / stab(y)
    gate_gradient, value_gradient, _ = gated_block_gradients(AttnLRP(epsilon=EPS), block, x, grad_output)
    torch.testing.assert_close(gate_gradient, 0.5 * value * g_y * y / stab(y))
    torch.testing.assert_close(value_gradient, 0.5 * gate * g_y * y / stab(y))
