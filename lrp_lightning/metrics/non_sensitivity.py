"""Non-sensitivity (Nguyen & Martínez 2020): zero relevance exactly where the model does not react."""
from typing import Any, Optional

import torch
from torch import Tensor

from lrp_lightning._arguments import real_number
from lrp_lightning.metrics._base import SampleMeanMetric
from lrp_lightning.metrics._checks import Baseline, check_positive_int
from lrp_lightning.metrics._docs import fill_doc
from lrp_lightning.metrics._model import Model
from lrp_lightning.metrics._perturbation import perturbed_scores, region_ranks, resolve_fill
from lrp_lightning.metrics._quantus_steps import QuantusRelevanceMixin, band_masks


@fill_doc
class NonSensitivity(QuantusRelevanceMixin, SampleMeanMetric):
    """Mean over samples of how many locations break non-sensitivity (Nguyen & Martínez 2020).

    Locations (pixels with all channels, or vector entries) are taken in index order in steps of
    ``features_in_step``; each step alone is replaced by ``baseline``. With f the target score, the
    model ignores a location when replacing its step changes f by less than ``eps``; the
    attribution ignores it when its relevance is below ``eps``. The sample's value is the size of
    the symmetric difference of the two sets,

    .. math:: \\big|\\{i : a_i < \\epsilon\\} \\;\\triangle\\; \\{i : |f(x) - f(x_{S(i) \\to b})| < \\epsilon\\}\\big|

    (0 is best), as Quantus 0.6.0's ``NonSensitivity``.

    Parameters
    ----------
    eps : float
        Threshold of both tests.
    features_in_step : int
        Locations replaced together; must divide the number of locations.
    {quantus_perturbation}
    """

    higher_is_better = False

    def __init__(
        self,
        eps: float = 1e-5,
        features_in_step: int = 1,
        abs: bool = True,
        normalise: bool = True,
        baseline: Baseline = "black",
        softmax: bool = True,
        max_batch_size: Optional[int] = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.eps = real_number("eps", eps, minimum=0.0)
        self.features_in_step = check_positive_int("features_in_step", features_in_step)
        self._configure_quantus(abs, normalise, baseline, softmax, max_batch_size)

    def _evaluate(
        self, model: Model, inputs: Tensor, relevance: Tensor, target: Tensor, attention_mask: Optional[Tensor]
    ) -> None:
        index_order, num_locations = region_ranks(torch.zeros_like(relevance), 1, "morf", self._generators.get(inputs.device))
        if num_locations % self.features_in_step:
            raise ValueError(
                f"features_in_step={self.features_in_step} does not divide the {num_locations} locations; "
                "choose a divisor"
            )
        steps = num_locations // self.features_in_step
        bounds = torch.arange(steps + 1, device=inputs.device) * self.features_in_step
        starts = torch.cat([bounds.new_zeros(1), bounds[:-1]])
        stops = torch.cat([bounds.new_zeros(1), bounds[1:]])
        scores = perturbed_scores(
            model, inputs, resolve_fill(self.baseline, inputs), target, band_masks(index_order, starts, stops),
            steps + 1, self.softmax, self.max_batch_size, attention_mask=attention_mask,
        )
        step_ignored = (scores[:, 1:] - scores[:, :1]).abs() < self.eps
        flat_steps = index_order.reshape(index_order.shape[0], -1) // self.features_in_step
        model_ignores = step_ignored.gather(1, flat_steps)
        attribution_ignores = relevance.reshape(relevance.shape[0], -1) < self.eps
        self._accumulate((model_ignores ^ attribution_ignores).sum(dim=1).double(), relevance, scores)
