"""Lightning callbacks: :class:`AttributionCallback` logs explanations and their quality while training."""
from lrp_lightning.callbacks.attribution import AttributionCallback

__all__ = ["AttributionCallback"]
