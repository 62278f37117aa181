"""Relevance rank accuracy (Arras et al. 2022): share of the top-K relevance inside the mask."""
from torch import Tensor

from lrp_lightning.metrics._localisation import MaskLocalisationMetric


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


class RelevanceRankAccuracy(MaskLocalisationMetric):
    """Mean over samples of ``|top-K relevance entries inside mask| / K``, K = size of the mask (Arras et al. 2022).

    Entries of the attributions are ranked by their signed value; ties are broken by position;
    ``update(attributions, mask)`` as in
    :class:`~lrp_lightning.metrics._localisation.MaskLocalisationMetric`.

    Parameters
    ----------
    **kwargs
        Passed to ``torchmetrics.Metric``.
    """

    def _scores(self, relevance: Tensor, inside: Tensor) -> Tensor:
        mask_size = inside.sum(dim=1, keepdim=True)
        return top_k_hits(relevance, inside, mask_size).double() / mask_size[:, 0]
