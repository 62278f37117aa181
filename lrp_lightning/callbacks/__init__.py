"""Lightning callbacks: explanations and their quality in the logs while training.

:class:`AttributionCallback` logs heatmaps, metrics (with a random baseline) and explanation drift;
:class:`SanityCheckCallback` runs the model-randomisation and random-logit tests;
:class:`RelevanceClusterCallback` finds the model's strategies per class with SpRAy;
:class:`ConceptCallback` logs the concepts each class relies on, their reference patches and their drift.
"""
from lrp_lightning.callbacks.attribution import AttributionCallback
from lrp_lightning.callbacks.clusters import RelevanceClusterCallback
from lrp_lightning.callbacks.concepts import ConceptCallback
from lrp_lightning.callbacks.sanity import SanityCheckCallback
from lrp_lightning.callbacks.revise import ClArCCallback

__all__ = ["AttributionCallback", "ClArCCallback", "ConceptCallback", "RelevanceClusterCallback", "SanityCheckCallback"]
