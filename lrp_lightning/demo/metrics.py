"""Localisation metrics of the demo: relevance mass on the object and on the watermark.

The demo hands ``AttributionCallback`` one mask tensor per sample with two channels,
``(N, 2, H, W)``: channel :data:`OBJECT` is the shape, channel :data:`WATERMARK` the watermark.
:class:`RegionRelevanceMass` picks one channel and measures the share of positive relevance
inside it.
"""
from __future__ import annotations

from typing import Any

import torch

from lrp_lightning.metrics import RelevanceMassAccuracy

OBJECT = 0
WATERMARK = 1


def stack_masks(object_masks: torch.Tensor, watermark_masks: torch.Tensor) -> torch.Tensor:
    """Stack (N, H, W) object and watermark masks into the demo's (N, 2, H, W) mask.

    Parameters
    ----------
    object_masks, watermark_masks : torch.Tensor
        Bool masks, shape (N, H, W).

    Returns
    -------
    torch.Tensor
        Bool, shape (N, 2, H, W), channels ordered :data:`OBJECT`, :data:`WATERMARK`.
    """
    return torch.stack([object_masks, watermark_masks], dim=1)


class RegionRelevanceMass(RelevanceMassAccuracy):
    """Share of positive relevance inside one channel of a stacked mask (Arras et al. 2022).

    Relevance is summed over the input channels, negative values are dropped, and the relevance
    mass accuracy of the selected mask channel is computed: 1 means all positive relevance lies in
    the region, the region's area share is what a uniform heatmap would get.

    Parameters
    ----------
    region : int
        Mask channel, :data:`OBJECT` or :data:`WATERMARK`.
    **kwargs
        Passed to ``torchmetrics.Metric``.
    """

    def __init__(self, region: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.region = region

    def update(self, attributions: torch.Tensor, mask: torch.Tensor) -> None:
        """Accumulate the positive relevance share in ``mask[:, region]`` for each sample.

        Parameters
        ----------
        attributions : torch.Tensor
            Relevance (N, C, H, W).
        mask : torch.Tensor
            Bool (N, R, H, W) with ``R > region``.
        """
        positive = attributions.sum(dim=1).clamp(min=0)
        super().update(positive, mask[:, self.region])
