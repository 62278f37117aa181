"""Sparseness (Chalasani et al. 2020): Gini index of the absolute attributions."""
import torch
from torch import Tensor

from lrp_lightning.metrics._base import SampleMeanMetric
from lrp_lightning.metrics._checks import flat_attributions


def gini_rows(values: Tensor) -> Tensor:
    """Gini index of each row of non-negative ``values`` (NaN for an all-zero row)."""
    ascending = values.sort(dim=1).values
    count = values.shape[1]
    weights = 2 * torch.arange(1, count + 1, device=values.device, dtype=values.dtype) - count - 1
    return (weights * ascending).sum(dim=1) / (count * ascending.sum(dim=1))


class Sparseness(SampleMeanMetric):
    """Mean over samples of the Gini index of ``|attributions|`` (Chalasani et al. 2020).

    With the n values sorted ascending, a_(1) <= ... <= a_(n):
    G = sum_i (2i - n - 1) a_(i) / (n sum_i a_(i)); 0 for uniform relevance, (n-1)/n for a single spike.

    Parameters
    ----------
    **kwargs
        Passed to ``torchmetrics.Metric``.
    """

    higher_is_better = True

    def update(self, attributions: Tensor) -> None:
        """Accumulate the Gini index of each sample's attributions (N, ...)."""
        values = flat_attributions(attributions)
        self._follow_device(values)
        self._accumulate(gini_rows(values.double().abs()), values)
