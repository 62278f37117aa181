"""Pictures and tables to MLflow through a Lightning ``MLFlowLogger``."""
from __future__ import annotations

from typing import Any, Optional

import torch

from lrp_lightning.callbacks.image_arrays import image_hwc
from lrp_lightning.callbacks.tables import Table

TABLE_DIR = "tables"
FIGURE_DIR = "figures"


class MLflowSink:
    """Stepped images through ``MlflowClient.log_image(run_id, image, key=tag, step=step)`` (the MLflow UI
    shows them per key with a step slider); plots (curves, spectra, prototypes) through
    ``MlflowClient.log_figure`` as ``figures/<tag>/epoch=<e>-step=<s>.png`` artifacts (MLflow's figures
    have no step: it is in the name); tables through ``MlflowClient.log_table`` as
    ``tables/<tag>/epoch=<e>-step=<s>.json`` artifacts.

    Works with any tracking store the logger's client reaches: a local SQLite store
    (``tracking_uri="sqlite:///mlflow.db"``) or a tracking server (``http://127.0.0.1:5000``).
    mlflow is imported by the logger, not here. ``through_logger`` is True: once the logger's own calls
    find the tracking server out of reach (see :mod:`~lrp_lightning.callbacks.logger_guard`), this
    sink's calls are dropped for the rest of the fit instead of each waiting through MLflow's retries.

    Parameters
    ----------
    logger : lightning.pytorch.loggers.MLFlowLogger
    """

    through_logger = True

    def __init__(self, logger: Any) -> None:
        self.logger = logger

    def image(self, tag: str, image: torch.Tensor, step: int, epoch: int, caption: Optional[str] = None) -> None:
        """``log_image(run_id, image, key=tag, step=step)`` (MLflow images have no caption)."""
        self.logger.experiment.log_image(self.logger.run_id, image_hwc(image), key=tag, step=step)

    def figure(self, tag: str, figure: Any, step: int, epoch: int) -> None:
        """``log_figure(run_id, figure, artifact_file=figures/<tag>/epoch=<e>-step=<s>.png)``."""
        artifact = f"{FIGURE_DIR}/{tag}/epoch={epoch:03d}-step={step:06d}.png"
        self.logger.experiment.log_figure(self.logger.run_id, figure, artifact_file=artifact)

    def table(self, tag: str, table: Table, step: int, epoch: int) -> None:
        """``log_table(run_id, data={column: values}, artifact_file=tables/<tag>/epoch=<e>-step=<s>.json)``."""
        artifact = f"{TABLE_DIR}/{tag}/epoch={epoch:03d}-step={step:06d}.json"
        self.logger.experiment.log_table(self.logger.run_id, data=table.as_columns(), artifact_file=artifact)
