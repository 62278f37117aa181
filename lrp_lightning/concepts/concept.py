"""Concepts of a layer: which part of its output a concept is (the mask of a conditional backward pass)
and how much relevance each concept holds.

A concept is a set of units of a layer's output. :class:`ChannelConcept` takes each channel (the units
at one index of a dimension, dim 1 by default: a convolution's or a linear layer's output channels, or
the heads of an attention output ``(N, H, T, D)``); :class:`GroupConcept` takes groups of consecutive
channels (the heads of a concatenated attention output ``(N, T, H * D)``).
"""
from __future__ import annotations

from typing import Sequence

import torch

from lrp_lightning import _arguments


NORM_STABILIZER = 1e-10


def _relative(totals: torch.Tensor, abs_norm: bool) -> torch.Tensor:
    """``totals`` ``(N, K)``, with ``abs_norm`` divided per row by ``sum_k |totals_k| + 1e-10`` (as zennit-crp;
    rows without relevance stay 0)."""
    if not abs_norm:
        return totals
    return totals / (totals.abs().sum(dim=1, keepdim=True) + NORM_STABILIZER)


class ChannelConcept:
    """Every channel of a layer's output is a concept (zennit-crp's ``ChannelConcept``).

    Concept ``c`` of an output ``(N, C, ...)`` is the slice ``[:, c]`` along ``dim``; its relevance
    is ``R_c = sum_{other dims} R_{:, c}`` and its relative relevance ``R_c / (sum_k |R_k| + 1e-10)``.

    Parameters
    ----------
    dim : int
        The channel dimension of the layer's output (counting the batch dimension as 0): 1 for
        convolutions and linear layers, -1 for a transformer's hidden states ``(N, T, D)``, 1 for the
        heads of an attention output ``(N, H, T, D)``.
    """

    def __init__(self, dim: int = 1) -> None:
        self.dim = _arguments.integer("dim", dim)
        if self.dim == 0:
            raise ValueError("dim must not be 0, the batch dimension; pass the channel dimension (1 or -1)")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(dim={self.dim})"

    def channels_last(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` ``(N, ...)`` as ``(N, rest, C)`` with the concept dimension last."""
        if tensor.dim() < 2:
            raise ValueError(f"{type(self).__name__} needs a batched output (N, C, ...), got shape {tuple(tensor.shape)}")
        moved = tensor.movedim(self.dim, -1)
        return moved.reshape(moved.shape[0], -1, moved.shape[-1])

    def count(self, output: torch.Tensor) -> int:
        """The number of concepts of a layer whose (batched) output is ``output``."""
        return output.shape[self.dim]

    def mask(self, output: torch.Tensor, concept_ids: Sequence[int]) -> torch.Tensor:
        """The 0/1 mask of one sample's output that keeps the concepts ``concept_ids``.

        Parameters
        ----------
        output : torch.Tensor
            The layer's batched output ``(N, ...)``.
        concept_ids : sequence of int
            Concept indices, each in ``[0, count(output))``.

        Returns
        -------
        torch.Tensor
            ``(*output.shape[1:])``, 1 on the chosen concepts and 0 elsewhere.
        """
        count = self.count(output)
        ids = torch.as_tensor(list(concept_ids), dtype=torch.long)
        if ids.numel() and (int(ids.min()) < -count or int(ids.max()) >= count):
            raise IndexError(
                f"concept index {[int(i) for i in ids if not -count <= int(i) < count]} out of range for a layer "
                f"with {count} concepts (0 .. {count - 1}); pick concept indices below {count}"
            )
        channels = torch.zeros(count, dtype=output.dtype, device=output.device)
        channels[ids.to(output.device)] = 1
        return self._expand(channels, output)

    def _expand(self, channels: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        """Per-channel values ``(C,)`` broadcast to one sample's output shape."""
        dim = self.dim % output.dim()
        shape = [1] * (output.dim() - 1)
        shape[dim - 1] = output.shape[dim]
        return channels.reshape(shape).expand(output.shape[1:])

    def attribute(self, relevance: torch.Tensor, abs_norm: bool = True) -> torch.Tensor:
        """The relevance of each concept, ``R_c = sum_{other dims} R_c``; with ``abs_norm`` relative,
        ``R_c / (sum_k |R_k| + 1e-10)``.

        Parameters
        ----------
        relevance : torch.Tensor
            A layer's relevance ``(N, ...)`` (its output's shape).
        abs_norm : bool
            Divide by the sum of absolute concept relevances of each sample.

        Returns
        -------
        torch.Tensor
            ``(N, count)``.
        """
        return _relative(self.channels_last(relevance).sum(dim=1), abs_norm)


class GroupConcept(ChannelConcept):
    """Groups of ``size`` consecutive channels are the concepts, e.g. the heads of an attention output whose
    heads are concatenated along the last dimension ``(N, T, H * D)`` (``GroupConcept(D, dim=-1)``).

    Concept ``h`` holds channels ``h * size .. (h + 1) * size - 1``; its relevance is the sum of theirs.

    Parameters
    ----------
    size : int
        Channels per concept (a head's dimension); must divide the number of channels.
    dim : int
        The channel dimension of the layer's output.
    """

    def __init__(self, size: int, dim: int = -1) -> None:
        super().__init__(dim)
        self.size = _arguments.integer("size", size, minimum=1)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size}, dim={self.dim})"

    def count(self, output: torch.Tensor) -> int:
        """The number of groups of a layer whose output is ``output``."""
        channels = output.shape[self.dim]
        if channels % self.size:
            raise ValueError(
                f"{channels} channels do not split into groups of {self.size}; pass the head dimension as size"
            )
        return channels // self.size

    def _expand(self, channels: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        return super()._expand(channels.repeat_interleave(self.size), output)

    def attribute(self, relevance: torch.Tensor, abs_norm: bool = True) -> torch.Tensor:
        """The relevance of each group, ``R_h = sum_{c in h} R_c`` (relative with ``abs_norm``), ``(N, count)``."""
        per_channel = super().attribute(relevance, abs_norm=False)
        groups = per_channel.reshape(per_channel.shape[0], self.count(relevance), self.size).sum(dim=-1)
        return _relative(groups, abs_norm)
