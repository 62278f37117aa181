"""lrp_lightning: Layer-wise Relevance Propagation for PyTorch and PyTorch Lightning.

The attribution engine (``core``, ``rules``, ``composites``, ``canonizers``, ``attribution``,
``image``) is plain PyTorch; ``lrp_lightning.metrics`` needs torchmetrics and
``lrp_lightning.callbacks`` needs Lightning. Lightning is imported only when
``AttributionCallback`` is first accessed. Modules that moved keep their old import paths (see
``lrp_lightning._moved``).
"""
from typing import Any

from lrp_lightning import _moved

__version__ = "0.1.0"

_moved.install()


def __getattr__(name: str) -> Any:
    if name == "AttributionCallback":
        from lrp_lightning.callbacks import AttributionCallback

        return AttributionCallback
    raise AttributeError(f"module 'lrp_lightning' has no attribute {name!r}")
