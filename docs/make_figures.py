"""Make docs/demo_heatmap.png from the event files of real demo runs.

Takes the last ``attribution/<explainer>/grid`` image (input | heatmap | overlay per sample) of
each explainer, crops it to its first samples and lays the explainers side by side, one line per
run. Run after the demo::

    python docs/make_figures.py demo_logs/cnn_confounder/version_0 demo_logs/cnn_no_confounder/version_0
"""
import argparse
import io
from pathlib import Path

from PIL import Image, ImageDraw
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lrp_lightning.demo.data import IMAGE_SIZE

CAPTION_HEIGHT = 22
GAP = 12
PADDING = 2  # pixels between the tiles of lrp_lightning.image.attribution_grid


def last_grids(run_dir: Path) -> dict:
    """Explainer name -> its last logged grid image in ``run_dir``."""
    accumulator = EventAccumulator(str(run_dir), size_guidance={"images": 0})
    accumulator.Reload()
    grids = {}
    for tag in accumulator.Tags()["images"]:
        parts = tag.split("/")
        if len(parts) == 3 and parts[0] == "attribution" and parts[2] == "grid":
            encoded = accumulator.Images(tag)[-1].encoded_image_string
            grids[parts[1]] = Image.open(io.BytesIO(encoded)).convert("RGB")
    return grids


def first_rows(grid: Image.Image, rows: int, tile: int = IMAGE_SIZE) -> Image.Image:
    """The first ``rows`` samples of the grid's left column (input | heatmap | overlay of ``tile``² pixels).

    The callback puts up to 8 samples below each other and further samples into a second column,
    so the first ``rows`` samples of the left column are samples ``0 .. rows - 1``.
    """
    width = 3 * tile + 2 * PADDING
    return grid.crop((0, 0, min(grid.width, width), min(grid.height, rows * (tile + PADDING) - PADDING)))


def compose(runs: list, rows: int, scale: int, tile: int = IMAGE_SIZE) -> Image.Image:
    """One line of panels per run, one panel per explainer, captioned ``<run name>: <explainer>``."""
    lines = []
    for run_dir in runs:
        panels = []
        for explainer, grid in sorted(last_grids(run_dir).items()):
            grid = first_rows(grid, rows, tile)
            grid = grid.resize((grid.width * scale, grid.height * scale), Image.NEAREST)
            panels.append((f"{run_dir.parent.name}: {explainer}", grid))
        lines.append(panels)
    width = max(sum(grid.width + GAP for _, grid in panels) - GAP for panels in lines)
    line_height = max(grid.height for panels in lines for _, grid in panels) + CAPTION_HEIGHT
    canvas = Image.new("RGB", (width, len(lines) * (line_height + GAP) - GAP), "white")
    draw = ImageDraw.Draw(canvas)
    for index, panels in enumerate(lines):
        top, left = index * (line_height + GAP), 0
        for caption, grid in panels:
            draw.text((left + 2, top + 4), caption, fill="black")
            canvas.paste(grid, (left, top + CAPTION_HEIGHT))
            left += grid.width + GAP
    return canvas


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories holding event files")
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "demo_heatmap.png")
    parser.add_argument("--rows", type=int, default=4, help="samples shown per grid")
    parser.add_argument("--scale", type=int, default=2, help="integer upscaling of the grids")
    args = parser.parse_args()
    compose(args.runs, args.rows, args.scale).save(args.output)
    print("saved", args.output)


if __name__ == "__main__":
    main()
