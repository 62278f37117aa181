"""Speed and memory of ``RegionPerturbation`` against the bare forward passes it needs and Quantus 0.6.0.

Run ``python -m benchmarks.metrics --case NAME`` with one of the cases:

- ``small-cnn`` (CPU): the demo's ShapesCNN, 32 images 64x64, 8x8 patches, 64 steps, 10 classes, 2 threads;
- ``resnet18`` (CPU): ResNet18, 8 images 64x64, 8x8 patches, 32 steps, 10 classes, 2 threads;
- ``resnet50`` (CUDA): ResNet50, 32 images 224x224, 16x16 patches, 100 steps, 1000 classes.

Every setting can be overridden. Models have random weights.
Every metric we ship against Quantus 0.6.0 (``--quantus``): see :mod:`benchmarks.metrics_quantus`.

The metric sends N * (steps + 1) images through the model (the unperturbed inputs and one image per
step) in chunks sized to the device (``--max-batch-size`` caps them instead). The "bare forward" rows
time exactly those forward passes on a ready-made batch, in the metric's chunk sizes and in chunks of
N (what Quantus sends), in rounds alternating with the metric, so ``ours / bare`` is the overhead of
building the perturbed images, ranking the patches and bookkeeping. Quantus 0.6.0's
``RegionPerturbation`` (numeric baseline 0, no normalisation, logits) does the same work, timed in the
same rounds (``--skip-quantus`` leaves it out); the table also reports the largest deviation of its
mean curve from ours, so a fast but wrong metric shows.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import warnings
from typing import Any, Callable

import numpy as np
import torch

from benchmarks import metrics_quantus
from benchmarks.common import MIB, format_table, machine_description, peak_memory_bytes, time_ms
from lrp_lightning.metrics import RegionPerturbation
from lrp_lightning.metrics._perturbation import chunk_bounds

CASES = {
    "small-cnn": {"device": "cpu", "model": "shapes_cnn", "batch": 32, "size": 64, "patch": 8, "steps": 64,
                  "classes": 10, "threads": 2},
    "resnet18": {"device": "cpu", "model": "resnet18", "batch": 8, "size": 64, "patch": 8, "steps": 32,
                 "classes": 10, "threads": 2},
    "resnet50": {"device": "cuda", "model": "resnet50", "batch": 32, "size": 224, "patch": 16, "steps": 100,
                 "classes": 1000, "threads": None},
}


def parse_arguments() -> argparse.Namespace:
    """Command-line settings, with the device's defaults filled in for the ones not given."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", choices=list(CASES), default="small-cnn")
    parser.add_argument("--device", choices=["cpu", "cuda"])
    parser.add_argument("--model", help="a torchvision classification model name, or shapes_cnn (the demo's CNN)")
    parser.add_argument("--batch", type=int, help="number of images N")
    parser.add_argument("--size", type=int, help="image height and width")
    parser.add_argument("--patch", type=int, help="patch size")
    parser.add_argument("--steps", type=int, help="patches replaced")
    parser.add_argument("--classes", type=int, help="number of output classes")
    parser.add_argument("--threads", type=int, help="CPU threads (torch.set_num_threads)")
    parser.add_argument("--max-batch-size", type=int, help="largest chunk (default: sized to the device)")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds, all methods alternating (medians)")
    parser.add_argument("--skip-quantus", action="store_true", help="do not run Quantus 0.6.0 (slow)")
    parser.add_argument("--quantus", action="store_true",
                        help="time every metric against Quantus 0.6.0 instead (see benchmarks.metrics_quantus)")
    parser.add_argument("--nr-samples", type=int, default=5, help="with --quantus: noise draws of the robustness metrics")
    parser.add_argument("--only", nargs="+", help="with --quantus: the metrics to time (class names)")
    arguments = parser.parse_args()
    for name, value in CASES[arguments.case].items():
        if getattr(arguments, name) is None:
            setattr(arguments, name, value)
    return arguments


def build_model(name: str, classes: int, device: torch.device) -> torch.nn.Module:
    """A torchvision model or the demo's ShapesCNN with random weights (nothing downloaded), in eval
    mode on ``device``."""
    import torchvision

    from lrp_lightning.demo.model import ShapesCNN

    torch.manual_seed(0)
    if name == "shapes_cnn":
        return ShapesCNN(num_classes=classes).to(device).eval()
    return torchvision.models.get_model(name, weights=None, num_classes=classes).to(device).eval()


def interleaved_medians(
    functions: dict[str, Callable[[], Any]], device: torch.device, repeats: int
) -> dict[str, float]:
    """Median milliseconds of each function, timed in alternating rounds after one warm-up run each,
    so that a change of machine load affects all of them alike."""
    for function in functions.values():
        function()
    times: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            times[name].append(time_ms(function, device, warmup=0, repeats=1))
    return {name: statistics.median(values) for name, values in times.items()}


def bare_forward(model: torch.nn.Module, images: torch.Tensor, bounds: list[tuple[int, int]]) -> None:
    """Send ``stop - start`` images through ``model`` for each chunk in ``bounds``."""
    with torch.no_grad():
        for start, stop in bounds:
            model(images[: stop - start])


def quantus_region_perturbation(model: torch.nn.Module, inputs: torch.Tensor, attributions: torch.Tensor,
                                target: torch.Tensor, arguments: argparse.Namespace) -> np.ndarray:
    """Quantus 0.6.0's RegionPerturbation on the same work (forward passes of N images); returns its
    mean curve over steps 1..S."""
    import quantus

    warnings.filterwarnings("ignore", module="quantus")
    metric = quantus.RegionPerturbation(
        patch_size=arguments.patch, order="morf", regions_evaluation=arguments.steps, abs=False, normalise=False,
        perturb_baseline=0.0, disable_warnings=True,
    )
    curves = metric(model, inputs.cpu().numpy(), target.cpu().numpy(), a_batch=attributions.cpu().numpy(),
                    softmax=False, device=str(inputs.device), batch_size=inputs.shape[0])
    return np.asarray(curves).mean(axis=0)


def mebibytes(peak: int | None) -> str:
    """Peak bytes as MiB text, or "-" off CUDA."""
    return "-" if peak is None else f"{peak / MIB:.0f}"


def main() -> None:
    """Measure and print the table."""
    arguments = parse_arguments()
    device = torch.device(arguments.device)
    if arguments.threads:
        torch.set_num_threads(arguments.threads)
    model = build_model(arguments.model, arguments.classes, device)
    generator = torch.Generator().manual_seed(0)
    shape = (arguments.batch, 3, arguments.size, arguments.size)
    inputs = torch.randn(shape, generator=generator).to(device)
    attributions = torch.rand((arguments.batch, 1, arguments.size, arguments.size), generator=generator).to(device)
    target = torch.randint(0, arguments.classes, (arguments.batch,), generator=generator).to(device)
    if arguments.quantus:
        metrics_quantus.run(arguments.model, model, arguments.batch, arguments.size, arguments.nr_samples,
                            arguments.repeats, arguments.only)
        return
    total_images = arguments.batch * (arguments.steps + 1)
    bounds = chunk_bounds(inputs, total_images, arguments.max_batch_size)
    chunk = max(stop - start for start, stop in bounds)
    ready_batch = inputs.repeat(-(-max(chunk, arguments.batch) // arguments.batch), 1, 1, 1)
    metric = RegionPerturbation(patch_size=arguments.patch, steps=arguments.steps, order="morf", baseline=0.0,
                                max_batch_size=arguments.max_batch_size)

    def ours() -> Any:
        metric.reset()
        metric.update(model, inputs, attributions, target)
        return metric.compute()

    quantus_curve: list[np.ndarray] = []
    functions: dict[str, Callable[[], Any]] = {
        "bare": lambda: bare_forward(model, ready_batch, bounds),
        "bare_n": lambda: bare_forward(model, ready_batch, chunk_bounds(inputs, total_images, arguments.batch)),
        "ours": ours,
    }
    if not arguments.skip_quantus:
        functions["quantus"] = lambda: quantus_curve.append(
            quantus_region_perturbation(model, inputs, attributions, target, arguments))
    medians = interleaved_medians(functions, device, arguments.repeats)
    bare_ms = medians["bare"]
    rows: list[list[Any]] = [
        [f"bare forward passes, {len(bounds)} chunks of <= {chunk} (the metric's)", f"{bare_ms:.0f}", "1.00",
         mebibytes(peak_memory_bytes(functions["bare"], device)), "-"],
        [f"bare forward passes, chunks of {arguments.batch} (N)", f"{medians['bare_n']:.0f}",
         f"{medians['bare_n'] / bare_ms:.2f}", "-", "-"],
        ["lrp_lightning RegionPerturbation", f"{medians['ours']:.0f}", f"{medians['ours'] / bare_ms:.2f}",
         mebibytes(peak_memory_bytes(ours, device)), "-"],
    ]
    speedup = ""
    if not arguments.skip_quantus:
        deviation = np.abs(ours()["curve"][1:].cpu().numpy() - quantus_curve[-1]).max()
        rows.append(["Quantus 0.6.0 RegionPerturbation", f"{medians['quantus']:.0f}",
                     f"{medians['quantus'] / bare_ms:.2f}", "-", f"{deviation:.1e}"])
        speedup = f"; Quantus / ours = {medians['quantus'] / medians['ours']:.2f}x"
    print(machine_description(device))
    print(f"{arguments.model}, {arguments.batch} images {arguments.size}x{arguments.size}, {arguments.patch}x"
          f"{arguments.patch} patches, {arguments.steps} steps, {total_images} images through the model in "
          f"{len(bounds)} chunks of <= {chunk}, fp32, median of {arguments.repeats} interleaved rounds{speedup}")
    headers = ["method", "ms (median)", "x bare forward", "CUDA peak MiB", "max deviation from our curve"]
    print(format_table(headers, rows))


if __name__ == "__main__":
    main()
