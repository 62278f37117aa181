"""Speed of the localisation, robustness and randomisation metrics against Quantus 0.6.0 and the forward floor.

Run ``python -m benchmarks.metrics_quantus_b --case NAME`` with ``small-cnn`` (the demo's ShapesCNN,
32 images 3x64x64) or ``resnet18`` (ResNet18, 8 images 3x64x64), CPU, random weights, 2 threads.

Both sides explain with the same function (``lrp_lightning``'s plain gradient, given to Quantus as
``explain_func``) and see the same amount of work (``--nr-samples`` noise draws for the robustness
metrics; every layer for MPRT). "ours / floor" divides our time by the time of the explanations the
metric cannot avoid — (draws + 1) x N explained images for the robustness metrics, (layers + 1) x N
(MPRT), 2 x N (EfficientMPRT, RandomLogit), (layers + 1) x draws x N (SmoothMPRT) — sent through the
explainer in the metric's chunk sizes; the localisation metrics use no model, so they have no floor.
Quantus' SmoothMPRT ignores a custom ``explain_func`` and is left out. Each row is the median of
``--repeats`` runs.
"""
from __future__ import annotations

import argparse
import statistics
import time
import warnings
from typing import Any, Callable

import numpy as np
import torch

from benchmarks.common import format_table, machine_description
from benchmarks.metrics import build_model
from lrp_lightning.attribution import Gradient
from lrp_lightning.callbacks.randomisation import parameter_layers
from lrp_lightning.metrics import (
    AUC,
    MPRT,
    AttributionLocalisation,
    AvgSensitivity,
    EfficientMPRT,
    Focus,
    LocalLipschitzEstimate,
    MaxSensitivity,
    PointingGame,
    RandomLogit,
    RelativeInputStability,
    RelativeOutputStability,
    RelativeRepresentationStability,
    SmoothMPRT,
    TopKIntersection,
)
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


def explain_floor(model: torch.nn.Module, inputs: torch.Tensor, target: torch.Tensor, count: int) -> None:
    """Explain ``count`` copies of ``inputs`` in the metrics' chunk sizes: the work no metric can skip."""
    total = count * inputs.shape[0]
    for start, stop in chunk_bounds(inputs, total, None):
        rows = torch.arange(start, stop) % inputs.shape[0]
        Gradient(model)(inputs[rows], target[rows])


def main() -> None:
    """Measure and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", choices=list(CASES), default="small-cnn")
    parser.add_argument("--nr-samples", type=int, default=10, help="noise draws of the robustness metrics and sMPRT")
    parser.add_argument("--repeats", type=int, default=3)
    arguments = parser.parse_args()
    torch.set_num_threads(2)
    warnings.filterwarnings("ignore")
    import quantus

    name, batch = CASES[arguments.case]
    model = build_model(name, 10, torch.device("cpu"))
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn((batch, 3, 64, 64), generator=generator)
    attributions = torch.randn((batch, 1, 64, 64), generator=generator)
    mask = torch.zeros((batch, 1, 64, 64), dtype=torch.bool)
    mask[:, :, 16:40, 8:48] = True
    flags = torch.tensor([[1, 1, 0, 0]]).repeat(batch, 1)
    with torch.no_grad():
        target = model(inputs).argmax(dim=1)
    draws = arguments.nr_samples
    layers = len(parameter_layers(model))

    def explain_func(model, inputs, targets, **_):
        return Gradient(model)(torch.as_tensor(inputs), torch.as_tensor(targets))[1].numpy()

    x, y, a, s = inputs.numpy(), target.numpy(), attributions.numpy(), mask.numpy().astype(np.float64)
    common = {"model": model, "x_batch": x, "y_batch": y, "channel_first": True, "device": "cpu", "batch_size": batch}
    no_nan = {"return_nan_when_prediction_changes": False}
    cases: list[tuple[str, Callable, Callable, Any, int]] = [
        ("PointingGame", lambda: PointingGame(), lambda: quantus.PointingGame(disable_warnings=True), "mask", 0),
        ("AttributionLocalisation", lambda: AttributionLocalisation(),
         lambda: quantus.AttributionLocalisation(disable_warnings=True), "mask", 0),
        ("TopKIntersection", lambda: TopKIntersection(), lambda: quantus.TopKIntersection(disable_warnings=True),
         "mask", 0),
        ("AUC", lambda: AUC(), lambda: quantus.AUC(disable_warnings=True), "mask", 0),
        ("Focus", lambda: Focus(), lambda: quantus.Focus(disable_warnings=True), "focus", 0),
        ("AvgSensitivity", lambda: AvgSensitivity(nr_samples=draws),
         lambda: quantus.AvgSensitivity(nr_samples=draws, disable_warnings=True), "model", draws + 1),
        ("MaxSensitivity", lambda: MaxSensitivity(nr_samples=draws),
         lambda: quantus.MaxSensitivity(nr_samples=draws, disable_warnings=True), "model", draws + 1),
        ("LocalLipschitzEstimate", lambda: LocalLipschitzEstimate(nr_samples=draws),
         lambda: quantus.LocalLipschitzEstimate(nr_samples=draws, disable_warnings=True), "model", draws + 1),
        ("RelativeInputStability", lambda: RelativeInputStability(nr_samples=draws, **no_nan),
         lambda: quantus.RelativeInputStability(nr_samples=draws, disable_warnings=True, **no_nan), "model", draws + 1),
        ("RelativeOutputStability", lambda: RelativeOutputStability(nr_samples=draws, **no_nan),
         lambda: quantus.RelativeOutputStability(nr_samples=draws, disable_warnings=True, **no_nan), "model",
         draws + 1),
        ("RelativeRepresentationStability", lambda: RelativeRepresentationStability(nr_samples=draws, **no_nan),
         lambda: quantus.RelativeRepresentationStability(nr_samples=draws, disable_warnings=True, **no_nan), "model",
         draws + 1),
        ("MPRT", lambda: MPRT(), lambda: quantus.MPRT(disable_warnings=True), "model", layers + 1),
        ("SmoothMPRT", lambda: SmoothMPRT(nr_samples=draws), None, "model", (layers + 1) * draws),
        ("EfficientMPRT", lambda: EfficientMPRT(), lambda: quantus.EfficientMPRT(disable_warnings=True), "model", 2),
        ("RandomLogit", lambda: RandomLogit(num_classes=10), lambda: quantus.RandomLogit(num_classes=10,
                                                                                          disable_warnings=True),
         "model", 2),
    ]
    rows = []
    for label, make_ours, make_quantus, kind, explained in cases:
        metric = make_ours()

        def ours() -> None:
            metric.reset()
            if kind == "mask":
                metric.update(attributions, mask)
            elif kind == "focus":
                metric.update(attributions, flags)
            else:
                metric.update(model, inputs, target)
            metric.compute()

        ours_ms = median_ms(ours, arguments.repeats)
        quantus_ms = None
        if make_quantus is not None:
            oracle = make_quantus()
            if kind == "mask":
                call = lambda: oracle(**common, a_batch=a, s_batch=s)  # noqa: E731
            elif kind == "focus":
                call = lambda: oracle(**common, a_batch=a, custom_batch=[tuple(row) for row in flags.tolist()])  # noqa: E731
            else:
                call = lambda: oracle(**common, explain_func=explain_func)  # noqa: E731
            quantus_ms = median_ms(call, 1 if kind == "model" else arguments.repeats)
        floor_ms = median_ms(lambda: explain_floor(model, inputs, target, explained), 1) if explained else None
        rows.append([
            label, f"{ours_ms:.1f}", "-" if quantus_ms is None else f"{quantus_ms:.1f}",
            "-" if quantus_ms is None else f"{ours_ms / quantus_ms:.3f}",
            "-" if floor_ms is None else f"{floor_ms:.1f}", "-" if floor_ms is None else f"{ours_ms / floor_ms:.2f}",
        ])
        print(" | ".join(rows[-1]), flush=True)  # progress: a slow Quantus row must not hide the others
    print(machine_description(torch.device("cpu")))
    print(f"{name}, {batch} images 3x64x64, {draws} noise draws, {layers} layers with parameters, fp32, "
          f"plain-gradient explainer on both sides")
    print(format_table(["metric", "ours ms", "Quantus ms", "ours / Quantus", "floor ms", "ours / floor"], rows))


if __name__ == "__main__":
    main()
