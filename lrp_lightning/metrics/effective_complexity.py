"""Effective complexity (Nguyen & Martínez 2020): how many attributions exceed a threshold."""
from typing import Any

from torch import Tensor

from lrp_lightning._arguments import boolean, real_number
from lrp_lightning.metrics._base import SampleMeanMetric
from lrp_lightning.metrics._checks import flat_attributions
from lrp_lightning.metrics._quantus_steps import quantus_attributions


class EffectiveComplexity(SampleMeanMetric):
    """Mean over samples of the number of attribution values above ``eps`` (Nguyen & Martínez 2020).

    .. math:: \\mathrm{EC}(a) = \\big|\\{ i : a_i > \\epsilon \\}\\big|

    taken over every value of the sample (all channels), after Quantus' ``abs`` and ``normalise``
    options, as Quantus 0.6.0's ``EffectiveComplexity``. Lower is simpler.

    Parameters
    ----------
    eps : float
        Threshold.
    abs : bool
        Take ``|a|`` first (Quantus' default).
    normalise : bool
        Divide by the largest ``|a|`` of the update's batch (Quantus' default; Quantus divides by the
        largest magnitude of the batch it is given, so the numbers agree batch for batch).
    **kwargs
        Passed to ``torchmetrics.Metric``.
    """

    higher_is_better = False

    def __init__(self, eps: float = 1e-5, abs: bool = True, normalise: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.eps = real_number("eps", eps)
        self.abs = boolean("abs", abs)
        self.normalise = boolean("normalise", normalise)

    def update(self, attributions: Tensor) -> None:
        """Accumulate the count of values above ``eps`` of each sample's attributions (N, ...)."""
        values = flat_attributions(attributions)
        self._follow_device(values)
        transformed = quantus_attributions(values, self.abs, self.normalise)
        self._accumulate((transformed > self.eps).sum(dim=1).double(), values)
