"""Relevance rank accuracy (Arras et al. 2022): share of the top-K relevance inside the mask."""
from torch import Tensor

from lrp_lightning.metrics._base import SampleMeanMetric
from lrp_lightning.metrics._checks import flat_attributions, flat_mask


def top_k_hits(relevance: Tensor, inside: Tensor, k: Tensor) -> Tensor:
    """Per row, how many of the ``k`` (N, 1) largest entries of ``relevance`` (N, F) lie ``inside`` (N, F, bool).

    Ties are broken by position (the earlier entry ranks first), as a stable descending sort would:
    with ``t`` the row's k-th largest value, every entry above ``t`` counts, and of the entries equal
    to ``t`` the first ``k - #(above t)`` in position order.
    """
    descending = relevance.sort(dim=1, descending=True).values
    threshold = descending.gather(1, (k - 1).clamp(min=0))
    above = relevance > threshold
    tied = relevance == threshold
    tied_before = tied.cumsum(dim=1) - tied.long()
    taken_ties = tied & (tied_before < k - above.sum(dim=1, keepdim=True))
    return ((above | taken_ties) & inside).sum(dim=1)


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
        mask_size = inside.sum(dim=1, keepdim=True)
        hits = top_k_hits(relevance, inside, mask_size)
        self._accumulate(hits.double() / mask_size[:, 0], relevance)
