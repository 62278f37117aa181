"""Colour maps for relevance heatmaps, evaluated in torch on the device of the values.

A :class:`ColorMap` is a piecewise-linear colour table: a list of stops ``(position, colour)`` with
positions rising from 0 to 1. Values in [0, 1] are mapped to RGB by linear interpolation between the
two neighbouring stops; a value that hits a stop gets exactly that stop's colour.

Built-in maps (signed maps have their zero colour at 0.5):

=========== ==================================================================
name        stops
=========== ==================================================================
coldnhot    cyan (0) - blue (0.25) - black (0.5) - red (0.75) - yellow (1)
bwr         blue (0) - white (0.5) - red (1)
hot         black (0) - red (1/3) - yellow (2/3) - white (1)
cold        black (0) - blue (1/3) - cyan (2/3) - white (1)
wred        white (0) - red (1)
wblue       white (0) - blue (1)
gray        black (0) - white (1)
=========== ==================================================================

Any other name is looked up in matplotlib (imported only then) and sampled into a 256-stop table;
a ``_r`` suffix reverses any map.
"""
from __future__ import annotations

from typing import Sequence, Union

import torch

ColorSpec = Union[str, Sequence[float]]

MATPLOTLIB_STOPS = 256


def _parse_color(color: ColorSpec) -> tuple[float, float, float]:
    """Return an RGB triple in [0, 255] from a ``#rrggbb``/``#rgb`` string or floats in [0, 1]."""
    if isinstance(color, str):
        digits = color.lstrip("#")
        if len(digits) == 3:
            digits = "".join(2 * digit for digit in digits)
        if len(digits) != 6:
            raise ValueError(f"colour {color!r} is not of the form '#rrggbb' or '#rgb'")
        return tuple(float(int(digits[i:i + 2], 16)) for i in (0, 2, 4))
    values = tuple(float(channel) for channel in color)
    if len(values) != 3 or not all(0.0 <= channel <= 1.0 for channel in values):
        raise ValueError(f"colour {color!r} is not three floats in [0, 1]")
    return tuple(255.0 * channel for channel in values)


class ColorMap:
    """A piecewise-linear colour table.

    Parameters
    ----------
    stops : sequence of (float, colour)
        At least two ``(position, colour)`` pairs, positions strictly increasing from 0 to 1;
        a colour is a ``'#rrggbb'`` string or three floats in [0, 1].
    name : str, optional
        A name for ``repr``.
    """

    def __init__(self, stops: Sequence[tuple[float, ColorSpec]], name: str = "custom") -> None:
        if len(stops) < 2:
            raise ValueError("a ColorMap needs at least two stops")
        positions = [float(position) for position, _ in stops]
        if positions[0] != 0.0 or positions[-1] != 1.0:
            raise ValueError(f"stop positions must start at 0 and end at 1, got {positions}")
        if any(b <= a for a, b in zip(positions, positions[1:])):
            raise ValueError(f"stop positions must be strictly increasing, got {positions}")
        self.name = name
        self.positions = torch.tensor(positions, dtype=torch.float32)
        self.colors = torch.tensor([_parse_color(color) for _, color in stops], dtype=torch.float32)

    def __repr__(self) -> str:
        return f"ColorMap({self.name!r}, {len(self.positions)} stops)"

    def reversed(self) -> "ColorMap":
        """Return the map read from 1 to 0.

        Returns
        -------
        ColorMap
            The mirrored map, named with a ``_r`` suffix.
        """
        mirrored = ColorMap.__new__(ColorMap)
        mirrored.name = f"{self.name}_r"
        mirrored.positions = 1.0 - self.positions.flip(0)
        mirrored.colors = self.colors.flip(0)
        return mirrored

    def __call__(self, values: torch.Tensor) -> torch.Tensor:
        """Map values to colours.

        Parameters
        ----------
        values : torch.Tensor
            Any shape; clamped to [0, 1].

        Returns
        -------
        torch.Tensor
            float32 of shape ``values.shape + (3,)``, RGB in [0, 255] (not rounded), on the
            device of ``values``.
        """
        positions = self.positions.to(values.device)
        colors = self.colors.to(values.device)
        flat = values.detach().reshape(-1).to(torch.float32).clamp(0.0, 1.0)
        segment = (torch.searchsorted(positions, flat, right=True) - 1).clamp(0, len(positions) - 2)
        start, end = positions[segment], positions[segment + 1]
        weight = ((flat - start) / (end - start)).unsqueeze(1)
        rgb = torch.lerp(colors[segment], colors[segment + 1], weight)
        return rgb.reshape(*values.shape, 3)


def _even_stops(*colors: str) -> list[tuple[float, str]]:
    """Return stops placing ``colors`` at evenly spaced positions from 0 to 1."""
    last = len(colors) - 1
    return [(index / last if index < last else 1.0, color) for index, color in enumerate(colors)]


BUILTIN_STOPS: dict[str, list[tuple[float, str]]] = {
    "coldnhot": _even_stops("#00ffff", "#0000ff", "#000000", "#ff0000", "#ffff00"),
    "bwr": _even_stops("#0000ff", "#ffffff", "#ff0000"),
    "hot": _even_stops("#000000", "#ff0000", "#ffff00", "#ffffff"),
    "cold": _even_stops("#000000", "#0000ff", "#00ffff", "#ffffff"),
    "wred": _even_stops("#ffffff", "#ff0000"),
    "wblue": _even_stops("#ffffff", "#0000ff"),
    "gray": _even_stops("#000000", "#ffffff"),
}


def _from_matplotlib(name: str) -> ColorMap:
    """Sample matplotlib's colour map ``name`` into a :class:`ColorMap`."""
    import matplotlib

    try:
        source = matplotlib.colormaps[name]
    except KeyError:
        known = ", ".join(sorted(BUILTIN_STOPS))
        raise KeyError(f"unknown colour map {name!r}: use one of {known} or a matplotlib "
                       f"colour map name") from None
    last = MATPLOTLIB_STOPS - 1
    stops = [(index / last, tuple(source(index / last))[:3]) for index in range(MATPLOTLIB_STOPS)]
    return ColorMap(stops, name=name)


def get_cmap(cmap: Union[str, ColorMap]) -> ColorMap:
    """Return a colour map by name (built-in, or matplotlib), or ``cmap`` itself if it is one.

    Parameters
    ----------
    cmap : str or ColorMap
        One of ``coldnhot``, ``bwr``, ``hot``, ``cold``, ``wred``, ``wblue``, ``gray``, a matplotlib
        colour map name, any of these with a ``_r`` suffix (reversed), or a :class:`ColorMap`.

    Returns
    -------
    ColorMap
        The colour map.

    Raises
    ------
    KeyError
        If the name is neither built-in nor known to matplotlib.
    """
    if isinstance(cmap, ColorMap):
        return cmap
    if cmap in BUILTIN_STOPS:
        return ColorMap(BUILTIN_STOPS[cmap], name=cmap)
    if cmap.endswith("_r") and cmap[:-2] in BUILTIN_STOPS:
        return get_cmap(cmap[:-2]).reversed()
    return _from_matplotlib(cmap)
