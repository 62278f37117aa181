"""Local Lipschitz estimate (Alvarez-Melis and Jaakkola 2018): the steepest change of the explanation under noise."""
from typing import Any, Optional

import torch
from torch import Tensor

from lrp_lightning._arguments import real_number
from lrp_lightning.metrics._docs import fill_doc
from lrp_lightning.metrics._explainer import ExplainerArg
from lrp_lightning.metrics._robustness import RobustnessMetric, gaussian_noise, norm_rows


@fill_doc
class LocalLipschitzEstimate(RobustnessMetric):
    """Mean over samples of max_j ||Φ(x) - Φ(x_j)||₂ / ||x - x_j||₂, Quantus' LocalLipschitzEstimate.

    ``x_j = x + δ_j`` with Gaussian noise ``δ_j ~ N(perturb_mean, perturb_std²)`` per entry
    (Alvarez-Melis and Jaakkola 2018); Φ after ``abs`` and ``normalise`` (default: divided by its
    largest magnitude, as in Quantus). Lower is better.

    Parameters
    ----------
    {explainer}
    nr_samples : int
        Noise draws per sample.
    perturb_mean, perturb_std : float
        Mean and standard deviation of the noise.
    abs : bool
        Compare ``|Φ|``.
    normalise : bool
        Divide each explanation by its largest magnitude first.
    return_nan_when_prediction_changes : bool
        A sample whose predicted class changes under any draw counts as NaN.
    {explained_per_call}
    """

    reduction = "max"

    def __init__(
        self,
        explainer: ExplainerArg = "gradient",
        nr_samples: int = 200,
        perturb_mean: float = 0.0,
        perturb_std: float = 0.1,
        abs: bool = False,
        normalise: bool = True,
        return_nan_when_prediction_changes: bool = False,
        seed: int = 0,
        max_batch_size: Optional[int] = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(explainer, nr_samples, abs, normalise, return_nan_when_prediction_changes, seed,
                         max_batch_size, **kwargs)
        self.perturb_mean = real_number("perturb_mean", perturb_mean)
        self.perturb_std = real_number("perturb_std", perturb_std, minimum=0.0, strict=True)

    def _noise(self, shape: tuple, generator: torch.Generator, dtype: torch.dtype) -> Tensor:
        return gaussian_noise(shape, self.perturb_mean, self.perturb_std, generator, dtype)

    def _values(self, clean: dict, perturbed: dict) -> Tensor:
        return norm_rows(clean["attributions"] - perturbed["attributions"]) / norm_rows(clean["inputs"] - perturbed["inputs"])
