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


def curve_figure(metric: str, curves: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Render perturbation curves (one line per explainer) to an RGB image.

    Parameters
    ----------
    metric : str
        The metric's name (title).
    curves : mapping of str to torch.Tensor
        Explainer name to its curve, shape (steps + 1,).

    Returns
    -------
    torch.Tensor
        uint8 image, shape (3, H, W).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5, 3.5), dpi=80)
    canvas = FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for explainer, curve in curves.items():
        values = curve.detach().cpu().numpy()
        axes.plot(np.arange(values.shape[0]), values, label=explainer)
    axes.set_xlabel("perturbation step")
    axes.set_ylabel("score drop / score")
    axes.set_title(metric)
    axes.legend(fontsize="small")
    # fixed margins that fit the labels: matplotlib's tight_layout would double the rendering time
    figure.subplots_adjust(left=0.17, right=0.97, bottom=0.14, top=0.91)
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())
    return torch.from_numpy(rgba[..., :3].copy()).permute(2, 0, 1).contiguous()
