"""Concepts in the demo: which channel carries the watermark relevance, and are its references watermarks?

With ``--concepts``, :class:`~lrp_lightning.callbacks.ConceptCallback` logs per class the concepts of
:data:`CONCEPT_LAYER` (the third convolution of the shapes CNN) with their reference patches and drift, and at the
end of training :class:`WatermarkConceptReport` finds the concept carrying the watermark relevance on the training
images (:func:`find_watermark_concept`): it logs ``concepts/watermark/concept``, ``concepts/watermark/share`` and
``concepts/watermark/reference_overlap`` (the share of the concept's top references whose reference patch
overlaps the watermark) and prints them. With the confounder on, the watermark concept's references are
watermarks; with it off, no concept's are.
"""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from typing import Optional

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from lrp_lightning import canonizers, composites
from lrp_lightning.callbacks import ConceptCallback
from lrp_lightning.callbacks.common import log_scalars
from lrp_lightning.callbacks.hygiene import attribution_mode, preserved_state
from lrp_lightning.concepts import CondAttribution, reference_patches, relmax
from lrp_lightning.demo.data import CLASS_NAMES, ShapesDataModule, ShapesDataset, ShapesSplit

CONCEPT_LAYER = "net.8"
TOP_REFERENCES = 8
PATCH_SIZE = 16


@dataclass
class WatermarkConcept:
    """The concept carrying the most watermark relevance, and its references.

    Attributes
    ----------
    layer : str
        The searched layer.
    concept : int
        The concept (channel) with the most relevance on the watermarks.
    share : float
        Its part of the positive watermark relevance of all concepts.
    references : list of int
        Its top RelMax references (validation indices).
    overlaps : list of bool
        Per reference whether its patch (cropped by the concept's conditional heatmap) overlaps the watermark.
    """

    layer: str
    concept: int
    share: float
    references: list
    overlaps: list

    @property
    def reference_overlap(self) -> float:
        """The share of the references whose patch overlaps the watermark."""
        return sum(self.overlaps) / max(1, len(self.overlaps))


def demo_composite() -> composites.EpsilonPlus:
    """The composite of the demo's concept analysis: EpsilonPlus with the BatchNorms merged."""
    return composites.EpsilonPlus(canonizers=[canonizers.SequentialMergeBatchNorm()])


def watermark_relevance(model: torch.nn.Module, split: ShapesSplit, layer: str, samples: int,
                        batch_size: int = 256) -> torch.Tensor:
    """Per concept of ``layer``, its relevance on the watermarks of the first ``samples`` images.

    ``W_c = sum_n sum_{p in watermark_n} R_c(n, p)``, ``R_c(n, .)`` the conditional heatmap of image ``n`` for its
    label with the relevance at ``layer`` masked to channel ``c``.

    Returns
    -------
    torch.Tensor
        ``(concepts,)``.
    """
    dataset = ShapesDataset(split)
    inputs, labels = dataset.inputs[:samples], split.labels[:samples]
    masks = split.watermark_masks[:samples]
    attribution = CondAttribution(model)
    device = next(model.parameters()).device
    probe = attribution(inputs[:1].to(device), {"y": [0]}, demo_composite(), record_layer=[layer])
    count = probe.relevances[layer].shape[1]
    rows = [(n, c) for n in range(inputs.shape[0]) for c in range(count)]
    totals = torch.zeros(count, dtype=torch.float64)
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        index = torch.tensor([n for n, _ in chunk])
        result = attribution(inputs[index].to(device), [{"y": [int(labels[n])], layer: [c]} for n, c in chunk],
                             demo_composite())
        on_watermark = (result.heatmap.cpu().double() * masks[index]).sum(dim=(1, 2))
        totals.index_add_(0, torch.tensor([c for _, c in chunk]), on_watermark)
    return totals


def find_watermark_concept(model: torch.nn.Module, split: ShapesSplit, layer: str = CONCEPT_LAYER, samples: int = 16,
                           top_k: int = TOP_REFERENCES, patch_size: int = PATCH_SIZE,
                           reference_size: int = 200) -> WatermarkConcept:
    """Find the concept of ``layer`` carrying the most watermark relevance and check its RelMax references.

    Parameters
    ----------
    model : torch.nn.Module
        The trained classifier (left as it was).
    split : ShapesSplit
        Watermarked images with their masks: the training split, where a shortcut was learnt; the first
        ``reference_size`` images are the reference data.
    layer : str
        The searched layer.
    samples : int
        Images whose conditional heatmaps measure each concept's watermark relevance.
    top_k : int
        References checked.
    patch_size : int
        Side of the reference patches.
    reference_size : int
        Images searched for references.

    Returns
    -------
    WatermarkConcept
    """
    split = ShapesSplit(*(getattr(split, field.name)[:reference_size] for field in dataclasses.fields(split)))
    with preserved_state(model), attribution_mode(next(model.parameters()).device):
        totals = watermark_relevance(model, split, layer, samples)
        concept = int(totals.argmax())
        share = float(totals[concept] / totals.clamp_min(0).sum().clamp_min(1e-30))
        dataset = ShapesDataset(split)
        found = relmax(model, demo_composite(), dataset, [layer], top_k=top_k, batch_size=64)[layer]
        patches = reference_patches(model, demo_composite(), dataset, found, layer, [concept], patch_size=patch_size,
                                    batch_size=64)[concept]
    overlaps = []
    for patch in patches:
        top, left, height, width = patch.box
        overlaps.append(bool(split.watermark_masks[patch.index, top:top + height, left:left + width].any()))
    return WatermarkConcept(layer, concept, share, [patch.index for patch in patches], overlaps)


class WatermarkConceptReport(Callback):
    """At the end of training, find the watermark concept (:func:`find_watermark_concept`), log and print it.

    Parameters
    ----------
    split : ShapesSplit
        The training split (the shortcut is learnt there).
    """

    def __init__(self, split: ShapesSplit) -> None:
        self.split = split
        self.result: Optional[WatermarkConcept] = None

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Search, then log ``concepts/watermark/{concept,share,reference_overlap}`` and print the finding."""
        self.result = result = find_watermark_concept(pl_module, self.split)
        log_scalars(trainer, pl_module, {
            "concepts/watermark/concept": float(result.concept),
            "concepts/watermark/share": result.share,
            "concepts/watermark/reference_overlap": result.reference_overlap,
        }, in_loop=False)
        if trainer.is_global_zero:
            print(f"\nWatermark concept: channel {result.concept} of {result.layer} carries {result.share:.0%} of the "
                  f"watermark relevance; {sum(result.overlaps)} of its top {len(result.overlaps)} reference patches "
                  "overlap a watermark")


def concept_callbacks(datamodule: ShapesDataModule, args: argparse.Namespace) -> list:
    """The demo's concept callbacks with ``--concepts`` (for the CNN), else none.

    Parameters
    ----------
    datamodule : ShapesDataModule
        Set up; its validation split is the reference data.
    args : argparse.Namespace
        Parsed command line (``concepts``, ``model``).

    Returns
    -------
    list of Callback
    """
    if not getattr(args, "concepts", False) or args.model != "cnn":
        return []
    return [
        ConceptCallback("epsilon_plus", layers=[CONCEPT_LAYER], class_names=CLASS_NAMES, top_k_concepts=4,
                        reference=ShapesDataset(datamodule.val_split), references_per_concept=4,
                        patch_size=PATCH_SIZE, batch_size=64),
        WatermarkConceptReport(datamodule.train_split),
    ]
