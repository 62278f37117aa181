"""The per-sample scores whose explanation the revision losses penalise."""
from __future__ import annotations

from typing import Optional

import torch

TARGETS = ("log_prob_sum", "label", "max_logit")


def checked_target(target: str, allowed: tuple = TARGETS) -> str:
    """``target`` if it is one of ``allowed``, else a ValueError listing them."""
    if target not in allowed:
        raise ValueError(f"unknown target {target!r}; pass one of {', '.join(allowed)}")
    return target


def target_scores(logits: torch.Tensor, target: str, labels: Optional[torch.Tensor]) -> torch.Tensor:
    """Per-sample scores ``(N,)`` of ``(N, K)`` logits.

    ``"log_prob_sum"``: ``Σ_k log p_k`` (Ross et al. 2017); ``"label"``: the logit of the sample's label;
    ``"max_logit"``: the largest logit.

    Raises
    ------
    ValueError
        For ``"label"`` without labels, or logits that are not ``(N, K)``.
    """
    if logits.ndim != 2:
        raise ValueError(f"the model must return (N, K) logits, got shape {tuple(logits.shape)}")
    if target == "log_prob_sum":
        return torch.log_softmax(logits, dim=1).sum(dim=1)
    if target == "max_logit":
        return logits.max(dim=1).values
    if labels is None:
        raise ValueError("target='label' needs the labels: call with labels=...")
    return logits.gather(1, torch.as_tensor(labels, device=logits.device).long().reshape(-1, 1)).squeeze(1)


def start_relevance(logits: torch.Tensor, target: str, labels: Optional[torch.Tensor]) -> torch.Tensor:
    """The gradient of :func:`target_scores` with respect to the ``(N, K)`` logits, in their graph
    (``1 − K softmax(z)`` for ``"log_prob_sum"``, a one-hot vector for ``"label"`` and ``"max_logit"``):
    what an LRP pass for the target starts from, differentiable where the target's gradient depends on the
    logits."""
    with torch.enable_grad():
        leaf = logits if logits.requires_grad else logits.detach().requires_grad_(True)
        gradient, = torch.autograd.grad(target_scores(leaf, target, labels).sum(), leaf, create_graph=True)
    return gradient
