"""Pictures and tables to MLflow through a Lightning ``MLFlowLogger``."""
from __future__ import annotations

from typing import Any, Optional

import torch

from lrp_lightning.callbacks.image_arrays import image_hwc
from lrp_lightning.callbacks.tables import Table

TABLE_DIR = "tables"


class MLflowSink:
    """Stepped images through ``MlflowClient.log_image(run_id, image, key=tag, step=step)`` (the MLflow UI
    shows them per key with a step slider), tables through ``MlflowClient.log_table`` as
    ``tables/<tag>/epoch=<e>-step=<s>.json`` artifacts.

    Works with any tracking store the logger's client reaches: a local SQLite store
    (``tracking_uri="sqlite:///mlflow.db"``) or a tracking server (``http://127.0.0.1:5000``).
    mlflow is imported by the logger, not here.

    Parameters
    ----------
    logger : lightning.pytorch.loggers.MLFlowLogger
    """

    def __init__(self, logger: Any) -> None:
        self.logger = logger

    def image(self, tag: str, image: torch.Tensor, step: int, epoch: int, caption: Optional[str] = None) -> None:
        """``log_image(run_id, image, key=tag, step=step)`` (MLflow images have no caption)."""
        self.logger.experiment.log_image(self.logger.run_id, image_hwc(image), key=tag, step=step)

    def table(self, tag: str, table: Table, step: int, epoch: int) -> None:
        """``log_table(run_id, data={column: values}, artifact_file=tables/<tag>/epoch=<e>-step=<s>.json)``."""
        artifact = f"{TABLE_DIR}/{tag}/epoch={epoch:03d}-step={step:06d}.json"
        self.logger.experiment.log_table(self.logger.run_id, data=table.as_columns(), artifact_file=artifact)
