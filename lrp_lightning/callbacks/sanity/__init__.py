"""The sanity wing: :class:`SanityCheckCallback` (``callback``) and its single-user helper
``randomisation`` (the model-randomisation and random-logit tests)."""
from lrp_lightning.callbacks.sanity.callback import SanityCheckCallback

__all__ = ["SanityCheckCallback"]
