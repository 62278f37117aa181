"""Artifact masks without annotations (Reveal-to-Revise, Pahde et al. 2023): the relevance of the CAV direction at a
layer, propagated to the input with an LRP composite and thresholded."""
from __future__ import annotations

from typing import Union

import torch

from lrp_lightning.attribution import preserved_random_state
from lrp_lightning.composites import get_composite
from lrp_lightning.core import Composite
from lrp_lightning.revise.layers import captured_output, channels_last, named_layer
from lrp_lightning.revise.cav import ConceptActivationVector


def concept_heatmaps(model: torch.nn.Module, layer: str, cav: ConceptActivationVector, inputs: torch.Tensor,
                     composite: Union[str, Composite] = "epsilon_plus") -> torch.Tensor:
    """Return the input relevance of the artifact concept: LRP from ``layer`` starting at ``R_l = (a ⊙ v)⁺``.

    ``a`` is the layer's output and ``v`` the CAV direction (at every position for a pooled CAV); the relevance
    is propagated to the input with ``composite``. The model is left as it was.

    Parameters
    ----------
    model : torch.nn.Module
        The model.
    layer : str
        The layer the CAV was fitted at.
    cav : ConceptActivationVector
        The artifact direction.
    inputs : torch.Tensor
        ``(N, ...)``.
    composite : str or Composite
        The LRP composite (a registry name or an instance).

    Returns
    -------
    torch.Tensor
        The inputs' shape, detached.
    """
    module = named_layer(model, layer)
    composite = get_composite(composite)() if isinstance(composite, str) else composite
    leaf = inputs.detach().clone().requires_grad_(True)
    with preserved_random_state(inputs.device), torch.enable_grad(), composite.context(model), \
            captured_output(module) as outputs:
        model(leaf)
        activation = outputs[0]
        direction = cav.direction.to(activation)
        if cav.pooled:
            start = (channels_last(activation) * direction).clamp(min=0)
            start = start.movedim(-1, 1) if activation.ndim > 2 else start
        else:
            start = (activation.flatten(1) * direction).clamp(min=0).reshape(activation.shape)
        relevance, = torch.autograd.grad(activation, leaf, start.detach())
    return relevance.detach()


def concept_masks(model: torch.nn.Module, layer: str, cav: ConceptActivationVector, inputs: torch.Tensor,
                  composite: Union[str, Composite] = "epsilon_plus", quantile: float = 0.9) -> torch.Tensor:
    """Return boolean artifact masks of the inputs' shape: positions whose concept relevance (summed over the
    channel axis, see :func:`concept_heatmaps`) is at least its per-sample ``quantile`` and positive; usable as the
    ``masks`` of :class:`~lrp_lightning.revise.RightReasonsLoss`.

    Parameters
    ----------
    model, layer, cav, inputs, composite
        As for :func:`concept_heatmaps`.
    quantile : float
        In (0, 1): the share of positions left out of the mask.

    Returns
    -------
    torch.Tensor
        Bool, the inputs' shape (the same mask on every channel of a position).
    """
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile must lie in (0, 1), got {quantile}")
    heat = concept_heatmaps(model, layer, cav, inputs, composite)
    spatial = heat.sum(dim=1, keepdim=True) if heat.ndim > 2 else heat
    thresholds = torch.quantile(spatial.flatten(1).to(torch.float64), quantile, dim=1)
    thresholds = thresholds.to(spatial.dtype).reshape(-1, *([1] * (spatial.ndim - 1)))
    return ((spatial >= thresholds) & (spatial > 0)).expand_as(heat).clone()
