"""The concepts wing: :class:`ConceptCallback` logs which concepts each class relies on, their reference patches
and their drift, epoch by epoch."""
from lrp_lightning.callbacks.concepts.callback import ConceptCallback

__all__ = ["ConceptCallback"]
