"""Second-order gradients through fused attention without ``differentiable()``: ``composite.context(model)`` and
``torch.autograd.grad(..., create_graph=True)`` with AttnLRP on a model calling SDPA, whose fused CPU kernel has no
double backward; the module's backward notices the second-order need itself and differentiates the math backend.
Checked in float64 against the same model whose attention module runs the math backend, twice differentiable by
itself (the same rule attaches to both: the reference differs in the kernel only)."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from lrp_lightning import composites
from lrp_lightning.layer import ScaledDotProductAttention

TOLERANCE = 1e-10


class MathAttention(ScaledDotProductAttention):
    """The attention module with the math backend always: its native backward is twice differentiable."""

    def forward(self, query, key, value, *args, **kwargs):
        with sdpa_kernel(SDPBackend.MATH):
            return nn.functional.scaled_dot_product_attention(query, key, value, *args, **kwargs)


class FusedAttentionNet(nn.Module):
    """Linear Q, K, V (two heads) -> attention (fused, or ``attention``) -> mean over tokens -> Linear."""

    def __init__(self, attention: nn.Module = None) -> None:
        super().__init__()
        self.query, self.key, self.value = nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 8)
        self.attention = ScaledDotProductAttention() if attention is None else attention
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        batch, tokens, _ = x.shape
        heads = lambda y: y.view(batch, tokens, 2, 4).transpose(1, 2)  # noqa: E731
        mixed = self.attention(heads(self.query(x)), heads(self.key(x)), heads(self.value(x)))
        return self.head(mixed.transpose(1, 2).reshape(batch, tokens, 8).mean(dim=1))


def _second_order_gradients(model, inputs, mask):
    with composites.get_composite("attn_lrp")().context(model):
        output = model(inputs)
        gradient, = torch.autograd.grad(output[:, 0].sum(), inputs, create_graph=True)
    objective = (mask * inputs * gradient).sum()
    return torch.autograd.grad(objective, [inputs, *model.parameters()], allow_unused=True)


def test_the_fused_kernel_alone_has_no_double_backward():
    """What the test below would meet without the module's own backward (else it proves nothing)."""
    query = torch.randn(1, 2, 5, 4, dtype=torch.float64, requires_grad=True)
    output = nn.functional.scaled_dot_product_attention(query, query, query)
    gradient, = torch.autograd.grad(output.sum(), query, create_graph=True)
    with pytest.raises(RuntimeError, match="not implemented"):
        torch.autograd.grad(gradient.sum(), query)


def test_attn_lrp_through_fused_attention_is_twice_differentiable_outside_differentiable():
    torch.manual_seed(0)
    fused = FusedAttentionNet().double().eval()
    math = FusedAttentionNet(MathAttention()).double().eval()
    math.load_state_dict(fused.state_dict())
    inputs = torch.randn(2, 5, 8, dtype=torch.float64, requires_grad=True)
    mask = torch.rand(inputs.shape, dtype=torch.float64)
    for grad, expected in zip(_second_order_gradients(fused, inputs, mask), _second_order_gradients(math, inputs, mask)):
        assert expected is not None and expected.abs().max() > 0
        assert (grad - expected).abs().max() <= TOLERANCE * expected.abs().max()
