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

A :class:`ColorMap` is also compiled from zennit's colour-map specification language (CMSL), e.g.
``ColorMap('00f,80:fff,f00')``: comma-separated ``[index:]rgb`` nodes with hexadecimal one- or
two-digit indices (0-255) and colours (``rgb`` or ``rrggbb``). Indices ascend; nodes without an
index are spaced evenly between their indexed neighbours (the first and last default to 00 and ff);
the first and last colours extend to 00 and ff; a repeated index makes a hard transition (the later
node holds from that index on). Called on a numpy array, a map returns RGB in [0, 1] as in zennit;
called on a tensor, RGB in [0, 255] as a tensor on the tensor's device.
"""
from __future__ import annotations

import re
from typing import Any, Iterator, NamedTuple, Optional, Sequence, Union

import numpy as np
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


class CMapToken(NamedTuple):
    """A token of the CMSL lexer: its ``type`` (``index``, ``adsep``, ``sep``, ``shortcolor``,
    ``longcolor``, ``whitespace``), its text ``value`` and its position ``pos`` in the source."""

    type: str
    value: str
    pos: int


class ColorNode(NamedTuple):
    """A node of a CMSL colour map: its ``index`` (0-255, or None where the source gives none) and
    its colour ``value`` (three ints 0-255)."""

    index: Optional[int]
    value: np.ndarray


_CMSL_TOKENS = re.compile(
    r"(?P<longcolor>[0-9a-fA-F]{6})|(?P<shortcolor>[0-9a-fA-F]{3})|(?P<index>[0-9a-fA-F]{1,2})(?=\s*:)"
    r"|(?P<adsep>:)|(?P<sep>,)|(?P<whitespace>\s+)"
)


def _lex(source: str) -> Iterator[CMapToken]:
    """Yield the tokens of CMSL ``source``; raise RuntimeError at the first character no token matches."""
    position = 0
    while position < len(source):
        match = _CMSL_TOKENS.match(source, position)
        if match is None:
            raise RuntimeError(f"Compilation of ColorMap failed: unexpected {source[position:]!r} at {position} "
                               f"in {source!r}")
        yield CMapToken(match.lastgroup, match.group(), position)
        position = match.end()


def _parse(tokens: Sequence[CMapToken], source: str) -> list:
    """Return the :class:`ColorNode` list of CMSL tokens (``[index :] colour`` separated by commas)."""
    tokens = [token for token in tokens if token.type != "whitespace"]
    nodes, position = [], 0
    while position < len(tokens):
        index = None
        if tokens[position].type == "index":
            if position + 1 >= len(tokens) or tokens[position + 1].type != "adsep":
                break
            index = int(tokens[position].value * (2 // len(tokens[position].value)), 16)
            position += 2
        if position >= len(tokens) or tokens[position].type not in ("shortcolor", "longcolor"):
            break
        digits = tokens[position].value
        width = len(digits) // 3
        nodes.append(ColorNode(index, np.array([int(digits[k * width:(k + 1) * width] * (2 // width), 16)
                                                for k in range(3)])))
        position += 1
        if position == len(tokens):
            return _checked(nodes, source)
        if tokens[position].type != "sep":
            break
        position += 1
    raise RuntimeError(f"Compilation of ColorMap failed: {source!r} is not of the form "
                       f"'[index:]rgb,[index:]rgb,...' (e.g. '00f,80:fff,f00')")


def _checked(nodes: list, source: str) -> list:
    indices = [node.index for node in nodes if node.index is not None]
    if len(nodes) < 2 or any(b < a for a, b in zip(indices, indices[1:])):
        raise RuntimeError(f"Compilation of ColorMap failed: {source!r} needs at least two colours and ascending "
                           f"indices")
    return nodes


def _node_table(nodes: list) -> tuple[list, list]:
    """Return the table ``(indices in 0..255, colours in 0..255)`` of CMSL nodes, see the module docstring.

    Nodes without an index get the integer part of their evenly spaced position.
    """
    indices = [node.index for node in nodes]
    if indices[0] is None:
        indices[0] = 0
    if indices[-1] is None:
        indices[-1] = 255
    known = [k for k, index in enumerate(indices) if index is not None]
    for left, right in zip(known, known[1:]):
        for k in range(left + 1, right):
            indices[k] = indices[left] + (indices[right] - indices[left]) * (k - left) // (right - left)
    colors = [tuple(float(channel) for channel in node.value) for node in nodes]
    if indices[0] > 0:
        indices, colors = [0] + indices, colors[:1] + colors
    if indices[-1] < 255:
        indices, colors = indices + [255], colors + colors[-1:]
    return indices, colors


class ColorMap:
    """A piecewise-linear colour table, from CMSL source (as zennit) or from explicit stops.

    Parameters
    ----------
    source : str or sequence of (float, colour)
        CMSL source code (see the module docstring), or at least two ``(position, colour)`` pairs,
        positions strictly increasing from 0 to 1, a colour being a ``'#rrggbb'`` string or three
        floats in [0, 1].
    name : str, optional
        A name for ``repr``.

    Raises
    ------
    RuntimeError
        If CMSL source does not compile.
    ValueError
        If explicit stops are invalid.
    """

    def __init__(self, source: Union[str, Sequence[tuple[float, ColorSpec]]], name: Optional[str] = None) -> None:
        if isinstance(source, str):
            self.name = source if name is None else name
            self.source = source
            return
        self._source = None
        self._set_stops(source, "custom" if name is None else name)

    @property
    def source(self) -> Optional[str]:
        """The CMSL source of the map (None for a map made from stops); assigning recompiles the map."""
        return self._source

    @source.setter
    def source(self, value: str) -> None:
        indices, colors = _node_table(_parse(list(_lex(value)), value))
        self._source = value
        self._set_table(indices, colors)

    def _set_table(self, indices: Sequence[float], colors: Sequence[tuple[float, float, float]]) -> None:
        """Store the colour table: ascending indices in [0, 255] and RGB colours in [0, 255]."""
        self.indices = torch.tensor(indices, dtype=torch.float64)
        self.colors = torch.tensor(colors, dtype=torch.float64)

    def _set_stops(self, stops: Sequence[tuple[float, ColorSpec]], name: str) -> None:
        if len(stops) < 2:
            raise ValueError("a ColorMap needs at least two stops")
        positions = [float(position) for position, _ in stops]
        if positions[0] != 0.0 or positions[-1] != 1.0:
            raise ValueError(f"stop positions must start at 0 and end at 1, got {positions}")
        if any(b <= a for a, b in zip(positions, positions[1:])):
            raise ValueError(f"stop positions must be strictly increasing, got {positions}")
        self.name = name
        self._set_table([255.0 * position for position in positions], [_parse_color(color) for _, color in stops])

    def __repr__(self) -> str:
        return f"ColorMap({self.name!r}, {len(self.indices)} stops)"

    def reversed(self) -> "ColorMap":
        """Return the map read from 1 to 0.

        Returns
        -------
        ColorMap
            The mirrored map, named with a ``_r`` suffix.
        """
        mirrored = ColorMap.__new__(ColorMap)
        mirrored._source = None
        mirrored.name = f"{self.name}_r"
        mirrored.indices = 255.0 - self.indices.flip(0)
        mirrored.colors = self.colors.flip(0)
        return mirrored

    def __call__(self, values: Any) -> Any:
        """Map values to colours.

        Parameters
        ----------
        values : torch.Tensor or array-like
            Any shape; clamped to [0, 1].

        Returns
        -------
        torch.Tensor or numpy.ndarray
            For a tensor: float32 of shape ``values.shape + (3,)``, RGB in [0, 255] (not rounded), on
            the device of ``values``. For anything else (zennit's behaviour): a float64 numpy array
            of shape ``values.shape + (3,)``, RGB in [0, 1].
        """
        if isinstance(values, torch.Tensor):
            return self._lookup(values.detach().to(torch.float32).clamp(0.0, 1.0) * 255)
        return self._lookup(torch.as_tensor(np.asarray(values, dtype=np.float64)).clamp(0.0, 1.0) * 255).numpy() / 255

    def _lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """RGB in [0, 255] at table ``indices`` in [0, 255], in their dtype and on their device."""
        table = self.indices.to(indices.device, indices.dtype)
        colors = self.colors.to(indices.device, indices.dtype)
        flat = indices.reshape(-1)
        segment = (torch.searchsorted(table, flat, right=True) - 1).clamp(0, len(table) - 2)
        start, end = table[segment], table[segment + 1]
        span = (end - start).clamp(min=torch.finfo(flat.dtype).tiny).unsqueeze(1)
        slope = torch.where((end > start).unsqueeze(1), (colors[segment + 1] - colors[segment]) / span, 0.0)
        rgb = torch.where((flat >= end).unsqueeze(1), colors[segment + 1], slope * (flat - start).unsqueeze(1) + colors[segment])
        return rgb.reshape(*indices.shape, 3)

    def palette(self, level: float = 1.0) -> np.ndarray:
        """Return the 256-entry 8-bit palette ``(256, 3)`` of the map, as zennit.

        Entry ``i`` is the colour at table index ``clip((i - 127.5) * level + 127.5, 0, 255)``, rounded
        down: ``level > 1`` saturates earlier towards both ends, ``level < 1`` uses a narrower colour
        range.

        Parameters
        ----------
        level : float
            Contrast of the palette around its centre.
        """
        indices = ((torch.arange(256, dtype=torch.float64) - 127.5) * level + 127.5).clamp(0.0, 255.0)
        return self._lookup(indices).floor().clamp(0, 255).numpy().astype(np.uint8)


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


class LazyColorMapCache:
    """A dict-like map from names to CMSL sources that compiles each :class:`ColorMap` on first access.

    Setting a new source for a name whose map was compiled already changes that map in place.

    Parameters
    ----------
    sources : dict of str to str
        CMSL source per name.
    """

    def __init__(self, sources: dict) -> None:
        self._sources = dict(sources)
        self._compiled: dict = {}

    def __getitem__(self, name: str) -> ColorMap:
        if name not in self._sources:
            raise KeyError(f"No source for key {name}.")
        if name not in self._compiled:
            self._compiled[name] = ColorMap(self._sources[name], name=name)
        return self._compiled[name]

    def __setitem__(self, name: str, source: str) -> None:
        """Set the source of ``name``; a map compiled already is recompiled in place (the same
        :class:`ColorMap` object, as in zennit), so maps handed out earlier follow.

        Raises
        ------
        RuntimeError
            If the map was compiled already and ``source`` does not compile (the entry is unchanged).
        """
        compiled = self._compiled.get(name)
        if compiled is not None:
            compiled.source = source
        self._sources[name] = source

    def __delitem__(self, name: str) -> None:
        del self._sources[name]
        self._compiled.pop(name, None)

    def __contains__(self, name: object) -> bool:
        return name in self._sources

    def __iter__(self) -> Iterator[str]:
        return iter(self._sources)

    def __len__(self) -> int:
        return len(self._sources)

    def keys(self):
        """The names."""
        return self._sources.keys()


def get_cmap(cmap: Union[str, ColorMap]) -> ColorMap:
    """Return a colour map by name (built-in, or matplotlib), or ``cmap`` itself if it is one.

    Parameters
    ----------
    cmap : str or ColorMap
        One of ``coldnhot``, ``bwr``, ``hot``, ``cold``, ``wred``, ``wblue``, ``gray``, a matplotlib
        colour map name, any of these with a ``_r`` suffix (reversed), CMSL source (it has a comma,
        e.g. ``'00f,80:fff,f00'``), or a :class:`ColorMap`.

    Returns
    -------
    ColorMap
        The colour map.

    Raises
    ------
    KeyError
        If the name is neither built-in nor known to matplotlib.
    RuntimeError
        If CMSL source does not compile.
    """
    if isinstance(cmap, ColorMap):
        return cmap
    if cmap in BUILTIN_STOPS:
        return ColorMap(BUILTIN_STOPS[cmap], name=cmap)
    if cmap.endswith("_r") and cmap[:-2] in BUILTIN_STOPS:
        return get_cmap(cmap[:-2]).reversed()
    if "," in cmap:
        return ColorMap(cmap)
    return _from_matplotlib(cmap)
