"""Faithfulness estimate (Alvarez-Melis & Jaakkola 2018): relevance of each step vs its score drop."""
from typing import Any, Optional

import torch
from torch import Tensor

from lrp_lightning.metrics._base import SampleMeanMetric
from lrp_lightning.metrics._checks import Baseline, check_positive_int
from lrp_lightning.metrics._docs import fill_doc
from lrp_lightning.metrics._model import Model
from lrp_lightning.metrics._perturbation import perturbed_scores, region_ranks, resolve_fill
from lrp_lightning.metrics._quantus_steps import QuantusRelevanceMixin, band_masks, band_sums
from lrp_lightning.metrics.faithfulness_correlation import pearson_rows


@fill_doc
class FaithfulnessEstimate(QuantusRelevanceMixin, SampleMeanMetric):
    """Mean over samples of the Pearson r between step relevance and score drop (Alvarez-Melis & Jaakkola 2018).

    The L locations (pixels with all channels, or vector entries) are ranked by relevance, highest
    first, and cut into K = L / ``features_in_step`` steps. Step k alone (not cumulatively) is
    replaced by ``baseline``; with f the target score, the sample's value is

    .. math:: r = \\mathrm{pearson}_k\\Big(\\sum_{i \\in S_k} a_i,\\; f(x) - f(x_{S_k \\to b})\\Big)

    as Quantus 0.6.0's ``FaithfulnessEstimate`` with its default Pearson similarity.

    Parameters
    ----------
    features_in_step : int
        Locations per step; must divide the number of locations.
    abs : bool
        Take ``|a|`` first (Quantus' ``abs``).
    normalise : bool
        Divide the attributions by their largest magnitude in the update's batch (Quantus'
        ``normalise``; a positive scale, so r does not change).
    baseline : float, int, str or callable
        Quantus' ``perturb_baseline``: ``"black"`` (each sample's minimum), ``"white"`` (maximum),
        ``"mean"``, ``"blur"``, a number, or a callable ``(x) -> fill``. Token-id inputs (N, T) need
        an ``int``: the id of the replacement token.
    softmax : bool
        Score the target softmax probability instead of the target logit.
    max_batch_size : int or None
        Largest number of images sent through the model at once; ``None`` sizes the chunks to the
        inputs' device.
    **kwargs
        Passed to ``torchmetrics.Metric``.
    """

    higher_is_better = True

    def __init__(
        self,
        features_in_step: int = 1,
        abs: bool = False,
        normalise: bool = True,
        baseline: Baseline = "black",
        softmax: bool = False,
        max_batch_size: Optional[int] = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.features_in_step = check_positive_int("features_in_step", features_in_step)
        self._configure_quantus(abs, normalise, baseline, softmax, max_batch_size)

    def update(
        self, model: Model, inputs: Tensor, attributions: Tensor, target: Tensor, attention_mask: Optional[Tensor] = None
    ) -> None:
        """Correlate step relevance with the score drop of each step and accumulate r per sample.

        Parameters
        ----------
        model : callable
            Maps a batch of inputs to class scores (B, classes) (or an object with ``logits``, or
            per-position logits of a language model); an ``nn.Module`` runs in eval mode under
            ``torch.no_grad()`` and gets its training flags back.
        {perturbed_arguments}
        """
        inputs, relevance, target, attention_mask = self._prepare_relevance(inputs, attributions, target, attention_mask)
        ranks, num_locations = region_ranks(relevance, 1, "morf", self._generators.get(inputs.device))
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
            model, inputs, resolve_fill(self.baseline, inputs), target, band_masks(ranks, starts, stops),
            steps + 1, self.softmax, self.max_batch_size, attention_mask=attention_mask,
        )
        step_relevance = band_sums(relevance, ranks, self.features_in_step, steps)
        self._accumulate(pearson_rows(step_relevance, scores[:, :1] - scores[:, 1:]), relevance, scores)
