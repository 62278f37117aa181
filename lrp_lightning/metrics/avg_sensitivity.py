"""Avg-Sensitivity (Yeh et al. 2019): how much the explanation moves under small uniform noise."""
from typing import Any, Optional

import torch
from torch import Tensor

from lrp_lightning.metrics._docs import fill_doc
from lrp_lightning.metrics._explainer import ExplainerArg
from lrp_lightning.metrics._robustness import RobustnessMetric, check_bounds, norm_rows, uniform_noise


@fill_doc
class AvgSensitivity(RobustnessMetric):
    """Mean over samples of mean_j ||Φ(x) - Φ(x + δ_j)|| / ||Φ(x)|| (Yeh et al. 2019), Quantus' AvgSensitivity.

    Φ is the explanation (after ``abs`` and ``normalise``), norms are Frobenius norms over all
    entries of a sample, and the ``nr_samples`` noise draws δ_j are uniform in
    ``[-lower_bound, lower_bound]`` (or ``[lower_bound, upper_bound]``), drawn as described in
    :mod:`lrp_lightning.metrics._robustness`. Lower is better.

    Parameters
    ----------
    {explainer}
    nr_samples : int
        Noise draws per sample.
    lower_bound, upper_bound : float, float or None
        Noise range (see above).
    abs : bool
        Compare ``|Φ|``.
    normalise : bool
        Divide each explanation by its largest magnitude first.
    return_nan_when_prediction_changes : bool
        A sample whose predicted class changes under any draw counts as NaN.
    {explained_per_call}
    """

    def __init__(
        self,
        explainer: ExplainerArg = "gradient",
        nr_samples: int = 200,
        lower_bound: float = 0.2,
        upper_bound: Optional[float] = None,
        abs: bool = False,
        normalise: bool = False,
        return_nan_when_prediction_changes: bool = False,
        seed: int = 0,
        max_batch_size: Optional[int] = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(explainer, nr_samples, abs, normalise, return_nan_when_prediction_changes, seed,
                         max_batch_size, **kwargs)
        self.lower_bound, self.upper_bound = check_bounds(lower_bound, upper_bound)

    def _noise(self, shape: tuple, generator: torch.Generator, dtype: torch.dtype) -> Tensor:
        return uniform_noise(shape, self.lower_bound, self.upper_bound, generator, dtype)

    def _values(self, clean: dict, perturbed: dict) -> Tensor:
        return norm_rows(clean["attributions"] - perturbed["attributions"]) / norm_rows(clean["attributions"])

