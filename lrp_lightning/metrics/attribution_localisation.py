"""Attribution localisation (Kohlbrenner et al. 2020): the inside-total relevance ratio."""
from typing import Any

from torch import Tensor

from lrp_lightning._arguments import boolean, real_number
from lrp_lightning.metrics._localisation import MaskLocalisationMetric


class AttributionLocalisation(MaskLocalisationMetric):
    """Mean over samples of ``μ = R_in / R_tot`` (Kohlbrenner et al. 2020), Quantus' ``AttributionLocalisation``.

    ``R_in`` is the relevance inside the mask and ``R_tot`` all relevance of the sample, taken as
    ``|a|`` (``abs=True``, Quantus' default), as ``max(a, 0)`` (``positive_attributions=True``) or as
    given; where signed relevance makes ``μ > 1`` it is no share and the sample counts as NaN (as in
    Quantus 0.6.0). With ``weighted=True`` the paper's size-weighted ratio ``μ_w = μ · S_tot / S_in`` (S the
    number of entries in the input and in the mask). Samples whose mask covers more than ``max_size``
    of the input are left out of the mean, as in the paper's evaluation (Quantus 0.6.0 ignores
    ``max_size`` and weights by a factor that depends on the batch size; see
    ``docs/metrics_quantus_b.md``).

    Parameters
    ----------
    weighted : bool
        Report the size-weighted ratio.
    max_size : float
        Largest share of the input a mask may cover for its sample to count, in (0, 1].
    positive_attributions : bool
        Count only positive relevance.
    abs : bool
        Count ``|a|`` (applied before ``positive_attributions``).
    **kwargs
        Passed to ``torchmetrics.Metric``.
    """

    def __init__(
        self,
        weighted: bool = False,
        max_size: float = 1.0,
        positive_attributions: bool = False,
        abs: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.weighted = boolean("weighted", weighted)
        self.max_size = real_number("max_size", max_size, minimum=0.0, strict=True)
        if self.max_size > 1.0:
            raise ValueError(f"max_size is a share of the input and must lie in (0, 1], got {max_size}")
        self.positive_attributions = boolean("positive_attributions", positive_attributions)
        self.abs = boolean("abs", abs)

    def _counted(self, inside: Tensor) -> Tensor:
        return inside.double().mean(dim=1) <= self.max_size

    def _scores(self, relevance: Tensor, inside: Tensor) -> Tensor:
        if self.positive_attributions:
            relevance = relevance.clamp(min=0.0)
        ratio = (relevance * inside).sum(dim=1) / relevance.sum(dim=1)
        ratio = ratio.masked_fill(ratio > 1.0, float("nan"))
        share = inside.double().mean(dim=1)
        if self.weighted:
            ratio = ratio / share
        return ratio
