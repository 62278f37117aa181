"""Relevance mass accuracy (Arras et al. 2022): share of relevance inside the ground-truth mask."""
from torch import Tensor

from lrp_lightning.metrics._base import SampleMeanMetric
from lrp_lightning.metrics._checks import flat_attributions, flat_mask


class RelevanceMassAccuracy(SampleMeanMetric):
    """Mean over samples of sum(R inside mask) / sum(R) (Arras et al. 2022).

    Relevance is taken as given (signed, not normalised), element by element of the attributions.

    Parameters
    ----------
    **kwargs
        Passed to ``torchmetrics.Metric``.
    """

    higher_is_better = True

    def update(self, attributions: Tensor, mask: Tensor) -> None:
        """Accumulate the mass accuracy of each sample.

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
        relevance = relevance.double()
        self._accumulate((relevance * inside).sum(dim=1) / relevance.sum(dim=1), relevance)
