"""Spectral clustering with the eigengap heuristic, as used by SpRAy (Lapuschkin et al. 2019).

:func:`knn_affinity` builds the symmetric k-nearest-neighbour graph of feature vectors
(A_ij = 1 if j is among the k nearest neighbours of i or i among those of j). :func:`spectral_clusters`
takes the normalised Laplacian L = I − D^{-1/2} A D^{-1/2}, its eigenvalues
0 = λ_1 ≤ λ_2 ≤ … (``torch.linalg.eigh``), chooses the number of clusters c ≤ ``max_clusters``
with the largest eigengap λ_{c+1} − λ_c (c connected components give c zero eigenvalues), embeds
every node by the c eigenvectors of the smallest eigenvalues with rows scaled to unit length
(Ng, Jordan and Weiss 2001), and clusters the embedding with k-means (k-means++ seeding from a
private generator, the best of several restarts). Everything runs in float64.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

KMEANS_RESTARTS = 10
KMEANS_ITERATIONS = 100


@dataclass
class SpectralClustering:
    """The result of :func:`spectral_clusters`.

    Attributes
    ----------
    labels : torch.Tensor
        int64 cluster index per node, shape (n,); clusters are numbered by decreasing size.
    eigenvalues : torch.Tensor
        float64 eigenvalues of the normalised Laplacian, ascending, shape (n,).
    count : int
        Number of clusters c.
    eigengap : float
        λ_{c+1} − λ_c (0 for a single node).
    embedding : torch.Tensor
        float64 spectral embedding, shape (n, c), rows of unit length.
    centroids : torch.Tensor
        float64 k-means centroids in the embedding, shape (c, c), in label order.
    """

    labels: torch.Tensor
    eigenvalues: torch.Tensor
    count: int
    eigengap: float
    embedding: torch.Tensor
    centroids: torch.Tensor


def knn_affinity(features: torch.Tensor, k: int) -> torch.Tensor:
    """Symmetric 0/1 affinity of the k-nearest-neighbour graph (Euclidean, no self-loops).

    Parameters
    ----------
    features : torch.Tensor
        Shape (n, d).
    k : int
        Neighbours per node; clipped to n − 1.

    Returns
    -------
    torch.Tensor
        float64, shape (n, n), symmetric, zero diagonal.
    """
    if features.ndim != 2:
        raise ValueError(f"features must have shape (n, d), got {tuple(features.shape)}")
    if k < 1:
        raise ValueError(f"k must be a positive int, got {k}")
    points = features.detach().double()
    count = points.shape[0]
    affinity = torch.zeros(count, count, dtype=torch.float64, device=points.device)
    k = min(k, count - 1)
    if k < 1:
        return affinity
    distances = torch.cdist(points, points)
    distances.fill_diagonal_(float("inf"))
    neighbours = distances.topk(k, dim=1, largest=False).indices
    affinity.scatter_(1, neighbours, 1.0)
    return torch.maximum(affinity, affinity.T)


def normalized_laplacian(affinity: torch.Tensor) -> torch.Tensor:
    """L = I − D^{-1/2} A D^{-1/2}; isolated nodes get L_ii = 1.

    Parameters
    ----------
    affinity : torch.Tensor
        Symmetric, non-negative, shape (n, n).

    Returns
    -------
    torch.Tensor
        float64, shape (n, n).
    """
    affinity = affinity.double()
    degree = affinity.sum(dim=1)
    scale = torch.where(degree > 0, degree.clamp(min=torch.finfo(torch.float64).tiny).rsqrt(), torch.zeros_like(degree))
    identity = torch.eye(affinity.shape[0], dtype=torch.float64, device=affinity.device)
    return identity - scale.view(-1, 1) * affinity * scale.view(1, -1)


def _kmeans_once(points: torch.Tensor, count: int, generator: torch.Generator) -> tuple:
    """One k-means run with k-means++ seeding; returns (labels, centroids, inertia)."""
    first = torch.randint(points.shape[0], (1,), generator=generator).item()
    centroids = [points[first]]
    for _ in range(1, count):
        nearest = torch.cdist(points, torch.stack(centroids)).amin(dim=1).square()
        if nearest.sum() <= 0:
            chosen = torch.randint(points.shape[0], (1,), generator=generator).item()
        else:
            chosen = torch.multinomial((nearest / nearest.sum()).cpu(), 1, generator=generator).item()
        centroids.append(points[chosen])
    centers = torch.stack(centroids)
    labels = torch.cdist(points, centers).argmin(dim=1)
    for _ in range(KMEANS_ITERATIONS):
        sums = torch.zeros_like(centers).index_add_(0, labels, points)
        sizes = torch.bincount(labels, minlength=count).to(points.dtype)
        centers = torch.where(sizes.view(-1, 1) > 0, sums / sizes.clamp(min=1).view(-1, 1), centers)
        updated = torch.cdist(points, centers).argmin(dim=1)
        if torch.equal(updated, labels):
            break
        labels = updated
    inertia = (points - centers[labels]).square().sum().item()
    return labels, centers, inertia


def kmeans(points: torch.Tensor, count: int, seed: int = 0, restarts: int = KMEANS_RESTARTS) -> tuple:
    """k-means (Lloyd) with k-means++ seeding from a private generator; the best of ``restarts``.

    Parameters
    ----------
    points : torch.Tensor
        Shape (n, d).
    count : int
        Clusters, at most n.
    seed : int
        Seed of the private generator (the global RNG is not used).
    restarts : int
        Independent runs; the one with the lowest inertia wins.

    Returns
    -------
    labels : torch.Tensor
        int64, shape (n,).
    centroids : torch.Tensor
        Shape (count, d).
    """
    generator = torch.Generator().manual_seed(seed)
    best = None
    for _ in range(restarts):
        labels, centers, inertia = _kmeans_once(points, count, generator)
        if best is None or inertia < best[2]:
            best = (labels, centers, inertia)
    return best[0], best[1]


def _by_size(labels: torch.Tensor, centroids: torch.Tensor) -> tuple:
    """Renumber clusters by decreasing size (ties: lower old index first)."""
    sizes = torch.bincount(labels, minlength=centroids.shape[0])
    order = sorted(range(centroids.shape[0]), key=lambda index: (-int(sizes[index]), index))
    renumber = torch.empty(len(order), dtype=torch.long, device=labels.device)
    renumber[torch.tensor(order, device=labels.device)] = torch.arange(len(order), device=labels.device)
    return renumber[labels], centroids[torch.tensor(order, device=centroids.device)]


def spectral_clusters(affinity: torch.Tensor, max_clusters: int, seed: int = 0) -> SpectralClustering:
    """Cluster the nodes of an affinity graph; the eigengap chooses how many clusters.

    Parameters
    ----------
    affinity : torch.Tensor
        Symmetric, non-negative, shape (n, n).
    max_clusters : int
        Largest cluster count considered (clipped to n).
    seed : int
        Seed of k-means' private generator.

    Returns
    -------
    SpectralClustering
    """
    if affinity.ndim != 2 or affinity.shape[0] != affinity.shape[1] or affinity.shape[0] == 0:
        raise ValueError(f"affinity must be a non-empty square matrix, got shape {tuple(affinity.shape)}")
    if max_clusters < 1:
        raise ValueError(f"max_clusters must be a positive int, got {max_clusters}")
    eigenvalues, eigenvectors = torch.linalg.eigh(normalized_laplacian(affinity))
    count_nodes = eigenvalues.shape[0]
    limit = min(max_clusters, count_nodes - 1)
    if limit >= 1:
        gaps = eigenvalues[1 : limit + 1] - eigenvalues[:limit]
        count = int(gaps.argmax()) + 1
        eigengap = float(gaps[count - 1])
    else:
        count, eigengap = 1, 0.0
    embedding = eigenvectors[:, :count]
    embedding = embedding / embedding.norm(dim=1, keepdim=True).clamp(min=torch.finfo(torch.float64).tiny)
    if count == 1:
        labels = torch.zeros(count_nodes, dtype=torch.long, device=affinity.device)
        centroids = embedding.mean(dim=0, keepdim=True)
    else:
        labels, centroids = kmeans(embedding, count, seed)
        labels, centroids = _by_size(labels, centroids)
    return SpectralClustering(labels, eigenvalues, count, eigengap, embedding, centroids)
