"""Take docs/mlflow_ui.png: the demo's heatmaps in the MLflow UI, photographed by headless Chromium.

Runs ``python -m lrp_lightning.demo --logger mlflow`` (short) into a temporary directory, starts the
MLflow UI on its SQLite store on a free 127.0.0.1 port, opens the run's page in headless Chromium and
saves the screenshot; the server is stopped afterwards. Needs the ``mlflow`` extra and a Chromium
binary (``--chromium``, default ``/usr/bin/chromium``); no network.

    python scripts/mlflow_ui_screenshot.py --out docs/mlflow_ui.png
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.parse
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


class DevTools:
    """A minimal Chrome DevTools Protocol client over one WebSocket (standard library only).

    Parameters
    ----------
    websocket_url : str
        A target's ``webSocketDebuggerUrl``.
    """

    def __init__(self, websocket_url: str) -> None:
        address = urllib.parse.urlparse(websocket_url)
        self.socket = socket.create_connection((address.hostname, address.port), timeout=120)
        key = base64.b64encode(os.urandom(16)).decode()
        self.socket.sendall(
            f"GET {address.path} HTTP/1.1\r\nHost: {address.hostname}:{address.port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        response = b""
        while b"\r\n\r\n" not in response:
            response += self.socket.recv(1)
        if b" 101 " not in response.split(b"\r\n", 1)[0]:
            raise ConnectionError(f"no WebSocket upgrade: {response[:200]!r}")
        self.last_id = 0

    def _exactly(self, count: int) -> bytes:
        data = b""
        while len(data) < count:
            chunk = self.socket.recv(count - len(data))
            if not chunk:
                raise ConnectionError("DevTools closed the connection")
            data += chunk
        return data

    def _send(self, text: str) -> None:
        payload, mask = text.encode(), os.urandom(4)
        length = len(payload)
        if length < 126:
            header = bytes([0x81, 0x80 | length])
        elif length < 1 << 16:
            header = bytes([0x81, 0x80 | 126]) + struct.pack(">H", length)
        else:
            header = bytes([0x81, 0x80 | 127]) + struct.pack(">Q", length)
        self.socket.sendall(header + mask + bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload)))

    def _receive(self) -> str:
        message = b""
        while True:
            first, second = self._exactly(2)
            length = second & 0x7F
            if length == 126:
                length = struct.unpack(">H", self._exactly(2))[0]
            elif length == 127:
                length = struct.unpack(">Q", self._exactly(8))[0]
            data = self._exactly(length)
            opcode = first & 0x0F
            if opcode == 0x8:
                raise ConnectionError("DevTools closed the WebSocket")
            if opcode in (0x0, 0x1, 0x2):
                message += data
                if first & 0x80:
                    return message.decode()

    def call(self, method: str, **params: object) -> dict:
        """Send one command and return its result (events in between are skipped)."""
        self.last_id += 1
        self._send(json.dumps({"id": self.last_id, "method": method, "params": params}))
        while True:
            reply = json.loads(self._receive())
            if reply.get("id") == self.last_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def evaluate(self, expression: str) -> object:
        """The value of a JavaScript expression in the page."""
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def wait_until(self, expression: str, seconds: float) -> None:
        """Poll ``expression`` until it is truthy; fail after ``seconds``."""
        deadline = time.monotonic() + seconds
        while not self.evaluate(expression):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the page never satisfied: {expression}")
            time.sleep(1)


# the run page's chart search filtered to the heatmap grids
SHOW_GRIDS = """(() => {
  const search = document.querySelector('input[placeholder="Search metric charts"]');
  const setValue = Object.getOwnPropertyDescriptor(HTMLInputElement.prototype, 'value').set;
  setValue.call(search, 'grid');
  search.dispatchEvent(new Event('input', {bubbles: true}));
  return true;
})()"""
# MLflow's image charts open at step 0 (before the first validation): the index of the first chart
# whose step box is not at its slider's last step, or -1
NEXT_STEP_BOX = """(() => {
  const sliders = [...document.querySelectorAll('[role=slider]')];
  const boxes = [...document.querySelectorAll('input[type=number]')];
  return sliders.findIndex((slider, i) => boxes[i] && boxes[i].value !== slider.getAttribute('aria-valuemax'));
})()"""
CLOSE_ASSISTANT = """document.querySelector('button[data-component-id="mlflow.assistant.chat_panel.close"]')"""
IMAGES_SHOWN = "document.querySelectorAll('img[src^=\"blob:\"]').length"
TOP = "window.scrollTo(0, 0); document.querySelectorAll('*').forEach(e => { if (e.scrollTop) e.scrollTop = 0; }); true"


def click(tools: "DevTools", element: str) -> bool:
    """A trusted mouse click in the middle of ``element`` (a JavaScript expression); False if there is none."""
    center = tools.evaluate(f"(() => {{ const e = {element}; if (!e) return null; e.scrollIntoView({{block: 'center'}}); "
                            "const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()")
    if center is None:
        return False
    for kind in ("mousePressed", "mouseReleased"):
        tools.call("Input.dispatchMouseEvent", type=kind, x=center[0], y=center[1], button="left", clickCount=1)
    return True


def type_last_steps(tools: "DevTools", charts: int) -> None:
    """Type each image chart's last step into its step box (trusted clicks and keys, as a user would)."""
    for _ in range(4 * charts):
        index = tools.evaluate(NEXT_STEP_BOX)
        if index < 0:
            return
        last = tools.evaluate(f"document.querySelectorAll('[role=slider]')[{index}].getAttribute('aria-valuemax')")
        click(tools, f"document.querySelectorAll('input[type=number]')[{index}]")
        tools.evaluate("document.activeElement.select && document.activeElement.select()")
        tools.call("Input.insertText", text=last)
        for kind in ("rawKeyDown", "char", "keyUp"):
            tools.call("Input.dispatchKeyEvent", type=kind, key="Enter", code="Enter", windowsVirtualKeyCode=13,
                       text="\r" if kind == "char" else "")
        tools.call("Input.dispatchKeyEvent", type="rawKeyDown", key="Tab", code="Tab", windowsVirtualKeyCode=9)
        time.sleep(1)
    raise TimeoutError("the image charts' step boxes did not take their last steps")


def screenshot(chromium: str, url: str, out: Path, size: str, load_seconds: float) -> None:
    """Open ``url`` in headless Chromium (fresh profile), show the grids at their last step, save a PNG."""
    port = free_port()
    width, height = (int(value) for value in size.split(","))
    with tempfile.TemporaryDirectory() as profile:
        browser = subprocess.Popen(
            [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
             f"--remote-debugging-port={port}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        try:
            wait_for(f"http://127.0.0.1:{port}/json/version", browser)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as response:
                page = next(target for target in json.load(response) if target["type"] == "page")
            tools = DevTools(page["webSocketDebuggerUrl"])
            tools.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
            tools.call("Page.navigate", url=url)
            tools.wait_until("document.querySelectorAll('[role=slider]').length > 0", load_seconds)
            click(tools, CLOSE_ASSISTANT)
            tools.evaluate(SHOW_GRIDS)
            time.sleep(3)
            type_last_steps(tools, tools.evaluate("document.querySelectorAll('[role=slider]').length"))
            tools.evaluate("document.activeElement.blur()")
            tools.wait_until(f"{IMAGES_SHOWN} > 0", load_seconds)
            tools.evaluate(TOP)
            time.sleep(3)  # the remaining images decode
            png = tools.call("Page.captureScreenshot", format="png")["data"]
            out.write_bytes(base64.b64decode(png))
        finally:
            os.killpg(browser.pid, signal.SIGTERM)
            browser.wait(timeout=60)


def main(argv: list[str] | None = None) -> Path:
    """Entry point; returns the screenshot's path."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/mlflow_ui.png"))
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--tab", default="model-metrics", help="the run page's tab to photograph")
    parser.add_argument("--size", default="1500,1900", help="window width,height")
    parser.add_argument("--load-seconds", type=float, default=120, help="how long the page may take to load")
    parser.add_argument("--url", default=None, help="photograph this page of a running MLflow UI instead (no demo run)")
    args = parser.parse_args(argv)
    if args.url:
        screenshot(args.chromium, args.url, args.out.resolve(), args.size, args.load_seconds)
        return args.out
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
            screenshot(args.chromium, url, args.out.resolve(), args.size, args.load_seconds)
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=60)
    print(f"{args.out} ({url})")
    return args.out


if __name__ == "__main__":
    main()
