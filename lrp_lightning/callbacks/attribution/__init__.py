"""The attribution wing: :class:`AttributionCallback` (``callback``) and its single-user helpers.

``baseline`` (the random-attribution baseline), ``drift`` (explanation drift between epochs),
``dashboard`` (TensorBoard's custom-scalars layout and curve figures) and ``background`` (the
writer thread for images and tables).
"""
from lrp_lightning.callbacks.attribution.callback import AttributionCallback

__all__ = ["AttributionCallback"]
