"""Canonizers for PyTorch's own transformer modules: ``nn.MultiheadAttention`` and the activation of
``nn.TransformerEncoderLayer`` / ``nn.TransformerDecoderLayer``.

``nn.MultiheadAttention`` computes its projections, attention scores, softmax and weighted sum
inside one function (or one fused kernel), where no rule can reach them. The canonizer gives the
instance a forward of the same semantics built from explicit modules — ``nn.Linear`` query, key and
value projections (views of the packed ``in_proj_weight``, never copies or writes), then, when the
attention weights are not asked for (``need_weights=False``, as torchvision's ViT calls it), the
fused kernel as a :class:`~lrp_lightning.layer.ScaledDotProductAttention`, otherwise a
:class:`~lrp_lightning.layer.MatMul` for ``Q K^T``, an ``nn.Softmax`` for the attention weights and
a :class:`~lrp_lightning.layer.MatMul` for the weighted sum of values — and removes all of it on
exit. The transformer layers call their activation as a function; the second canonizer makes it a
module. No class is changed: only instance attributes, restored exactly.
"""
from __future__ import annotations

import math
import warnings
from typing import Optional

import torch
import torch.nn.functional as F

from lrp_lightning.auto_canonizers import register_auto_canonizer
from lrp_lightning.canonizers import AttributeCanonizer
from lrp_lightning.layer import MatMul, ScaledDotProductAttention


def _parameter_view(parameter: Optional[torch.Tensor], start: int, stop: int) -> Optional[torch.nn.Parameter]:
    """A parameter sharing storage with rows ``start:stop`` of ``parameter`` (None if absent)."""
    if parameter is None:
        return None
    return torch.nn.Parameter(parameter.detach()[start:stop], requires_grad=parameter.requires_grad)


def _projection(weight: torch.nn.Parameter, bias: Optional[torch.nn.Parameter]) -> torch.nn.Linear:
    """An ``nn.Linear`` holding ``weight`` and ``bias`` themselves (no copy)."""
    linear = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device="meta")
    linear._parameters["weight"] = weight
    linear._parameters["bias"] = bias
    return linear


def _projections(attention: torch.nn.MultiheadAttention) -> tuple:
    """The query, key and value projections of ``attention`` as ``nn.Linear`` modules."""
    dim = attention.embed_dim
    bias = attention.in_proj_bias
    biases = [_parameter_view(bias, index * dim, (index + 1) * dim) for index in range(3)]
    if attention._qkv_same_embed_dim:
        packed = attention.in_proj_weight
        weights = [_parameter_view(packed, index * dim, (index + 1) * dim) for index in range(3)]
    else:
        weights = [attention.q_proj_weight, attention.k_proj_weight, attention.v_proj_weight]
    return tuple(_projection(weight, bias) for weight, bias in zip(weights, biases))


def _additive_mask(mask: Optional[torch.Tensor], dtype: torch.dtype) -> Optional[torch.Tensor]:
    """A float mask added to the attention scores (boolean ``True`` = masked out = ``-inf``)."""
    if mask is None:
        return None
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(mask, float("-inf"))
    return mask.to(dtype)


def _attention_bias(
    attention: torch.nn.MultiheadAttention,
    attn_mask: Optional[torch.Tensor],
    key_padding_mask: Optional[torch.Tensor],
    batch: int,
    extra_keys: int,
    dtype: torch.dtype,
) -> Optional[torch.Tensor]:
    """The sum of both masks as a float tensor broadcasting to the scores ``(N, H, L, S)``."""
    attn_mask = _additive_mask(attn_mask, dtype)
    key_padding_mask = _additive_mask(key_padding_mask, dtype)
    bias = None
    if attn_mask is not None:
        if attn_mask.dim() == 2:
            bias = attn_mask.view(1, 1, *attn_mask.shape)
        elif attn_mask.dim() == 3:
            bias = attn_mask.view(batch, attention.num_heads, *attn_mask.shape[1:])
        else:
            raise RuntimeError(f"attn_mask's dimension {attn_mask.dim()} is not supported")
    if key_padding_mask is not None:
        padding = key_padding_mask.view(batch, 1, 1, key_padding_mask.shape[-1])
        bias = padding if bias is None else bias + padding
    if bias is not None and extra_keys:
        bias = F.pad(bias, (0, extra_keys))
    return bias


def _multihead_attention_forward(
    self: torch.nn.MultiheadAttention,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    key_padding_mask: Optional[torch.Tensor] = None,
    need_weights: bool = True,
    attn_mask: Optional[torch.Tensor] = None,
    average_attn_weights: bool = True,
    is_causal: bool = False,
) -> tuple:
    """``nn.MultiheadAttention.forward`` with the projections, products and softmax as modules."""
    if is_causal and attn_mask is None:
        raise RuntimeError(
            "Need attn_mask if specifying the is_causal hint. You may use the Transformer module method "
            "`generate_square_subsequent_mask` to create this mask."
        )
    batched = query.dim() == 3
    if not batched:
        query, key, value = (tensor.unsqueeze(0) for tensor in (query, key, value))
        if key_padding_mask is not None:
            key_padding_mask = key_padding_mask.unsqueeze(0)
    elif not self.batch_first:
        query, key, value = (tensor.transpose(0, 1) for tensor in (query, key, value))
    batch, target_length, _ = query.shape
    heads, head_dim = self.num_heads, self.head_dim
    q = self.canonizer_q_proj(query)
    k = self.canonizer_k_proj(key)
    v = self.canonizer_v_proj(value)
    extra_keys = 0
    if self.bias_k is not None and self.bias_v is not None:
        k = torch.cat([k, self.bias_k.reshape(1, 1, -1).expand(batch, 1, -1)], dim=1)
        v = torch.cat([v, self.bias_v.reshape(1, 1, -1).expand(batch, 1, -1)], dim=1)
        extra_keys += 1
    q = q.view(batch, target_length, heads, head_dim).transpose(1, 2)
    k = k.view(batch, k.shape[1], heads, head_dim).transpose(1, 2)
    v = v.view(batch, v.shape[1], heads, head_dim).transpose(1, 2)
    if self.add_zero_attn:
        zeros = k.new_zeros(batch, heads, 1, head_dim)
        k = torch.cat([k, zeros], dim=2)
        v = torch.cat([v, zeros], dim=2)
        extra_keys += 1
    bias = _attention_bias(self, attn_mask, key_padding_mask, batch, extra_keys, q.dtype)
    if need_weights:
        scores = self.canonizer_scores(q * math.sqrt(1.0 / head_dim), k.transpose(-2, -1))
        if bias is not None:
            scores = scores + bias
        weights = self.canonizer_softmax(scores)
        attended = F.dropout(weights, p=self.dropout) if self.training and self.dropout > 0 else weights
        context = self.canonizer_context(attended, v)
    else:
        dropout = self.dropout if self.training else 0.0
        context = self.canonizer_attention(q, k, v, attn_mask=bias, dropout_p=dropout)
    output = self.out_proj(context.transpose(1, 2).reshape(batch, target_length, self.embed_dim))
    if not batched:
        output = output.squeeze(0)
    elif not self.batch_first:
        output = output.transpose(0, 1)
    if not need_weights:
        return output, None
    if average_attn_weights:
        weights = weights.mean(dim=1)
    return output, weights if batched else weights.squeeze(0)


class MultiheadAttentionCanonizer(AttributeCanonizer):
    """Make every ``nn.MultiheadAttention`` explicit: projections, then fused attention or ``Q K^T``, softmax, weighted sum.

    Each instance gets, until removed, the submodules ``canonizer_q_proj``, ``canonizer_k_proj``,
    ``canonizer_v_proj`` (``nn.Linear`` on views of the packed projection weights),
    ``canonizer_scores`` (:class:`~lrp_lightning.layer.MatMul` of scaled queries and transposed
    keys), ``canonizer_softmax`` (``nn.Softmax(dim=-1)``, after the masks are added),
    ``canonizer_context`` (:class:`~lrp_lightning.layer.MatMul` of attention weights and values),
    used when the attention weights are returned, ``canonizer_attention``
    (:class:`~lrp_lightning.layer.ScaledDotProductAttention`, the fused kernel) used otherwise,
    and a forward with the semantics of ``nn.MultiheadAttention.forward`` (batch first or not,
    unbatched inputs, boolean and float ``attn_mask`` / ``key_padding_mask``, ``bias_k``/``bias_v``,
    ``add_zero_attn``, dropout in training mode, ``need_weights``/``average_attn_weights``). The
    module's own fast path (a fused kernel for the whole layer) is never taken while canonized.
    """

    def __init__(self) -> None:
        super().__init__(self._attribute_map)

    @staticmethod
    def _attribute_map(name: str, module: torch.nn.Module) -> Optional[dict]:
        if not isinstance(module, torch.nn.MultiheadAttention):
            return None
        q_proj, k_proj, v_proj = _projections(module)
        return {
            "canonizer_q_proj": q_proj,
            "canonizer_k_proj": k_proj,
            "canonizer_v_proj": v_proj,
            "canonizer_scores": MatMul(),
            "canonizer_softmax": torch.nn.Softmax(dim=-1),
            "canonizer_context": MatMul(),
            "canonizer_attention": ScaledDotProductAttention(),
            "forward": _multihead_attention_forward.__get__(module),
        }


_ACTIVATION_MODULES = {
    F.relu: torch.nn.ReLU,
    torch.relu: torch.nn.ReLU,
    F.gelu: torch.nn.GELU,
    F.silu: torch.nn.SiLU,
    F.tanh: torch.nn.Tanh,
    torch.tanh: torch.nn.Tanh,
    F.sigmoid: torch.nn.Sigmoid,
    torch.sigmoid: torch.nn.Sigmoid,
}

_TRANSFORMER_LAYERS = (torch.nn.TransformerEncoderLayer, torch.nn.TransformerDecoderLayer)


class TransformerLayerActivationCanonizer(AttributeCanonizer):
    """Make the activation of ``nn.TransformerEncoderLayer`` / ``nn.TransformerDecoderLayer`` a module.

    These layers keep their activation as a function (``F.relu``, ``F.gelu``) unless a module was
    given; the canonizer sets the matching ``torch.nn`` module as ``activation`` until removed, so
    that the element-wise rule can be attached to it. An activation function it does not know is
    left as it is, with a warning (its plain gradient flows).
    """

    def __init__(self) -> None:
        super().__init__(self._attribute_map)

    @staticmethod
    def _attribute_map(name: str, module: torch.nn.Module) -> Optional[dict]:
        if not isinstance(module, _TRANSFORMER_LAYERS) or isinstance(module.activation, torch.nn.Module):
            return None
        activation = _ACTIVATION_MODULES.get(module.activation)
        if activation is None:
            warnings.warn(
                f"the activation {module.activation!r} of {name or type(module).__name__} is a function without a "
                "known module equivalent; its plain gradient is used. Pass the activation as a torch.nn module.",
                stacklevel=4,
            )
            return None
        return {"activation": activation()}


def _has_multihead_attention(module: torch.nn.Module) -> bool:
    return isinstance(module, torch.nn.MultiheadAttention)


def _has_transformer_layer(module: torch.nn.Module) -> bool:
    return isinstance(module, _TRANSFORMER_LAYERS)


def _forward_replaced(module: torch.nn.Module) -> bool:
    return "forward" in module.__dict__


def _activation_is_module(module: torch.nn.Module) -> bool:
    return isinstance(module.activation, torch.nn.Module)


register_auto_canonizer(
    "torch.nn.MultiheadAttention", _has_multihead_attention, MultiheadAttentionCanonizer, _forward_replaced
)
register_auto_canonizer(
    "torch.nn.Transformer*Layer activation", _has_transformer_layer, TransformerLayerActivationCanonizer, _activation_is_module
)
