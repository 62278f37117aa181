"""Relative input stability (Agarwal et al. 2022)."""

from torch import Tensor

from lrp_lightning.metrics._relative_stability import RelativeStabilityMetric


class RelativeInputStability(RelativeStabilityMetric):
    """Mean over samples of ``max_j ||(Φ(x) - Φ(x_j)) / Φ(x)||₂ / max(||(x - x_j) / x||₂, eps_min)``.

    Quantus' ``RelativeInputStability`` (Agarwal et al. 2022); element-wise divisions with exact
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
    seed : int
        Seed of the noise generator.
    max_batch_size : int or None
        Most inputs explained in one call; ``None`` sizes the chunks to the inputs' device.
    **kwargs
        Passed to ``torchmetrics.Metric``.
    """

    def _denominator(self, clean: dict, perturbed: dict) -> Tensor:
        return self._relative_change(clean["inputs"], perturbed["inputs"])
