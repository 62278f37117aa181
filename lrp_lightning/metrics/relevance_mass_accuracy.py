"""Relevance mass accuracy (Arras et al. 2022): share of relevance inside the ground-truth mask."""
from torch import Tensor

from lrp_lightning.metrics._localisation import MaskLocalisationMetric


class RelevanceMassAccuracy(MaskLocalisationMetric):
    """Mean over samples of sum(R inside mask) / sum(R) (Arras et al. 2022).

    Relevance is taken as given (signed, not normalised), element by element of the attributions;
    ``update(attributions, mask)`` as in
    :class:`~lrp_lightning.metrics._localisation.MaskLocalisationMetric`.

    Parameters
    ----------
    **kwargs
        Passed to ``torchmetrics.Metric``.
    """

    def _scores(self, relevance: Tensor, inside: Tensor) -> Tensor:
        return (relevance * inside).sum(dim=1) / relevance.sum(dim=1)
