"""Take the README's TensorBoard screenshots with a real headless browser (Chromium).

Starts TensorBoard on a free 127.0.0.1 port over the demo's logs (and, separately, the text
example's), waits until it serves the runs, opens the Images, Custom Scalars and Text tabs in
headless Chromium at a fixed window size and writes one PNG per view into ``docs/``. TensorBoard is
stopped afterwards, also after an error. Run it after the three runs it shows::

    make demo                                              # demo_logs/cnn_confounder
    .venv/bin/python -m lrp_lightning.demo --model vit     # demo_logs/vit_confounder
    .venv/bin/python examples/text_shortcut.py             # text_logs/shortcut_0.8
    .venv/bin/python docs/take_screenshots.py              # --chromium /usr/bin/chromium --out docs

The URL's hash picks the tab (``#images``, ``#custom_scalars``, ``#text``), ``tagFilter=`` the
cards and ``regexInput=`` the runs, as TensorBoard's own links do.
"""
from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
)
# browser-side time (ms) TensorBoard gets to load and draw before the picture is taken
RENDER_BUDGET_MS = 20000
SERVER_START_S = 120


@dataclass(frozen=True)
class Shot:
    """One screenshot: which logs, which tab and filters, the window size and the output file."""

    file: str
    logs: str  # "demo" or "text"
    tab: str
    tags: str = ""
    runs: str = ""
    size: tuple[int, int] = (1500, 1000)

    def fragment(self) -> str:
        """The URL hash: the tab, then the tag and run filters."""
        parts = [self.tab]
        if self.tags:
            parts.append("tagFilter=" + urllib.parse.quote(self.tags, safe=""))
        if self.runs:
            parts.append("regexInput=" + urllib.parse.quote(self.runs, safe=""))
        return "&".join(parts)


SHOTS = (
    Shot("tb_demo_images.png", "demo", "images", r"(epsilon_gamma_box|gradient)/grid$|curves/aopc_morf",
         "^cnn_confounder/", (1500, 1060)),
    Shot("tb_demo_custom_scalars.png", "demo", "custom_scalars", runs="^cnn_confounder/", size=(1500, 1000)),
    Shot("tb_demo_sanity.png", "demo", "images", "sanity/.*mprt", "^cnn_confounder/", (1500, 760)),
    Shot("tb_vit_images.png", "demo", "images", r"(attn_lrp|gradient)/grid$|curves/aopc_morf",
         "^vit_confounder/", (1500, 1060)),
    Shot("tb_text_images.png", "text", "images", r"(attn_lrp|gradient)/grid$", size=(1200, 1060)),
    Shot("tb_text_tab.png", "text", "text", r"attn_lrp/tokens", size=(1500, 900)),
)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _json(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def start_tensorboard(logdir: Path, port: int) -> subprocess.Popen:
    """TensorBoard serving ``logdir`` on ``127.0.0.1:port``, returned once it lists runs with images."""
    server = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", "127.0.0.1",
         "--port", str(port), "--reload_interval", "0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + SERVER_START_S
    base = f"http://127.0.0.1:{port}/data/plugin"
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"TensorBoard exited with status {server.returncode}")
        try:
            if _json(f"{base}/images/tags"):
                return server
        except (OSError, ValueError):
            pass
        time.sleep(1)
    server.terminate()
    raise RuntimeError(f"TensorBoard did not serve {logdir} within {SERVER_START_S} s")


def capture(chromium: str, url: str, size: tuple[int, int], path: Path) -> None:
    """Open ``url`` in a fresh headless Chromium profile and save the window as a PNG at ``path``."""
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        command = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}",
                   f"--virtual-time-budget={RENDER_BUDGET_MS}", f"--screenshot={path}", url]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=180)
    if not path.is_file() or path.stat().st_size < 10_000:
        raise RuntimeError(f"Chromium wrote no usable screenshot for {url}")


def main(argv: list[str] | None = None) -> list[Path]:
    """Take every screenshot of :data:`SHOTS`; returns the written files."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo-logs", type=Path, default=Path("demo_logs"), help="log dir of the demo runs")
    parser.add_argument("--text-logs", type=Path, default=Path("text_logs"), help="log dir of the text example")
    parser.add_argument("--chromium", default="/usr/bin/chromium", help="the Chromium executable")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent, help="where the PNGs go")
    parser.add_argument("--only", nargs="*", default=None, help="file names of the shots to take (default: all)")
    args = parser.parse_args(argv)
    logdirs = {"demo": args.demo_logs, "text": args.text_logs}
    written = []
    for logs, logdir in logdirs.items():
        shots = [shot for shot in SHOTS if shot.logs == logs and (args.only is None or shot.file in args.only)]
        if not shots:
            continue
        port = free_port()
        server = start_tensorboard(logdir, port)
        try:
            for shot in shots:
                path = args.out / shot.file
                capture(args.chromium, f"http://127.0.0.1:{port}/#{shot.fragment()}", shot.size, path)
                written.append(path)
                print(f"{path}  <-  {logdir} #{shot.fragment()}")
        finally:
            server.terminate()
            server.wait(timeout=30)
    return written


if __name__ == "__main__":
    main()
