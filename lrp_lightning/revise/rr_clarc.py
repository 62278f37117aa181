"""Right-Reason ClArC (Dreyer et al. 2024): penalise the model's sensitivity along the artifact direction."""
from __future__ import annotations

from typing import Optional

import torch

from lrp_lightning.revise.layers import captured_output, channels_last, named_layer
from lrp_lightning.revise._targets import checked_target, target_scores
from lrp_lightning.revise.cav import ConceptActivationVector

AGGREGATES = ("l2", "l1", "cosine")


def directional_sensitivity(gradient: torch.Tensor, cav: ConceptActivationVector) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(gᵀv, |g|)`` per sample for the gradient ``g = ∇_a f`` at a layer: for a pooled CAV ``g`` summed
    over the spatial positions first (the sensitivity to moving every position along ``v``), else flattened."""
    direction = cav.direction.to(gradient)
    if cav.pooled:
        values = channels_last(gradient)
        flat = values.reshape(values.shape[0], -1, values.shape[-1]).sum(dim=1)
    else:
        flat = gradient.flatten(1)
    return flat @ direction, flat.norm(dim=1)


class RRClArCLoss(torch.nn.Module):
    """The RR-ClArC penalty ``λ · agg_n(∇_a f_c(x_n) · v)`` at one layer, added to the task loss.

    ``a`` is the layer's output, ``v`` the CAV's unit direction, ``f_c`` the largest logit (``"max_logit"``) or
    the label's. The aggregate over the ``N`` samples: ``"l2"``: ``mean (gᵀv)²``; ``"l1"``: ``mean |gᵀv|``;
    ``"cosine"``: ``mean (gᵀv / |g|)²`` (the squared cosine between gradient and artifact direction).
    Differentiable in the parameters (computed with ``create_graph=True``); the model is left as it was.

    Parameters
    ----------
    cav : ConceptActivationVector
        The artifact direction at ``layer``.
    layer : str
        The submodule's name (``model.named_modules()``).
    target : {"max_logit", "label", "log_prob_sum"}
        ``f_c``.
    aggregate : {"l2", "l1", "cosine"}
        How the sensitivities are combined.
    weight : float
        ``λ``.
    """

    def __init__(self, cav: ConceptActivationVector, layer: str, target: str = "max_logit", aggregate: str = "l2",
                 weight: float = 1.0) -> None:
        super().__init__()
        if not isinstance(cav, ConceptActivationVector):
            raise TypeError(f"cav must be a ConceptActivationVector (see ConceptActivationVector.fit), got {type(cav).__name__}")
        if aggregate not in AGGREGATES:
            raise ValueError(f"unknown aggregate {aggregate!r}; pass one of {', '.join(AGGREGATES)}")
        self.cav, self.layer, self.aggregate, self.weight = cav, layer, aggregate, float(weight)
        self.target = checked_target(target)

    def forward(self, model: torch.nn.Module, inputs: torch.Tensor, labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Return the penalty for a batch.

        Parameters
        ----------
        model : torch.nn.Module
            The classifier being trained.
        inputs : torch.Tensor
            ``(N, ...)``.
        labels : torch.Tensor, optional
            Class indices (``target="label"``).

        Returns
        -------
        torch.Tensor
            A scalar in the graph of the parameters.

        Raises
        ------
        ValueError
            If ``layer`` is no submodule of ``model`` (the message lists the known ones).
        """
        module = named_layer(model, self.layer)
        with torch.enable_grad(), captured_output(module) as outputs:
            scores = target_scores(model(inputs), self.target, labels)
        if not outputs:
            raise RuntimeError(f"layer {self.layer!r} was not called in the forward pass; pick a layer the model uses")
        activation = outputs[0]
        gradient, = torch.autograd.grad(scores.sum(), activation, create_graph=True)
        along, norm = directional_sensitivity(gradient, self.cav)
        if self.aggregate == "l2":
            penalty = along.pow(2).mean()
        elif self.aggregate == "l1":
            penalty = along.abs().mean()
        else:
            penalty = (along / norm.clamp(min=torch.finfo(norm.dtype).tiny)).pow(2).mean()
        return self.weight * penalty

    def extra_repr(self) -> str:
        return f"layer={self.layer!r}, target={self.target!r}, aggregate={self.aggregate!r}, weight={self.weight}"
