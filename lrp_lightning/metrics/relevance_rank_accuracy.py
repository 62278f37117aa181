"""Relevance rank accuracy (Arras et al. 2022): share of the top-K relevance inside the mask."""
import torch
from torch import Tensor

from lrp_lightning.metrics._base import SampleMeanMetric
from lrp_lightning.metrics._checks import flat_attributions, flat_mask


class RelevanceRankAccuracy(SampleMeanMetric):
    """Mean over samples of ``|top-K relevance entries inside mask| / K``, K = size of the mask (Arras et al. 2022).

    Entries of the attributions are ranked by their signed value; ties are broken by position.

    Parameters
    ----------
    **kwargs
        Passed to ``torchmetrics.Metric``.
    """

    higher_is_better = True

    def update(self, attributions: Tensor, mask: Tensor) -> None:
        """Accumulate the rank accuracy of each sample.

        Parameters
        ----------
        attributions : Tensor
            Relevance (N, ...).
        mask : Tensor
            Ground truth, a bool tensor broadcastable to ``attributions``; each sample needs a True entry.
        """
        relevance = flat_attributions(attributions)
        self._follow_device(relevance)
        inside = flat_mask(mask, attributions)
        order = relevance.argsort(dim=1, descending=True, stable=True)
        ranks = torch.empty_like(order)
        ranks.scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))
        mask_size = inside.sum(dim=1, keepdim=True)
        hits = ((ranks < mask_size) & inside).sum(dim=1)
        self._accumulate(hits.double() / mask_size[:, 0], relevance)
