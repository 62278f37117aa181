"""Canonizers for timm's vision transformers (timm is never imported here).

timm's ``Attention`` (the attention of ``VisionTransformer`` and of the models built from its
blocks) computes ``softmax(q k^T * scale) v`` either with ``F.scaled_dot_product_attention``
(``fused_attn``) or, unfused, with ``@`` and ``Tensor.softmax``. :class:`TimmAttentionCanonizer`
makes either path explicit (:mod:`lrp_lightning.transformer.eager_attention`): the fused call becomes a
:class:`~lrp_lightning.layer.ScaledDotProductAttention` submodule (the kernel still runs), the
unfused path's ``q k^T`` and ``weights v`` :class:`~lrp_lightning.layer.MatMul` submodules and its
softmax an ``nn.Softmax``; everything is restored exactly on exit. The rest of a timm ViT — patch embedding (``Conv2d``), ``Linear``
layers, ``LayerNorm``, the ``GELU`` of its ``Mlp``, additive position embeddings and class token,
LayerScale — gets its rules from the composites directly.
"""
from __future__ import annotations

import torch

from lrp_lightning.auto_canonizers import register_auto_canonizer
from lrp_lightning.transformer.eager_attention import ExplicitAttentionCanonizer

# timm >= 1.0 defines Attention in timm.layers.attention; earlier releases in the ViT model module.
ATTENTION_CLASSES = {
    "timm.layers.attention": ("Attention",),
    "timm.models.vision_transformer": ("Attention",),
}


def is_attention(module: torch.nn.Module) -> bool:
    """Whether ``module`` is timm's ``Attention`` (the multi-head self-attention of its ViT blocks)."""
    cls = type(module)
    return cls.__name__ in ATTENTION_CLASSES.get(cls.__module__, ())


class TimmAttentionCanonizer(ExplicitAttentionCanonizer):
    """Explicit attention in timm's ``Attention`` modules: the fused kernel as a module, or ``q k^T``,
    softmax and ``weights v`` as modules (unfused).

    The optional output gate of ``Attention(gated=True)`` stays a plain product (its gradient flows
    unmodified).
    """

    def __init__(self) -> None:
        super().__init__(is_attention)


register_auto_canonizer("timm attention", is_attention, TimmAttentionCanonizer)
