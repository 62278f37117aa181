"""Relative input stability (Agarwal et al. 2022)."""

from torch import Tensor

from lrp_lightning.metrics._docs import fill_doc
from lrp_lightning.metrics._relative_stability import RelativeStabilityMetric


@fill_doc
class RelativeInputStability(RelativeStabilityMetric):
    """Mean over samples of ``max_j ||(Φ(x) - Φ(x_j)) / Φ(x)||₂ / max(||(x - x_j) / x||₂, eps_min)``.

    Quantus' ``RelativeInputStability`` (Agarwal et al. 2022); element-wise divisions with exact
    zeros of the divisor replaced by ``eps_min``; noise and draws as in
    :class:`~lrp_lightning.metrics._relative_stability.RelativeStabilityMetric`. Lower is better.

    Parameters
    ----------
    {relative_stability}
    {explained_per_call}
    """

    def _denominator(self, clean: dict, perturbed: dict) -> Tensor:
        return self._relative_change(clean["inputs"], perturbed["inputs"])
