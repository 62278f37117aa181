"""Pictures and tables to Weights & Biases through a Lightning ``WandbLogger``."""
from __future__ import annotations

from typing import Any, Optional

import torch

from lrp_lightning.callbacks.image_arrays import image_hwc
from lrp_lightning.callbacks.tables import Table


class WandbSink:
    """Images with captions through ``WandbLogger.log_image``, tables as ``wandb.Table`` through
    ``WandbLogger.log_table``; each call is one W&B history row carrying ``trainer/global_step``.

    Works with ``WandbLogger(offline=True)`` (everything lands in the offline run directory, for a
    later ``wandb sync``). wandb is imported by the logger, not here.

    ``thread_safe`` is False: every ``wandb.log`` call takes the run's next step, and one from another
    thread racing the logger's own scalar logging can land behind it and be dropped, so callbacks
    write to W&B on the training thread.

    Parameters
    ----------
    logger : lightning.pytorch.loggers.WandbLogger
    """

    thread_safe = False
    through_logger = True

    def __init__(self, logger: Any) -> None:
        self.logger = logger

    def image(self, tag: str, image: torch.Tensor, step: int, epoch: int, caption: Optional[str] = None) -> None:
        """``log_image(key=tag, images=[image], step=step, caption=[caption])``."""
        captions = {} if caption is None else {"caption": [caption]}
        self.logger.log_image(key=tag, images=[image_hwc(image)], step=step, **captions)

    def table(self, tag: str, table: Table, step: int, epoch: int) -> None:
        """``log_table(key=tag, columns=..., data=..., step=step)``: a ``wandb.Table``."""
        self.logger.log_table(key=tag, columns=list(table.columns), data=[list(row) for row in table.rows], step=step)
