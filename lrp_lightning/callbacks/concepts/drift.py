"""Concept drift: how a class's concept distribution moved between two logged epochs."""
from __future__ import annotations

import torch


def cosine_drift(previous: torch.Tensor, current: torch.Tensor) -> float:
    """``1 - cos(previous, current)``, computed as ``0.5 * || p / |p| - c / |c| ||^2`` (the same number without
    the cancellation of ``1 - cos``: exactly 0 for identical vectors; 1 when either is zero).

    Parameters
    ----------
    previous, current : torch.Tensor
        Concept shares ``(concepts,)``.

    Returns
    -------
    float
        In ``[0, 2]``.
    """
    previous, current = previous.double().flatten(), current.double().flatten()
    previous_norm, current_norm = previous.norm(), current.norm()
    if previous_norm == 0 or current_norm == 0:
        return 1.0
    return float(0.5 * (previous / previous_norm - current / current_norm).square().sum())


def top_overlap(previous: torch.Tensor, current: torch.Tensor) -> float:
    """The share of the concepts in ``current`` (top-k concept indices) that were in ``previous`` too.

    Parameters
    ----------
    previous, current : torch.Tensor
        Top-k concept indices ``(k,)`` of two epochs.

    Returns
    -------
    float
        ``|previous ∩ current| / |current|``, in ``[0, 1]``.
    """
    if current.numel() == 0:
        return 1.0
    return len(set(previous.tolist()) & set(current.tolist())) / current.numel()


def top_concepts(shares: torch.Tensor, count: int) -> torch.Tensor:
    """The ``count`` concepts with the largest shares, largest first (ties: the lower index first).

    Parameters
    ----------
    shares : torch.Tensor
        ``(concepts,)``.
    count : int
        How many.

    Returns
    -------
    torch.Tensor
        Long ``(min(count, concepts),)``.
    """
    return torch.argsort(-shares, stable=True)[:count]
