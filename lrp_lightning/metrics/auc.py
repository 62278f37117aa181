"""Localisation AUC (Fawcett 2006): area under the ROC curve of the attributions as a mask detector."""
from typing import Any

import torch
from torch import Tensor

from lrp_lightning._arguments import boolean
from lrp_lightning.metrics._localisation import MaskLocalisationMetric


def roc_auc_rows(scores: Tensor, positive: Tensor) -> Tensor:
    """Area under the ROC curve of each row of ``scores`` (N, F) as a detector of ``positive`` (N, F, bool).

    Equal to the Mann-Whitney probability that a positive entry scores above a negative one, ties
    counting one half: ``AUC = Σ_{p positive} (#neg < s_p + #neg ≤ s_p) / (2 P N)``.
    """
    ordered, order = scores.sort(dim=1)
    negative_sorted = (~positive).gather(1, order).double()
    negatives_up_to = torch.nn.functional.pad(negative_sorted.cumsum(dim=1), (1, 0))
    below = negatives_up_to.gather(1, torch.searchsorted(ordered, scores, right=False))
    up_to = negatives_up_to.gather(1, torch.searchsorted(ordered, scores, right=True))
    num_positive = positive.sum(dim=1).double()
    num_negative = positive.shape[1] - num_positive
    return ((below + up_to) * positive).sum(dim=1) / (2 * num_positive * num_negative)


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
