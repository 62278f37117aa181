"""Selectivity (Montavon et al. 2018): target score while the most relevant patches are removed."""
from typing import Any, Optional

import torch
from torch import Tensor

from lrp_lightning.metrics._base import CurveMeanMetric
from lrp_lightning.metrics._checks import Baseline, check_positive_int
from lrp_lightning.metrics._model import Model
from lrp_lightning.metrics._perturbation import cumulative_masks, perturbed_scores, region_ranks, resolve_fill
from lrp_lightning.metrics._quantus_steps import QuantusRelevanceMixin


class Selectivity(QuantusRelevanceMixin, CurveMeanMetric):
    """Mean target score after each patch removal, most relevant patch first (Montavon et al. 2018).

    The input is cut into ``patch_size`` blocks (all channels) on a grid centred on the input (where
    the size does not divide, the border patches are cut, as in Quantus 0.6.0 and
    :class:`RegionPerturbation`); patches are ranked by summed
    relevance and replaced cumulatively by ``baseline``. ``curve[k]`` (k = 0..P-1) is the mean over
    samples of the target score once the k + 1 most relevant patches are replaced — the per-sample
    list Quantus 0.6.0's ``Selectivity`` returns — and ``auc`` the area under it, trapezoidal rule
    with unit steps (a faster fall, a lower area, is better).

    Parameters
    ----------
    patch_size : int
        Side of the square patches (segment length for vectors and token ids).
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

    higher_is_better = False

    def __init__(
        self,
        patch_size: int = 8,
        abs: bool = False,
        normalise: bool = True,
        baseline: Baseline = "black",
        softmax: bool = True,
        max_batch_size: Optional[int] = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.patch_size = check_positive_int("patch_size", patch_size)
        self._configure(baseline, softmax, max_batch_size, seed=0)
        self._configure_relevance(abs, normalise)

    def update(
        self, model: Model, inputs: Tensor, attributions: Tensor, target: Tensor, attention_mask: Optional[Tensor] = None
    ) -> None:
        """Remove patches cumulatively, most relevant first, and accumulate the score curves.

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
        ranks, num_patches = region_ranks(relevance, self.patch_size, "morf", self._generators.get(inputs.device))
        counts = torch.arange(1, num_patches + 1, device=inputs.device)
        scores = perturbed_scores(
            model, inputs, resolve_fill(self.baseline, inputs), target, cumulative_masks(ranks, counts),
            num_patches, self.softmax, self.max_batch_size, attention_mask=attention_mask,
        )
        self._accumulate(scores, relevance, scores)

    def compute(self) -> dict[str, Tensor]:
        """``{"auc": tensor(), "curve": tensor(patches)}``, means over all samples seen."""
        curve = self._mean_curve()
        return {"auc": torch.trapezoid(curve), "curve": curve}
