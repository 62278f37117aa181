"""Pointing game (Zhang et al. 2018): does the maximum of the attributions lie inside the mask?"""
from typing import Any

from torch import Tensor

from lrp_lightning._arguments import boolean
from lrp_lightning.metrics._localisation import MaskLocalisationMetric


class PointingGame(MaskLocalisationMetric):
    """Mean over samples of the hit ``[argmax_i a_i ∈ mask]`` (Zhang et al. 2018), Quantus' ``PointingGame``.

    The maximum is the first largest entry in flattened order. With ``weighted=True`` a hit scores
    ``1 - |mask| / F`` (F entries per sample): a hit on a small object counts more than one on a mask
    that covers most of the input, and a mask covering everything scores 0. (Quantus 0.6.0's
    ``weighted=True`` raises a ``TypeError`` on every batch with a hit, see
    ``docs/metrics_quantus_b.md``.) Quantus' ``normalise`` is left out: a positive rescaling moves
    no maximum.

    Parameters
    ----------
    weighted : bool
        Weight each hit by ``1 - |mask| / F``.
    abs : bool
        Take the maximum of ``|a|`` instead of ``a``.
    **kwargs
        Passed to ``torchmetrics.Metric``.
    """

    def __init__(self, weighted: bool = False, abs: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.weighted = boolean("weighted", weighted)
        self.abs = boolean("abs", abs)

    def _scores(self, relevance: Tensor, inside: Tensor) -> Tensor:
        hits = inside.gather(1, relevance.argmax(dim=1, keepdim=True))[:, 0].double()
        if self.weighted:
            hits = hits * (1.0 - inside.double().mean(dim=1))
        return hits
