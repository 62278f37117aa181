"""TensorBoard dashboard pieces: the custom-scalars layout and the perturbation-curve figure."""
from __future__ import annotations

import re
from typing import Mapping, Optional, Sequence

import numpy as np
import torch

from lrp_lightning.callbacks.drawn import FIGURE_DPI, FONT_SIZE, DrawnFigure

DASHBOARD_CATEGORY = "attribution"
# the curve figure's size (pixels = inches * FIGURE_DPI): about the width of a TensorBoard image card
# (350 px), so that the browser shows it at its own scale and the labels stay readable
CURVE_FIGURE_INCHES = (4.4, 3.4)
# how the random baseline's curve is drawn: a grey dashed line under the explainers' coloured ones
BASELINE_STYLE = {"color": "0.45", "linestyle": "--", "linewidth": 1.5, "zorder": 1}


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


def custom_scalars_layout(explainers: Sequence[str], metrics: Sequence[str], baseline: Optional[str] = None) -> dict:
    """A TensorBoard custom-scalars layout: one category per metric, one chart per explainer.

    TensorBoard's custom-scalar charts draw all lines of one run in one colour and show no legend,
    so each explainer gets a chart of its own, named after it; the baseline's line (the random
    attribution) is drawn in every explainer's chart for comparison, and the chart's title says so.

    Parameters
    ----------
    explainers : sequence of str
        Display names of the explainers (without the baseline).
    metrics : sequence of str
        Scalar metric names.
    baseline : str, optional
        Display name of the baseline explainer whose line every chart repeats; None: no baseline.

    Returns
    -------
    dict
        ``{"attribution/<metric>": {"<explainer> vs <baseline>": ["Multiline", [tag regexes]]}}``
        (titles without `` vs ...`` when there is no baseline), the format of
        ``SummaryWriter.add_custom_scalars``.
    """
    def chart(explainer: str, metric: str) -> list:
        names = [explainer] if baseline is None else [explainer, baseline]
        return ["Multiline", [f"^{re.escape(metric_tag(name, metric))}$" for name in names]]

    suffix = "" if baseline is None else f" vs {baseline} (baseline)"
    return {
        f"{DASHBOARD_CATEGORY}/{metric}": {f"{explainer}{suffix}": chart(explainer, metric) for explainer in explainers}
        for metric in metrics
    }


class CurveFigure:
    """A perturbation-curve figure (one line per explainer) drawn on one canvas reused every epoch.

    Sized for a TensorBoard image card (:data:`CURVE_FIGURE_INCHES`), with a legend; the random
    baseline's curve (``baseline``) is a grey dashed line, labelled as the baseline.

    Building a matplotlib figure costs about as much as drawing it; this one is built once, with
    fixed margins (no per-call layout), and each :meth:`render` only replaces the lines' data and
    rescales the axes (the figure is drawn when a sink reads its picture or saves it). Not
    thread-safe: render, and hand the result to the sinks, from one thread at a time.

    Parameters
    ----------
    metric : str
        The metric's name (title).
    baseline : str, optional
        The name of the baseline explainer among the curves; None: every curve drawn alike.
    """

    def __init__(self, metric: str, baseline: Optional[str] = None) -> None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        self.baseline = baseline
        self.figure = Figure(figsize=CURVE_FIGURE_INCHES, dpi=FIGURE_DPI)
        self.canvas = FigureCanvasAgg(self.figure)
        self.axes = self.figure.add_subplot()
        self.axes.set_xlabel("perturbation step", fontsize=FONT_SIZE)
        self.axes.set_ylabel("score drop / score", fontsize=FONT_SIZE)
        self.axes.set_title(metric, fontsize=FONT_SIZE + 1)
        self.axes.tick_params(labelsize=FONT_SIZE - 1)
        self.axes.grid(alpha=0.3)
        self.figure.subplots_adjust(left=0.16, right=0.97, bottom=0.15, top=0.91)
        self._lines: dict = {}

    def _set_explainers(self, names: Sequence[str]) -> None:
        for line in self._lines.values():
            line.remove()
        self.axes.set_prop_cycle(None)
        self._lines = {
            name: self.axes.plot([], [], label=f"{name} (baseline)", **BASELINE_STYLE)[0] if name == self.baseline
            else self.axes.plot([], [], label=name, linewidth=2)[0]
            for name in names
        }
        self.axes.legend(fontsize=FONT_SIZE - 1)

    def render(self, curves: Mapping[str, torch.Tensor]) -> DrawnFigure:
        """Set ``curves`` as the figure's lines.

        Parameters
        ----------
        curves : mapping of str to torch.Tensor
            Explainer name to its curve, shape (steps + 1,).

        Returns
        -------
        DrawnFigure
            This figure (drawn when its picture is first read or a logger saves it; render again only
            after it has been handed to every sink).
        """
        if list(curves) != list(self._lines):
            self._set_explainers(list(curves))
        for name, curve in curves.items():
            values = curve.detach().cpu().numpy()
            self._lines[name].set_data(np.arange(values.shape[0]), values)
        self.axes.relim()
        self.axes.autoscale_view()
        return DrawnFigure(self.figure, self.canvas)
