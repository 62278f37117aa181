"""Spectral relevance analysis (SpRAy, Lapuschkin et al. 2019) of many heatmaps of one class.

Each sample's relevance is reduced to a small feature vector — ``|R|`` summed over channels,
average-pooled to a ``pool_size`` × ``pool_size`` grid (flattened inputs: ``pool_size²`` bins) and
scaled to unit Euclidean length, so that distances measure the angle between two relevance
distributions (where relevance lies), not how strongly it is concentrated: images whose relevance
sits on the same spot with 60 % or 90 % of the mass stay neighbours instead of forming a chain that
spectral clustering would cut — and the samples of a class are clustered spectrally on their
k-nearest-neighbour graph (:mod:`lrp_lightning.callbacks.clusters.spectral`).
A cluster whose heatmaps share an unexpected focus (a watermark, a border) is a candidate
"Clever Hans" strategy; no masks are needed.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from lrp_lightning import image
from lrp_lightning.callbacks.clusters.spectral import SpectralClustering, knn_affinity, spectral_clusters
from lrp_lightning.callbacks.tables import Table

SUMMARY_COLUMNS = ("class", "cluster", "size", "share", "typical samples")


@dataclass
class ClassClusters:
    """SpRAy's result for one class.

    Attributes
    ----------
    label : int
        The class index.
    name : str
        The class's display name (the ``<class>`` of the log tags).
    rows : torch.Tensor
        int64 indices of the class's samples among all clustered samples.
    positions : torch.Tensor
        int64 positions of those samples in the validation dataloader's order.
    clustering : SpectralClustering
        Labels, eigenvalues, cluster count and eigengap.
    typical : list of torch.Tensor
        Per cluster, indices (into ``rows``) of its most typical samples, closest to its centroid
        in the spectral embedding first.
    mean_maps : torch.Tensor or None
        Per cluster, the mean of the samples' channel-summed relevance, each scaled to unit total
        ``|R|``, shape (K, H, W); None for inputs that are not images.
    """

    label: int
    name: str
    rows: torch.Tensor
    positions: torch.Tensor
    clustering: SpectralClustering
    typical: list
    mean_maps: Optional[torch.Tensor] = None

    @property
    def sizes(self) -> list[int]:
        """Samples per cluster."""
        return torch.bincount(self.clustering.labels, minlength=self.clustering.count).tolist()


def pooled_relevance(relevance: torch.Tensor, pool_size: int) -> torch.Tensor:
    """SpRAy's feature vector per sample: pooled ``|R|`` scaled to unit Euclidean length.

    Parameters
    ----------
    relevance : torch.Tensor
        (N, C, H, W) images (channels summed) or any (N, ...) (flattened).
    pool_size : int
        Grid side (images) or the square root of the bin count (other inputs).

    Returns
    -------
    torch.Tensor
        float32, shape (N, pool_size²).
    """
    magnitude = relevance.detach().float().abs()
    if image.is_image_batch(relevance):
        pooled = F.adaptive_avg_pool2d(magnitude.sum(dim=1, keepdim=True), pool_size).flatten(1)
    else:
        pooled = F.adaptive_avg_pool1d(magnitude.flatten(1).unsqueeze(1), pool_size * pool_size).flatten(1)
    return pooled / pooled.norm(dim=1, keepdim=True).clamp(min=torch.finfo(torch.float32).tiny)


def unit_maps(relevance: torch.Tensor) -> Optional[torch.Tensor]:
    """Channel-summed relevance of images, each scaled to unit total ``|R|``; None for other inputs.

    Parameters
    ----------
    relevance : torch.Tensor
        (N, C, H, W).

    Returns
    -------
    torch.Tensor or None
        float32, shape (N, H, W).
    """
    if not image.is_image_batch(relevance):
        return None
    maps = relevance.detach().float().sum(dim=1)
    return maps / maps.flatten(1).abs().sum(dim=1).clamp(min=torch.finfo(torch.float32).tiny).view(-1, 1, 1)


def typical_members(clustering: SpectralClustering, count: int) -> list[torch.Tensor]:
    """Per cluster, its ``count`` members closest to the cluster's centroid in the embedding.

    Parameters
    ----------
    clustering : SpectralClustering
        The clustering.
    count : int
        Members per cluster (fewer in small clusters).

    Returns
    -------
    list of torch.Tensor
        int64 member indices per cluster.
    """
    distances = torch.cdist(clustering.embedding, clustering.centroids)
    members = []
    for cluster in range(clustering.count):
        inside = (clustering.labels == cluster).nonzero().flatten()
        order = distances[inside, cluster].argsort(stable=True)
        members.append(inside[order[:count]])
    return members


def cluster_classes(
    features: torch.Tensor,
    labels: torch.Tensor,
    positions: torch.Tensor,
    names: dict,
    knn: int,
    max_clusters: int,
    typical: int,
    seed: int,
) -> list[ClassClusters]:
    """Cluster the feature vectors of each class separately.

    Parameters
    ----------
    features : torch.Tensor
        (N, d) pooled relevance of all samples.
    labels : torch.Tensor
        (N,) class of each sample.
    positions : torch.Tensor
        (N,) dataloader position of each sample.
    names : dict of int to str
        Display name per class.
    knn : int
        Neighbours in the affinity graph.
    max_clusters : int
        Largest cluster count the eigengap may choose.
    typical : int
        Typical members kept per cluster.
    seed : int
        Seed of k-means.

    Returns
    -------
    list of ClassClusters
        One per class, ascending.
    """
    results = []
    for label in sorted(set(labels.tolist())):
        rows = (labels == label).nonzero().flatten()
        clustering = spectral_clusters(knn_affinity(features[rows].cpu(), knn), max_clusters, seed)
        results.append(
            ClassClusters(label, names[label], rows, positions[rows], clustering, typical_members(clustering, typical))
        )
    return results


def assignments_csv(results: Sequence[ClassClusters]) -> str:
    """CSV text: one row per sample with its dataloader position, class and cluster.

    Parameters
    ----------
    results : sequence of ClassClusters

    Returns
    -------
    str
        Columns ``position,label,class,cluster``.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["position", "label", "class", "cluster"])
    for result in results:
        for position, cluster in zip(result.positions.tolist(), result.clustering.labels.tolist()):
            writer.writerow([position, result.label, result.name, cluster])
    return buffer.getvalue()


def summary_markdown(results: Sequence[ClassClusters]) -> str:
    """Markdown: per class its cluster count and eigengap, per cluster its size and typical samples.

    Parameters
    ----------
    results : sequence of ClassClusters

    Returns
    -------
    str
    """
    lines = []
    for result in results:
        clustering = result.clustering
        lines += [
            f"### class {result.name}: {clustering.count} cluster(s), eigengap {clustering.eigengap:.4f}",
            "",
            "| cluster | size | share | most typical samples (dataloader positions) |",
            "|---|---|---|---|",
        ]
        for cluster, size, share, typical in _cluster_rows(result):
            lines.append(f"| {cluster} | {size} | {share:.2f} | {typical} |")
        lines.append("")
    return "\n".join(lines)


def _cluster_rows(result: ClassClusters) -> list[tuple[int, int, float, str]]:
    """Per cluster of one class: its index, size, share of the class and most typical dataloader positions."""
    total = max(1, len(result.rows))
    return [
        (cluster, size, size / total, ", ".join(str(p) for p in result.positions[result.typical[cluster]].tolist()))
        for cluster, size in enumerate(result.sizes)
    ]


def summary_table(results: Sequence[ClassClusters]) -> Table:
    """The cluster summary as a :class:`~lrp_lightning.callbacks.tables.Table`: one row per cluster of
    every class, and the Markdown of :func:`summary_markdown`.

    Parameters
    ----------
    results : sequence of ClassClusters

    Returns
    -------
    Table
        Columns ``class``, ``cluster``, ``size``, ``share``, ``typical samples``.
    """
    rows = [(result.name, *row) for result in results for row in _cluster_rows(result)]
    return Table.of(SUMMARY_COLUMNS, rows, summary_markdown(results))


def write_tables(directory: Path, stem: str, results: Sequence[ClassClusters]) -> tuple[Path, Path]:
    """Write ``<directory>/<stem>.csv`` (assignments) and ``<stem>.md`` (summary).

    Parameters
    ----------
    directory : Path
        Created if missing.
    stem : str
        File name without suffix.
    results : sequence of ClassClusters

    Returns
    -------
    tuple of Path
        The CSV and the Markdown file.
    """
    directory.mkdir(parents=True, exist_ok=True)
    csv_path, markdown_path = directory / f"{stem}.csv", directory / f"{stem}.md"
    csv_path.write_text(assignments_csv(results), encoding="utf-8")
    markdown_path.write_text(summary_markdown(results), encoding="utf-8")
    return csv_path, markdown_path
