"""The callback's pass over the reference data: per class the mean relative relevance of every concept and per
concept its RelMax references, each rank searching its share and the parts gathered."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional

import torch
from lightning.pytorch import LightningModule, Trainer

from lrp_lightning.callbacks.common import gathered_from_ranks
from lrp_lightning.concepts.relmax import LayerReferences, concept_scores, keep_top, merge_references


@dataclass
class ConceptSummary:
    """What one search found.

    Attributes
    ----------
    shares : dict of str to torch.Tensor
        Per layer ``(classes, concepts)``: the mean relative relevance of each concept over the reference samples
        of each class (explained for their label).
    counts : torch.Tensor
        ``(classes,)`` reference samples per class.
    references : dict of str to LayerReferences
        Per layer, the RelMax references of every concept.
    """

    shares: Dict[str, torch.Tensor]
    counts: torch.Tensor
    references: Dict[str, LayerReferences]


def _padded(found: Optional[LayerReferences], concepts: int, top_k: int) -> tuple:
    """The references as fixed-shape tensors ``(top_k, concepts)`` (missing rows: index -1, score -inf)."""
    indices = torch.full((top_k, concepts), -1, dtype=torch.long)
    scores = torch.full((top_k, concepts), float("-inf"), dtype=torch.float64)
    positions = torch.zeros(top_k, concepts, dtype=torch.long)
    if found is not None:
        rows = found.indices.shape[0]
        indices[:rows], scores[:rows], positions[:rows] = found.indices, found.scores.double(), found.positions
    return indices, scores, positions


def search_concepts(
    trainer: Trainer,
    pl_module: LightningModule,
    model: torch.nn.Module,
    composite: Any,
    reference: Any,
    layers: Dict[str, Any],
    concepts: Dict[str, int],
    classes: int,
    top_k: int,
    batch_size: int,
) -> ConceptSummary:
    """Search ``reference`` for the concepts of ``layers``; under DDP each rank takes every ``world_size``-th sample.

    Every rank makes the same collective calls (one ``all_gather`` per layer and tensor, and one of the class
    counts, which carries a failure flag), also when its own pass failed; then every rank raises.

    Parameters
    ----------
    trainer, pl_module
        The running trainer and the bare LightningModule (for the gathers).
    model : torch.nn.Module
        The explained module.
    composite : Composite
        The LRP composite.
    reference : indexable of (input, label)
        The reference data.
    layers : dict of str to concept
        The layers and their concepts.
    concepts : dict of str to int
        The number of concepts of each layer.
    classes : int
        The number of model outputs.
    top_k : int
        References kept per concept.
    batch_size : int
        Samples per backward pass.

    Returns
    -------
    ConceptSummary
    """
    world, rank = trainer.world_size, trainer.global_rank
    sums = {name: torch.zeros(classes, count, dtype=torch.float64) for name, count in concepts.items()}
    counts = torch.zeros(classes + 1, dtype=torch.float64)  # the last entry flags a failure
    found: Dict[str, Optional[LayerReferences]] = {name: None for name in layers}
    failure = None
    try:
        shard = list(range(rank, len(reference), world))
        for indices, labels, scores in concept_scores(model, composite, reference, layers, shard, batch_size,
                                                      device=pl_module.device):
            counts[:classes] += torch.bincount(labels, minlength=classes).double()
            for name, (values, positions) in scores.items():
                sums[name].index_add_(0, labels, values.double())
                found[name] = keep_top(found[name], indices, values.double(), positions, top_k)
    except Exception as error:  # raised after the collective calls, which every rank makes
        failure = error
        counts[-1] = 1.0
    counts = gathered_from_ranks(trainer, pl_module, counts).sum(dim=0)
    parts = {}
    for name in layers:
        parts[name] = [gathered_from_ranks(trainer, pl_module, tensor) for tensor in _padded(found[name], concepts[name], top_k)]
        sums[name] = gathered_from_ranks(trainer, pl_module, sums[name]).sum(dim=0)
    if failure is not None:
        raise failure
    if counts[-1] > 0:
        raise RuntimeError("the concept search failed on another rank")
    counts = counts[:classes]
    references = {}
    for name, (indices, scores, positions) in parts.items():
        merged = merge_references([{name: LayerReferences(*(tensor[source] for tensor in (indices, scores, positions)))}
                                   for source in range(world)], top_k)[name]
        keep = int((merged.indices >= 0).all(dim=1).sum())
        references[name] = LayerReferences(merged.indices[:keep], merged.scores[:keep], merged.positions[:keep])
    shares = {name: total / counts.clamp_min(1)[:, None] for name, total in sums.items()}
    return ConceptSummary(shares, counts, references)
