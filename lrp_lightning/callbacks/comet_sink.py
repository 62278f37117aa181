"""Pictures and tables to Comet through a Lightning ``CometLogger``."""
from __future__ import annotations

from typing import Any, Optional

import torch

from lrp_lightning.callbacks.image_arrays import image_hwc
from lrp_lightning.callbacks.tables import Table


class CometSink:
    """Images through ``Experiment.log_image(image, name=tag, step=step)`` (the caption and the epoch
    in its metadata), tables through ``Experiment.log_table`` as CSV assets
    ``<tag>/epoch=<e>-step=<s>.csv``.

    Works offline: Lightning's ``CometLogger(online=False)`` creates a *disabled* experiment that
    writes nothing; leave ``online`` unset and set ``COMET_START_ONLINE=0`` (with
    ``offline_directory=...``), and the run is archived there as a zip for ``comet upload``.
    comet_ml is imported by the logger, not here.

    Parameters
    ----------
    logger : lightning.pytorch.loggers.CometLogger
    """

    through_logger = True

    def __init__(self, logger: Any) -> None:
        self.logger = logger

    def image(self, tag: str, image: torch.Tensor, step: int, epoch: int, caption: Optional[str] = None) -> None:
        """``log_image(image, name=tag, step=step, metadata={"epoch": epoch, "caption": caption})``."""
        metadata = {"epoch": epoch} if caption is None else {"epoch": epoch, "caption": caption}
        self.logger.experiment.log_image(image_hwc(image), name=tag, step=step, metadata=metadata)

    def table(self, tag: str, table: Table, step: int, epoch: int) -> None:
        """``log_table(<tag>/epoch=<e>-step=<s>.csv, tabular_data=rows, headers=columns)`` at ``step``
        (``log_table`` takes the experiment's current step, so it is set first)."""
        self.logger.experiment.set_step(step)
        self.logger.experiment.log_table(
            f"{tag}/epoch={epoch:03d}-step={step:06d}.csv", tabular_data=[list(row) for row in table.rows],
            headers=list(table.columns),
        )
