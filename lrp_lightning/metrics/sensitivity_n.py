"""Sensitivity-n (Ancona et al. 2018) as Quantus 0.6.0 computes it: correlation across samples per step."""
from typing import Any, Optional

import torch
from torch import Tensor

from lrp_lightning._arguments import real_number
from lrp_lightning.metrics._base import DeviceFollowingMetric, nan_unless_finite
from lrp_lightning.metrics._checks import Baseline, check_positive_int
from lrp_lightning.metrics._docs import fill_doc
from lrp_lightning.metrics._model import Model
from lrp_lightning.metrics._perturbation import cumulative_masks, perturbed_scores, region_ranks, resolve_fill
from lrp_lightning.metrics._quantus_steps import QuantusRelevanceMixin, band_sums
from lrp_lightning.metrics.faithfulness_correlation import pearson_rows


@fill_doc
class SensitivityN(QuantusRelevanceMixin, DeviceFollowingMetric):
    """Pearson r across samples between step relevance and score drop, per step (Ancona et al. 2018).

    Locations are ranked by relevance, highest first; at step n (n = 1..K, K =
    ``int(n_max_percentage * L) // features_in_step``) the first ``n * features_in_step`` are
    replaced by ``baseline`` (cumulatively). Per sample it records the relevance of the locations
    added at step n, :math:`s_n = \\sum_{i \\in S_n \\setminus S_{n-1}} a_i`, and the drop
    :math:`d_n = f(x) - f(x_{S_n \\to b})`. ``curve[n]`` is the Pearson r of :math:`s_n` with
    :math:`d_n` across every sample seen, and ``mean`` its mean over the steps — Quantus 0.6.0's
    ``SensitivityN``. (Ancona et al. correlate the relevance of the whole removed set with the drop,
    over random subsets; Quantus 0.6.0 takes the newest step's relevance and the ranked order, and
    so do we, to stay equal to it.)

    The states are the per-sample rows (gathered across DDP ranks), so the correlation is over all
    samples seen, as over all samples of one Quantus call.

    Parameters
    ----------
    n_max_percentage : float
        Fraction of the locations removed by the last step, in (0, 1].
    features_in_step : int
        Locations added per step.
    {quantus_perturbation}
    """

    higher_is_better = True
    full_state_update = False

    def __init__(
        self,
        n_max_percentage: float = 0.8,
        features_in_step: int = 1,
        abs: bool = False,
        normalise: bool = True,
        baseline: Baseline = "black",
        softmax: bool = True,
        max_batch_size: Optional[int] = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.n_max_percentage = real_number("n_max_percentage", n_max_percentage, minimum=0.0, strict=True)
        if self.n_max_percentage > 1:
            raise ValueError(f"n_max_percentage must be in (0, 1], got {n_max_percentage}")
        self.features_in_step = check_positive_int("features_in_step", features_in_step)
        self._configure_quantus(abs, normalise, baseline, softmax, max_batch_size)
        self.add_state("step_relevance", [], dist_reduce_fx="cat")
        self.add_state("score_drops", [], dist_reduce_fx="cat")

    def _evaluate(
        self, model: Model, inputs: Tensor, relevance: Tensor, target: Tensor, attention_mask: Optional[Tensor]
    ) -> None:
        ranks, num_locations = region_ranks(relevance, 1, "morf", self._generators.get(inputs.device))
        steps = int(self.n_max_percentage * num_locations) // self.features_in_step
        if steps < 1:
            raise ValueError(
                f"n_max_percentage={self.n_max_percentage} of {num_locations} locations is less than one step of "
                f"{self.features_in_step}; raise n_max_percentage or lower features_in_step"
            )
        if self.step_relevance and self.step_relevance[0].shape[1] != steps:
            raise ValueError(
                f"the number of steps changed from {self.step_relevance[0].shape[1]} to {steps}; "
                "call reset() before updating with inputs of another size"
            )
        counts = torch.arange(steps + 1, device=inputs.device) * self.features_in_step
        scores = perturbed_scores(
            model, inputs, resolve_fill(self.baseline, inputs), target, cumulative_masks(ranks, counts),
            steps + 1, self.softmax, self.max_batch_size, attention_mask=attention_mask,
        )
        step_relevance = band_sums(relevance, ranks, self.features_in_step, steps)
        self.step_relevance.append(nan_unless_finite(step_relevance, relevance, scores))
        self.score_drops.append(nan_unless_finite(scores[:, :1] - scores[:, 1:], relevance, scores))

    def compute(self) -> dict[str, Tensor]:
        """``{"mean": tensor(), "curve": tensor(steps)}``: r per step across all samples, and its mean."""
        relevance = _rows(self.step_relevance)
        drops = _rows(self.score_drops)
        curve = pearson_rows(relevance.T, drops.T)
        return {"mean": curve.mean(), "curve": curve}


def _rows(state) -> Tensor:
    if isinstance(state, Tensor):
        return state
    return torch.cat(state) if state else torch.zeros(0, 0, dtype=torch.float64)
