"""The revision wing: :class:`ClArCCallback` corrects a revealed artifact during ``Trainer.fit`` and re-evaluates."""
from lrp_lightning.callbacks.revise.clarc import ClArCCallback

__all__ = ["ClArCCallback"]
