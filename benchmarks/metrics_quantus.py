"""Every metric we ship against Quantus 0.6.0, its forward (or explanation) floor and its peak memory.

Run ``python -m benchmarks.metrics --case small-cnn --quantus`` (the demo's ShapesCNN, 32 images
3x64x64) or ``--case resnet18 --quantus`` (ResNet18, 8 images 3x64x64); CPU, random weights.

Settings keep every metric at a few dozen model passes per sample (steps of 1/16 of the pixels,
16x16 patches, ``--nr-samples`` noise draws): the ratios, not the absolute times, are the point.
Quantus gets the same settings and, where a metric re-explains, the same explainer (our plain
gradient as ``explain_func``). Per metric, ours, Quantus and the floor run in alternating rounds
(``--repeats``, medians), so a change of machine load hits all three alike. The floor is the work
the metric cannot avoid: for the perturbation metrics the forward passes it makes, counted with a
forward hook in its own run and replayed as bare forward passes in the same chunk sizes; for the
re-explaining metrics the explanations it needs, sent through the explainer in its chunk sizes.
Peak memory is the growth of the process' resident high-water mark in the first round
(:func:`benchmarks.common.rss_peak_growth_bytes`; memory the allocator kept from an earlier case is
reused unseen, so small figures are lower bounds). "-" where Quantus 0.6.0 has no such metric or
cannot run it here (IROF wants single-channel images, NonSensitivity raises for steps > 1,
SmoothMPRT ignores a custom ``explain_func``, InputInvariance fails on a model whose first module is no
convolution, such as ShapesCNN).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from typing import Any, Callable, Optional

import numpy as np
import torch

from benchmarks.common import MIB, format_table, machine_description, rss_peak_growth_bytes
from lrp_lightning import metrics as ours
from lrp_lightning.attribution import Gradient
from lrp_lightning.metrics._perturbation import chunk_bounds
from lrp_lightning.parameter_randomisation import parameter_layers

# update arguments: m model, i inputs, a attributions, t target, s mask, f Focus flags, r output relevance,
# G the plain gradient of the inputs (InputInvariance compares its own explanation with it)
FORWARD, EXPLAIN, NONE = "forward", "explain", "none"


def cases(side: int, draws: int, layers: int) -> list[tuple[str, Callable, Optional[Callable], str, str, int]]:
    """(name, our metric, Quantus metric or None, update arguments, floor kind, explanations per sample)."""
    import quantus

    step, patches = side * side // 16, (side // 16) ** 2
    q = {"disable_warnings": True}
    no_nan = {"return_nan_when_prediction_changes": False}
    return [
        ("FaithfulnessCorrelation", lambda: ours.FaithfulnessCorrelation(nr_runs=16, subset_size=step),
         lambda: quantus.FaithfulnessCorrelation(nr_runs=16, subset_size=step, **q), "miat", FORWARD, 0),
        ("FaithfulnessEstimate", lambda: ours.FaithfulnessEstimate(features_in_step=step),
         lambda: quantus.FaithfulnessEstimate(features_in_step=step, **q), "miat", FORWARD, 0),
        ("IROF", lambda: ours.IROF(baseline=0.0), None, "miat", FORWARD, 0),
        ("Infidelity", lambda: ours.Infidelity(perturb_patch_sizes=[16]),
         lambda: quantus.Infidelity(perturb_patch_sizes=[16], n_perturb_samples=1, **q), "miat", FORWARD, 0),
        ("Monotonicity", lambda: ours.Monotonicity(features_in_step=step),
         lambda: quantus.Monotonicity(features_in_step=step, **q), "miat", FORWARD, 0),
        ("MonotonicityCorrelation", lambda: ours.MonotonicityCorrelation(nr_samples=2, features_in_step=step),
         lambda: quantus.MonotonicityCorrelation(nr_samples=2, features_in_step=step, **q), "miat", FORWARD, 0),
        ("PixelFlipping", lambda: ours.PixelFlipping(features_in_step=step),
         lambda: quantus.PixelFlipping(features_in_step=step, **q), "miat", FORWARD, 0),
        ("RegionPerturbation", lambda: ours.RegionPerturbation(patch_size=16, steps=patches),
         lambda: quantus.RegionPerturbation(patch_size=16, regions_evaluation=patches, **q), "miat", FORWARD, 0),
        ("Selectivity", lambda: ours.Selectivity(patch_size=16), lambda: quantus.Selectivity(patch_size=16, **q),
         "miat", FORWARD, 0),
        ("SensitivityN", lambda: ours.SensitivityN(features_in_step=step),
         lambda: quantus.SensitivityN(features_in_step=step, **q), "miat", FORWARD, 0),
        ("Sufficiency", lambda: ours.Sufficiency(), lambda: quantus.Sufficiency(**q), "mia", FORWARD, 0),
        ("Insertion (ours only)", lambda: ours.Insertion(steps=16), None, "miat", FORWARD, 0),
        ("Deletion (ours only)", lambda: ours.Deletion(steps=16), None, "miat", FORWARD, 0),
        ("AvgSensitivity", lambda: ours.AvgSensitivity(nr_samples=draws),
         lambda: quantus.AvgSensitivity(nr_samples=draws, **q), "mit", EXPLAIN, draws + 1),
        ("MaxSensitivity", lambda: ours.MaxSensitivity(nr_samples=draws),
         lambda: quantus.MaxSensitivity(nr_samples=draws, **q), "mit", EXPLAIN, draws + 1),
        ("LocalLipschitzEstimate", lambda: ours.LocalLipschitzEstimate(nr_samples=draws),
         lambda: quantus.LocalLipschitzEstimate(nr_samples=draws, **q), "mit", EXPLAIN, draws + 1),
        ("RelativeInputStability", lambda: ours.RelativeInputStability(nr_samples=draws, **no_nan),
         lambda: quantus.RelativeInputStability(nr_samples=draws, **no_nan, **q), "mit", EXPLAIN, draws + 1),
        ("RelativeOutputStability", lambda: ours.RelativeOutputStability(nr_samples=draws, **no_nan),
         lambda: quantus.RelativeOutputStability(nr_samples=draws, **no_nan, **q), "mit", EXPLAIN, draws + 1),
        ("RelativeRepresentationStability", lambda: ours.RelativeRepresentationStability(nr_samples=draws, **no_nan),
         lambda: quantus.RelativeRepresentationStability(nr_samples=draws, **no_nan, **q), "mit", EXPLAIN,
         draws + 1),
        ("PointingGame", ours.PointingGame, lambda: quantus.PointingGame(**q), "as", NONE, 0),
        ("AttributionLocalisation", ours.AttributionLocalisation, lambda: quantus.AttributionLocalisation(**q),
         "as", NONE, 0),
        ("TopKIntersection", ours.TopKIntersection, lambda: quantus.TopKIntersection(**q), "as", NONE, 0),
        ("RelevanceRankAccuracy", ours.RelevanceRankAccuracy,
         lambda: quantus.RelevanceRankAccuracy(abs=False, normalise=False, **q), "as", NONE, 0),
        ("RelevanceMassAccuracy", ours.RelevanceMassAccuracy,
         lambda: quantus.RelevanceMassAccuracy(abs=False, normalise=False, **q), "as", NONE, 0),
        ("AUC", ours.AUC, lambda: quantus.AUC(**q), "as", NONE, 0),
        ("Focus", ours.Focus, lambda: quantus.Focus(**q), "af", NONE, 0),
        ("Sparseness", ours.Sparseness, lambda: quantus.Sparseness(normalise=False, **q), "a", NONE, 0),
        ("Complexity", ours.Complexity, lambda: quantus.Complexity(normalise=False, **q), "a", NONE, 0),
        ("EffectiveComplexity", ours.EffectiveComplexity, lambda: quantus.EffectiveComplexity(**q), "a", NONE, 0),
        ("Conservation (ours only)", ours.Conservation, None, "ar", NONE, 0),
        ("MPRT", ours.MPRT, lambda: quantus.MPRT(**q), "mit", EXPLAIN, layers + 1),
        ("SmoothMPRT", lambda: ours.SmoothMPRT(nr_samples=draws), None, "mit", EXPLAIN, (layers + 1) * draws),
        ("EfficientMPRT", ours.EfficientMPRT, lambda: quantus.EfficientMPRT(**q), "mit", EXPLAIN, 2),
        ("RandomLogit", lambda: ours.RandomLogit(num_classes=10), lambda: quantus.RandomLogit(num_classes=10, **q),
         "mit", EXPLAIN, 2),
        ("Completeness", ours.Completeness, lambda: quantus.Completeness(**q), "miat", FORWARD, 0),
        ("NonSensitivity", lambda: ours.NonSensitivity(features_in_step=step), None, "miat", FORWARD, 0),
        ("InputInvariance", ours.InputInvariance, lambda: quantus.InputInvariance(**q), "miGt", EXPLAIN, 1),
    ]


class ForwardCounter:
    """A forward hook recording the batch size of every call of a model."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.sizes: list[int] = []
        self.handle = model.register_forward_hook(lambda module, args, output: self.sizes.append(args[0].shape[0]))

    def remove(self) -> None:
        """Remove the hook."""
        self.handle.remove()


def forward_floor(model: torch.nn.Module, inputs: torch.Tensor, sizes: list[int]) -> Callable[[], None]:
    """Bare forward passes of the given batch sizes (copies of ``inputs``), without gradients."""
    ready = inputs.repeat(-(-max(sizes) // inputs.shape[0]), *([1] * (inputs.ndim - 1)))

    def run() -> None:
        with torch.no_grad():
            for size in sizes:
                model(ready[:size])
    return run


def explain_floor(model: torch.nn.Module, inputs: torch.Tensor, target: torch.Tensor, count: int) -> Callable[[], None]:
    """Explain ``count`` copies of ``inputs`` with the plain gradient in the metrics' chunk sizes."""
    def run() -> None:
        total = count * inputs.shape[0]
        for start, stop in chunk_bounds(inputs, total, None):
            rows = torch.arange(start, stop) % inputs.shape[0]
            Gradient(model)(inputs[rows], target[rows])
    return run


def timed_and_peak(function: Callable[[], Any]) -> tuple[float, int]:
    """Milliseconds of one call of ``function`` and the growth of the resident peak during it."""
    elapsed: list[float] = []

    def run() -> None:
        start = time.perf_counter()
        function()
        elapsed.append(1000 * (time.perf_counter() - start))
    peak = rss_peak_growth_bytes(run)
    return elapsed[0], peak


def run(model_name: str, model: torch.nn.Module, batch: int, size: int, draws: int, repeats: int,
        only: Optional[list[str]]) -> None:
    """Time every metric (or those named in ``only``) against Quantus and its floor; print one table."""
    warnings.filterwarnings("ignore")
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn((batch, 3, size, size), generator=generator)
    attributions = torch.rand((batch, 1, size, size), generator=generator)
    output_relevance = torch.rand((batch, 10), generator=generator)
    mask = torch.zeros((batch, 1, size, size), dtype=torch.bool)
    mask[:, :, size // 4: size * 5 // 8, size // 8: size * 3 // 4] = True
    flags = torch.tensor([[1, 1, 0, 0]]).repeat(batch, 1)
    with torch.no_grad():
        target = model(inputs).argmax(dim=1)
    gradient = Gradient(model)(inputs, target)[1]
    values = {"m": model, "i": inputs, "a": attributions, "t": target, "s": mask, "f": flags, "r": output_relevance,
              "G": gradient}
    numpy_values = {"model": model, "x_batch": inputs.numpy(), "y_batch": target.numpy(), "channel_first": True,
                    "device": "cpu", "batch_size": batch}

    def explain_func(model, inputs, targets, **_):
        return Gradient(model)(torch.as_tensor(inputs), torch.as_tensor(targets))[1].numpy()

    rows: list[list[str]] = []
    for name, make_ours, make_quantus, needs, floor_kind, explained in cases(size, draws, len(parameter_layers(model))):
        if only and name.split(" ")[0] not in only:
            continue
        metric = make_ours()

        def run_ours(metric=metric, needs=needs) -> None:
            metric.reset()
            metric.update(*[values[key] for key in needs])
            metric.compute()

        functions: dict[str, Callable[[], Any]] = {"ours": run_ours}
        if floor_kind == FORWARD:
            counter = ForwardCounter(model)
            run_ours()
            counter.remove()
            functions["floor"] = forward_floor(model, inputs, counter.sizes)
            images = sum(counter.sizes)
        elif floor_kind == EXPLAIN:
            functions["floor"] = explain_floor(model, inputs, target, explained)
            images = explained * batch
        else:
            images = 0
        if floor_kind != FORWARD:
            run_ours()  # warm-up (the forward kinds had theirs while counting)
        if make_quantus is not None:
            oracle = make_quantus()
            extra: dict[str, Any] = {"a_batch": attributions.numpy()}
            if "s" in needs:
                extra["s_batch"] = mask.numpy().astype(np.float64)
            if "f" in needs:
                extra["custom_batch"] = [tuple(row) for row in flags.tolist()]
            if floor_kind == EXPLAIN:
                extra = {"explain_func": explain_func}
                if "G" in needs:
                    extra["a_batch"] = gradient.numpy()
            if hasattr(metric, "softmax"):
                extra["softmax"] = metric.softmax
            functions["quantus"] = lambda oracle=oracle, extra=extra: oracle(**numpy_values, **extra)
            if floor_kind == NONE:
                functions["quantus"]()  # warm-up where it is cheap
        times: dict[str, list[float]] = {label: [] for label in functions}
        peaks: dict[str, int] = {}
        for round_index in range(repeats):
            for label, function in list(functions.items()):
                try:
                    if round_index == 0 and label in ("ours", "quantus"):
                        elapsed, peaks[label] = timed_and_peak(function)
                    else:
                        start = time.perf_counter()
                        function()
                        elapsed = 1000 * (time.perf_counter() - start)
                except Exception as error:  # Quantus fails on some models (InputInvariance: first module no conv)
                    if label != "quantus":
                        raise
                    print(f"{name}: Quantus raised {type(error).__name__}: {error}", file=sys.stderr)
                    del functions[label], times[label]
                    continue
                times[label].append(elapsed)
        medians = {label: statistics.median(values) for label, values in times.items()}
        print(f"{name}: {medians}", file=sys.stderr, flush=True)
        quantus_ms, floor_ms = medians.get("quantus"), medians.get("floor")
        rows.append([
            name, str(images) if images else "-", f"{medians['ours']:.1f}",
            "-" if quantus_ms is None else f"{quantus_ms:.1f}",
            "-" if quantus_ms is None else f"{medians['ours'] / quantus_ms:.3f}",
            "-" if floor_ms is None else f"{floor_ms:.1f}",
            "-" if floor_ms is None else f"{medians['ours'] / floor_ms:.2f}",
            f"{max(peaks['ours'], 0) / MIB:.0f}",
            "-" if "quantus" not in times else f"{max(peaks['quantus'], 0) / MIB:.0f}",
        ])
    print(machine_description(torch.device("cpu")))
    print(f"{model_name}, {batch} images 3x{size}x{size}, steps of {size * size // 16} pixels, 16x16 patches, "
          f"{draws} noise draws, fp32, median of {repeats} interleaved rounds (ours, floor, Quantus)")
    print(format_table(["metric", "images through model", "ours ms", "Quantus ms", "ours / Quantus", "floor ms",
                        "ours / floor", "ours peak MiB", "Quantus peak MiB"], rows))
