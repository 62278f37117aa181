"""zennit's image helpers: arrays to Pillow images, with zennit's colour maps, normalisation and grids.

These work on numpy arrays (tensors are converted) on the CPU and return Pillow images; for batched
rendering on the device use :func:`lrp_lightning.image.heatmap`. They are re-exported by
:mod:`lrp_lightning.image` under zennit's names.

A single-channel array becomes a palette (``'P'``) image whose palette is the colour map, so the
colour map of a saved heatmap can be swapped later; a three-channel array becomes an RGB image.
Values are normalised to ``[0, 1]`` by ``(x - vmin) / (vmax - vmin)`` and stored as
``floor(255 * clip(., 0, 1))``.
"""
from __future__ import annotations

import math
import numbers
import os
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch

from lrp_lightning import cmap as colormaps
from lrp_lightning.cmap import ColorMap, LazyColorMapCache

CMAPS = LazyColorMapCache({
    "gray": "000,fff",
    "wred": "fff,f00",
    "wblue": "fff,00f",
    "hot": "000,f00,ff0,fff",
    "cold": "000,00f,0ff",
    "coldnhot": "0ff,00f,80:000,f00,ff0,fff",
    "bwr": "00f,80:fff,f00",
    "france": "0055a4,80:fff,ef4135",
    "seismic": "0000d0,80:d0d0d0,d00000",
    "coolio": "00d0d0,80:d0d0d0,d000d0",
    "coleus": "00d000,80:d0d0d0,d000d0",
})
"""zennit's built-in colour maps, by name, as CMSL sources compiled on first use."""

COLOR_CHANNELS = (1, 3)


def get_cmap(cmap: Union[str, ColorMap]) -> ColorMap:
    """Return a colour map: ``cmap`` itself, a name of :data:`CMAPS`, or compiled CMSL source.

    Beyond zennit, matplotlib names and ``_r`` suffixes are resolved as in
    :func:`lrp_lightning.cmap.get_cmap`.

    Parameters
    ----------
    cmap : str or ColorMap
        The colour map.

    Raises
    ------
    KeyError
        If ``cmap`` is no known name and no CMSL source (which has a comma).
    RuntimeError
        If CMSL source does not compile.
    """
    if isinstance(cmap, ColorMap):
        return cmap
    if cmap in CMAPS:
        return CMAPS[cmap]
    return colormaps.get_cmap(cmap)


def palette(cmap: Union[str, ColorMap] = "bwr", level: float = 1.0) -> np.ndarray:
    """Return the uint8 ``(256, 3)`` palette of a colour map, see :meth:`ColorMap.palette`.

    Parameters
    ----------
    cmap : str or ColorMap
        Resolved by :func:`get_cmap`.
    level : float
        Contrast of the palette around its centre.
    """
    return get_cmap(cmap).palette(level=level)


def _as_array(obj: Any) -> np.ndarray:
    if isinstance(obj, torch.Tensor):
        obj = obj.detach().cpu().numpy()
    return np.asarray(obj)


def interval_norm_bounds(input: Any, symmetric: bool = False, dim: Optional[Sequence[int]] = None) -> tuple:
    """Return ``(vmin, vmax)`` per sample for normalising ``input`` to ``[0, 1]``.

    Parameters
    ----------
    input : numpy.ndarray or torch.Tensor
        The data, batch first.
    symmetric : bool
        ``(-max|x|, max|x|)`` (zero lands at 0.5) instead of ``(min, max)``.
    dim : tuple of int, optional
        Dimensions reduced over; all but the first when None.

    Returns
    -------
    tuple of numpy.ndarray
        ``vmin`` and ``vmax``, with the reduced dimensions kept as size 1.
    """
    array = _as_array(input)
    dim = tuple(range(1, array.ndim)) if dim is None else tuple(dim)
    vmin, vmax = array.min(axis=dim, keepdims=True), array.max(axis=dim, keepdims=True)
    if symmetric:
        vmax = np.maximum(np.abs(vmin), np.abs(vmax))
        vmin = -vmax
    return vmin, vmax


def _channels_last(array: np.ndarray, error: str) -> np.ndarray:
    """Move a colour axis of size 1 or 3 (last, else first after the leading ones) to the end."""
    if array.shape[-1] in COLOR_CHANNELS:
        return array
    if array.shape[-3] in COLOR_CHANNELS:
        return np.moveaxis(array, -3, -1)
    raise TypeError(error)


def gridify(obj: Any, shape: Optional[tuple] = None, fill_value: Optional[float] = None) -> np.ndarray:
    """Lay a batch of images out as one grid image, row by row.

    Parameters
    ----------
    obj : numpy.ndarray or torch.Tensor
        ``(N, H, W)`` (greyscale) or ``(N, C, H, W)`` / ``(N, H, W, C)`` with ``C`` in {1, 3}.
    shape : tuple of int, optional
        ``(rows, columns)`` of the grid; by default ``columns = floor(sqrt(N))``,
        ``rows = ceil(N / columns)``.
    fill_value : float, optional
        Value of empty grid cells; by default each channel's smallest value.

    Returns
    -------
    numpy.ndarray
        ``(rows * H, columns * W, C)``.

    Raises
    ------
    TypeError
        If ``obj`` does not have 3 or 4 axes or no colour axis of size 1 or 3.
    """
    array = _as_array(obj)
    if array.ndim not in (3, 4):
        raise TypeError("For creating an image grid, the array has to have either 3 (greyscale) or 4 (rgb) axes!")
    if array.ndim == 3:
        array = array[..., None]
    array = _channels_last(array, "The colour axis (second or last) of a grid batch must have 1 or 3 channels!")
    count, height, width, channels = array.shape
    if shape is None:
        columns = max(1, math.isqrt(count))
        shape = (math.ceil(count / columns), columns)
    rows, columns = shape
    if rows * columns < count:
        raise ValueError(f"a grid of shape {shape} does not hold {count} images")
    fill = array.min(axis=(0, 1, 2)) if fill_value is None else fill_value
    cells = np.full((rows * columns, height, width, channels), fill, dtype=array.dtype)
    cells[:count] = array
    return cells.reshape(rows, columns, height, width, channels).transpose(0, 2, 1, 3, 4).reshape(
        rows * height, columns * width, channels
    )


def _grid_shape(grid: Any) -> Optional[tuple]:
    """``(rows, columns)`` of an ``imgify`` grid given as a pair of ints; None for ``True`` (or no grid).

    Raises
    ------
    TypeError
        If a true ``grid`` is neither ``True`` nor a list or tuple of two ints.
    """
    if grid is True or not grid:
        return None
    if isinstance(grid, (list, tuple)) and len(grid) == 2 and all(
        isinstance(size, numbers.Integral) and not isinstance(size, bool) for size in grid
    ):
        return tuple(int(size) for size in grid)
    raise TypeError(f"grid must be True, False or a pair (rows, columns) of ints, got {grid!r}")


def imgify(obj: Any, vmin: Optional[float] = None, vmax: Optional[float] = None, cmap: Union[str, ColorMap] = "bwr",
           level: float = 1.0, symmetric: bool = False, grid: Union[bool, tuple] = False,
           gridfill: Optional[int] = None) -> Any:
    """Return a Pillow image of an array with 1 or 3 colour channels (first or last axis).

    Parameters
    ----------
    obj : numpy.ndarray or torch.Tensor
        ``(H, W)``, ``(C, H, W)`` or ``(H, W, C)`` with ``C`` in {1, 3}; with ``grid``, a batch of
        these (batch first).
    vmin, vmax : float or numpy.ndarray, optional
        Override the normalisation bounds.
    cmap : str or ColorMap
        Colour map (palette) of single-channel images, see :func:`get_cmap`.
    level : float
        Contrast of the palette, see :meth:`ColorMap.palette`.
    symmetric : bool
        Normalise ``[-max|x|, max|x|]`` instead of ``[min, max]`` to ``[0, 1]``.
    grid : bool or tuple of int
        Treat the first axis as a batch, normalise each sample and lay them out as a grid (a pair
        of ints gives its ``(rows, columns)``; a false value, e.g. None, means no grid).
    gridfill : int, optional
        uint8 value of empty grid cells.

    Returns
    -------
    PIL.Image.Image
        A ``'P'`` (palette) image for one channel, an ``'RGB'`` image for three.

    Raises
    ------
    TypeError
        If the array has the wrong number of axes or channels, or ``grid`` is neither a bool (or
        another false value) nor a pair of ints (as zennit).
    """
    from PIL import Image

    shape = _grid_shape(grid)
    array = _as_array(obj).astype(np.float64)
    if not grid and array.ndim not in (2, 3):
        raise TypeError("Input has to have either 2 or 3 axes!")
    batch = array if grid else array[None]
    low, high = interval_norm_bounds(batch, symmetric=symmetric)
    low = low if vmin is None else vmin
    high = high if vmax is None else vmax
    with np.errstate(divide="ignore", invalid="ignore"):
        unit = np.nan_to_num((batch - low) / (high - low))
    pixels = (unit * 255).clip(0, 255).astype(np.uint8)
    if grid:
        pixels = gridify(pixels, shape=shape, fill_value=gridfill)
    else:
        pixels = pixels[0]
        if pixels.ndim == 3:
            pixels = _channels_last(pixels, "Last (or first) axis of input are color channels, which have to either "
                                            "be 1, 3 or be omitted entirely!")
    if pixels.ndim == 3 and pixels.shape[-1] == 3:
        return Image.fromarray(np.ascontiguousarray(pixels), mode="RGB")
    image = Image.fromarray(np.ascontiguousarray(pixels.reshape(pixels.shape[:2])), mode="P")
    image.putpalette(get_cmap(cmap).palette(level=level).reshape(-1).tolist())
    return image


def imsave(fp: Union[str, os.PathLike, Any], obj: Any, vmin: Optional[float] = None, vmax: Optional[float] = None,
           cmap: Union[str, ColorMap] = "bwr", level: float = 1.0, grid: Union[bool, tuple] = False,
           format: Optional[str] = None, writer_params: Optional[dict] = None, symmetric: bool = False,
           gridfill: Optional[int] = None) -> None:
    """Save ``obj`` as an image file via :func:`imgify` and Pillow.

    Parameters
    ----------
    fp : str, os.PathLike or file object
        Destination.
    obj, vmin, vmax, cmap, level, grid, symmetric, gridfill
        As in :func:`imgify`.
    format : str, optional
        Pillow's format name, overriding the file extension.
    writer_params : dict, optional
        Further keyword arguments of ``PIL.Image.Image.save``.
    """
    image = imgify(obj, vmin=vmin, vmax=vmax, cmap=cmap, level=level, symmetric=symmetric, grid=grid,
                   gridfill=gridfill)
    image.save(fp, format=format, **(writer_params or {}))
