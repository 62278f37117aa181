"""Base class of the metrics that replace input locations cumulatively, most relevant first."""
from typing import Any, Optional

import torch
from torch import Tensor

from lrp_lightning.metrics._base import CurveMeanMetric
from lrp_lightning.metrics._checks import Baseline, check_order, check_positive_int
from lrp_lightning.metrics._docs import fill_doc
from lrp_lightning.metrics._model import Model
from lrp_lightning.metrics._model_metric import ModelPerturbationMixin
from lrp_lightning.metrics._perturbation import cumulative_masks, perturbed_scores, region_ranks, resolve_fill


@fill_doc
class CumulativePerturbationMetric(ModelPerturbationMixin, CurveMeanMetric):
    """Replaces locations step by step in a relevance order and records the target score per step.

    Subclasses define the schedule (``_schedule``: rank of each location and the number of ranks
    replaced at each step) and turn the scores of steps 0..S into the curve they average
    (``_curves``). With ``insert = True`` the sequence starts from the baseline image and inserts
    the input's values instead.
    """

    insert = False

    def __init__(
        self,
        order: str,
        baseline: Baseline,
        softmax: bool,
        max_batch_size: Optional[int],
        seed: int,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.order = check_order(order)
        self._configure(baseline, softmax, max_batch_size, seed)

    def _schedule(self, relevance: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def _curves(self, scores: Tensor) -> Tensor:
        raise NotImplementedError

    def update(
        self, model: Model, inputs: Tensor, attributions: Tensor, target: Tensor, attention_mask: Optional[Tensor] = None
    ) -> None:
        """Perturb ``inputs`` in the order given by ``attributions`` and accumulate the curves.

        Parameters
        ----------
        {token_update}
        """
        inputs, relevance, target, attention_mask = self._prepare(inputs, attributions, target, attention_mask)
        ranks, counts = self._schedule(relevance, self._generators.get(inputs.device))
        scores = perturbed_scores(
            model,
            inputs,
            resolve_fill(self.baseline, inputs),
            target,
            cumulative_masks(ranks, counts),
            counts.shape[0],
            self.softmax,
            self.max_batch_size,
            insert=self.insert,
            attention_mask=attention_mask,
        )
        self._accumulate(self._curves(scores), relevance, scores)


class ScoreDropMetric(CumulativePerturbationMetric):
    """Averages the score drop f(x) - f(x after k steps) and reports its mean as the AOPC."""

    higher_is_better = True

    def _curves(self, scores: Tensor) -> Tensor:
        return scores[:, :1] - scores

    def compute(self) -> dict[str, Tensor]:
        """``{"aopc": tensor(), "curve": tensor(steps + 1)}``, means over all samples seen."""
        curve = self._mean_curve()
        return {"aopc": curve.mean(), "curve": curve}


class FractionCurveMetric(CumulativePerturbationMetric):
    """Averages the score after each of ``steps`` equal fractions of locations (most relevant first)
    and reports the area under that curve over the fraction axis [0, 1] (trapezoidal rule).

    At step k the first ``(k * L) // steps`` of the L locations are changed.
    """

    def __init__(
        self, steps: int, baseline: Baseline, softmax: bool, max_batch_size: Optional[int], **kwargs: Any
    ) -> None:
        super().__init__("morf", baseline, softmax, max_batch_size, seed=0, **kwargs)
        self.steps = check_positive_int("steps", steps)

    def _schedule(self, relevance: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        ranks, num_locations = region_ranks(relevance, 1, self.order, generator)
        if self.steps > num_locations:
            raise ValueError(f"steps={self.steps} is larger than the number of locations ({num_locations})")
        return ranks, torch.arange(self.steps + 1, device=relevance.device) * num_locations // self.steps

    def _curves(self, scores: Tensor) -> Tensor:
        return scores

    def compute(self) -> dict[str, Tensor]:
        """``{"auc": tensor(), "curve": tensor(steps + 1)}``, means over all samples seen."""
        curve = self._mean_curve()
        return {"auc": torch.trapezoid(curve, dx=1.0 / self.steps), "curve": curve}
