"""Relative concept relevance per class: the share of a layer's relevance in each concept, averaged over the
samples of each class."""
from __future__ import annotations

import torch


def class_concept_relevance(relative: torch.Tensor, targets: torch.Tensor, classes: int) -> torch.Tensor:
    """Mean relative concept relevance of each class.

    ``S[k, c] = mean_{n: t_n = k} R_c(n) / (sum_j |R_j(n)| + 1e-10)`` over the samples of class ``k``
    (0 for a class without samples).

    Parameters
    ----------
    relative : torch.Tensor
        ``(N, concepts)``, e.g. ``ChannelConcept().attribute(relevance, abs_norm=True)``.
    targets : torch.Tensor
        ``(N,)`` the class each sample was explained for.
    classes : int
        Number of classes ``K``.

    Returns
    -------
    torch.Tensor
        ``(K, concepts)``.
    """
    if relative.dim() != 2 or targets.shape != relative.shape[:1]:
        raise ValueError(
            f"relative must be (N, concepts) and targets (N,), got {tuple(relative.shape)} and {tuple(targets.shape)}"
        )
    targets = targets.to(relative.device, torch.long)
    if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= classes):
        raise ValueError(f"targets must lie in [0, {classes}), got {targets.tolist()}")
    sums = relative.new_zeros(classes, relative.shape[1]).index_add_(0, targets, relative)
    counts = torch.bincount(targets, minlength=classes).to(relative.dtype).clamp_min(1)
    return sums / counts[:, None]
