"""Concepts: conditional relevance (Concept Relevance Propagation), concept relevance and reference search.

- :class:`CondAttribution`: the relevance of inputs and layers under conditions on concepts of layers.
- :class:`ChannelConcept`, :class:`GroupConcept`, :class:`HeadDimensionConcept`: what a concept of a layer is (a
  channel, a group of channels such as an attention head, a dimension of a head's value vector or output) and its
  relevance.
- :func:`class_concept_relevance`: the mean share of a layer's relevance in each concept, per class.
- :func:`relmax`, :func:`merge_references`: the reference samples of each concept (Relevance Maximization),
  searched in batches and, over processes, in shards; :func:`reference_patches` crops them where the
  concept's conditional heatmap is.
"""
from lrp_lightning.concepts.attribution import AttributionResults, CondAttribution
from lrp_lightning.concepts.concept import ChannelConcept, GroupConcept
from lrp_lightning.concepts.heads import HeadDimensionConcept
from lrp_lightning.concepts.patches import ReferencePatch, crop_box, reference_patches
from lrp_lightning.concepts.relevance import class_concept_relevance
from lrp_lightning.concepts.relmax import LayerReferences, merge_references, relmax

__all__ = [
    "AttributionResults",
    "ChannelConcept",
    "CondAttribution",
    "GroupConcept",
    "HeadDimensionConcept",
    "LayerReferences",
    "ReferencePatch",
    "class_concept_relevance",
    "crop_box",
    "merge_references",
    "reference_patches",
    "relmax",
]
