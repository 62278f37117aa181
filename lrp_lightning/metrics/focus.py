"""Focus (Arias-Duart et al. 2022): share of positive relevance on the target-class images of a mosaic."""
from typing import Any

from torch import Tensor

from lrp_lightning._arguments import boolean
from lrp_lightning.metrics._base import SampleMeanMetric
from lrp_lightning.metrics._checks import check_same_batch

QUADRANTS = ("top_left", "top_right", "bottom_left", "bottom_right")


def quadrant_mask(positions: Tensor, height: int, width: int) -> Tensor:
    """Bool masks (N, H, W) of the mosaic quadrants flagged in ``positions`` (N, 4), in :data:`QUADRANTS` order."""
    flags = positions.bool().view(-1, 2, 1, 2, 1)
    blocks = flags.expand(-1, 2, height // 2, 2, width // 2)
    return blocks.reshape(-1, height, width)


class Focus(SampleMeanMetric):
    """Mean over mosaics of ``Σ_{target quadrants} R⁺ / Σ R⁺`` (Arias-Duart et al. 2022), Quantus' ``Focus``.

    Each input is a 2 × 2 mosaic of four images, some of them of the explained class; ``mask``
    flags those quadrants. ``R⁺ = max(a, 0)`` (of ``|a|`` with ``abs=True``), summed over channels
    and pixels. Image-only: attributions must be (N, C, H, W) or (N, H, W) with even H and W.
    Quantus' ``normalise`` is left out: a positive rescaling changes no share.

    Parameters
    ----------
    abs : bool
        Use ``|a|`` before keeping the positive part.
    **kwargs
        Passed to ``torchmetrics.Metric``.
    """

    higher_is_better = True

    def __init__(self, abs: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.abs = boolean("abs", abs)

    def update(self, attributions: Tensor, mask: Tensor) -> None:
        """Accumulate the Focus of each mosaic.

        Parameters
        ----------
        attributions : Tensor
            Relevance of the mosaics, (N, C, H, W) or (N, H, W), H and W even.
        mask : Tensor
            (N, 4) flags, 1 (True) for the quadrants holding an image of the explained class, in
            the order top left, top right, bottom left, bottom right (Quantus' ``custom_batch``);
            each mosaic needs one flagged quadrant.
        """
        if not isinstance(attributions, Tensor) or attributions.ndim not in (3, 4):
            shape = tuple(attributions.shape) if isinstance(attributions, Tensor) else type(attributions).__name__
            raise ValueError(
                f"Focus is defined for image mosaics only: attributions must be (N, C, H, W) or (N, H, W), got {shape}"
            )
        height, width = attributions.shape[-2:]
        if height % 2 or width % 2:
            raise ValueError(f"a 2 x 2 mosaic has even sides; got attributions of height {height} and width {width}")
        mask = check_same_batch("mask", mask, attributions.shape[0])
        if tuple(mask.shape) != (attributions.shape[0], 4):
            raise ValueError(
                f"Focus takes mask as (N, 4) quadrant flags {QUADRANTS}, got shape {tuple(mask.shape)}"
            )
        self._follow_device(attributions)
        positions = mask.to(attributions.device)
        unflagged = (~positions.bool().any(dim=1)).nonzero().flatten().tolist()
        if unflagged:
            raise ValueError(f"no quadrant flagged for mosaics {unflagged}; flag the target-class images")
        relevance = attributions.double()
        if self.abs:
            relevance = relevance.abs()
        positive = relevance.clamp(min=0.0)
        if positive.ndim == 4:
            positive = positive.sum(dim=1)
        inside = quadrant_mask(positions, height, width)
        flat = positive.reshape(positive.shape[0], -1)
        focus = (flat * inside.reshape(inside.shape[0], -1)).sum(dim=1) / flat.sum(dim=1)
        self._accumulate(focus, attributions)
