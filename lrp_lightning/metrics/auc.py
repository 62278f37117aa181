"""Localisation AUC (Fawcett 2006): area under the ROC curve of the attributions as a mask detector."""
from typing import Any

import torch
from torch import Tensor

from lrp_lightning._arguments import boolean
from lrp_lightning.metrics._localisation import MaskLocalisationMetric


def roc_auc_rows(scores: Tensor, positive: Tensor) -> Tensor:
    """Area under the ROC curve of each row of ``scores`` (N, F) as a detector of ``positive`` (N, F, bool).

    Equal to the Mann-Whitney statistic with ties counting one half: with ``r_p`` the 1-based rank of
    positive entry p among its row (tied entries share their average rank),
    ``AUC = (Σ_p r_p - P (P + 1) / 2) / (P N)``. One sort per row; the tie groups' first and last
    positions come from running maxima and minima over the sorted row.
    """
    ordered, order = scores.sort(dim=1)
    width = scores.shape[1]
    positions = torch.arange(width, device=scores.device).expand_as(ordered)
    changes = ordered[:, 1:] != ordered[:, :-1]
    starts = torch.cat([torch.ones_like(changes[:, :1]), changes], dim=1)
    ends = torch.cat([changes, torch.ones_like(changes[:, :1])], dim=1)
    first = torch.where(starts, positions, torch.zeros_like(positions)).cummax(dim=1).values
    last = torch.where(ends, positions, torch.full_like(positions, width)).flip(1).cummin(dim=1).values.flip(1)
    average_rank = (first + last).double() / 2 + 1
    positive_sorted = positive.gather(1, order)
    num_positive = positive.sum(dim=1).double()
    num_negative = width - num_positive
    rank_sum = (average_rank * positive_sorted).sum(dim=1)
    return (rank_sum - num_positive * (num_positive + 1) / 2) / (num_positive * num_negative)


class AUC(MaskLocalisationMetric):
    """Mean over samples of the ROC AUC of the attributions ranking the mask's entries first (Fawcett 2006).

    Quantus' ``AUC``; also exported as ``RelevanceMaskAUC``. For each sample the attribution
    entries are scores and the mask the labels; 1 means every entry inside the mask outranks every
    entry outside, 0.5 is chance. Ties count one half. Each sample's mask needs an entry outside it
    as well. Quantus' ``normalise`` is left out: a positive rescaling changes no ranking.

    Parameters
    ----------
    abs : bool
        Rank ``|a|`` instead of ``a``.
    **kwargs
        Passed to ``torchmetrics.Metric``.
    """

    def __init__(self, abs: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.abs = boolean("abs", abs)

    def _scores(self, relevance: Tensor, inside: Tensor) -> Tensor:
        full = inside.all(dim=1).nonzero().flatten().tolist()
        if full:
            raise ValueError(f"the mask covers every entry of samples {full}; the AUC needs entries outside it too")
        return roc_auc_rows(relevance, inside)


RelevanceMaskAUC = AUC
