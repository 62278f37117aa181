"""Take docs/mlflow_ui.png: the demo's heatmaps in the MLflow UI, photographed by headless Chromium.

Runs ``python -m lrp_lightning.demo --logger mlflow`` (short) into a temporary directory, starts the
MLflow UI on its SQLite store on a free 127.0.0.1 port, opens the run's page in headless Chromium and
saves the screenshot; the server is stopped afterwards. Needs the ``mlflow`` extra and a Chromium
binary (``--chromium``, default ``/usr/bin/chromium``); no network.

    python scripts/mlflow_ui_screenshot.py --out docs/mlflow_ui.png
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

DEMO_ARGS = ["--logger", "mlflow", "--epochs", "2", "--n-train", "600", "--n-val", "100", "--num-samples", "6",
             "--no-suite"]
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars"]
START_SECONDS = 180


def free_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(url: str, process: subprocess.Popen) -> None:
    """Block until ``url`` answers 200, or fail when the server exits or does not start in time."""
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("the MLflow server exited")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise RuntimeError(f"the MLflow server did not answer {url} in {START_SECONDS} s")


def run_page(uri: str, port: int, tab: str) -> str:
    """The URL of the demo run's page (its only run), on ``tab``."""
    from mlflow import MlflowClient

    from lrp_lightning.demo.loggers import MLFLOW_EXPERIMENT

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(MLFLOW_EXPERIMENT)
    (run,) = client.search_runs([experiment.experiment_id])
    return f"http://127.0.0.1:{port}/#/experiments/{experiment.experiment_id}/runs/{run.info.run_id}/{tab}"


def screenshot(chromium: str, url: str, out: Path, size: str, wait_ms: int) -> None:
    """Headless Chromium with a fresh profile photographs ``url`` after ``wait_ms`` of virtual time."""
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={size}",
             f"--virtual-time-budget={wait_ms}", f"--screenshot={out}", url],
            check=True, timeout=300, capture_output=True,
        )


def main(argv: list[str] | None = None) -> Path:
    """Entry point; returns the screenshot's path."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/mlflow_ui.png"))
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--tab", default="model-metrics", help="the run page's tab to photograph")
    parser.add_argument("--size", default="1600,1300", help="window width,height")
    parser.add_argument("--wait-ms", type=int, default=30000, help="virtual time the page gets to load")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as root:
        subprocess.run([sys.executable, "-m", "lrp_lightning.demo", *DEMO_ARGS, "--log-dir", root], check=True)
        from lrp_lightning.demo.loggers import mlflow_tracking_uri

        uri = mlflow_tracking_uri(root)
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--host", "127.0.0.1",
             "--port", str(port), "--workers", "1"],
            start_new_session=True, env=dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false"),
        )
        try:
            wait_for(f"http://127.0.0.1:{port}/health", server)
            url = run_page(uri, port, args.tab)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            screenshot(args.chromium, url, args.out.resolve(), args.size, args.wait_ms)
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=60)
    print(f"{args.out} ({url})")
    return args.out


if __name__ == "__main__":
    main()
