"""Right for the Right Reasons (Ross et al., IJCAI 2017): penalise the explanation inside regions that must not matter."""
from __future__ import annotations

from typing import Optional, Union

import torch

from lrp_lightning.composites import get_composite
from lrp_lightning.core import Composite, differentiable
from lrp_lightning.model_state import preserved_buffers, preserved_random_state
from lrp_lightning.revise._targets import checked_target, start_relevance, target_scores

REDUCTIONS = ("sum", "mean")


def checked_masks(masks: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """``masks`` (bool or float) as a float tensor on the inputs' device and dtype.

    Raises
    ------
    ValueError
        If ``masks`` does not have the inputs' shape.
    """
    if not isinstance(masks, torch.Tensor):
        raise TypeError(f"masks must be a tensor of the inputs' shape {tuple(inputs.shape)}, got {type(masks).__name__}")
    if masks.shape != inputs.shape:
        raise ValueError(
            f"masks must have the inputs' shape {tuple(inputs.shape)} (1 where the input must not matter), got "
            f"{tuple(masks.shape)}; expand a per-pixel mask over the channel axis, e.g. masks.expand_as(inputs)"
        )
    return masks.to(device=inputs.device, dtype=inputs.dtype)


class RightReasonsLoss(torch.nn.Module):
    """The right-reasons penalty: ``λ Σ_n Σ_d (A_nd · E_nd(x_n))²`` for the explanation ``E`` and a mask ``A``
    of what must not matter; added to the task loss inside ``training_step``.

    ``explainer="gradient"`` is Ross et al.'s input gradient ``E = ∂/∂x Σ_k log p_k(x)`` (with
    ``target="log_prob_sum"``); a composite name of the registry (``"epsilon_plus_flat"``, ...) or a
    :class:`~lrp_lightning.core.Composite` penalises its LRP relevance ``E = R(x)`` instead. LRP starts from
    the output relevance ``R_k = z_k ∂s/∂z_k`` (Bach et al.'s ``R = f(x)`` for a single class), in the graph of
    the logits ``z`` (the target's gradient too, so the penalty's gradient is exact for ``"log_prob_sum"``):
    the rules divide relevance by the logits, and a relevance proportional to them keeps that quotient and its
    derivative bounded where a logit is near zero (the gradient alone, divided by a vanishing logit, makes
    the penalty and its gradient explode). A composite whose backward pass carries gradients
    (``gradient_view``) starts from ``∂s/∂z`` and multiplies by the input. Both explanations are computed
    with ``create_graph=True``, so the penalty trains the model's parameters. The model is left as it was
    (hooks removed, buffers restored).

    Parameters
    ----------
    explainer : str or Composite
        ``"gradient"``, a registered composite name or a composite.
    target : {"log_prob_sum", "label", "max_logit"}
        The explained score per sample: ``Σ_k log p_k``, the label's logit (needs ``labels``), the largest logit.
    weight : float
        ``λ``.
    reduction : {"sum", "mean"}
        Sum over samples, or mean over samples.
    """

    def __init__(self, explainer: Union[str, Composite] = "gradient", target: str = "log_prob_sum",
                 weight: float = 1.0, reduction: str = "sum") -> None:
        super().__init__()
        if isinstance(explainer, str) and explainer != "gradient":
            get_composite(explainer)  # an unknown name raises here, listing the registered ones
        elif not isinstance(explainer, (str, Composite)):
            raise TypeError(f"explainer must be 'gradient', a composite name or a Composite, got {type(explainer).__name__}")
        if reduction not in REDUCTIONS:
            raise ValueError(f"unknown reduction {reduction!r}; pass 'sum' or 'mean'")
        self.explainer = explainer
        self.target = checked_target(target)
        self.weight = float(weight)
        self.reduction = reduction

    def explanation(self, model: torch.nn.Module, inputs: torch.Tensor, labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Return ``E(x)``, differentiable with respect to the model's parameters (and ``inputs``, if they require grad).

        Parameters
        ----------
        model : torch.nn.Module
            A classifier returning ``(N, K)`` logits.
        inputs : torch.Tensor
            ``(N, ...)``.
        labels : torch.Tensor, optional
            ``(N,)`` class indices (for ``target="label"``).

        Returns
        -------
        torch.Tensor
            Of the inputs' shape.
        """
        if self.explainer == "gradient":
            leaf = inputs if inputs.requires_grad else inputs.detach().requires_grad_(True)
            with torch.enable_grad():
                scores = target_scores(model(leaf), self.target, labels)
                gradient, = torch.autograd.grad(scores.sum(), leaf, create_graph=True)
            return gradient
        composite = get_composite(self.explainer)() if isinstance(self.explainer, str) else self.explainer
        gradient_view = bool(getattr(composite, "gradient_view", False))
        leaf = inputs if inputs.requires_grad else inputs.detach().requires_grad_(True)
        with preserved_buffers(model), preserved_random_state(inputs.device), composite.context(model), \
                differentiable(), torch.enable_grad():
            logits = model(leaf)
            relevance = start_relevance(logits, self.target, labels)
            if not gradient_view:
                relevance = logits * relevance
            gradient, = torch.autograd.grad(logits, leaf, relevance, create_graph=True)
        return leaf * gradient if gradient_view else gradient

    def forward(self, model: torch.nn.Module, inputs: torch.Tensor, masks: torch.Tensor,
                labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Return the penalty ``λ Σ_n Σ_d (A_nd · E_nd)²`` (``mean`` over samples with ``reduction="mean"``).

        Parameters
        ----------
        model : torch.nn.Module
            The classifier being trained.
        inputs : torch.Tensor
            The batch ``(N, ...)``.
        masks : torch.Tensor
            ``A``: bool or float, the inputs' shape, 1 where the input must not matter.
        labels : torch.Tensor, optional
            Class indices, for ``target="label"``.

        Returns
        -------
        torch.Tensor
            A scalar in the graph of the model's parameters.

        Raises
        ------
        ValueError
            If ``masks`` does not have the inputs' shape.
        """
        masks = checked_masks(masks, inputs)
        explanation = self.explanation(model, inputs, labels)
        per_sample = (masks * explanation).pow(2).flatten(1).sum(dim=1)
        total = per_sample.sum() if self.reduction == "sum" else per_sample.mean()
        return self.weight * total

    def extra_repr(self) -> str:
        return f"explainer={self.explainer!r}, target={self.target!r}, weight={self.weight}, reduction={self.reduction!r}"
