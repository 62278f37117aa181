"""Concepts of attention heads below the head level: each dimension of a head's value vector (or of its output).

An attention head ``h`` attends with weights ``A_h`` over its values ``V_h = X W_V^h`` and returns
``O_h = A_h V_h``, ``(T, head_dim)``; the heads' outputs are concatenated and projected. Dimension ``d`` of head
``h`` is one concept, ``h * head_dim + d``: the channel ``offset + h * head_dim + d`` of the layer whose output
holds the values (the value projection; a packed query-key-value projection from ``offset``) or of the heads'
concatenated output entering the output projection. Where to condition on them:

- ``torch.nn.MultiheadAttention`` (torchvision's ViT), under a composite with its canonizer: the value projection
  ``"<attention>.canonizer_v_proj"`` (offset 0), or the heads' output ``"<attention>.out_proj:input"``;
- GPT-2 (Hugging Face): the packed projection ``"<attn>.c_attn"`` (queries, keys, values: offset
  ``2 * embed_dim``), or ``"<attn>.c_proj:input"``;
- Llama-style attention: ``"<attn>.v_proj"`` (its heads are the key-value heads), or ``"<attn>.o_proj:input"``.

Under CP-LRP the attention weights are constants, so ``O_h = A_h V_h`` is linear in the values and passes
relevance per dimension unchanged: the relevance of value dimension ``(h, d)`` is that of output dimension
``(h, d)``, and a head's value dimensions sum to the head's relevance. Under AttnLRP the product ``A_h V_h``
shares its relevance between the weights and the values (the uniform rule), so the values get half of it.
"""
from __future__ import annotations

import torch

from lrp_lightning import _arguments
from lrp_lightning.concepts.concept import ChannelConcept, _relative


class HeadDimensionConcept(ChannelConcept):
    """Every dimension of every attention head's value vector (or output) is a concept: concept ``h * head_dim + d``
    is dimension ``d`` of head ``h``, the channel ``offset + h * head_dim + d`` of the layer's output.

    Parameters
    ----------
    heads : int
        Attention heads (for grouped-query attention, the key-value heads of a value projection).
    head_dim : int
        Dimensions per head.
    offset : int
        The channel of the layer's output where the values begin: 0 for a value projection or the heads' output,
        ``2 * embed_dim`` for a packed query-key-value projection (GPT-2's ``c_attn``).
    dim : int
        The channel dimension of the layer's output (-1 for ``(N, T, channels)``).
    """

    def __init__(self, heads: int, head_dim: int, offset: int = 0, dim: int = -1) -> None:
        super().__init__(dim)
        self.heads = _arguments.integer("heads", heads, minimum=1)
        self.head_dim = _arguments.integer("head_dim", head_dim, minimum=1)
        self.offset = _arguments.integer("offset", offset, minimum=0)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(heads={self.heads}, head_dim={self.head_dim}, offset={self.offset}, "
                f"dim={self.dim})")

    def concept(self, head: int, dimension: int) -> int:
        """The concept index of dimension ``dimension`` of head ``head``, ``head * head_dim + dimension``."""
        if not 0 <= head < self.heads or not 0 <= dimension < self.head_dim:
            raise IndexError(
                f"head {head}, dimension {dimension} out of range for {self.heads} heads of {self.head_dim} dimensions"
            )
        return head * self.head_dim + dimension

    def head_concepts(self, head: int) -> list:
        """The concept indices of all dimensions of head ``head`` (a condition on the whole head)."""
        return [self.concept(head, dimension) for dimension in range(self.head_dim)]

    def count(self, output: torch.Tensor) -> int:
        """``heads * head_dim``, after checking that the layer's output has the channels."""
        channels, needed = output.shape[self.dim], self.offset + self.heads * self.head_dim
        if channels < needed:
            raise ValueError(
                f"the layer has {channels} channels, fewer than offset {self.offset} + {self.heads} heads x "
                f"{self.head_dim} dimensions = {needed}; condition on the layer that holds the values, or fix "
                "heads, head_dim and offset"
            )
        return self.heads * self.head_dim

    def _expand(self, channels: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        full = channels.new_zeros(output.shape[self.dim])
        full[self.offset:self.offset + channels.numel()] = channels
        return super()._expand(full, output)

    def attribute(self, relevance: torch.Tensor, abs_norm: bool = True) -> torch.Tensor:
        """The relevance of each head dimension, ``R_{h,d}`` the sum of its channel's relevance (relative over the
        head dimensions with ``abs_norm``), ``(N, heads * head_dim)``; reshape to ``(N, heads, head_dim)`` for a
        per-head view (:meth:`per_head` sums the dimensions of each head)."""
        count = self.count(relevance)
        per_channel = super().attribute(relevance, abs_norm=False)[:, self.offset:self.offset + count]
        return _relative(per_channel, abs_norm)

    def per_head(self, concept_relevance: torch.Tensor) -> torch.Tensor:
        """The relevance of each head, the sum of its dimensions' concept relevances.

        Parameters
        ----------
        concept_relevance : torch.Tensor
            ``(N, heads * head_dim)``, e.g. ``attribute(relevance, abs_norm=False)``.

        Returns
        -------
        torch.Tensor
            ``(N, heads)``.
        """
        if concept_relevance.dim() != 2 or concept_relevance.shape[1] != self.heads * self.head_dim:
            raise ValueError(
                f"concept_relevance must be (N, {self.heads * self.head_dim}), got {tuple(concept_relevance.shape)}"
            )
        return concept_relevance.reshape(-1, self.heads, self.head_dim).sum(dim=-1)

