"""Input preparation shared by the localisation metrics that compare attributions with a ground-truth mask."""
import torch
from torch import Tensor

from lrp_lightning.metrics._base import SampleMeanMetric
from lrp_lightning.metrics._checks import flat_attributions, flat_mask


class MaskLocalisationMetric(SampleMeanMetric):
    """A per-sample mean whose ``update(attributions, mask)`` compares relevance with a mask, entry by entry.

    Subclasses set ``abs`` and implement ``_scores(relevance, inside)``: float64 relevance (N, F)
    (absolute values with ``abs=True``) and the bool mask (N, F) to one value per sample; they may
    leave samples out of the mean (``_counted``).
    """

    higher_is_better = True
    abs = False

    def _scores(self, relevance: Tensor, inside: Tensor) -> Tensor:
        raise NotImplementedError

    def _counted(self, inside: Tensor) -> Tensor:
        """Which samples count (bool (N,)); all by default."""
        return torch.ones(inside.shape[0], dtype=torch.bool, device=inside.device)

    def update(self, attributions: Tensor, mask: Tensor) -> None:
        """Accumulate the score of each sample.

        Parameters
        ----------
        attributions : Tensor
            Relevance (N, ...), compared with the mask entry by entry (for a mask of the inputs'
            shape, pass attributions of that shape, or a channel-reduced mask with reduced attributions).
        mask : Tensor
            Ground truth, a bool tensor broadcastable to ``attributions``; each sample needs a True entry.
        """
        values = flat_attributions(attributions)
        self._follow_device(values)
        inside = flat_mask(mask, attributions)
        counted = self._counted(inside)
        values, inside = values[counted], inside[counted]
        relevance = values.double()
        if self.abs:
            relevance = relevance.abs()
        self._accumulate(self._scores(relevance, inside), values)
