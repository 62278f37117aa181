"""Relevance Maximization (RelMax, Achtibat et al. 2023): for every concept of a layer, the reference samples in
which it carries the most relevance.

Each sample of the reference data is explained for its own label; a concept's score on the sample is its
relative relevance ``R_c / (sum_k |R_k| + 1e-10)`` (or, with ``abs_norm=False``, ``R_c``); the references of a
concept are the ``top_k`` samples with the largest score. All layers come from one batched backward pass per
batch; the search can be split over processes (``shard``) and the parts merged with :func:`merge_references`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Iterator, Optional, Sequence, Tuple

import torch

from lrp_lightning import _arguments
from lrp_lightning.concepts.attribution import CondAttribution
from lrp_lightning.concepts.concept import ChannelConcept
from lrp_lightning.concepts.conditions import OUTPUT_NAME


@dataclass
class LayerReferences:
    """The references of every concept of one layer.

    Attributes
    ----------
    indices : torch.Tensor
        ``(top_k, concepts)`` long: dataset indices, most relevant first (ties: the lower index first).
    scores : torch.Tensor
        ``(top_k, concepts)``: the concept's (relative) relevance on each reference.
    positions : torch.Tensor
        ``(top_k, concepts)`` long: where in the flattened non-channel dimensions of the layer output the
        concept's relevance on that reference is largest.
    """

    indices: torch.Tensor
    scores: torch.Tensor
    positions: torch.Tensor


def _top(indices: torch.Tensor, scores: torch.Tensor, positions: torch.Tensor, k: int) -> LayerReferences:
    """The ``k`` largest scores per column, ties broken by the lower index (the same on every process)."""
    by_index = torch.argsort(indices, dim=0, stable=True)
    indices, scores, positions = (tensor.gather(0, by_index) for tensor in (indices, scores, positions))
    order = torch.argsort(-scores, dim=0, stable=True)[:k]
    return LayerReferences(indices.gather(0, order), scores.gather(0, order), positions.gather(0, order))


def merge_references(parts: Sequence[Dict[str, LayerReferences]], top_k: int) -> Dict[str, LayerReferences]:
    """Merge the references found on disjoint parts of the data (e.g. the shards of DDP ranks).

    Parameters
    ----------
    parts : sequence of dict of str to LayerReferences
        One result of :func:`relmax` per part.
    top_k : int
        References kept per concept.

    Returns
    -------
    dict of str to LayerReferences
    """
    merged = {}
    for layer in parts[0]:
        columns = [(part[layer].indices.cpu(), part[layer].scores.cpu(), part[layer].positions.cpu()) for part in parts]
        merged[layer] = _top(*(torch.cat(tensors) for tensors in zip(*columns)), top_k)
    return merged


def input_and_label(item: Any) -> Tuple[torch.Tensor, Any]:
    """A reference sample ``(input, label, ...)`` as ``(input, label)``.

    Raises
    ------
    TypeError
        For anything else.
    """
    if isinstance(item, (tuple, list)) and len(item) >= 2:
        return item[0], item[1]
    raise TypeError(
        f"reference samples must be (input, label) pairs, got {type(item).__name__}; wrap the data in a "
        "dataset returning (input, label)"
    )


def concept_map(layers: Any) -> Dict[str, Any]:
    """``layers`` (names, or a dict of names to concepts) as a dict of names to concepts (default channels)."""
    if isinstance(layers, str):
        layers = [layers]
    return dict(layers) if isinstance(layers, dict) else {name: ChannelConcept() for name in layers}


def concept_scores(
    model: torch.nn.Module,
    composite: Any,
    dataset: Any,
    layers: Dict[str, Any],
    indices: Sequence[int],
    batch_size: int = 32,
    abs_norm: bool = True,
    device: Optional[torch.device] = None,
    exclude_parallel: bool = True,
) -> Iterator[tuple]:
    """Explain the samples ``indices`` of ``dataset`` for their labels, ``batch_size`` at a time, and yield their
    concept scores.

    Parameters
    ----------
    model, composite, dataset
        As for :func:`relmax`.
    layers : dict of str to concept
        The layers and their concepts.
    indices : sequence of int
        The samples.
    batch_size, abs_norm, device, exclude_parallel
        As for :func:`relmax`.

    Yields
    ------
    indices : torch.Tensor
        ``(B,)`` the batch's dataset indices.
    labels : torch.Tensor
        ``(B,)`` their labels.
    scores : dict of str to (torch.Tensor, torch.Tensor)
        Per layer the concept scores ``(B, concepts)`` and peak positions ``(B, concepts)``, on the CPU.
    """
    if device is None:
        device = next(iter(model.parameters()), torch.empty(0)).device
    attribution = CondAttribution(model)
    for start in range(0, len(indices), batch_size):
        chunk = list(indices[start:start + batch_size])
        inputs, labels = zip(*(input_and_label(dataset[index]) for index in chunk))
        batch = torch.stack([torch.as_tensor(value) for value in inputs]).to(device)
        labels = torch.tensor([int(label) for label in labels], dtype=torch.long)
        conditions = [{OUTPUT_NAME: [int(label)]} for label in labels]
        result = attribution(batch, conditions, composite, record_layer=list(layers), exclude_parallel=exclude_parallel)
        scores = {}
        for name, concept in layers.items():
            relevance = result.relevances[name]
            scores[name] = (concept.attribute(relevance, abs_norm=abs_norm).cpu(), _peak_positions(concept, relevance).cpu())
        yield torch.tensor(chunk, dtype=torch.long), labels, scores


def keep_top(previous: Optional[LayerReferences], indices: torch.Tensor, scores: torch.Tensor,
             positions: torch.Tensor, top_k: int) -> LayerReferences:
    """The ``top_k`` best of ``previous`` and a batch (``indices`` ``(B,)``, ``scores`` and ``positions``
    ``(B, concepts)``) per concept."""
    indices = indices[:, None].expand_as(scores)
    if previous is not None:
        indices, scores, positions = (torch.cat(pair) for pair in zip(
            (previous.indices, previous.scores, previous.positions), (indices, scores, positions)))
    return _top(indices, scores, positions, top_k)


def relmax(
    model: torch.nn.Module,
    composite: Any,
    dataset: Any,
    layers: Any,
    top_k: int = 8,
    batch_size: int = 32,
    abs_norm: bool = True,
    shard: Tuple[int, int] = (0, 1),
    device: Optional[torch.device] = None,
    exclude_parallel: bool = True,
) -> Dict[str, LayerReferences]:
    """Find each concept's ``top_k`` reference samples in ``dataset`` by relevance maximization.

    Sample ``n`` with label ``y_n`` is explained under the condition ``{"y": [y_n]}``; the score of
    concept ``c`` of layer ``l`` is ``R_{l,c}(n) / (sum_k |R_{l,k}(n)| + 1e-10)`` (``abs_norm``) or
    ``R_{l,c}(n)``; the references of ``c`` are the samples with the ``top_k`` largest scores.

    Parameters
    ----------
    model : torch.nn.Module
        The model (left as it was).
    composite : Composite
        The LRP composite.
    dataset : indexable of (input, label)
        The reference data (a map-style dataset); inputs are stacked into batches.
    layers : str, sequence of str or dict of str to concept
        The layers searched, with their concepts (default :class:`ChannelConcept`).
    top_k : int
        References per concept.
    batch_size : int
        Samples per backward pass.
    abs_norm : bool
        Score by relative instead of absolute concept relevance.
    shard : (int, int)
        ``(rank, world_size)``: this process searches the samples ``rank, rank + world_size, ...``; merge
        the parts with :func:`merge_references`.
    device : torch.device, optional
        Where the passes run (default: the model's parameters' device).
    exclude_parallel : bool
        Passed to :class:`~lrp_lightning.concepts.CondAttribution` (without conditions on layers it has
        no effect).

    Returns
    -------
    dict of str to LayerReferences
        Per layer; fewer than ``top_k`` rows when the shard has fewer samples.
    """
    top_k = _arguments.integer("top_k", top_k, minimum=1)
    batch_size = _arguments.integer("batch_size", batch_size, minimum=1)
    rank, world_size = shard
    if not 0 <= rank < world_size:
        raise ValueError(f"shard must be (rank, world_size) with 0 <= rank < world_size, got {shard!r}")
    concepts = concept_map(layers)
    indices = list(range(rank, len(dataset), world_size))
    if not indices:
        raise ValueError(f"shard {shard} of the reference data holds no samples ({len(dataset)} in all)")
    found: Dict[str, Optional[LayerReferences]] = {name: None for name in concepts}
    for chunk, _, scores in concept_scores(model, composite, dataset, concepts, indices, batch_size, abs_norm, device,
                                           exclude_parallel):
        for name, (values, positions) in scores.items():
            found[name] = keep_top(found[name], chunk, values, positions, top_k)
    return found


def _peak_positions(concept: Any, relevance: torch.Tensor) -> torch.Tensor:
    """``(N, concepts)``: per concept the flattened position of its largest relevance (0 where a concept has no
    positions of its own, e.g. a group of channels)."""
    if type(concept) is not ChannelConcept:
        return torch.zeros(relevance.shape[0], concept.count(relevance), dtype=torch.long)
    channels_last = concept.channels_last(relevance)
    return channels_last.argmax(dim=1)
