"""Make docs/demo_heatmap.png from the event files of real demo runs.

Takes the last ``attribution/<explainer>/grid`` image (input | heatmap | overlay per sample) of
each explainer from each run and lays them side by side under a caption. Run after the demo::

    python docs/make_figures.py demo_logs/confounder/version_0 demo_logs/no_confounder/version_0
"""
import argparse
import io
from pathlib import Path

from PIL import Image, ImageDraw
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

CAPTION_HEIGHT = 22
GAP = 12


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


def compose(runs: list, scale: int) -> Image.Image:
    """One panel per (run, explainer), captioned ``<run name>: <explainer>``."""
    panels = []
    for run_dir in runs:
        for explainer, grid in sorted(last_grids(run_dir).items()):
            grid = grid.resize((grid.width * scale, grid.height * scale), Image.NEAREST)
            panels.append((f"{run_dir.parent.name}: {explainer}", grid))
    width = sum(grid.width for _, grid in panels) + GAP * (len(panels) - 1)
    height = max(grid.height for _, grid in panels) + CAPTION_HEIGHT
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    left = 0
    for caption, grid in panels:
        draw.text((left + 2, 4), caption, fill="black")
        canvas.paste(grid, (left, CAPTION_HEIGHT))
        left += grid.width + GAP
    return canvas


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories holding event files")
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "demo_heatmap.png")
    parser.add_argument("--scale", type=int, default=1, help="integer upscaling of the grids")
    args = parser.parse_args()
    compose(args.runs, args.scale).save(args.output)
    print("saved", args.output)


if __name__ == "__main__":
    main()
