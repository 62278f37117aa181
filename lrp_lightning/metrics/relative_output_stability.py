"""Relative output stability (Agarwal et al. 2022)."""
from typing import Any, Optional

from torch import Tensor

from lrp_lightning._arguments import boolean
from lrp_lightning.metrics._docs import fill_doc
from lrp_lightning.metrics._explainer import ExplainerArg
from lrp_lightning.metrics._model import Model
from lrp_lightning.metrics._relative_stability import RelativeStabilityMetric
from lrp_lightning.metrics._robustness import norm_rows


@fill_doc
class RelativeOutputStability(RelativeStabilityMetric):
    """Mean over samples of ``max_j ||(Φ(x) - Φ(x_j)) / Φ(x)||₂ / max(||h(x) - h(x_j)||₂, eps_min)``.

    ``h`` the class scores (logits; probabilities with ``softmax=True``). Quantus'
    ``RelativeOutputStability`` (Agarwal et al. 2022); element-wise divisions with exact
    zeros of the divisor replaced by ``eps_min``; noise and draws as in
    :class:`~lrp_lightning.metrics._relative_stability.RelativeStabilityMetric`. Lower is better.

    Parameters
    ----------
    {relative_stability}
    softmax : bool
        Compare softmax probabilities instead of logits.
    {explained_per_call}
    """

    def __init__(
        self,
        explainer: ExplainerArg = "gradient",
        nr_samples: int = 200,
        lower_bound: float = 0.02,
        upper_bound: Optional[float] = 0.2,
        abs: bool = False,
        normalise: bool = False,
        eps_min: float = 1e-6,
        return_nan_when_prediction_changes: bool = True,
        softmax: bool = False,
        seed: int = 0,
        max_batch_size: Optional[int] = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(explainer, nr_samples, lower_bound, upper_bound, abs, normalise, eps_min,
                         return_nan_when_prediction_changes, seed, max_batch_size, **kwargs)
        self.softmax = boolean("softmax", softmax)

    def _representation(self, model: Model, batch: Tensor, outputs: Tensor) -> Tensor:
        return outputs.double().softmax(dim=1) if self.softmax else outputs

    def _denominator(self, clean: dict, perturbed: dict) -> Tensor:
        return norm_rows(clean["outputs"] - perturbed["outputs"])
