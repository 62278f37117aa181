"""The clusters wing: :class:`RelevanceClusterCallback` (``callback``) and its single-user helpers.

``class_samples`` (fixed samples per class), ``spray`` (SpRAy: pooled relevance, clusters,
prototypes, tables) and ``spectral`` (spectral clustering of a k-nearest-neighbour graph).
"""
from lrp_lightning.callbacks.clusters.callback import RelevanceClusterCallback

__all__ = ["RelevanceClusterCallback"]
