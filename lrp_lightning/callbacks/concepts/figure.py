"""The concept figure: per top concept its relevance share, reference patches and conditional heatmaps."""
from __future__ import annotations

from typing import Sequence

import torch

from lrp_lightning import image
from lrp_lightning.callbacks.drawn import DrawnFigure
from lrp_lightning.callbacks.figures import new_figure


def concept_figure(
    title: str,
    concepts: Sequence[int],
    shares: Sequence[float],
    patches: Sequence[Sequence[torch.Tensor]],
    heatmaps: torch.Tensor,
    cmap: str,
) -> DrawnFigure:
    """One row per concept: its reference patches, then its conditional heatmaps on the fixed samples.

    Parameters
    ----------
    title : str
        Figure title.
    concepts : sequence of int
        Concept indices, one per row.
    shares : sequence of float
        Each concept's relevance share (in the row title).
    patches : sequence of sequence of torch.Tensor
        Per concept its cropped reference inputs ``(C, h, w)`` (may differ in size).
    heatmaps : torch.Tensor
        ``(concepts, samples, H, W)`` conditional heatmaps.
    cmap : str
        Colour map of the heatmaps.

    Returns
    -------
    DrawnFigure
        The figure (its picture: uint8, shape (3, H, W)).
    """
    rows = len(concepts)
    references = max((len(row) for row in patches), default=0)
    samples = heatmaps.shape[1] if heatmaps.numel() else 0
    columns = max(1, references + samples)
    figure, canvas = new_figure(1.3 * columns + 0.6, 1.35 * rows + 0.5)
    for row, (concept, share) in enumerate(zip(concepts, shares)):
        pictures = list(patches[row])
        for column, patch in enumerate(pictures):
            axes = figure.add_subplot(rows, columns, row * columns + column + 1)
            axes.imshow(image.input_image(patch[None])[0].permute(1, 2, 0).numpy())
            axes.axis("off")
            if column == 0:
                axes.set_title(f"concept {concept}: {share:+.3f}", fontsize="x-small", loc="left")
        if samples:
            colored = image.heatmap(heatmaps[row], cmap=cmap).cpu()
            for column in range(samples):
                axes = figure.add_subplot(rows, columns, row * columns + references + column + 1)
                axes.imshow(colored[column].permute(1, 2, 0).numpy())
                axes.axis("off")
                if column == 0 and not pictures:
                    axes.set_title(f"concept {concept}: {share:+.3f}", fontsize="x-small", loc="left")
    figure.suptitle(title, fontsize="small")
    figure.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=1 - 0.4 / (1.35 * rows + 0.5), hspace=0.4)
    return DrawnFigure(figure, canvas)
