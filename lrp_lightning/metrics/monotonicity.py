"""Monotonicity (Arya et al. 2019): the score rises as features are added, least relevant first."""
from typing import Any, Optional

import torch
from torch import Tensor

from lrp_lightning.metrics._base import SampleMeanMetric
from lrp_lightning.metrics._checks import Baseline, check_positive_int
from lrp_lightning.metrics._model import Model
from lrp_lightning.metrics._perturbation import cumulative_masks, perturbed_scores, region_ranks, resolve_fill
from lrp_lightning.metrics._quantus_steps import QuantusRelevanceMixin


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
    abs, normalise : bool
        Quantus' attribution options (``|a|``; division by the batch's largest ``|a|``).
    baseline : float, int, str or callable
        Quantus' ``perturb_baseline``: ``"black"`` (each sample's minimum), ``"white"``, ``"mean"``,
        ``"blur"``, a number or a callable ``(x) -> fill``; a token id for token-id inputs.
    softmax : bool
        Score the target softmax probability (Quantus' default) instead of the logit.
    max_batch_size : int or None
        Largest number of images sent through the model at once; ``None`` sizes the chunks to the device.
    **kwargs
        Passed to ``torchmetrics.Metric``.
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
        self._configure(baseline, softmax, max_batch_size, seed=0)
        self._configure_relevance(abs, normalise)

    def update(
        self, model: Model, inputs: Tensor, attributions: Tensor, target: Tensor, attention_mask: Optional[Tensor] = None
    ) -> None:
        """Put the locations back, least relevant first, and accumulate whether the score never fell.

        Parameters
        ----------
        model : callable
            Maps a batch of inputs to class scores (B, classes); an ``nn.Module`` runs in eval mode
            under ``torch.no_grad()`` and gets its training flags back.
        inputs : Tensor
            Images (N, C, H, W), vectors (N, D) or integer token ids (N, T).
        attributions : Tensor
            The inputs' shape, or for images (N, 1, H, W) / (N, H, W); channels are summed.
        target : Tensor
            Class indices (N,).
        attention_mask : Tensor, optional
            For token ids: the mask (N, T) given to the model with every perturbed copy.
        """
        inputs, relevance, target, attention_mask = self._prepare_relevance(inputs, attributions, target, attention_mask)
        ranks, num_locations = region_ranks(relevance, 1, "lerf", self._generators.get(inputs.device))
        steps = -(-num_locations // self.features_in_step)
        counts = (torch.arange(1, steps + 1, device=inputs.device) * self.features_in_step).clamp(max=num_locations)
        scores = perturbed_scores(
            model, inputs, resolve_fill(self.baseline, inputs), target, cumulative_masks(ranks, counts), steps,
            self.softmax, self.max_batch_size, insert=True, attention_mask=attention_mask,
        )
        monotonic = (scores.diff(dim=1) >= 0).all(dim=1)
        self._accumulate(monotonic.double(), relevance, scores)
