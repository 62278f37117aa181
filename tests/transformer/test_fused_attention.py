"""Fused attention (PyTorch's SDPA kernel) under the transformer composites: the rules against their
equations in float64, agreement with the explicit path, and no (T, T) tensor kept."""
import pytest
import torch

from lrp_lightning.transformer import gradient_rules
from lrp_lightning.transformer.attention import MultiheadAttentionCanonizer
from lrp_lightning.attribution import Gradient
from lrp_lightning.composites import AttnLRP, CPLRP
from lrp_lightning.layer import ScaledDotProductAttention


pytestmark = pytest.mark.usefixtures("float64_default")

EPS = 0.05  # large enough that the stabilizer at the output visibly matters


def stab(d, eps=EPS):
    return d + eps * torch.where(d >= 0, 1.0, -1.0)


def attention_inputs(seed, heads=2, length=5, dim=3):
    generator = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(2, heads, length, dim, generator=generator, dtype=torch.float64, requires_grad=True) for _ in range(3))
    mask = torch.randn(length, length, generator=generator, dtype=torch.float64)
    g = torch.randn(2, heads, length, dim, generator=generator, dtype=torch.float64)
    return q, k, v, mask, g


def explicit_reference(q, k, v, mask, g, scale):
    """Attention written out: the weights A, the output O and the output-side modified gradient u."""
    q, k, v = q.detach(), k.detach(), v.detach()
    weights = torch.softmax(q @ k.transpose(-2, -1) * scale + mask, dim=-1)
    output = weights @ v
    return weights, output, g * output / stab(output)


def rule_gradients(rule, q, k, v, mask, g, scale):
    module = ScaledDotProductAttention()
    handles = rule.register(module)
    try:
        output = module(q, k, value=v, attn_mask=mask, scale=scale)
        return output, torch.autograd.grad(output, (q, k, v), g, allow_unused=True)
    finally:
        handles.remove()


@pytest.mark.parametrize("scale", [None, 0.7])
def test_uniform_attention_is_attn_lrp_through_the_kernel(scale):
    q, k, v, mask, g = attention_inputs(0)
    output, (g_q, g_k, g_v) = rule_gradients(gradient_rules.UniformAttention(EPS), q, k, v, mask, g, scale)
    factor = scale if scale is not None else q.shape[-1] ** -0.5
    weights, expected_output, u = explicit_reference(q, k, v, mask, g, factor)
    torch.testing.assert_close(output.detach(), expected_output, rtol=1e-12, atol=1e-14)
    # uniform rule at O = A V: half of u to each factor
    torch.testing.assert_close(g_v, 0.5 * weights.transpose(-2, -1) @ u, rtol=1e-10, atol=1e-13)
    g_weights = 0.5 * u @ v.detach().transpose(-2, -1)
    # softmax: its plain gradient; uniform rule at S = Q K^T: half again to each factor
    g_scores = weights * (g_weights - (g_weights * weights).sum(-1, keepdim=True))
    torch.testing.assert_close(g_q, 0.5 * factor * g_scores @ k.detach(), rtol=1e-10, atol=1e-13)
    torch.testing.assert_close(g_k, 0.5 * factor * g_scores.transpose(-2, -1) @ q.detach(), rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("grouped", [False, True])
@pytest.mark.parametrize("mask_kind", ["none", "float", "bool with a fully masked row", "causal"])
def test_constant_attention_weights_is_cp_lrp_through_the_kernel(mask_kind, grouped):
    """The backward pass recomputes the weights from query and key: every mask form of SDPA, grouped-query
    attention (``enable_gqa``: 4 query heads share 2 key/value heads)."""
    generator = torch.Generator().manual_seed(1)
    length, heads = 5, 4
    q = torch.randn(2, heads, length, 3, generator=generator, requires_grad=True)
    k, v = (torch.randn(2, heads // 2 if grouped else heads, length, 3, generator=generator, requires_grad=True) for _ in range(2))
    g = torch.randn(2, heads, length, 3, generator=generator)
    kwargs, bias = {}, torch.zeros(length, length)
    if mask_kind == "float":
        kwargs["attn_mask"] = bias = torch.randn(length, length, generator=generator)
    elif mask_kind == "bool with a fully masked row":
        allowed = torch.rand(length, length, generator=generator) > 0.4
        allowed[:, 0] = True
        allowed[2] = False
        kwargs["attn_mask"] = allowed
        bias = torch.zeros(length, length).masked_fill(~allowed, float("-inf"))
    elif mask_kind == "causal":
        kwargs["is_causal"] = True
        bias = torch.zeros(length, length).masked_fill(torch.ones(length, length).triu(1).bool(), float("-inf"))
    if grouped:
        kwargs["enable_gqa"] = True
    module = ScaledDotProductAttention()
    handles = gradient_rules.ConstantAttentionWeights(EPS).register(module)
    try:
        output = module(q, k, v, **kwargs)
        g_q, g_k, g_v = torch.autograd.grad(output, (q, k, v), g, allow_unused=True)
    finally:
        handles.remove()
    keys = k.detach().repeat_interleave(2, dim=1) if grouped else k.detach()
    values = v.detach().repeat_interleave(2, dim=1) if grouped else v.detach()
    weights = torch.softmax(q.detach() @ keys.transpose(-2, -1) / 3**0.5 + bias, dim=-1).nan_to_num(0.0)
    expected_output = weights @ values
    torch.testing.assert_close(output.detach(), expected_output, rtol=1e-12, atol=1e-14)
    u = g * expected_output / stab(expected_output)
    expected = weights.transpose(-2, -1) @ u
    if grouped:
        expected = expected.unflatten(1, (heads // 2, 2)).sum(2)
    assert g_q is None and g_k is None, "no relevance flows into queries and keys"
    torch.testing.assert_close(g_v, expected, rtol=1e-10, atol=1e-13)
    assert torch.isfinite(g_v).all()


def test_constant_attention_weights_with_attention_dropout_uses_the_kernel_backward():
    """In training mode with dropout the weights cannot be recomputed: the kernel's own backward pass (with the
    same dropout mask) carries the gradient, so the values' gradient is still finite and query and key get none."""
    q, k, v, mask, g = attention_inputs(2)
    module = ScaledDotProductAttention()
    handles = gradient_rules.ConstantAttentionWeights(EPS).register(module)
    try:
        output = module(q, k, v, dropout_p=0.5)
        g_q, g_k, g_v = torch.autograd.grad(output, (q, k, v), g, allow_unused=True)
    finally:
        handles.remove()
    assert g_q is None and g_k is None
    assert g_v.shape == v.shape and torch.isfinite(g_v).all() and g_v.abs().sum() > 0


@pytest.mark.parametrize("kind", ["gpt2", "llama", "bert"])
def test_fused_and_explicit_attention_agree_on_language_models(kind, tiny_language_model, token_relevance):
    """CP-LRP: the same rules either way (to rounding). AttnLRP: the same up to the ratio at Q K^T, which the
    fused kernel does not apply; with a tiny epsilon that is below 1e-9."""
    inputs = {"input_ids": torch.randint(0, 48, (2, 7), generator=torch.Generator().manual_seed(3)),
              "attention_mask": torch.ones(2, 7, dtype=torch.long)}
    target = torch.tensor([1, 2])
    last = kind != "bert"
    for composite, tolerance in ((CPLRP(epsilon=EPS), 1e-11), (AttnLRP(epsilon=1e-10), 1e-9)):
        relevances = []
        for implementation in ("eager", "sdpa"):
            model = tiny_language_model(kind, implementation)
            relevances.append(token_relevance(model, composite, inputs, target, last_position=last)[1])
        eager, fused = relevances
        assert (fused - eager).abs().max() / eager.abs().max() < tolerance


def test_multihead_attention_with_and_without_weights_gives_the_same_relevance():
    """torchvision's ViT calls its attention with need_weights=False (the fused kernel); asking for the weights
    takes the explicit path: CP-LRP relevance is the same."""
    torch.manual_seed(4)
    attention = torch.nn.MultiheadAttention(8, 2, batch_first=True).eval()
    attention.in_proj_bias.data.normal_()
    x = torch.randn(3, 5, 8)
    relevances = []
    for need_weights in (False, True):
        class Wrapped(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.attention = attention

            def forward(self, input):
                return self.attention(input, input, input, need_weights=need_weights)[0].sum(1)

        with Gradient(Wrapped(), CPLRP(epsilon=EPS, canonizers=[MultiheadAttentionCanonizer()])) as attributor:
            relevances.append(attributor(x, torch.tensor([0, 3, 7]))[1])
    torch.testing.assert_close(relevances[0], relevances[1], rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("composite", [AttnLRP, CPLRP])
def test_fused_attention_keeps_no_sequence_by_sequence_tensor(composite, tiny_language_model):
    """With SDPA attention nothing of shape (..., T, T) is kept for the backward pass (the explicit path keeps the
    scores and the attention weights)."""
    length = 12
    inputs = {"input_ids": torch.randint(0, 48, (1, length), generator=torch.Generator().manual_seed(5))}
    kept = {}
    for implementation in ("eager", "sdpa"):
        model = tiny_language_model("gpt2", implementation).float()
        shapes = []

        def pack(tensor):
            shapes.append(tuple(tensor.shape))
            return tensor

        with Gradient(model, composite()) as attributor, torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            attributor(inputs["input_ids"], torch.tensor([3]))
        kept[implementation] = [shape for shape in shapes if shape[-2:] == (length, length)]
    assert kept["eager"], "the explicit path keeps its (T, T) scores or weights (the check can see them)"
    assert kept["sdpa"] == []
