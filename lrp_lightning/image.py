"""Render relevance and inputs as uint8 RGB images, batched, in torch on the device.

Everything up to the uint8 ``(N, 3, H, W)`` (or ``(3, H, W)``) result stays on the device of its
input; only :func:`save_png` moves data to the CPU (Pillow). zennit's CPU helpers (``CMAPS``,
``get_cmap``, ``palette``, ``imgify``, ``imsave``, ``gridify``, ``interval_norm_bounds``) are
re-exported from :mod:`lrp_lightning.pillow`; the heatmaps here take colour-map names as
:func:`lrp_lightning.cmap.get_cmap` does.

Normalisation of a heatmap is per sample. ``symmetric=True`` divides by the largest ``|R|`` (or by
the ``percentile``-th percentile of ``|R|``, clipping above it), so zero relevance lands at the
centre 0.5 of the colour map; ``symmetric=False`` maps ``[min, max]`` (or the ``100 - percentile``
and ``percentile`` percentiles) to ``[0, 1]``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

import torch

from lrp_lightning import cmap as colormaps
from lrp_lightning.cmap import ColorMap
from lrp_lightning.pillow import CMAPS, get_cmap, gridify, imgify, imsave, interval_norm_bounds, palette

__all__ = [
    "CMAPS", "ColorMap", "get_cmap", "gridify", "imgify", "imsave", "interval_norm_bounds", "palette",
    "is_image_batch", "reduce_channels", "row_percentile", "normalize", "heatmap", "input_image", "overlay",
    "attribution_grid", "strip", "save_png",
]

CmapSpec = Union[str, ColorMap]

IMAGE_CHANNELS = (1, 3, 4)
STRIP_TARGET_PIXELS = 256
STRIP_MAX_CELL = 16


def is_image_batch(x: torch.Tensor) -> bool:
    """Whether ``x`` looks like a batch of images ``(N, C, H, W)`` with ``C`` in {1, 3, 4}.

    Parameters
    ----------
    x : torch.Tensor
        Any tensor.

    Returns
    -------
    bool
        True for a 4-d tensor with 1, 3 or 4 channels.
    """
    return isinstance(x, torch.Tensor) and x.ndim == 4 and x.shape[1] in IMAGE_CHANNELS


def reduce_channels(relevance: torch.Tensor) -> torch.Tensor:
    """Sum relevance over the channel dim.

    Parameters
    ----------
    relevance : torch.Tensor
        ``(N, C, H, W)`` (summed over ``C``) or ``(N, H, W)`` (returned as is).

    Returns
    -------
    torch.Tensor
        ``(N, H, W)``.

    Raises
    ------
    ValueError
        For any other number of dims.
    """
    if relevance.ndim == 4:
        return relevance.sum(dim=1)
    if relevance.ndim == 3:
        return relevance
    raise ValueError(f"expected relevance of shape (N, C, H, W) or (N, H, W), got "
                     f"{tuple(relevance.shape)}; use strip() for (N, D) or (N, T, D)")


def row_percentile(values: torch.Tensor, q: float) -> torch.Tensor:
    """Per-row percentile with linear interpolation (numpy's default method).

    Parameters
    ----------
    values : torch.Tensor
        ``(N, M)``.
    q : float
        Percentile in [0, 100].

    Returns
    -------
    torch.Tensor
        ``(N,)``.
    """
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile must lie in [0, 100], got {q}")
    ordered = values.sort(dim=1).values
    position = q / 100.0 * (values.shape[1] - 1)
    lower = int(position)
    upper = min(lower + 1, values.shape[1] - 1)
    return torch.lerp(ordered[:, lower], ordered[:, upper], position - lower)


def normalize(relevance: torch.Tensor, symmetric: bool = True,
              percentile_clip: Optional[float] = None) -> torch.Tensor:
    """Map relevance ``(N, ...)`` to [0, 1] per sample.

    Parameters
    ----------
    relevance : torch.Tensor
        ``(N, ...)`` relevance.
    symmetric : bool, optional
        True: ``0.5 + R / (2 s)`` with ``s = max |R|`` (zero maps to 0.5); False: min-max.
    percentile_clip : float, optional
        Use this percentile (of ``|R|``, or ``100 - p`` / ``p`` of ``R`` when not symmetric)
        instead of the extreme, clipping beyond it.

    Returns
    -------
    torch.Tensor
        float32 in [0, 1], shape of ``relevance``; a sample with zero scale maps to 0.5
        (symmetric) or 0.
    """
    flat = relevance.detach().to(torch.float32).reshape(relevance.shape[0], -1)
    if symmetric:
        magnitude = flat.abs()
        if percentile_clip is None:
            scale = magnitude.amax(dim=1)
        else:
            scale = row_percentile(magnitude, percentile_clip)
        scale = torch.where(scale > 0, scale, torch.ones_like(scale)).unsqueeze(1)
        unit = (0.5 + 0.5 * flat / scale).clamp(0.0, 1.0)
    else:
        if percentile_clip is None:
            low, high = flat.amin(dim=1), flat.amax(dim=1)
        else:
            low, high = row_percentile(flat, 100.0 - percentile_clip), row_percentile(flat, percentile_clip)
        span = high - low
        span = torch.where(span > 0, span, torch.ones_like(span)).unsqueeze(1)
        unit = ((flat - low.unsqueeze(1)) / span).clamp(0.0, 1.0)
    return unit.reshape(relevance.shape)


def _to_uint8_chw(rgb: torch.Tensor) -> torch.Tensor:
    """Round float RGB ``(N, H, W, 3)`` in [0, 255] to uint8 ``(N, 3, H, W)``."""
    return rgb.round().clamp(0, 255).to(torch.uint8).permute(0, 3, 1, 2).contiguous()


def heatmap(relevance: torch.Tensor, cmap: CmapSpec = "coldnhot", symmetric: bool = True,
            percentile: Optional[float] = None) -> torch.Tensor:
    """Colour a batch of relevance maps.

    Parameters
    ----------
    relevance : torch.Tensor
        ``(N, C, H, W)`` (channels summed) or ``(N, H, W)``.
    cmap : str or ColorMap, optional
        Colour map, see :func:`lrp_lightning.cmap.get_cmap`.
    symmetric : bool, optional
        Keep zero at the centre of the colour map (scale by max ``|R|``); False: min-max.
    percentile : float, optional
        Clip at this percentile instead of the extreme (e.g. 99.5).

    Returns
    -------
    torch.Tensor
        uint8 ``(N, 3, H, W)`` on the device of ``relevance``.
    """
    unit = normalize(reduce_channels(relevance), symmetric=symmetric, percentile_clip=percentile)
    return _to_uint8_chw(colormaps.get_cmap(cmap)(unit))


def input_image(x: torch.Tensor) -> torch.Tensor:
    """Render inputs as RGB, each sample min-max scaled over all its channels and pixels.

    Parameters
    ----------
    x : torch.Tensor
        ``(N, C, H, W)`` with ``C`` 1 (gray, repeated), 3, or 4 (alpha dropped); or ``(N, H, W)``.

    Returns
    -------
    torch.Tensor
        uint8 ``(N, 3, H, W)`` on the device of ``x``; a constant sample renders black.
    """
    if x.ndim == 3:
        x = x.unsqueeze(1)
    if not is_image_batch(x):
        raise ValueError(f"expected images of shape (N, C, H, W) with C in {IMAGE_CHANNELS} or "
                         f"(N, H, W), got {tuple(x.shape)}")
    rgb = x[:, :3] if x.shape[1] >= 3 else x.expand(-1, 3, -1, -1)
    unit = normalize(rgb, symmetric=False)
    return (unit * 255.0).round().to(torch.uint8)


def overlay(x: torch.Tensor, relevance: torch.Tensor, cmap: CmapSpec = "coldnhot",
            alpha: float = 0.5, symmetric: bool = True,
            percentile: Optional[float] = None) -> torch.Tensor:
    """Blend the heatmap of ``relevance`` over the rendered input.

    Parameters
    ----------
    x : torch.Tensor
        Images, see :func:`input_image`.
    relevance : torch.Tensor
        Relevance with the spatial size of ``x``, see :func:`heatmap`.
    cmap : str or ColorMap, optional
        Colour map of the heatmap.
    alpha : float, optional
        Heatmap weight in [0, 1]: ``(1 - alpha) * input + alpha * heatmap``.
    symmetric, percentile : optional
        Heatmap normalisation, see :func:`heatmap`.

    Returns
    -------
    torch.Tensor
        uint8 ``(N, 3, H, W)``.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    background = input_image(x)
    colored = heatmap(relevance, cmap=cmap, symmetric=symmetric, percentile=percentile)
    if background.shape != colored.shape:
        raise ValueError(f"input renders to {tuple(background.shape)} but relevance to "
                         f"{tuple(colored.shape)}; they need the same batch and spatial size")
    blend = torch.lerp(background.to(torch.float32), colored.to(torch.float32), alpha)
    return blend.round().to(torch.uint8)


def attribution_grid(x: torch.Tensor, relevance: torch.Tensor, cmap: CmapSpec = "coldnhot",
                     alpha: float = 0.5, symmetric: bool = True, percentile: Optional[float] = None,
                     padding: int = 2, pad_value: int = 255, columns: int = 1) -> torch.Tensor:
    """Tile each sample as input | heatmap | overlay, ``columns`` samples side by side per row.

    Parameters
    ----------
    x : torch.Tensor
        Images ``(N, C, H, W)``, see :func:`input_image`.
    relevance : torch.Tensor
        Relevance, see :func:`heatmap`.
    cmap, alpha, symmetric, percentile : optional
        See :func:`overlay`.
    padding : int, optional
        Pixels between tiles; samples side by side are ``3 * padding`` apart.
    pad_value : int, optional
        Gray level (0-255) of the padding.
    columns : int, optional
        Samples per row; sample ``i`` goes to row ``i // columns``, left to right.

    Returns
    -------
    torch.Tensor
        uint8 ``(3, R * H + (R - 1) * padding, C * (3 * W + 2 * padding) + (C - 1) * 3 * padding)`` with
        ``C = min(columns, N)`` and ``R = ceil(N / C)`` (one column: ``(3, N * H + (N - 1) * padding,
        3 * W + 2 * padding)``).

    Raises
    ------
    ValueError
        If ``columns`` is below 1.
    """
    if columns < 1:
        raise ValueError(f"columns must be at least 1, got {columns}")
    tiles = torch.stack([input_image(x),
                         heatmap(relevance, cmap=cmap, symmetric=symmetric, percentile=percentile),
                         overlay(x, relevance, cmap=cmap, alpha=alpha, symmetric=symmetric,
                                 percentile=percentile)], dim=1)
    samples, per_sample, _, height, width = tiles.shape
    columns = min(columns, samples)
    rows = -(-samples // columns)
    group_width = per_sample * (width + padding) - padding
    grid = torch.full((3, rows * (height + padding) - padding, columns * (group_width + 3 * padding) - 3 * padding),
                      pad_value, dtype=torch.uint8, device=tiles.device)
    for sample in range(samples):
        top = (sample // columns) * (height + padding)
        for tile in range(per_sample):
            left = (sample % columns) * (group_width + 3 * padding) + tile * (width + padding)
            grid[:, top:top + height, left:left + width] = tiles[sample, tile]
    return grid


def strip(relevance: torch.Tensor, cmap: CmapSpec = "coldnhot", symmetric: bool = True,
          percentile: Optional[float] = None, cell_size: Optional[int] = None) -> torch.Tensor:
    """Render non-image relevance as coloured bars: one cell per feature.

    Parameters
    ----------
    relevance : torch.Tensor
        ``(N, D)`` (one bar of ``D`` cells) or ``(N, T, D)`` (``T`` bars, e.g. one per token).
    cmap, symmetric, percentile : optional
        See :func:`heatmap`.
    cell_size : int, optional
        Side of a square cell in pixels; by default about ``256 / max(T, D)``, between 1 and 16.

    Returns
    -------
    torch.Tensor
        uint8 ``(N, 3, T * cell_size, D * cell_size)`` (``T = 1`` for ``(N, D)``).
    """
    if relevance.ndim == 2:
        relevance = relevance.unsqueeze(1)
    if relevance.ndim != 3:
        raise ValueError(f"expected relevance of shape (N, D) or (N, T, D), got {tuple(relevance.shape)}")
    if cell_size is None:
        cell_size = max(1, min(STRIP_MAX_CELL, STRIP_TARGET_PIXELS // max(relevance.shape[1:])))
    if cell_size < 1:
        raise ValueError(f"cell_size must be at least 1, got {cell_size}")
    colored = heatmap(relevance, cmap=cmap, symmetric=symmetric, percentile=percentile)
    return colored.repeat_interleave(cell_size, dim=2).repeat_interleave(cell_size, dim=3)


def save_png(image: torch.Tensor, path: Union[str, os.PathLike]) -> Path:
    """Write a uint8 image to a PNG file (parent folders are created).

    Parameters
    ----------
    image : torch.Tensor
        uint8 ``(3, H, W)``, ``(1, H, W)`` or ``(H, W)``.
    path : str or os.PathLike
        Destination file.

    Returns
    -------
    pathlib.Path
        The written path.
    """
    from PIL import Image

    if image.dtype != torch.uint8:
        raise ValueError(f"save_png needs a uint8 image, got {image.dtype}")
    if image.ndim == 3 and image.shape[0] in (1, 3):
        array = image.permute(1, 2, 0).squeeze(2) if image.shape[0] == 1 else image.permute(1, 2, 0)
    elif image.ndim == 2:
        array = image
    else:
        raise ValueError(f"save_png needs (3, H, W), (1, H, W) or (H, W), got {tuple(image.shape)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.detach().cpu().contiguous().numpy()).save(path)
    return path
