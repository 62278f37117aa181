"""Speed and memory of ``RegionPerturbation`` against the bare forward passes it needs and Quantus 0.6.0.

Run ``python -m benchmarks.metrics --device cpu`` (ResNet18, batch 8, 64x64, 8x8 patches, 32 steps,
10 classes, 2 threads) or ``--device cuda`` (ResNet50, batch 32, 224x224, 16x16 patches, 100 steps,
1000 classes); every setting can be overridden. Models are torchvision models with random weights.

The metric sends N * (steps + 1) images through the model (the unperturbed inputs and one image per
step) in chunks of ``--max-batch-size``. The "bare forward" row times exactly those forward passes on
a ready-made batch, in rounds alternating with the metric, so ``ours / bare`` is the overhead of
building the perturbed images, ranking the patches and bookkeeping. Quantus 0.6.0's
``RegionPerturbation`` (numeric baseline 0, no normalisation, logits) does the same work once (it is
slow; ``--skip-quantus`` leaves it out); the table also reports the largest deviation of its mean
curve from ours, so a fast but wrong metric shows.
"""
from __future__ import annotations

import argparse
import statistics
import warnings
from typing import Any, Callable

import numpy as np
import torch

from benchmarks.common import MIB, format_table, machine_description, peak_memory_bytes, time_ms
from lrp_lightning.metrics import RegionPerturbation

DEFAULTS = {
    "cpu": {"model": "resnet18", "batch": 8, "size": 64, "patch": 8, "steps": 32, "classes": 10, "threads": 2},
    "cuda": {"model": "resnet50", "batch": 32, "size": 224, "patch": 16, "steps": 100, "classes": 1000,
             "threads": None},
}


def parse_arguments() -> argparse.Namespace:
    """Command-line settings, with the device's defaults filled in for the ones not given."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--model", help="a torchvision classification model name")
    parser.add_argument("--batch", type=int, help="number of images N")
    parser.add_argument("--size", type=int, help="image height and width")
    parser.add_argument("--patch", type=int, help="patch size")
    parser.add_argument("--steps", type=int, help="patches replaced")
    parser.add_argument("--classes", type=int, help="number of output classes")
    parser.add_argument("--threads", type=int, help="CPU threads (torch.set_num_threads)")
    parser.add_argument("--max-batch-size", type=int, default=256, help="images per forward pass")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds, bare and ours alternating (medians)")
    parser.add_argument("--skip-quantus", action="store_true", help="do not run Quantus 0.6.0 (slow)")
    arguments = parser.parse_args()
    for name, value in DEFAULTS[arguments.device].items():
        if getattr(arguments, name) is None:
            setattr(arguments, name, value)
    return arguments


def build_model(name: str, classes: int, device: torch.device) -> torch.nn.Module:
    """A torchvision model with random weights (nothing downloaded), in eval mode on ``device``."""
    import torchvision

    torch.manual_seed(0)
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


def bare_forward(model: torch.nn.Module, images: torch.Tensor, total: int, max_batch_size: int) -> None:
    """Send ``total`` images through ``model`` in the chunk sizes the metric uses."""
    with torch.no_grad():
        for start in range(0, total, max_batch_size):
            model(images[: min(max_batch_size, total - start)])


def run_quantus(model: torch.nn.Module, inputs: torch.Tensor, attributions: torch.Tensor, target: torch.Tensor,
                arguments: argparse.Namespace) -> np.ndarray:
    """Quantus 0.6.0's RegionPerturbation on the same work; returns its mean curve over steps 1..S."""
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
    total_images = arguments.batch * (arguments.steps + 1)
    ready_batch = inputs.repeat(-(-min(arguments.max_batch_size, total_images) // arguments.batch), 1, 1, 1)
    metric = RegionPerturbation(patch_size=arguments.patch, steps=arguments.steps, order="morf", baseline=0.0,
                                max_batch_size=arguments.max_batch_size)

    def ours() -> Any:
        metric.reset()
        metric.update(model, inputs, attributions, target)
        return metric.compute()

    def bare() -> None:
        bare_forward(model, ready_batch, total_images, arguments.max_batch_size)

    medians = interleaved_medians({"bare": bare, "ours": ours}, device, arguments.repeats)
    bare_ms, ours_ms = medians["bare"], medians["ours"]
    rows: list[list[Any]] = [
        ["bare forward passes", f"{bare_ms:.0f}", "1.00", mebibytes(peak_memory_bytes(bare, device)), "-"],
        ["lrp_lightning RegionPerturbation", f"{ours_ms:.0f}", f"{ours_ms / bare_ms:.2f}",
         mebibytes(peak_memory_bytes(ours, device)), "-"],
    ]
    if not arguments.skip_quantus:
        quantus_curve: list[np.ndarray] = []
        quantus_ms = time_ms(lambda: quantus_curve.append(run_quantus(model, inputs, attributions, target, arguments)),
                             device, warmup=0, repeats=1)
        deviation = np.abs(ours()["curve"][1:].cpu().numpy() - quantus_curve[0]).max()
        rows.append(["Quantus 0.6.0 RegionPerturbation", f"{quantus_ms:.0f}", f"{quantus_ms / bare_ms:.2f}", "-",
                     f"{deviation:.1e}"])
        speedup = f"; Quantus / ours = {quantus_ms / ours_ms:.1f}x"
    else:
        speedup = ""
    print(machine_description(device))
    print(f"{arguments.model}, {arguments.batch} images {arguments.size}x{arguments.size}, {arguments.patch}x"
          f"{arguments.patch} patches, {arguments.steps} steps, {total_images} images through the model in chunks "
          f"of {arguments.max_batch_size}, fp32{speedup}")
    headers = ["method", "ms (median)", "x bare forward", "CUDA peak MiB", "max deviation from our curve"]
    print(format_table(headers, rows))


if __name__ == "__main__":
    main()
