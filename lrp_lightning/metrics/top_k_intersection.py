"""Top-k intersection (Theiner et al. 2021): share of the k most relevant entries inside the mask."""
from typing import Any

from torch import Tensor

from lrp_lightning._arguments import boolean
from lrp_lightning.metrics._checks import check_positive_int
from lrp_lightning.metrics._localisation import MaskLocalisationMetric


class TopKIntersection(MaskLocalisationMetric):
    """Mean over samples of ``|top-k(a) ∩ mask| / k`` (Theiner et al. 2021), Quantus' ``TopKIntersection``.

    ``top-k(a)`` are the ``k`` largest entries of the sample's attributions (ties broken by
    position). With ``concept_influence=True`` the share is divided by the mask's share of the
    input, ``|mask| / F``: 1 means the top-k hit the mask as often as chance would, above 1 more.
    Quantus' ``normalise`` is left out: a positive rescaling changes no ranking.

    Parameters
    ----------
    k : int
        Number of top entries, at most the entries per sample.
    concept_influence : bool
        Divide by the mask's share of the input.
    abs : bool
        Rank ``|a|`` instead of ``a``.
    **kwargs
        Passed to ``torchmetrics.Metric``.
    """

    def __init__(self, k: int = 1000, concept_influence: bool = False, abs: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.k = check_positive_int("k", k)
        self.concept_influence = boolean("concept_influence", concept_influence)
        self.abs = boolean("abs", abs)

    def _scores(self, relevance: Tensor, inside: Tensor) -> Tensor:
        if self.k > relevance.shape[1]:
            raise ValueError(f"k={self.k} is larger than the number of attribution entries per sample ({relevance.shape[1]})")
        top = relevance.topk(self.k, dim=1, sorted=False).indices
        share = inside.gather(1, top).double().mean(dim=1)
        if self.concept_influence:
            share = share / inside.double().mean(dim=1)
        return share
