"""MLflow: real Trainer runs with an ``MLFlowLogger`` on a local SQLite store, on a local ``mlflow server``
(started once for the module on a free port, stopped after), with the server gone mid-run, and
under DDP — read back with ``MlflowClient``."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
import warnings
from pathlib import Path

import pytest
from lightning.pytorch import Callback
from PIL import Image

from lrp_lightning.callbacks.attribution.dashboard import CURVE_FIGURE_INCHES
from lrp_lightning.callbacks.drawn import FIGURE_DPI
from lrp_lightning.callbacks.logger_guard import GUARDED_METHODS

mlflow = pytest.importorskip("mlflow")
from lightning.pytorch.loggers import MLFlowLogger  # noqa: E402  (after the skip: needs mlflow)

pytestmark = pytest.mark.large
TESTS_DIR = Path(__file__).resolve().parents[1]
SERVER_START_SECONDS = 180


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory, free_port):
    """``mlflow server`` on a free 127.0.0.1 port with a SQLite store and proxied artifacts (no job runner:
    nothing here needs it); its URL and process.
    Stopped (its whole process group) after the module; the last test of the module stops it itself."""
    root = tmp_path_factory.mktemp("mlflow_server")
    port = free_port()
    command = [
        sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--backend-store-uri", f"sqlite:///{root}/server.db", "--artifacts-destination", str(root / "artifacts"),
    ]
    with open(root / "server.log", "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                   env=dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false"))
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + SERVER_START_SECONDS
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            stop(process)
            pytest.fail(f"mlflow server did not start: {(root / 'server.log').read_text()[-3000:]}")
        time.sleep(1)
    yield url, process
    stop(process)


def stop(process: subprocess.Popen) -> None:
    """Terminate the server and the workers it started."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture
def assert_run_complete(plots, scalars, assert_everything_once, mlflow_artifacts, mlflow_logged, validation_steps):
    """Call ``assert_run_complete(logger, trainer, tracking_uri, download_dir)`` to assert the MLflow run holds
    everything once (read back with ``MlflowClient``)."""

    def assert_run_complete(logger: MLFlowLogger, trainer, tracking_uri: str, download_dir: Path) -> None:
        """Every picture and table once per validation epoch at its step, the plots as ``log_figure`` artifacts
        (not stepped images) of the figure's own size, every scalar once per epoch, the rule map a table of
        layers."""
        client = mlflow.MlflowClient(tracking_uri)
        download_dir.mkdir(exist_ok=True)
        steps = validation_steps(trainer)
        assert_everything_once(mlflow_logged(client, logger.run_id), steps)
        artifacts = mlflow_artifacts(client, logger.run_id)
        figures = [path for path in artifacts if path.startswith("figures/")]
        assert sorted({path.split("/", 1)[1].rsplit("/", 1)[0] for path in figures}) == sorted(plots)
        curve = next(path for path in figures if "curves" in path)
        with Image.open(client.download_artifacts(logger.run_id, curve, str(download_dir))) as picture:
            assert picture.size == tuple(round(inches * FIGURE_DPI) for inches in CURVE_FIGURE_INCHES)
        for scalar in scalars:
            assert len(client.get_metric_history(logger.run_id, scalar)) == len(steps), scalar
        table = next(path for path in mlflow_artifacts(client, logger.run_id) if "rule_map" in path)
        content = json.loads(Path(client.download_artifacts(logger.run_id, table, str(download_dir))).read_text())
        assert content["columns"] == ["layer", "type", "rule"] and "net.0" in [row[0] for row in content["data"]]

    return assert_run_complete


def test_logger_mlflow_sqlite_store_and_server_each_get_every_picture_and_table_once_training_bitwise(
    tmp_path, mlflow_server, plain_weights, assert_same_weights, logged_fit, assert_run_complete
):
    """One run with two MLflow loggers (one fit for both): a local SQLite store and the local server."""
    url, _ = mlflow_server
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    local = MLFlowLogger(experiment_name="sqlite", tracking_uri=uri, artifact_location=str(tmp_path / "artifacts"))
    served = MLFlowLogger(experiment_name="server", tracking_uri=url)
    trainer, model = logged_fit(tmp_path, [local, served])
    assert_run_complete(local, trainer, uri, tmp_path / "local")
    assert_run_complete(served, trainer, url, tmp_path / "served")
    assert_same_weights(plain_weights, model)


DDP_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {tests_dir!r})
    from lightning.pytorch.loggers import MLFlowLogger
    from _support.logger_runs import fit

    if __name__ == "__main__":
        root = sys.argv[1]
        logger = MLFlowLogger(experiment_name="ddp", tracking_uri=f"sqlite:///{{root}}/mlflow.db",
                              artifact_location=f"{{root}}/artifacts")
        trainer, _ = fit(root, logger, strategy="ddp", devices=2)
        if trainer.is_global_zero:
            print("RUN", logger.run_id, trainer.num_training_batches)
    """
)


def test_logger_mlflow_under_ddp_two_cpu_ranks_logs_every_picture_once(tmp_path, assert_everything_once, mlflow_logged):
    script = tmp_path / "ddp_mlflow.py"
    script.write_text(DDP_SCRIPT.format(tests_dir=str(TESTS_DIR)))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("MASTER_PORT", None)
    result = subprocess.run([sys.executable, str(script), str(tmp_path)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stderr[-4000:]
    _, run_id, batches = next(line for line in result.stdout.splitlines() if line.startswith("RUN")).split()
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    assert len(client.search_runs([client.get_experiment_by_name("ddp").experiment_id])) == 1
    assert_everything_once(mlflow_logged(client, run_id), [int(batches) * (epoch + 1) for epoch in range(2)])


class StopServerAfterFirstEpoch(Callback):
    """Stops the MLflow server when the second training epoch starts."""

    def __init__(self, process: subprocess.Popen) -> None:
        self.process = process

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == 1:
            stop(self.process)


def test_logger_mlflow_server_gone_mid_run_warns_once_per_sink_training_goes_on_logger_restored(
    tmp_path, mlflow_server, plain_weights, monkeypatch, assert_same_weights, logged_fit, scalars
):
    """Runs last in the module: it stops the module's server, after the first epoch. Two MLflow loggers:
    ``tracked`` has its run on the server (metrics, parameters and artifacts: Lightning's own calls on it
    fail from then on), ``local`` its metrics in a local SQLite store and only its artifacts (pictures,
    tables) on the server. Each sink warns once; Lightning's calls on ``tracked`` warn once and are
    dropped; ``local`` keeps its metrics; training is bitwise as without callbacks; both loggers end with
    their own methods."""
    url, process = mlflow_server
    # no retries with back-off (minutes) on the refused connections; monkeypatch restores the environment
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    tracked = MLFlowLogger(experiment_name="tracked", tracking_uri=url)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    local = MLFlowLogger(experiment_name="remote_artifacts", tracking_uri=uri,
                         artifact_location=f"{url}/api/2.0/mlflow-artifacts/artifacts/remote")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer, model = logged_fit(tmp_path, [tracked, local], extra_callbacks=(StopServerAfterFirstEpoch(process),))
    messages = [str(w.message) for w in caught]
    sink_failures = [message for message in messages if message.startswith("lrp_lightning could not log")]
    dropped = [message for message in messages if "its calls are dropped for the rest of this fit" in message]
    assert len(sink_failures) == 2 and all("MLFlowLogger" in message for message in sink_failures), sink_failures
    assert len(dropped) == 1 and dropped[0].startswith("lrp_lightning: MLFlowLogger."), dropped
    assert trainer.current_epoch == 2
    for logger in (tracked, local):
        assert not set(GUARDED_METHODS) & set(vars(logger)), "the logger's own methods are back"
        assert logger.log_metrics.__func__ is MLFlowLogger.log_metrics
    client = mlflow.MlflowClient(uri)
    assert len(client.get_metric_history(local.run_id, scalars[0])) == 2
    assert_same_weights(plain_weights, model)
