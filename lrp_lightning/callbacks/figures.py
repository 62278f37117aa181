"""Figures of the callback suite: matplotlib figures on an Agg canvas (off any display), handed to the
sinks as :class:`DrawnFigure` (the figure itself, for a logger that takes figures, such as MLflow's
``log_figure``, and its picture as a uint8 (3, H, W) tensor, drawn once, for the others)."""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import numpy as np
import torch

from lrp_lightning import image
from lrp_lightning.callbacks.drawn import FIGURE_DPI, FONT_SIZE, DrawnFigure, rendered

# layer names on the x axis of a line figure keep their last this many dotted parts
TICK_NAME_PARTS = 2


def new_figure(width: float, height: float) -> tuple:
    """A matplotlib ``(Figure, FigureCanvasAgg)`` of ``width`` x ``height`` inches, off any display."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=FIGURE_DPI)
    return figure, FigureCanvasAgg(figure)


def line_figure(
    title: str,
    lines: Mapping[str, Sequence[float]],
    xlabel: str,
    ylabel: str,
    xticklabels: Optional[Sequence[str]] = None,
    ylim: Optional[tuple] = None,
) -> DrawnFigure:
    """One line per entry of ``lines`` against its index.

    Parameters
    ----------
    title, xlabel, ylabel : str
        Texts of the axes.
    lines : mapping of str to sequence of float
        Legend label to values.
    xticklabels : sequence of str, optional
        Labels of the x positions (rotated; dotted names shortened to their last
        :data:`TICK_NAME_PARTS` parts).
    ylim : tuple of float, optional
        Fixed y range.

    Returns
    -------
    DrawnFigure
    """
    figure, canvas = new_figure(4.6, 4.4)
    axes = figure.add_subplot()
    for label, values in lines.items():
        axes.plot(np.arange(len(values)), np.asarray(values, dtype=float), marker="o", markersize=5, linewidth=2,
                  label=label)
    if xticklabels is not None:
        shortened = [".".join(label.split(".")[-TICK_NAME_PARTS:]) for label in xticklabels]
        axes.set_xticks(np.arange(len(xticklabels)))
        axes.set_xticklabels(shortened, rotation=45, ha="right", fontsize=FONT_SIZE - 1)
    if ylim is not None:
        axes.set_ylim(*ylim)
    axes.tick_params(axis="y", labelsize=FONT_SIZE - 1)
    axes.set_xlabel(xlabel, fontsize=FONT_SIZE)
    axes.set_ylabel(ylabel, fontsize=FONT_SIZE)
    axes.set_title(title, fontsize=FONT_SIZE + 1)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=FONT_SIZE)
    figure.subplots_adjust(left=0.15, right=0.97, bottom=0.3 if xticklabels is not None else 0.12, top=0.88)
    return DrawnFigure(figure, canvas)


def spectrum_figure(title: str, eigenvalues: torch.Tensor, count: int, shown: int) -> DrawnFigure:
    """The smallest ``shown`` eigenvalues of a Laplacian, the chosen eigengap marked.

    Parameters
    ----------
    title : str
        Axes title.
    eigenvalues : torch.Tensor
        Ascending eigenvalues.
    count : int
        Chosen cluster count (the gap lies between eigenvalue ``count`` and ``count + 1``).
    shown : int
        How many eigenvalues to draw.

    Returns
    -------
    DrawnFigure
    """
    values = eigenvalues[:shown].double().cpu().numpy()
    figure, canvas = new_figure(4.4, 3.4)
    axes = figure.add_subplot()
    positions = np.arange(1, values.shape[0] + 1)
    axes.plot(positions, values, marker="o", markersize=4)
    axes.axvline(count + 0.5, color="tab:red", linestyle="--", label=f"eigengap: {count} cluster(s)")
    axes.set_xlabel("index", fontsize=FONT_SIZE)
    axes.set_ylabel("eigenvalue of the normalised Laplacian", fontsize=FONT_SIZE - 1)
    axes.tick_params(labelsize=FONT_SIZE - 1)
    axes.set_title(title, fontsize=FONT_SIZE + 1)
    axes.legend(fontsize=FONT_SIZE - 1)
    figure.subplots_adjust(left=0.17, right=0.97, bottom=0.15, top=0.91)
    return DrawnFigure(figure, canvas)


def prototype_figure(
    title: str,
    mean_maps: torch.Tensor,
    typical_inputs: Sequence[torch.Tensor],
    sizes: Sequence[int],
    cmap: str,
) -> DrawnFigure:
    """One row per cluster: its mean heatmap, then its most typical inputs; sizes in the row titles.

    Parameters
    ----------
    title : str
        Figure title.
    mean_maps : torch.Tensor
        Mean channel-summed relevance per cluster, shape (K, H, W).
    typical_inputs : sequence of torch.Tensor
        Per cluster, inputs (M, C, H, W) (M may differ; at most the number of columns - 1 shown).
    sizes : sequence of int
        Samples per cluster.
    cmap : str
        Colour map of the heatmaps.

    Returns
    -------
    DrawnFigure
    """
    columns = 1 + max(inputs.shape[0] for inputs in typical_inputs)
    rows = mean_maps.shape[0]
    figure, canvas = new_figure(1.1 * columns, 1.25 * rows + 0.4)
    heatmaps = image.heatmap(mean_maps, cmap=cmap).cpu()
    for row in range(rows):
        axes = figure.add_subplot(rows, columns, row * columns + 1)
        axes.imshow(heatmaps[row].permute(1, 2, 0).numpy())
        axes.set_title(f"cluster {row}: n={sizes[row]}", fontsize=FONT_SIZE - 1)
        axes.axis("off")
        pictures = image.input_image(typical_inputs[row]).cpu() if typical_inputs[row].shape[0] else []
        for column, picture in enumerate(pictures):
            axes = figure.add_subplot(rows, columns, row * columns + column + 2)
            axes.imshow(picture.permute(1, 2, 0).numpy())
            axes.axis("off")
    figure.suptitle(title, fontsize=FONT_SIZE)
    figure.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=1 - 0.45 / (1.25 * rows + 0.4), hspace=0.4)
    return DrawnFigure(figure, canvas)
