"""``python -m lrp_lightning.demo --logger tensorboard|mlflow|wandb``: the loggers the option gives."""
from __future__ import annotations

import sys

import pytest
from lightning.pytorch.loggers import TensorBoardLogger

from lrp_lightning.demo.__main__ import parse_args
from lrp_lightning.demo.loggers import demo_loggers, mlflow_tracking_uri


def test_logger_demo_option_keeps_tensorboard_first_and_adds_the_chosen_logger(tmp_path, monkeypatch):
    assert parse_args([]).logger == "tensorboard"
    (only,) = demo_loggers(parse_args(["--log-dir", str(tmp_path)]), "run")
    assert isinstance(only, TensorBoardLogger)

    pytest.importorskip("mlflow")
    from lightning.pytorch.loggers import MLFlowLogger, WandbLogger

    tensorboard, mlflow_logger = demo_loggers(parse_args(["--logger", "mlflow", "--log-dir", str(tmp_path)]), "run")
    assert isinstance(tensorboard, TensorBoardLogger) and isinstance(mlflow_logger, MLFlowLogger)
    assert mlflow_logger._tracking_uri == mlflow_tracking_uri(tmp_path) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"

    pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    tensorboard, wandb_logger = demo_loggers(parse_args(["--logger", "wandb", "--log-dir", str(tmp_path)]), "run")
    assert isinstance(tensorboard, TensorBoardLogger) and isinstance(wandb_logger, WandbLogger)
    assert wandb_logger._offline is True

    with pytest.raises(SystemExit):
        parse_args(["--logger", "neptune"])


def test_logger_demo_option_names_the_extra_when_the_package_is_missing(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'lrp-lightning\[mlflow\]'"):
        demo_loggers(parse_args(["--logger", "mlflow", "--log-dir", str(tmp_path)]), "run")
