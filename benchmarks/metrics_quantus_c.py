"""Speed of ROAD, Consistency and Continuity against Quantus 0.6.0 and the forward floor (issue 25's last three).

Run ``python -m benchmarks.metrics_quantus_c --case NAME`` with ``small-cnn`` (the demo's ShapesCNN,
32 images 3x64x64) or ``resnet18`` (ResNet18, 8 images 3x64x64), CPU, random weights, 2 threads
(``--threads``; on an oversubscribed machine two threads wait on each other at every small tensor
operation, which hurts the many small steps of ROAD's solver most: measure with one there).
Kept apart from ``benchmarks/metrics.py`` so that the two can change independently.

Both sides see the same work: ROAD with ``--percentages`` removal levels (default 10: 5, 15, ..., 95)
and its default noise, on the first channel of the images (Quantus' ROAD imputes single-channel
images only), repeated over three for the model; Continuity with ``--nr-steps`` translations (default 16: shifts of 8 pixels,
so both translate alike), explaining with ``lrp_lightning``'s plain gradient (handed to Quantus as
``explain_func``); Consistency with its defaults. "ours / floor" divides our time by the work the
metric cannot avoid: the forward passes of the imputed images (ROAD, P x N) or of the inputs
(Consistency, N), the explanations of the translated images (Continuity, (steps + 1) x N), in the
metric's chunk sizes. Each row is the median of ``--repeats`` runs (Quantus: one run).
"""
from __future__ import annotations

import argparse
import statistics
import time
import warnings
from typing import Any, Callable

import torch

from benchmarks.common import format_table, machine_description
from benchmarks.metrics import bare_forward, build_model
from benchmarks.metrics_quantus import explain_floor
from lrp_lightning.attribution import Gradient
from lrp_lightning.metrics import ROAD, Consistency, Continuity
from lrp_lightning.metrics._perturbation import chunk_bounds

CASES = {"small-cnn": ("shapes_cnn", 32), "resnet18": ("resnet18", 8)}


def median_ms(function: Callable[[], Any], repeats: int) -> float:
    """Median wall time of ``function`` in milliseconds after one warm-up call."""
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times)


class GreyToColour(torch.nn.Module):
    """Repeats a single-channel image over three channels."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 1, H, W) -> (N, 3, H, W)."""
        return images.expand(-1, 3, -1, -1)


def main() -> None:
    """Measure and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", choices=list(CASES), default="small-cnn")
    parser.add_argument("--percentages", type=int, default=10, help="ROAD's removal levels")
    parser.add_argument("--nr-steps", type=int, default=16, help="Continuity's translations")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (1 on a machine shared with other work)")
    parser.add_argument("--skip-quantus", action="store_true")
    arguments = parser.parse_args()
    torch.set_num_threads(arguments.threads)
    warnings.filterwarnings("ignore")
    import quantus

    name, batch = CASES[arguments.case]
    model = build_model(name, 10, torch.device("cpu"))
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn((batch, 3, 64, 64), generator=generator)
    attributions = torch.randn((batch, 1, 64, 64), generator=generator)
    with torch.no_grad():
        target = model(inputs).argmax(dim=1)
    percentages = list(range(5, 100, 100 // arguments.percentages))[: arguments.percentages]
    steps = arguments.nr_steps

    def explain_func(model, inputs, targets, **_):
        return Gradient(model)(torch.as_tensor(inputs), torch.as_tensor(targets))[1].numpy()

    x, y, a = inputs.numpy(), target.numpy(), attributions.numpy()
    common = {"model": model, "x_batch": x, "y_batch": y, "channel_first": True, "device": "cpu", "batch_size": batch}
    # Quantus' ROAD imputes single-channel images only (its indices run over one channel): both sides get
    # the first channel, which the model sees repeated over its three
    grey_model = torch.nn.Sequential(GreyToColour(), model).eval()
    grey = inputs[:, :1].contiguous()
    road_common = {**common, "model": grey_model, "x_batch": grey.numpy()}

    def forward_floor(count: int) -> Callable[[], None]:
        bounds = chunk_bounds(inputs, count * batch, None)
        ready = inputs.repeat(-(-max(stop - start for start, stop in bounds) // batch), 1, 1, 1)
        return lambda: bare_forward(model, ready, bounds)

    cases: list[tuple[str, Any, Callable[[Any], Any], Callable[[], Any], Callable[[], None]]] = [
        ("ROAD", ROAD(percentages=percentages), lambda metric: metric.update(grey_model, grey, attributions, target),
         lambda: quantus.ROAD(percentages=percentages, disable_warnings=True)(**road_common, a_batch=a),
         forward_floor(len(percentages))),
        ("Consistency", Consistency(), lambda metric: metric.update(model, inputs, attributions),
         lambda: quantus.Consistency(disable_warnings=True)(**common, a_batch=a), forward_floor(1)),
        ("Continuity", Continuity(nr_steps=steps), lambda metric: metric.update(model, inputs, target),
         lambda: quantus.Continuity(nr_steps=steps, disable_warnings=True)(**common, explain_func=explain_func),
         explain_floor(model, inputs, target, steps + 1)),
    ]
    rows = []
    for label, metric, update, oracle, floor in cases:
        def ours(metric=metric, update=update) -> None:
            metric.reset()
            update(metric)
            metric.compute()

        ours_ms = median_ms(ours, arguments.repeats)
        quantus_ms = None if arguments.skip_quantus else median_ms(oracle, 1)
        floor_ms = median_ms(floor, arguments.repeats)
        rows.append([
            label, f"{ours_ms:.1f}", "-" if quantus_ms is None else f"{quantus_ms:.1f}",
            "-" if quantus_ms is None else f"{ours_ms / quantus_ms:.3f}", f"{floor_ms:.1f}", f"{ours_ms / floor_ms:.2f}",
        ])
        print(" | ".join(rows[-1]), flush=True)
    print(machine_description(torch.device("cpu")))
    print(f"{name}, {batch} images 3x64x64, ROAD at {len(percentages)} percentages, Continuity with {steps} "
          "translations, fp32, plain-gradient explainer on both sides")
    print(format_table(["metric", "ours ms", "Quantus ms", "ours / Quantus", "floor ms", "ours / floor"], rows))


if __name__ == "__main__":
    main()
