"""Speed and memory of ``RegionPerturbation`` against the bare forward passes it needs and Quantus 0.6.0.

Run ``python -m benchmarks.metrics --case NAME`` with one of the cases:

- ``small-cnn`` (CPU): the demo's ShapesCNN, 32 images 64x64, 8x8 patches, 64 steps, 10 classes, 2 threads;
- ``resnet18`` (CPU): ResNet18, 8 images 64x64, 8x8 patches, 32 steps, 10 classes, 2 threads;
- ``resnet50`` (CUDA): ResNet50, 32 images 224x224, 16x16 patches, 100 steps, 1000 classes.

Every setting can be overridden. Models have random weights.
The localisation, robustness and randomisation metrics: ``python -m benchmarks.metrics_quantus_b``.

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
    parser.add_argument("--quantus-metrics-a", action="store_true",
                        help="time the issue-25 faithfulness/complexity/axiomatic metrics instead (see quantus_metrics_a)")
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


def quantus_metrics_a(arguments: argparse.Namespace, model: torch.nn.Module, inputs: torch.Tensor,
                      attributions: torch.Tensor, target: torch.Tensor, device: torch.device) -> None:
    """Time the faithfulness, complexity and axiomatic metrics of issue 25 against Quantus 0.6.0 and
    the bare forward passes each needs (the metric's images, in its chunk sizes); print one table.

    Settings keep every metric at a few dozen model passes per sample (steps of 1/16 of the pixels,
    16x16 patches, 4 draws per step): the ratios, not the absolute times, are the point. Quantus gets
    the same settings where it runs them; "-" where it cannot (IROF needs single-channel images there,
    NonSensitivity raises for steps > 1).
    """
    import quantus

    from lrp_lightning import metrics as ours_metrics

    warnings.filterwarnings("ignore", module="quantus")
    warnings.filterwarnings("ignore", category=UserWarning)
    n, pixels = inputs.shape[0], arguments.size * arguments.size
    step = pixels // 16
    patches = (arguments.size // 16) ** 2
    cases = [  # name, our metric, Quantus metric or None, update arguments, images per sample
        ("FaithfulnessEstimate", ours_metrics.FaithfulnessEstimate(features_in_step=step),
         quantus.FaithfulnessEstimate(features_in_step=step, disable_warnings=True), "miat", 17),
        ("IROF", ours_metrics.IROF(baseline=0.0), None, "miat", None),
        ("Infidelity", ours_metrics.Infidelity(perturb_patch_sizes=[16]),
         quantus.Infidelity(perturb_patch_sizes=[16], n_perturb_samples=1, disable_warnings=True), "miat",
         patches + 1),
        ("Monotonicity", ours_metrics.Monotonicity(features_in_step=step),
         quantus.Monotonicity(features_in_step=step, disable_warnings=True), "miat", 16),
        ("MonotonicityCorrelation", ours_metrics.MonotonicityCorrelation(nr_samples=4, features_in_step=step),
         quantus.MonotonicityCorrelation(nr_samples=4, features_in_step=step, disable_warnings=True), "miat", 65),
        ("Selectivity", ours_metrics.Selectivity(patch_size=16),
         quantus.Selectivity(patch_size=16, disable_warnings=True), "miat", patches),
        ("SensitivityN", ours_metrics.SensitivityN(features_in_step=step),
         quantus.SensitivityN(features_in_step=step, disable_warnings=True), "miat", 13),
        ("Sufficiency", ours_metrics.Sufficiency(), quantus.Sufficiency(disable_warnings=True), "mia", 1),
        ("EffectiveComplexity", ours_metrics.EffectiveComplexity(),
         quantus.EffectiveComplexity(disable_warnings=True), "a", 0),
        ("Completeness", ours_metrics.Completeness(), quantus.Completeness(disable_warnings=True), "miat", 2),
        ("NonSensitivity", ours_metrics.NonSensitivity(features_in_step=step), None, "miat", 17),
    ]
    values = {"m": model, "i": inputs, "a": attributions, "t": target}
    rows: list[list[Any]] = []
    for name, metric, oracle, needs, per_sample in cases:
        def run_ours(metric=metric, needs=needs) -> Any:
            metric.reset()
            metric.update(*[values[key] for key in needs])
            return metric.compute()

        functions: dict[str, Callable[[], Any]] = {"ours": run_ours}
        if per_sample is None:  # IROF: as many images as the largest superpixel count, found by running it
            run_ours()
            per_sample = 1 + int(ours_metrics.irof.slic_segments(inputs).amax().item()) + 1
        if per_sample:
            bounds = chunk_bounds(inputs, n * per_sample, None)
            chunk = max(stop - start for start, stop in bounds)
            ready = inputs.repeat(-(-chunk // n), 1, 1, 1)
            functions["bare"] = lambda ready=ready, bounds=bounds: bare_forward(model, ready, bounds)
        if oracle is not None and not arguments.skip_quantus:
            softmax = name in ("Monotonicity", "MonotonicityCorrelation", "Selectivity", "SensitivityN",
                               "NonSensitivity", "Sufficiency")
            functions["quantus"] = lambda oracle=oracle, softmax=softmax: oracle(
                model, inputs.cpu().numpy(), target.cpu().numpy(), a_batch=attributions.cpu().numpy(),
                device=str(device), softmax=softmax, batch_size=n)
        medians = interleaved_medians(functions, device, arguments.repeats)
        print(f"{name}: {medians}", file=sys.stderr, flush=True)
        bare = medians.get("bare")
        quantus_ms = medians.get("quantus")
        rows.append([
            name, n * per_sample, f"{medians['ours']:.0f}", "-" if bare is None else f"{bare:.0f}",
            "-" if bare is None else f"{medians['ours'] / bare:.2f}",
            "-" if quantus_ms is None else f"{quantus_ms:.0f}",
            "-" if quantus_ms is None else f"{medians['ours'] / quantus_ms:.3f}",
        ])
    print(machine_description(device))
    print(f"{arguments.model}, {n} images 3x{arguments.size}x{arguments.size}, steps of {step} pixels, 16x16 "
          f"patches, fp32, median of {arguments.repeats} interleaved rounds")
    headers = ["metric", "images through model", "ours ms", "bare forward ms", "ours / bare",
               "Quantus 0.6.0 ms", "ours / Quantus"]
    print(format_table(headers, rows))


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
    if arguments.quantus_metrics_a:
        quantus_metrics_a(arguments, model, inputs, attributions, target, device)
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
