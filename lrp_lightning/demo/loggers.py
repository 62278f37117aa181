"""The demo's ``--logger`` option: where its explanations go besides TensorBoard.

The demo always keeps a ``TensorBoardLogger`` first (its closing table reads the TensorBoard scalars);
``--logger mlflow`` or ``--logger wandb`` adds an ``MLFlowLogger`` (a local SQLite store under the log
directory) or a ``WandbLogger`` (offline unless ``WANDB_MODE=online``), and every callback logs the
same heatmaps, figures and tables to each of them (see docs/loggers.md).
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from lightning.pytorch.loggers import Logger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info

LOGGER_CHOICES = ("tensorboard", "mlflow", "wandb")
MLFLOW_EXPERIMENT = "lrp-lightning-demo"
WANDB_PROJECT = "lrp-lightning-demo"
EXTRA = {"mlflow": ("mlflow", "mlflow"), "wandb": ("wandb", "wandb")}


def add_logger_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--logger`` to the demo's command line.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The demo's parser.
    """
    parser.add_argument(
        "--logger", choices=LOGGER_CHOICES, default="tensorboard",
        help="also log the explanations to MLflow (SQLite store in the log dir) or W&B (offline unless "
        "WANDB_MODE=online); TensorBoard is always written",
    )


def mlflow_tracking_uri(log_dir: str | Path) -> str:
    """The demo's MLflow tracking store: ``sqlite:///<log_dir>/mlflow.db`` (absolute).

    Parameters
    ----------
    log_dir : str or Path

    Returns
    -------
    str
    """
    return f"sqlite:///{Path(log_dir).resolve() / 'mlflow.db'}"


def demo_loggers(args: argparse.Namespace, name: str) -> list[Logger]:
    """TensorBoard, and the logger ``--logger`` asks for.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed command line (``log_dir``, ``logger``).
    name : str
        The run's name.

    Returns
    -------
    list of Logger

    Raises
    ------
    ModuleNotFoundError
        If the chosen logger's package is missing (the message names the extra to install).
    """
    loggers: list[Logger] = [TensorBoardLogger(args.log_dir, name=name, default_hp_metric=False)]
    if args.logger in EXTRA:
        package, extra = EXTRA[args.logger]
        try:
            __import__(package)
        except ModuleNotFoundError as error:
            raise ModuleNotFoundError(
                f"--logger {args.logger} needs {package}: pip install 'lrp-lightning[{extra}]'"
            ) from error
    if args.logger == "mlflow":
        from lightning.pytorch.loggers import MLFlowLogger

        root = Path(args.log_dir).resolve()
        root.mkdir(parents=True, exist_ok=True)
        uri = mlflow_tracking_uri(root)
        loggers.append(MLFlowLogger(experiment_name=MLFLOW_EXPERIMENT, run_name=name, tracking_uri=uri,
                                    artifact_location=str(root / "mlflow-artifacts")))
        rank_zero_info(f"MLflow run in {uri}; open it with: mlflow ui --backend-store-uri {uri} --port 5000")
    elif args.logger == "wandb":
        from lightning.pytorch.loggers import WandbLogger

        offline = os.environ.get("WANDB_MODE", "offline") != "online"
        loggers.append(WandbLogger(project=WANDB_PROJECT, name=name, save_dir=args.log_dir, offline=offline))
        rank_zero_info(f"W&B run {'offline (upload it with: wandb sync <run dir>)' if offline else 'online'}, "
                       f"under {args.log_dir}/wandb")
    return loggers
