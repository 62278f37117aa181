"""Concepts: conditional relevance (Concept Relevance Propagation), concept relevance and reference search.

- :class:`CondAttribution`: the relevance of inputs and layers under conditions on concepts of layers.
- :class:`ChannelConcept`, :class:`GroupConcept`: what a concept of a layer is (a channel, a group of
  channels such as an attention head) and its relevance.
"""
from lrp_lightning.concepts.attribution import AttributionResults, CondAttribution
from lrp_lightning.concepts.concept import ChannelConcept, GroupConcept

__all__ = ["AttributionResults", "ChannelConcept", "CondAttribution", "GroupConcept"]
