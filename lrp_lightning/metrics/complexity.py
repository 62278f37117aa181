"""Complexity (Bhatt et al. 2020): entropy of the normalised absolute attributions."""
import torch
from torch import Tensor

from lrp_lightning.metrics._base import SampleMeanMetric
from lrp_lightning.metrics._checks import flat_attributions


class Complexity(SampleMeanMetric):
    """Mean over samples of the entropy (natural log) of ``p = |a| / sum |a|`` (Bhatt et al. 2020).

    0 for a single spike, log(n) for uniform relevance over n values; 0 log 0 counts as 0.

    Parameters
    ----------
    **kwargs
        Passed to ``torchmetrics.Metric``.
    """

    higher_is_better = False

    def update(self, attributions: Tensor) -> None:
        """Accumulate the entropy of each sample's attributions (N, ...)."""
        values = flat_attributions(attributions)
        self._follow_device(values)
        magnitude = values.double().abs()
        probabilities = magnitude / magnitude.sum(dim=1, keepdim=True)
        self._accumulate(-torch.xlogy(probabilities, probabilities).sum(dim=1), values)
