"""Selectivity (Montavon et al. 2018): target score while the most relevant patches are removed."""
from typing import Any, Optional

import torch
from torch import Tensor

from lrp_lightning.metrics._base import CurveMeanMetric
from lrp_lightning.metrics._checks import Baseline, check_positive_int
from lrp_lightning.metrics._docs import fill_doc
from lrp_lightning.metrics._model import Model
from lrp_lightning.metrics._perturbation import cumulative_masks, perturbed_scores, region_ranks, resolve_fill
from lrp_lightning.metrics._quantus_steps import QuantusRelevanceMixin


@fill_doc
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
    {quantus_perturbation}
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
        self._configure_quantus(abs, normalise, baseline, softmax, max_batch_size)

    def _evaluate(
        self, model: Model, inputs: Tensor, relevance: Tensor, target: Tensor, attention_mask: Optional[Tensor]
    ) -> None:
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
