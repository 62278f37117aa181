"""Monotonicity (Arya et al. 2019): the score rises as features are added, least relevant first."""
from typing import Any, Optional

import torch
from torch import Tensor

from lrp_lightning.metrics._base import SampleMeanMetric
from lrp_lightning.metrics._checks import Baseline, check_positive_int
from lrp_lightning.metrics._docs import fill_doc
from lrp_lightning.metrics._model import Model
from lrp_lightning.metrics._perturbation import cumulative_masks, perturbed_scores, region_ranks, resolve_fill
from lrp_lightning.metrics._quantus_steps import QuantusRelevanceMixin


@fill_doc
class Monotonicity(QuantusRelevanceMixin, SampleMeanMetric):
    """Fraction of samples whose score never falls while features are added (Arya et al. 2019).

    Starting from the ``baseline`` input, the locations (pixels with all channels, or vector
    entries) are put back in order of increasing relevance, ``features_in_step`` per step. With
    :math:`y_k` the target score after step k = 1..K, a sample is monotonic when
    :math:`y_{k+1} \\ge y_k` for every k. The value is the mean of that outcome (1 best).

    Quantus 0.6.0's ``Monotonicity`` returned True on every input we tried (random, reversed and
    cubed attributions, CNN and MLP), also where the scores of the definition fall; this class
    follows the definition, and its tests compare with a direct reference of it instead of Quantus.

    Parameters
    ----------
    features_in_step : int
        Locations put back per step (the last step may put back fewer).
    {quantus_perturbation}
    """

    higher_is_better = True

    def __init__(
        self,
        features_in_step: int = 1,
        abs: bool = True,
        normalise: bool = True,
        baseline: Baseline = "black",
        softmax: bool = True,
        max_batch_size: Optional[int] = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.features_in_step = check_positive_int("features_in_step", features_in_step)
        self._configure_quantus(abs, normalise, baseline, softmax, max_batch_size)

    def _evaluate(
        self, model: Model, inputs: Tensor, relevance: Tensor, target: Tensor, attention_mask: Optional[Tensor]
    ) -> None:
        ranks, num_locations = region_ranks(relevance, 1, "lerf", self._generators.get(inputs.device))
        steps = -(-num_locations // self.features_in_step)
        counts = (torch.arange(1, steps + 1, device=inputs.device) * self.features_in_step).clamp(max=num_locations)
        scores = perturbed_scores(
            model, inputs, resolve_fill(self.baseline, inputs), target, cumulative_masks(ranks, counts), steps,
            self.softmax, self.max_batch_size, insert=True, attention_mask=attention_mask,
        )
        monotonic = (scores.diff(dim=1) >= 0).all(dim=1)
        self._accumulate(monotonic.double(), relevance, scores)
