"""Which samples carry the artifact: from user-given indices, flags or masks, or from a SpRAy cluster."""
from __future__ import annotations

from typing import Any, Optional, Sequence

import torch

ClusterChoice = Optional[tuple]


def flags_from_user(artifact: Any, count: int) -> torch.Tensor:
    """Per-sample artifact flags ``(count,)`` from indices (ints), bool flags ``(count,)`` or masks ``(count, ...)``
    (a sample whose mask has a True/non-zero entry carries the artifact).

    Raises
    ------
    ValueError, TypeError
        If the flags or masks do not match the ``count`` samples, or indices are out of range.
    """
    values = torch.as_tensor(artifact, dtype=torch.long) if isinstance(artifact, (list, tuple)) and not artifact \
        else torch.as_tensor(artifact)
    if values.dtype == torch.bool or (values.ndim > 1 and values.is_floating_point()):
        if values.shape[0] != count:
            raise ValueError(f"artifact flags or masks cover {values.shape[0]} samples, the callback holds {count}; give "
                             "one entry per collected validation sample (num_samples)")
        return values.reshape(count, -1).bool().any(dim=1) if values.ndim > 1 else values
    if values.is_floating_point() or values.ndim != 1:
        raise TypeError("artifact must be sample indices (ints), bool flags (N,), masks (N, ...) or a "
                        "RelevanceClusterCallback")
    if values.numel() and (int(values.min()) < 0 or int(values.max()) >= count):
        raise ValueError(f"artifact indices must lie in [0, {count}), the positions of the collected validation samples")
    flags = torch.zeros(count, dtype=torch.bool)
    flags[values.long()] = True
    return flags


def concentration(mean_map: torch.Tensor, share: float = 0.05) -> float:
    """The share of a mean heatmap's ``|R|`` that lies in its top ``share`` of pixels (a compact spot scores high)."""
    flat = mean_map.abs().flatten()
    top = max(1, int(share * flat.numel()))
    return float(flat.topk(top).values.sum() / flat.sum().clamp(min=torch.finfo(flat.dtype).tiny))


def class_flagged_clusters(results: Sequence[Any]) -> list:
    """Return ``(concentration, class result, cluster index)`` for every class SpRAy split in two or more, in the order
    of ``results``: the class's cluster whose mean heatmap is the most concentrated (:func:`concentration`)."""
    flagged = []
    for result in results:
        if result.clustering.count > 1 and result.mean_maps is not None:
            scores = [concentration(result.mean_maps[index]) for index in range(result.clustering.count)]
            index = max(range(len(scores)), key=scores.__getitem__)
            flagged.append((scores[index], result, index))
    return flagged


def flagged_cluster(results: Sequence[Any], choice: ClusterChoice) -> tuple:
    """Return ``(class result, cluster index)``: ``choice = (class name, cluster)``, or by default the cluster whose
    mean heatmap is the most concentrated (:func:`concentration`) among the classes SpRAy split in two or more.

    Raises
    ------
    ValueError
        If no class has two clusters, or ``choice`` names an unknown class or cluster.
    """
    if choice is not None:
        name, index = choice
        for result in results:
            if result.name == str(name):
                if not 0 <= int(index) < result.clustering.count:
                    raise ValueError(f"class {name!r} has {result.clustering.count} clusters, no cluster {index}")
                return result, int(index)
        raise ValueError(f"SpRAy found no class {name!r}; classes: {', '.join(result.name for result in results)}")
    candidates = class_flagged_clusters(results)
    if not candidates:
        raise ValueError("RelevanceClusterCallback found no class with two or more clusters (no strategy to revise); "
                         "pass the artifact samples instead (indices, flags or masks)")
    _, result, index = max(candidates, key=lambda candidate: candidate[0])
    return result, index


def cluster_flags(results: Sequence[Any], choice: ClusterChoice) -> tuple:
    """``(result, flags)``: the flagged cluster's class result (its ``rows`` index the clustered samples) and whether
    each of that class's samples is in the cluster."""
    result, index = flagged_cluster(results, choice)
    return result, result.clustering.labels == index
