"""Many validation samples per class, for :class:`~lrp_lightning.callbacks.RelevanceClusterCallback`."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

import torch

from lrp_lightning.callbacks.samples import BatchToInput, _batches, split_batch


@dataclass
class ClassSamples:
    """Inputs grouped by label, with their position in the dataloader's order.

    Attributes
    ----------
    inputs : torch.Tensor
        float32, CPU, shape (N, ...), ordered by class, then by position.
    labels : torch.Tensor
        int64, shape (N,).
    positions : torch.Tensor
        int64, shape (N,): index of each sample in the dataloader's order (the dataset index for
        an unshuffled map-style loader).
    """

    inputs: torch.Tensor
    labels: torch.Tensor
    positions: torch.Tensor

    def classes(self) -> list[int]:
        """The labels present, ascending."""
        return sorted(set(self.labels.tolist()))


def collect_by_class(
    loader: Iterable,
    per_class: int,
    classes: Optional[Sequence[int]] = None,
    batch_to_input: Optional[BatchToInput] = None,
) -> ClassSamples:
    """Up to ``per_class`` samples of each class from ``loader``, leaving every RNG as it was.

    Reads until every wanted class is full (all of the loader when ``classes`` is None).

    Parameters
    ----------
    loader : iterable
        Yields batches with labels.
    per_class : int
        Samples kept per class.
    classes : sequence of int, optional
        Classes to keep; None: every label seen.
    batch_to_input : callable, optional
        See :func:`~lrp_lightning.callbacks.samples.split_batch`.

    Returns
    -------
    ClassSamples

    Raises
    ------
    ValueError
        If a batch has no labels, or no sample of the wanted classes was found.
    """
    wanted = None if classes is None else set(classes)
    kept: dict = {}
    seen = 0
    batches = _batches(loader)
    try:
        for batch in batches:
            inputs, labels, _ = split_batch(batch, batch_to_input)
            if labels is None:
                raise ValueError(
                    "RelevanceClusterCallback groups samples by label, but the validation batches have none; "
                    "pass batch_to_input returning (x, y)"
                )
            if not isinstance(inputs, torch.Tensor):
                raise TypeError(
                    "RelevanceClusterCallback explains models with one input, got a batch of several inputs; "
                    "AttributionCallback explains models with several inputs"
                )
            with torch.inference_mode(False):
                inputs = inputs.detach().cpu().float().clone()
                labels = labels.detach().cpu().long().reshape(-1)
            for offset, label in enumerate(labels.tolist()):
                if (wanted is None or label in wanted) and len(kept.setdefault(label, [])) < per_class:
                    kept[label].append((seen + offset, inputs[offset]))
            seen += labels.shape[0]
            if wanted is not None and all(len(kept.get(label, [])) >= per_class for label in wanted):
                break
    finally:
        batches.close()
    if not kept:
        raise ValueError(f"the validation dataloader has no samples of the classes {sorted(wanted or [])}")
    order = [(label, position, x) for label in sorted(kept) for position, x in kept[label]]
    return ClassSamples(
        inputs=torch.stack([x for _, _, x in order]),
        labels=torch.tensor([label for label, _, _ in order], dtype=torch.long),
        positions=torch.tensor([position for _, position, _ in order], dtype=torch.long),
    )
