"""TensorBoard dashboard pieces: the custom-scalars layout and the perturbation-curve figure."""
from __future__ import annotations

import re
from typing import Mapping, Sequence

import numpy as np
import torch

DASHBOARD_CATEGORY = "attribution"


def metric_tag(explainer: str, metric: str) -> str:
    """The scalar tag of ``metric`` for ``explainer``: ``attribution/<explainer>/<metric>``.

    Parameters
    ----------
    explainer, metric : str
        Display names.

    Returns
    -------
    str
    """
    return f"attribution/{explainer}/{metric}"


def custom_scalars_layout(explainers: Sequence[str], metrics: Sequence[str]) -> dict:
    """A TensorBoard custom-scalars layout: one chart per metric, one line per explainer.

    Parameters
    ----------
    explainers : sequence of str
        Display names of the explainers.
    metrics : sequence of str
        Scalar metric names.

    Returns
    -------
    dict
        ``{"attribution": {metric: ["Multiline", [tag regexes]]}}``, the format of
        ``SummaryWriter.add_custom_scalars``.
    """
    charts = {
        metric: ["Multiline", [f"^{re.escape(metric_tag(explainer, metric))}$" for explainer in explainers]]
        for metric in metrics
    }
    return {DASHBOARD_CATEGORY: charts}


class CurveFigure:
    """A perturbation-curve figure (one line per explainer) drawn on one canvas reused every epoch.

    Building a matplotlib figure costs about as much as drawing it; this one is built once, with
    fixed margins (no per-call layout), and each :meth:`render` only replaces the lines' data,
    rescales the axes and redraws. Not thread-safe: render from one thread at a time.

    Parameters
    ----------
    metric : str
        The metric's name (title).
    """

    def __init__(self, metric: str) -> None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        self.figure = Figure(figsize=(5, 3.5), dpi=80)
        self.canvas = FigureCanvasAgg(self.figure)
        self.axes = self.figure.add_subplot()
        self.axes.set_xlabel("perturbation step")
        self.axes.set_ylabel("score drop / score")
        self.axes.set_title(metric)
        self.figure.subplots_adjust(left=0.17, right=0.97, bottom=0.14, top=0.91)
        self._lines: dict = {}

    def _set_explainers(self, names: Sequence[str]) -> None:
        for line in self._lines.values():
            line.remove()
        self.axes.set_prop_cycle(None)
        self._lines = {name: self.axes.plot([], [], label=name)[0] for name in names}
        self.axes.legend(fontsize="small")

    def render(self, curves: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Draw ``curves`` and return the picture.

        Parameters
        ----------
        curves : mapping of str to torch.Tensor
            Explainer name to its curve, shape (steps + 1,).

        Returns
        -------
        torch.Tensor
            uint8 image, shape (3, H, W).
        """
        if list(curves) != list(self._lines):
            self._set_explainers(list(curves))
        for name, curve in curves.items():
            values = curve.detach().cpu().numpy()
            self._lines[name].set_data(np.arange(values.shape[0]), values)
        self.axes.relim()
        self.axes.autoscale_view()
        self.canvas.draw()
        rgba = np.asarray(self.canvas.buffer_rgba())
        return torch.from_numpy(rgba[..., :3].copy()).permute(2, 0, 1).contiguous()
