"""Concepts in the demo: which channel carries the watermark relevance, and are its references watermarks?

With ``--concepts``, :class:`~lrp_lightning.callbacks.ConceptCallback` logs per class the concepts of
:data:`CONCEPT_LAYER` (the third convolution of the shapes CNN) with their reference patches and drift, and at the
end of training :class:`WatermarkConceptReport` finds the concept carrying the watermark relevance on the training
images (:func:`find_watermark_concept`): it logs ``concepts/watermark/concept``, ``concepts/watermark/share`` and
``concepts/watermark/reference_overlap`` (the share of the concept's top references whose reference patch
overlaps the watermark) and prints them, and draws the watermark concepts (:func:`watermark_figure`: the top
concepts by watermark relevance, their reference patches and conditional heatmaps) to every logger and to
``<log dir>/concepts_watermark.png``. With the confounder on, the watermark concept's references are watermarks;
with it off, no concept's are.
"""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from lrp_lightning import canonizers, composites
from lrp_lightning.callbacks import ConceptCallback
from lrp_lightning.callbacks.common import log_scalars
from lrp_lightning.callbacks.concepts.figure import concept_figure
from lrp_lightning.callbacks.drawn import DrawnFigure
from lrp_lightning.callbacks.hygiene import attribution_mode, preserved_state
from lrp_lightning.callbacks.sinks import sinks_for
from lrp_lightning.concepts import CondAttribution, reference_patches, relmax
from lrp_lightning.image import save_png
from lrp_lightning.demo.data import CLASS_NAMES, ShapesDataModule, ShapesDataset, ShapesSplit

CONCEPT_LAYER = "net.8"
TOP_REFERENCES = 8
PATCH_SIZE = 16
FIGURE_CONCEPTS = 3
FIGURE_SAMPLES = 4
FIGURE_FILE = "concepts_watermark.png"


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
    relevances : list of float
        Per concept its watermark relevance ``W_c`` (:func:`watermark_relevance`).
    patches : dict of int to list of ReferencePatch
        The reference patches of the top concepts by watermark relevance (``concept`` first).
    """

    layer: str
    concept: int
    share: float
    references: list
    overlaps: list
    relevances: list = field(default_factory=list)
    patches: dict = field(default_factory=dict)

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
                           reference_size: int = 200, figure_concepts: int = FIGURE_CONCEPTS) -> WatermarkConcept:
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
    figure_concepts : int
        Concepts (by watermark relevance) whose reference patches are kept for :func:`watermark_figure`.

    Returns
    -------
    WatermarkConcept
    """
    split = ShapesSplit(*(getattr(split, field.name)[:reference_size] for field in dataclasses.fields(split)))
    with preserved_state(model), attribution_mode(next(model.parameters()).device):
        totals = watermark_relevance(model, split, layer, samples)
        concept = int(totals.argmax())
        share = float(totals[concept] / totals.clamp_min(0).sum().clamp_min(1e-30))
        shown = totals.argsort(descending=True, stable=True)[:max(1, figure_concepts)].tolist()
        dataset = ShapesDataset(split)
        found = relmax(model, demo_composite(), dataset, [layer], top_k=top_k, batch_size=64)[layer]
        patches = reference_patches(model, demo_composite(), dataset, found, layer, shown, patch_size=patch_size,
                                    batch_size=64)
    overlaps = []
    for patch in patches[concept]:
        top, left, height, width = patch.box
        overlaps.append(bool(split.watermark_masks[patch.index, top:top + height, left:left + width].any()))
    return WatermarkConcept(layer, concept, share, [patch.index for patch in patches[concept]], overlaps,
                            totals.tolist(), {c: patches[c] for c in shown})


def watermark_figure(model: torch.nn.Module, split: ShapesSplit, found: WatermarkConcept,
                     samples: int = FIGURE_SAMPLES) -> DrawnFigure:
    """The figure of the watermark concepts: per concept of ``found.patches`` (most watermark relevance first) its
    reference patches, then its conditional heatmaps on the first ``samples`` images of ``split`` (each explained
    for its label).

    Parameters
    ----------
    model : torch.nn.Module
        The trained classifier (left as it was).
    split : ShapesSplit
        The images of the heatmaps (the training split).
    found : WatermarkConcept
        The result of :func:`find_watermark_concept`.
    samples : int
        Images with conditional heatmaps.

    Returns
    -------
    DrawnFigure
        The figure (its picture: uint8 ``(3, H, W)``).
    """
    concepts = list(found.patches)
    inputs = ShapesDataset(split).inputs[:samples]
    labels = split.labels[:samples]
    with preserved_state(model), attribution_mode(next(model.parameters()).device):
        device = next(model.parameters()).device
        result = CondAttribution(model)(
            inputs.repeat_interleave(len(concepts), dim=0).to(device),
            [{"y": [int(label)], found.layer: [c]} for label in labels for c in concepts], demo_composite())
    heatmaps = result.heatmap.detach().cpu().reshape(len(inputs), len(concepts), *result.heatmap.shape[1:]).transpose(0, 1)
    positive = sum(max(value, 0.0) for value in found.relevances) or 1.0
    return concept_figure(
        f"watermark concepts of {found.layer}: reference patches | conditional heatmaps",
        concepts, [found.relevances[c] / positive for c in concepts],
        [[patch.image for patch in found.patches[c]] for c in concepts], heatmaps, "coldnhot",
    )


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
        figure = watermark_figure(pl_module, self.split, result)
        log_scalars(trainer, pl_module, {
            "concepts/watermark/concept": float(result.concept),
            "concepts/watermark/share": result.share,
            "concepts/watermark/reference_overlap": result.reference_overlap,
        }, in_loop=False)
        if trainer.is_global_zero:
            for sink in sinks_for(trainer):
                sink.figure("concepts/watermark", figure, trainer.global_step, trainer.current_epoch)
            path = save_png(figure.picture(), Path(trainer.log_dir or trainer.default_root_dir) / FIGURE_FILE)
            print(f"\nWatermark concept: channel {result.concept} of {result.layer} carries {result.share:.0%} of the "
                  f"watermark relevance; {sum(result.overlaps)} of its top {len(result.overlaps)} reference patches "
                  f"overlap a watermark (figure: {path})")


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
