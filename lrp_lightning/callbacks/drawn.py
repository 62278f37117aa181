"""A figure as the sinks take it: the matplotlib figure, and its picture drawn once."""
from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch

# the suite's figures: dots per inch and the base font size of their labels
FIGURE_DPI = 80
FONT_SIZE = 10


class DrawnFigure:
    """A matplotlib figure with its Agg canvas, and its picture, drawn on the first :meth:`picture` call.

    Parameters
    ----------
    figure : matplotlib.figure.Figure
        The figure.
    canvas : matplotlib.backends.backend_agg.FigureCanvasAgg
        Its canvas.
    """

    def __init__(self, figure: Any, canvas: Any) -> None:
        self.figure = figure
        self.canvas = canvas
        self._picture: Optional[torch.Tensor] = None

    def picture(self) -> torch.Tensor:
        """The figure as a uint8 (3, H, W) tensor (drawn on the first call, then kept).

        Returns
        -------
        torch.Tensor
        """
        if self._picture is None:
            self._picture = rendered(self.figure, self.canvas)
        return self._picture


def rendered(figure: Any, canvas: Any) -> torch.Tensor:
    """``figure`` drawn on ``canvas`` as a uint8 (3, H, W) tensor.

    Parameters
    ----------
    figure, canvas
        As for :class:`DrawnFigure`.

    Returns
    -------
    torch.Tensor
    """
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())
    return torch.from_numpy(rgba[..., :3].copy()).permute(2, 0, 1).contiguous()
