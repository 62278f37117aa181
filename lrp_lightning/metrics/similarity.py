"""Similarity of two explanations of the same samples, one value per sample.

Used for explanation drift (:class:`~lrp_lightning.callbacks.AttributionCallback`) and the
randomisation tests (:class:`~lrp_lightning.callbacks.SanityCheckCallback`). Every function takes
two tensors of shape (N, ...) and returns a float64 tensor of shape (N,):

- :func:`spearman`: Spearman rank correlation ρ = Pearson correlation of the ranks (ties get
  their average rank), over all features of a sample.
- :func:`topk_iou`: ``|T_a ∩ T_b| / |T_a ∪ T_b|``, T the indices of the ``fraction`` largest values.
- :func:`ssim`: structural similarity (Wang et al. 2004) of the channel-summed heatmaps, each
  scaled by its largest magnitude, with a Gaussian window (σ = 1.5, 11 × 11 or the largest odd
  size that fits):
  SSIM = (2 μ_a μ_b + C1)(2 σ_ab + C2) / ((μ_a² + μ_b² + C1)(σ_a² + σ_b² + C2)),
  C1 = (0.01 L)², C2 = (0.03 L)², L = 2 (the range of the scaled maps), averaged over the
  window positions; inputs that are not images are compared as one window.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from lrp_lightning import image

SSIM_SIGMA = 1.5
SSIM_WINDOW = 11
SSIM_K1, SSIM_K2 = 0.01, 0.03
# range of heatmaps scaled to [-1, 1]
SSIM_DATA_RANGE = 2.0
DEFAULT_TOPK_FRACTION = 0.1


def _rows(values: torch.Tensor) -> torch.Tensor:
    return values.detach().flatten(1).double()


def average_ranks(values: torch.Tensor) -> torch.Tensor:
    """Ranks 1..D of each row of ``values`` (N, D); tied values share their average rank.

    Parameters
    ----------
    values : torch.Tensor
        Shape (N, D).

    Returns
    -------
    torch.Tensor
        float64, shape (N, D).
    """
    count, width = values.shape
    ordered, order = values.sort(dim=1, stable=True)
    new_group = torch.ones_like(ordered, dtype=torch.bool)
    new_group[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    group = new_group.long().cumsum(dim=1) - 1 + torch.arange(count, device=values.device).unsqueeze(1) * width
    positions = torch.arange(1, width + 1, dtype=torch.float64, device=values.device).expand(count, width)
    totals = torch.zeros(count * width, dtype=torch.float64, device=values.device)
    sizes = torch.zeros_like(totals)
    totals.index_add_(0, group.flatten(), positions.flatten())
    sizes.index_add_(0, group.flatten(), torch.ones_like(positions).flatten())
    sorted_ranks = (totals / sizes.clamp(min=1))[group]
    ranks = torch.empty_like(sorted_ranks)
    ranks.scatter_(1, order, sorted_ranks)
    return ranks


def _pearson_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise Pearson r; 1 where the rows are identical, 0 where one is constant and they differ."""
    da, db = a - a.mean(dim=1, keepdim=True), b - b.mean(dim=1, keepdim=True)
    denominator = (da.square().sum(dim=1) * db.square().sum(dim=1)).sqrt()
    r = (da * db).sum(dim=1) / denominator.clamp(min=torch.finfo(torch.float64).tiny)
    r = torch.where(denominator > 0, r.clamp(-1.0, 1.0), torch.zeros_like(r))
    return torch.where((a == b).all(dim=1), torch.ones_like(r), r)


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation of each sample's features.

    Parameters
    ----------
    a, b : torch.Tensor
        Shape (N, ...), equal shapes.

    Returns
    -------
    torch.Tensor
        float64, shape (N,), in [-1, 1]; exactly 1 where ``a`` and ``b`` rank the features alike.
    """
    _check_shapes(a, b)
    return rank_correlation(feature_ranks(a), feature_ranks(b))


def feature_ranks(values: torch.Tensor) -> torch.Tensor:
    """Average ranks (float64, shape (N, D)) of each sample's features, as :func:`spearman` compares them
    (sorted in the values' own dtype: widening changes neither their order nor their ties)."""
    return average_ranks(values.detach().flatten(1))


def rank_correlation(ranks_a: torch.Tensor, ranks_b: torch.Tensor) -> torch.Tensor:
    """Spearman's ρ of each row from the rows' :func:`feature_ranks` (float64, shape (N,))."""
    return _pearson_rows(ranks_a, ranks_b)


def topk_iou(a: torch.Tensor, b: torch.Tensor, fraction: float = DEFAULT_TOPK_FRACTION) -> torch.Tensor:
    """Intersection over union of the ``fraction`` largest features of ``a`` and of ``b``.

    Parameters
    ----------
    a, b : torch.Tensor
        Shape (N, ...), equal shapes. Pass magnitudes (``|R|``) to compare by importance.
    fraction : float
        Share of the features in each top set, in (0, 1]; at least one feature.

    Returns
    -------
    torch.Tensor
        float64, shape (N,), in [0, 1].
    """
    _check_shapes(a, b)
    return set_iou(top_features(a, fraction), top_features(b, fraction))


def top_features(values: torch.Tensor, fraction: float = DEFAULT_TOPK_FRACTION) -> torch.Tensor:
    """Boolean masks (N, D) of the ``fraction`` largest features of each sample (at least one)."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must lie in (0, 1], got {fraction}")
    rows = _rows(values)
    k = max(1, int(round(fraction * rows.shape[1])))
    return torch.zeros_like(rows, dtype=torch.bool).scatter_(1, rows.topk(k, dim=1).indices, True)


def set_iou(top_a: torch.Tensor, top_b: torch.Tensor) -> torch.Tensor:
    """Row-wise intersection over union of two boolean masks (N, D) (float64, shape (N,))."""
    intersection = (top_a & top_b).sum(dim=1).double()
    union = (top_a | top_b).sum(dim=1).double()
    return intersection / union


def _gaussian_window(size: int, device: torch.device) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float64, device=device) - (size - 1) / 2
    kernel = torch.exp(-coords.square() / (2 * SSIM_SIGMA**2))
    kernel = kernel / kernel.sum()
    return (kernel.view(-1, 1) * kernel.view(1, -1)).view(1, 1, size, size)


def _scaled_maps(relevance: torch.Tensor) -> torch.Tensor:
    """Channel-summed maps (N, 1, H, W) for images, (N, 1, 1, D) otherwise, scaled to [-1, 1]."""
    if image.is_image_batch(relevance):
        maps = relevance.detach().double().sum(dim=1, keepdim=True)
    else:
        maps = _rows(relevance).view(relevance.shape[0], 1, 1, -1)
    scale = maps.flatten(1).abs().amax(dim=1).clamp(min=torch.finfo(torch.float64).tiny)
    return maps / scale.view(-1, 1, 1, 1)


def ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Structural similarity of the two explanations of each sample (see the module docstring).

    Parameters
    ----------
    a, b : torch.Tensor
        Shape (N, ...), equal shapes; (N, C, H, W) images are summed over channels.

    Returns
    -------
    torch.Tensor
        float64, shape (N,), at most 1 (1 for equal maps).
    """
    _check_shapes(a, b)
    maps_a, maps_b = _scaled_maps(a), _scaled_maps(b)
    c1, c2 = (SSIM_K1 * SSIM_DATA_RANGE) ** 2, (SSIM_K2 * SSIM_DATA_RANGE) ** 2
    height, width = maps_a.shape[2:]
    if image.is_image_batch(a):
        size = min(SSIM_WINDOW, height - (height + 1) % 2, width - (width + 1) % 2)
        window = _gaussian_window(size, maps_a.device)

        def local_mean(maps: torch.Tensor) -> torch.Tensor:
            return F.conv2d(maps, window)
    else:

        def local_mean(maps: torch.Tensor) -> torch.Tensor:
            return maps.mean(dim=(2, 3), keepdim=True)

    mean_a, mean_b = local_mean(maps_a), local_mean(maps_b)
    var_a = local_mean(maps_a * maps_a) - mean_a.square()
    var_b = local_mean(maps_b * maps_b) - mean_b.square()
    covariance = local_mean(maps_a * maps_b) - mean_a * mean_b
    index = ((2 * mean_a * mean_b + c1) * (2 * covariance + c2)) / (
        (mean_a.square() + mean_b.square() + c1) * (var_a + var_b + c2)
    )
    return index.flatten(1).mean(dim=1)


def _check_shapes(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape or a.ndim < 2:
        raise ValueError(f"explanations to compare must have equal shapes (N, ...), got {tuple(a.shape)} and {tuple(b.shape)}")


def _spearman_of_magnitudes(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return spearman(a.abs(), b.abs())


def _topk_iou_of_magnitudes(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return topk_iou(a.abs(), b.abs())


# the similarities of the randomisation tests, by the name used in the log tags
SIMILARITIES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "spearman": _spearman_of_magnitudes,
    "ssim": ssim,
    "topk_iou": _topk_iou_of_magnitudes,
}
