"""Shared part of the relative stability metrics (Agarwal et al. 2022): relative change of the explanation
over the (relative) change of the input, the output or an internal representation, maximised over noise draws."""
from typing import Any, Optional

import torch
from torch import Tensor

from lrp_lightning._arguments import real_number
from lrp_lightning.metrics._explainer import ExplainerArg
from lrp_lightning.metrics._robustness import RobustnessMetric, check_bounds, nonzero, norm_rows, uniform_noise


class RelativeStabilityMetric(RobustnessMetric):
    """``max_j ||(Φ(x) - Φ(x_j)) / Φ(x)||₂ / max(D(x, x_j), eps_min)`` per sample; subclasses define ``D``.

    ``normalise=True`` divides each explanation by its root mean square ``sqrt(mean(Φ²))`` (Quantus
    0.6.0's default for these metrics), not by its largest magnitude as the other robustness metrics do.
    Divisions are element-wise, with exact zeros of the divisor replaced by ``eps_min`` (as Quantus
    0.6.0 does). ``x_j = x + δ_j``, ``δ_j`` uniform in ``[lower_bound, upper_bound]`` (Quantus' default
    perturbation for these metrics), or ``[-lower_bound, lower_bound]`` with ``upper_bound=None``.
    """

    reduction = "max"

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
        seed: int = 0,
        max_batch_size: Optional[int] = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(explainer, nr_samples, abs, normalise, return_nan_when_prediction_changes, seed,
                         max_batch_size, **kwargs)
        self.lower_bound, self.upper_bound = check_bounds(lower_bound, upper_bound)
        self.eps_min = real_number("eps_min", eps_min, minimum=0.0, strict=True)

    def _noise(self, shape: tuple, generator: torch.Generator, dtype: torch.dtype) -> Tensor:
        return uniform_noise(shape, self.lower_bound, self.upper_bound, generator, dtype)

    def _normalised(self, values: Tensor) -> Tensor:
        """Rows (B, F) divided by their root mean square, all-zero rows kept (Quantus 0.6.0's default
        ``normalise_func`` for these metrics, ``normalise_by_average_second_moment_estimate``)."""
        scale = values.square().mean(dim=1, keepdim=True).sqrt()
        return values / torch.where(scale > 0, scale, torch.ones_like(scale))

    def _relative_change(self, clean: Tensor, perturbed: Tensor) -> Tensor:
        change = clean - perturbed
        return norm_rows(change.div_(nonzero(clean, self.eps_min)))

    def _denominator(self, clean: dict, perturbed: dict) -> Tensor:
        raise NotImplementedError

    def _values(self, clean: dict, perturbed: dict) -> Tensor:
        numerator = self._relative_change(clean["attributions"], perturbed["attributions"])
        return numerator / self._denominator(clean, perturbed).clamp(min=self.eps_min)
