"""The sink machinery with real Trainer runs: no logger package in the core, a user's sink for a logger
of its own, one warning per failing sink, a logger whose backend goes out of reach guarded for the rest
of the fit (and its own methods back after it), and training that goes on (bitwise as without callbacks)."""
from __future__ import annotations

import re
import subprocess
import sys
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from lightning.pytorch import Callback
from lightning.pytorch.loggers import CSVLogger, Logger

from lrp_lightning.callbacks.logger_guard import GUARDED_METHODS
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


def test_logger_whose_own_files_cannot_be_written_warns_once_is_dropped_and_ends_with_its_own_methods(
    tmp_path, plain_weights, logged_fit, validation_steps, image_data, assert_same_weights
):
    # a directory where the CSV logger's metrics.csv belongs: Lightning's own save() on it raises
    # IsADirectoryError (an OSError) at the first epoch end, which would stop training
    logger = CSVLogger(tmp_path, name="csv")
    (Path(logger.log_dir) / "metrics.csv").mkdir(parents=True)
    calls = []

    def users_save() -> None:  # the user's own instance attribute, to be found in place after the fit
        calls.append("save")
        CSVLogger.save(logger)

    logger.save = users_save
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer, model = logged_fit(tmp_path, logger)
    dropped = [str(w.message) for w in caught if "its calls are dropped for the rest of this fit" in str(w.message)]
    assert len(dropped) == 1 and "CSVLogger.save" in dropped[0] and "IsADirectoryError" in dropped[0], dropped
    assert not [w for w in caught if "could not log" in str(w.message)]  # the file sink's directory is fine
    # Lightning's save() at fit start (no metrics yet: nothing written), then at the first epoch end
    # (fails), then none: dropped
    assert trainer.current_epoch == 2 and calls == ["save", "save"]
    assert vars(logger)["save"] is users_save
    assert not (set(GUARDED_METHODS) - {"save"}) & set(vars(logger))
    # the file sink goes on (its directory is fine): each grid with its caption beside it, one line per
    # sample: its index, its label (the first validation samples'), the prediction and explained class
    grids = Path(logger.log_dir) / "attribution/gradient/grid"
    assert sorted(path.name for path in grids.iterdir()) == [
        f"epoch={epoch:03d}-step={step:06d}{suffix}" for epoch, step in enumerate(validation_steps(trainer))
        for suffix in (".png", ".txt")
    ]
    labels = image_data(24, seed=1).tensors[1][:3].tolist()  # TinyData's validation set
    for caption in grids.glob("*.txt"):
        lines = caption.read_text(encoding="utf-8").splitlines()
        assert [re.fullmatch(r"sample (\d): label (\d), prediction \d, explained class \d", line).groups()
                for line in lines] == [(str(index), str(label)) for index, label in enumerate(labels)]
    assert_same_weights(plain_weights, model)


class FailAtSecondEpoch(Callback):
    """Makes the fake logger's metrics fail (``error``) from the second epoch on."""

    def __init__(self, logger: FakeLogger, error: Exception) -> None:
        self.logger, self.error = logger, error

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == 1:
            self.logger.failure = self.error


class FailingMetricsLogger(FakeLogger):
    """A fake logger whose ``log_metrics`` raises ``failure`` once it is set."""

    failure = None

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        if self.failure is not None:
            raise self.failure
        super().log_metrics(metrics, step)


def test_logger_failure_not_of_reach_is_raised_as_before_and_the_logger_ends_with_its_own_methods(tmp_path, logged_fit):
    logger = FailingMetricsLogger(FakeClient())
    error = ValueError("a metric the backend refuses")  # the user's error, not an unreachable backend
    with pytest.raises(ValueError, match="a metric the backend refuses"):
        logged_fit(tmp_path, logger, extra_callbacks=(FailAtSecondEpoch(logger, error),))
    assert not set(GUARDED_METHODS) & set(vars(logger))
    assert logger.log_metrics.__func__ is FailingMetricsLogger.log_metrics


def test_logger_unreachable_mid_run_warns_once_per_sink_and_for_its_own_calls(
    tmp_path, plain_weights, fake_sink_registered, logged_fit, assert_same_weights
):
    logger = FailingMetricsLogger(FakeClient())
    # both the logger's metrics and its sink's client fail from the second epoch on
    failure = ConnectionError("tracking service unreachable")

    class BreakBoth(FailAtSecondEpoch):
        def on_train_epoch_start(self, trainer, pl_module) -> None:
            super().on_train_epoch_start(trainer, pl_module)
            self.logger.client.broken = trainer.current_epoch >= 1

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer, model = logged_fit(tmp_path, logger, extra_callbacks=(BreakBoth(logger, failure),))
    messages = [str(w.message) for w in caught]
    assert len([m for m in messages if m.startswith("lrp_lightning could not log")]) == 1
    assert len([m for m in messages if m.startswith("lrp_lightning: FailingMetricsLogger.log_metrics failed")]) == 1
    assert trainer.current_epoch == 2
    # Lightning's one log_metrics call per validation epoch: the first epoch's got through, no later one
    assert [metrics["epoch"] for _, metrics in logger.metrics] == [0]
    assert not set(GUARDED_METHODS) & set(vars(logger))
    assert_same_weights(plain_weights, model)
