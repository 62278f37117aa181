"""The sink machinery with real Trainer runs: no logger package in the core, a user's sink for a logger
of its own, one warning per failing sink, and training that goes on (bitwise as without callbacks)."""
from __future__ import annotations

import subprocess
import sys
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from lightning.pytorch.loggers import CSVLogger, Logger

from lrp_lightning.callbacks.sinks import Sink, register_sink, unregister_sink

LOGGER_PACKAGES = ("wandb", "mlflow", "comet_ml")


def test_logger_packages_are_not_imported_by_the_core():
    code = (
        "import sys, lrp_lightning, lrp_lightning.callbacks, lrp_lightning.callbacks.sinks\n"
        "import lrp_lightning.callbacks.wandb_sink, lrp_lightning.callbacks.mlflow_sink, lrp_lightning.callbacks.comet_sink\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {LOGGER_PACKAGES!r}))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            cwd=Path(__file__).resolve().parents[2])
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"


class FakeClient:
    """Stands in for a tracking service's client (Neptune, Aim, ...): records what it is sent."""

    def __init__(self, broken: bool = False) -> None:
        self.broken = broken
        self.calls: list = []

    def upload(self, kind: str, name: str, step: int, payload: Any) -> None:
        if self.broken:
            raise ConnectionError("tracking service unreachable")
        self.calls.append((kind, name, step, payload))


class FakeLogger(Logger):
    """A Lightning logger of a service this library has no sink for."""

    def __init__(self, client: FakeClient) -> None:
        super().__init__()
        self.client = client
        self.metrics: list = []

    @property
    def name(self) -> str:
        return "fake"

    @property
    def version(self) -> int:
        return 0

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        self.metrics.append((step, dict(metrics)))


class FakeSink:
    """The few lines docs/loggers.md shows: a sink written against the client."""

    def __init__(self, logger: FakeLogger) -> None:
        self.client = logger.client

    def image(self, tag, image, step, epoch, caption=None):
        self.client.upload("image", tag, step, (tuple(image.shape), caption))

    def table(self, tag, table, step, epoch):
        self.client.upload("table", tag, step, (table.columns, table.rows))


@pytest.fixture
def fake_sink_registered():
    register_sink(FakeLogger, FakeSink)
    yield
    unregister_sink(FakeLogger)


def test_logger_a_registered_sink_gets_every_picture_and_table_once(
    tmp_path, plain_weights, fake_sink_registered, assert_everything_once, assert_same_weights, logged_fit,
    validation_steps,
):
    assert isinstance(FakeSink(FakeLogger(FakeClient())), Sink)
    logger = FakeLogger(FakeClient())
    trainer, model = logged_fit(tmp_path, logger)
    steps = validation_steps(trainer)
    assert_everything_once(Counter((name, step) for _, name, step, _ in logger.client.calls), steps)
    grids = [payload for kind, name, _, payload in logger.client.calls if name == "attribution/gradient/grid"]
    assert all(shape[0] == 3 and caption.splitlines()[0].startswith("sample 0: label ") for shape, caption in grids)
    rule_map = next(payload for kind, name, _, payload in logger.client.calls if name.endswith("rule_map"))
    assert rule_map[0] == ("layer", "type", "rule") and {"net.0", "net.5"} <= {row[0] for row in rule_map[1]}
    logged_scalars = [step for step, metrics in logger.metrics if "attribution/gradient/sparseness" in metrics]
    assert len(logged_scalars) == len(steps)  # scalars stay on pl_module.log, one per validation epoch
    assert_same_weights(plain_weights, model)


def test_logger_a_failing_sink_warns_once_and_training_goes_on(
    tmp_path, plain_weights, fake_sink_registered, assert_same_weights, logged_fit
):
    logger = FakeLogger(FakeClient(broken=True))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer, model = logged_fit(tmp_path, logger)
    failures = [str(w.message) for w in caught if "could not log" in str(w.message)]
    assert len(failures) == 1 and "FakeLogger" in failures[0] and "tracking service unreachable" in failures[0]
    assert trainer.current_epoch == 2 and len(logger.metrics) > 0
    assert_same_weights(plain_weights, model)


def test_logger_a_directory_that_cannot_be_written_warns_once_and_training_goes_on(
    tmp_path, plain_weights, assert_same_weights, logged_fit
):
    # a file where the sink's directory belongs: it cannot be created (permission bits would not
    # stop root, who runs CI containers); the CSV logger's own metrics are unaffected
    logger = CSVLogger(tmp_path, name="csv")
    Path(logger.log_dir).mkdir(parents=True)
    (Path(logger.log_dir) / "attribution").write_text("in the way")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer, model = logged_fit(tmp_path, logger)
    failures = [str(w.message) for w in caught if "could not log" in str(w.message)]
    assert len(failures) == 1 and "CSVLogger" in failures[0]
    assert trainer.current_epoch == 2
    assert "attribution/gradient/sparseness" in (Path(logger.log_dir) / "metrics.csv").read_text()
    assert_same_weights(plain_weights, model)
