"""Relative output stability (Agarwal et al. 2022)."""
from typing import Any, Optional

from torch import Tensor

from lrp_lightning._arguments import boolean
from lrp_lightning.metrics._explainer import ExplainerArg
from lrp_lightning.metrics._model import Model
from lrp_lightning.metrics._relative_stability import RelativeStabilityMetric
from lrp_lightning.metrics._robustness import norm_rows


class RelativeOutputStability(RelativeStabilityMetric):
    """Mean over samples of ``max_j ||(Φ(x) - Φ(x_j)) / Φ(x)||₂ / max(||h(x) - h(x_j)||₂, eps_min)``.

    ``h`` the class scores (logits; probabilities with ``softmax=True``). Quantus'
    ``RelativeOutputStability`` (Agarwal et al. 2022); element-wise divisions with exact
    zeros of the divisor replaced by ``eps_min``; noise and draws as in
    :class:`~lrp_lightning.metrics._relative_stability.RelativeStabilityMetric`. Lower is better.

    Parameters
    ----------
    explainer : str, Composite or callable
        What explains the clean and the perturbed inputs: a registry name (LRP composite or
        attributor), a Composite (built for the model as ``AttributionCallback`` builds them), or
        ``explain(model, inputs, target) -> attributions``.
    nr_samples : int
        Noise draws per sample.
    lower_bound, upper_bound : float, float or None
        Noise uniform in ``[lower_bound, upper_bound]`` (``upper_bound=None``: ``[-lower_bound, lower_bound]``).
    abs : bool
        Compare ``|Φ|``.
    normalise : bool
        Divide each explanation by its root mean square first (Quantus 0.6.0's default for this metric).
    eps_min : float
        Floor of the denominator and replacement of zero divisors.
    return_nan_when_prediction_changes : bool
        A sample whose predicted class changes under any draw counts as NaN (Quantus' default: True).
    softmax : bool
        Compare softmax probabilities instead of logits.
    seed : int
        Seed of the noise generator.
    max_batch_size : int or None
        Most inputs explained in one call; ``None`` sizes the chunks to the inputs' device.
    **kwargs
        Passed to ``torchmetrics.Metric``.
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
