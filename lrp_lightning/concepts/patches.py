"""Reference patches: the part of each reference sample where a concept is, localised by the concept's own
conditional heatmap (a conditional backward pass on the reference, not its activations)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence

import torch

from lrp_lightning import _arguments
from lrp_lightning.concepts.attribution import CondAttribution
from lrp_lightning.concepts.conditions import OUTPUT_NAME
from lrp_lightning.concepts.relmax import LayerReferences, input_and_label


@dataclass
class ReferencePatch:
    """One reference of a concept, cropped where the concept's conditional relevance is.

    Attributes
    ----------
    index : int
        The sample's index in the reference data.
    box : tuple of int
        ``(top, left, height, width)`` of the crop in the sample's image.
    image : torch.Tensor
        The cropped input ``(C, height, width)``.
    heatmap : torch.Tensor
        The concept's conditional heatmap over the crop ``(height, width)``.
    """

    index: int
    box: tuple
    image: torch.Tensor
    heatmap: torch.Tensor


def crop_box(heatmap: torch.Tensor, size: int) -> tuple:
    """The ``size x size`` window (clipped to the image) holding the most positive relevance.

    The window's corner maximises ``sum_{window} max(h, 0)``; ties go to the first in row-major order.

    Parameters
    ----------
    heatmap : torch.Tensor
        ``(H, W)``.
    size : int
        The window's side.

    Returns
    -------
    tuple of int
        ``(top, left, height, width)``.
    """
    height, width = heatmap.shape
    rows, columns = min(size, height), min(size, width)
    sums = torch.nn.functional.avg_pool2d(heatmap.clamp_min(0)[None, None], (rows, columns), stride=1)[0, 0]
    flat = int(sums.flatten().argmax())
    return flat // sums.shape[1], flat % sums.shape[1], rows, columns


def reference_patches(
    model: torch.nn.Module,
    composite: Any,
    dataset: Any,
    references: LayerReferences,
    layer: str,
    concept_ids: Sequence[int],
    mask_map: Any = None,
    patch_size: Optional[int] = None,
    batch_size: int = 32,
    device: Optional[torch.device] = None,
) -> Dict[int, list]:
    """Crop each reference of each concept where the concept's conditional heatmap is largest.

    Reference ``n`` of concept ``c`` is explained under ``{"y": [y_n], layer: [c]}`` (all pairs in
    batched passes); the crop is the ``patch_size`` window with the most positive relevance
    (:func:`crop_box`).

    Parameters
    ----------
    model, composite
        As for :func:`~lrp_lightning.concepts.relmax`.
    dataset : indexable of (input, label)
        The reference data the references index; inputs ``(C, H, W)``.
    references : LayerReferences
        The layer's references (from :func:`~lrp_lightning.concepts.relmax`).
    layer : str
        The layer.
    concept_ids : sequence of int
        The concepts to crop references of.
    mask_map : concept, optional
        The layer's concept (default: channels).
    patch_size : int, optional
        The crop's side (default: half the image's shorter side, at least 1).
    batch_size : int
        Rows per backward pass.
    device : torch.device, optional
        Where the passes run (default: the model's device).

    Returns
    -------
    dict of int to list of ReferencePatch
        Per concept, its references in order.
    """
    batch_size = _arguments.integer("batch_size", batch_size, minimum=1)
    if device is None:
        device = next(iter(model.parameters()), torch.empty(0)).device
    pairs = [(int(concept), int(index)) for concept in concept_ids for index in references.indices[:, int(concept)]]
    attribution = CondAttribution(model)
    patches: Dict[int, list] = {int(concept): [] for concept in concept_ids}
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start:start + batch_size]
        samples = [input_and_label(dataset[index]) for _, index in chunk]
        inputs = torch.stack([torch.as_tensor(sample) for sample, _ in samples]).to(device)
        if inputs.dim() != 4:
            raise ValueError(f"reference patches need image inputs (C, H, W), got {tuple(inputs.shape[1:])}")
        conditions = [{OUTPUT_NAME: [int(label)], layer: [concept]} for (concept, _), (_, label) in zip(chunk, samples)]
        heatmaps = attribution(inputs, conditions, composite, mask_map=mask_map).heatmap
        size = patch_size or max(1, min(inputs.shape[-2:]) // 2)
        for (concept, index), image, heatmap in zip(chunk, inputs, heatmaps):
            top, left, height, width = crop_box(heatmap, size)
            patches[concept].append(ReferencePatch(
                index=index,
                box=(top, left, height, width),
                image=image[:, top:top + height, left:left + width].detach().cpu(),
                heatmap=heatmap[top:top + height, left:left + width].detach().cpu(),
            ))
    return patches
