"""Speed, memory and correctness of LRP composites against a plain input gradient and zennit.

Run ``python -m benchmarks.attribution --device cpu`` (ResNet18 and VGG11-BN, batch 8, 64x64,
10 classes, 2 threads) or ``--device cuda`` (VGG16 and ResNet50, batch 32, 224x224, 1000 classes).
For each model it prints one Markdown table: the median milliseconds of a plain input gradient
(forward + backward to the input, parameters not requiring grad), of each composite of
``lrp_lightning`` and of the same composite of zennit 0.5.1 (when importable), their ratios, the
cost of entering and leaving the composite's context, CUDA peak memory, and the largest deviation
of our relevance from zennit's, computed once per composite in float64 on a few samples so that a
fast but wrong engine shows.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import sys
import traceback
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Sequence

import torch

from benchmarks.common import MIB, format_table, machine_description, peak_memory_bytes, time_ms

COMPOSITE_NAMES = ("epsilon_gamma_box", "epsilon_plus_flat", "epsilon_alpha2_beta1")
CANONIZER_BY_FAMILY = {"vgg": "VGGCanonizer", "resnet": "ResNetCanonizer"}
DEFAULTS = {
    "cpu": {"model": ["resnet18", "vgg11_bn"], "batch": 8, "size": 64, "classes": 10, "threads": 2},
    "cuda": {"model": ["vgg16", "resnet50"], "batch": 32, "size": 224, "classes": 1000, "threads": None},
}
CHECK_SAMPLES = 2


@dataclass
class Engine:
    """An LRP implementation under test: where its composites and torchvision canonizers come from.

    Attributes
    ----------
    label
        Name printed in the table.
    get_composite
        Maps a registered composite name to its class.
    canonizers
        Module holding ``VGGCanonizer`` and ``ResNetCanonizer``.
    mode
        Factory of the context manager every call of this engine runs in (e.g. the generic path).
    """

    label: str
    get_composite: Callable[[str], type]
    canonizers: Any
    mode: Callable[[], ContextManager[Any]] = contextlib.nullcontext


@dataclass
class Measurement:
    """Timing and memory of one method on one model.

    Attributes
    ----------
    ms
        Median milliseconds per attribution.
    peak_bytes
        CUDA peak allocated bytes during one attribution, ``None`` off CUDA.
    context_ms
        Median milliseconds to enter and leave the composite's context (``None`` for the gradient).
    """

    ms: float
    peak_bytes: int | None
    context_ms: float | None = None


def load_ours(generic: bool) -> Engine:
    """The ``lrp_lightning`` engine, optionally forced onto its generic autograd path.

    Parameters
    ----------
    generic
        Run every call inside ``lrp_lightning.core.fast_path(False)``. Engines without that switch
        have only the generic path; a note says so on stderr.

    Returns
    -------
    Engine
        The engine description.
    """
    import lrp_lightning.core
    import lrp_lightning.torchvision
    from lrp_lightning.composites import get_composite

    mode: Callable[[], ContextManager[Any]] = contextlib.nullcontext
    label = "ours"
    if generic:
        label = "ours (generic)"
        if hasattr(lrp_lightning.core, "fast_path"):
            mode = lambda: lrp_lightning.core.fast_path(False)  # noqa: E731
        else:
            print("note: lrp_lightning.core has no fast_path switch; --generic changes nothing",
                  file=sys.stderr)
    return Engine(label, get_composite, lrp_lightning.torchvision, mode)


def load_zennit() -> Engine | None:
    """zennit's engine, or ``None`` (with a note on stderr) when zennit is not importable.

    Returns
    -------
    Engine or None
        The engine description.
    """
    try:
        import zennit.composites
        import zennit.torchvision
    except ImportError as error:
        print(f"note: zennit not importable ({error}); its columns stay empty", file=sys.stderr)
        return None
    return Engine("zennit", zennit.composites.COMPOSITES.__getitem__, zennit.torchvision)


def build_model(name: str, classes: int) -> torch.nn.Module:
    """A torchvision model with random weights in eval mode whose parameters do not require grad.

    Parameters
    ----------
    name
        A torchvision VGG or ResNet name, e.g. ``vgg16``, ``vgg11_bn``, ``resnet50``.
    classes
        Number of output classes.

    Returns
    -------
    torch.nn.Module
        The model, on the CPU.
    """
    import torchvision

    canonizer_name(name)
    model = torchvision.models.get_model(name, weights=None, num_classes=classes)
    model.eval().requires_grad_(False)
    return model


def canonizer_name(model_name: str) -> str:
    """Name of the torchvision canonizer class matching ``model_name``.

    Parameters
    ----------
    model_name
        A torchvision model name.

    Returns
    -------
    str
        ``VGGCanonizer`` or ``ResNetCanonizer``.

    Raises
    ------
    ValueError
        If the model belongs to neither family.
    """
    for family, canonizer in CANONIZER_BY_FAMILY.items():
        if model_name.startswith(family):
            return canonizer
    raise ValueError(f"model {model_name!r} is neither a torchvision VGG nor a ResNet; "
                     f"use a name starting with one of {sorted(CANONIZER_BY_FAMILY)}")


def input_bounds(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel minimum and maximum of a batch, expanded to its shape (EpsilonGammaBox bounds).

    Parameters
    ----------
    x
        Input batch of shape (N, C, ...).

    Returns
    -------
    tuple of torch.Tensor
        ``low`` and ``high``, each of the shape of ``x``.
    """
    reduce_dims = [0, *range(2, x.dim())]
    low = x.amin(dim=reduce_dims, keepdim=True).expand_as(x).clone()
    high = x.amax(dim=reduce_dims, keepdim=True).expand_as(x).clone()
    return low, high


def make_composite(engine: Engine, name: str, model_name: str, x: torch.Tensor) -> Any:
    """A fresh composite of ``engine`` with the model's canonizer (and bounds of ``x`` for ZBox).

    Parameters
    ----------
    engine
        The implementation to take the composite from.
    name
        Registered composite name.
    model_name
        The torchvision model name, which picks the canonizer.
    x
        The input batch; EpsilonGammaBox takes its per-channel bounds.

    Returns
    -------
    Composite
        The composite, not yet registered.
    """
    kwargs: dict[str, Any] = {"canonizers": [getattr(engine.canonizers, canonizer_name(model_name))()]}
    if name == "epsilon_gamma_box":
        kwargs["low"], kwargs["high"] = input_bounds(x)
    return engine.get_composite(name)(**kwargs)


def input_gradient(model: torch.nn.Module, x: torch.Tensor, grad_output: torch.Tensor) -> torch.Tensor:
    """Gradient of ``model(x)`` weighted by ``grad_output`` with respect to ``x``.

    Inside a composite's context this is the relevance; on the bare model the plain gradient.

    Parameters
    ----------
    model
        The (possibly hooked) model.
    x
        Input batch; it is not modified.
    grad_output
        Weights of the outputs, e.g. one-hot target vectors.

    Returns
    -------
    torch.Tensor
        Tensor of the shape of ``x``.
    """
    x = x.detach().requires_grad_(True)
    gradient, = torch.autograd.grad(model(x), x, grad_outputs=grad_output)
    return gradient


def measure_gradient(model: torch.nn.Module, x: torch.Tensor, grad_output: torch.Tensor,
                     warmup: int, repeats: int) -> Measurement:
    """Time and measure the plain input gradient.

    Parameters
    ----------
    model, x, grad_output
        As for :func:`input_gradient`.
    warmup, repeats
        As for :func:`benchmarks.common.time_ms`.

    Returns
    -------
    Measurement
        Its timing and peak memory.
    """
    run = lambda: input_gradient(model, x, grad_output)  # noqa: E731
    return Measurement(time_ms(run, x.device, warmup, repeats), peak_memory_bytes(run, x.device))


def measure_composite(engine: Engine, name: str, model_name: str, model: torch.nn.Module,
                      x: torch.Tensor, grad_output: torch.Tensor, warmup: int, repeats: int) -> Measurement:
    """Time and measure one composite of one engine on one model.

    The attribution is timed inside an open context (hooks registered once); entering and leaving
    the context is timed separately.

    Parameters
    ----------
    engine
        The implementation.
    name
        Registered composite name.
    model_name
        The torchvision model name (picks the canonizer).
    model, x, grad_output
        As for :func:`input_gradient`.
    warmup, repeats
        As for :func:`benchmarks.common.time_ms`.

    Returns
    -------
    Measurement
        Its timing, context cost and peak memory.
    """
    composite = make_composite(engine, name, model_name, x)

    def enter_and_leave() -> None:
        with composite.context(model):
            pass

    with engine.mode():
        with composite.context(model) as modified:
            run = lambda: input_gradient(modified, x, grad_output)  # noqa: E731
            ms = time_ms(run, x.device, warmup, repeats)
            peak = peak_memory_bytes(run, x.device)
        context_ms = time_ms(enter_and_leave, x.device, 1, repeats)
    return Measurement(ms, peak, context_ms)


def relevance(engine: Engine, name: str, model_name: str, model: torch.nn.Module, x: torch.Tensor,
              grad_output: torch.Tensor) -> torch.Tensor:
    """Relevance of ``x`` under a fresh composite of ``engine``.

    Parameters
    ----------
    engine, name, model_name
        As for :func:`make_composite`.
    model, x, grad_output
        As for :func:`input_gradient`.

    Returns
    -------
    torch.Tensor
        The relevance, shaped like ``x``.
    """
    composite = make_composite(engine, name, model_name, x)
    with engine.mode(), composite.context(model) as modified:
        return input_gradient(modified, x, grad_output)


def max_relative_error(ours: torch.Tensor, reference: torch.Tensor) -> float:
    """Largest absolute deviation of ``ours`` from ``reference``, relative to ``reference``'s largest magnitude.

    Parameters
    ----------
    ours, reference
        Tensors of one shape.

    Returns
    -------
    float
        ``max|ours - reference| / max|reference|`` (``inf`` when the reference is all zeros and
        ``ours`` is not).
    """
    deviation = (ours - reference).abs().max().item()
    scale = reference.abs().max().item()
    if scale == 0.0:
        return 0.0 if deviation == 0.0 else float("inf")
    return deviation / scale


def one_hot_targets(batch: int, classes: int, device: torch.device) -> torch.Tensor:
    """One-hot rows for targets 0, 1, 2, ... (modulo ``classes``).

    Parameters
    ----------
    batch, classes
        Shape of the result.
    device
        Where it lives.

    Returns
    -------
    torch.Tensor
        Float tensor of shape (batch, classes).
    """
    targets = torch.arange(batch, device=device) % classes
    return torch.nn.functional.one_hot(targets, classes).float()


def format_ratio(numerator: float | None, denominator: float | None) -> str:
    """``numerator / denominator`` as ``1.23x``, or ``-`` when either is missing."""
    if numerator is None or not denominator:
        return "-"
    return f"{numerator / denominator:.2f}x"


def format_optional(value: float | None, pattern: str) -> str:
    """``value`` formatted with ``pattern``, or ``-`` when it is missing."""
    return "-" if value is None else pattern.format(value)


def benchmark_model(model_name: str, args: argparse.Namespace, engines: Sequence[Engine],
                    zennit: Engine | None) -> tuple[str, bool]:
    """Measure one model with every composite and engine and render its table.

    Parameters
    ----------
    model_name
        torchvision model name.
    args
        Parsed command line.
    engines
        The engines to time (ours first, then zennit when present).
    zennit
        The reference engine for the correctness column, or ``None``.

    Returns
    -------
    tuple of (str, bool)
        The table and whether every measurement succeeded.
    """
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    model = build_model(model_name, args.classes).to(device)
    x = torch.randn(args.batch, 3, args.size, args.size, device=device)
    grad_output = one_hot_targets(args.batch, args.classes, device)

    gradient = measure_gradient(model, x, grad_output, args.warmup, args.repeats)
    cuda = device.type == "cuda"
    headers = ["method", "ms", "x gradient", "x zennit", "context ms"]
    headers += ["peak MiB", "peak x gradient"] if cuda else []
    headers += ["max rel err vs zennit (fp64)"]

    def row(method: str, measured: Measurement | None, reference: Measurement | None, error: str,
            failure: str | None = None) -> list[str]:
        if measured is None:
            cells = [method, failure or "-", "-", "-", "-"] + (["-", "-"] if cuda else [])
            return cells + [error]
        cells = [method, f"{measured.ms:.2f}", format_ratio(measured.ms, gradient.ms),
                 format_ratio(measured.ms, reference.ms if reference else None),
                 format_optional(measured.context_ms, "{:.2f}")]
        if cuda:
            cells += [format_optional(measured.peak_bytes / MIB if measured.peak_bytes else None, "{:.0f}"),
                      format_ratio(measured.peak_bytes, gradient.peak_bytes)]
        return cells + [error]

    rows = [row("gradient", gradient, None, "-")]
    model64 = copy.deepcopy(model).double()
    x64 = x[:CHECK_SAMPLES].double()
    grad_output64 = grad_output[:CHECK_SAMPLES].double()
    all_ok = True
    for name in args.composite:
        measured: dict[str, Measurement | None] = {}
        failures: dict[str, str] = {}
        for engine in engines:
            try:
                measured[engine.label] = measure_composite(engine, name, model_name, model, x, grad_output,
                                                           args.warmup, args.repeats)
            except Exception as error:  # one broken cell must not lose the rest of a GPU run
                traceback.print_exc()
                measured[engine.label] = None
                failures[engine.label] = f"failed: {type(error).__name__}"
                all_ok = False
        error_text = "-"
        if zennit is not None:
            try:
                ours64 = relevance(engines[0], name, model_name, model64, x64, grad_output64)
                reference64 = relevance(zennit, name, model_name, model64, x64, grad_output64)
                error_text = f"{max_relative_error(ours64, reference64):.1e}"
            except Exception as error:
                traceback.print_exc()
                error_text = f"failed: {type(error).__name__}"
                all_ok = False
        reference = measured.get(zennit.label) if zennit is not None else None
        for engine in engines:
            is_ours = engine is engines[0]
            rows.append(row(f"{engine.label} {name}", measured[engine.label], reference if is_ours else None,
                            error_text if is_ours else "-", failures.get(engine.label)))
    title = (f"### {model_name}: batch {args.batch}, {args.size}x{args.size}, {args.classes} classes, "
             f"float32, {args.device}")
    return f"{title}\n\n{format_table(headers, rows)}", all_ok


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line, filling device-dependent defaults.

    Parameters
    ----------
    argv
        Arguments without the program name; ``None`` reads ``sys.argv``.

    Returns
    -------
    argparse.Namespace
        The settings.
    """
    parser = argparse.ArgumentParser(prog="python -m benchmarks.attribution", description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=sorted(DEFAULTS), default="cpu")
    parser.add_argument("--model", nargs="+", help="torchvision VGG/ResNet names "
                        "(default: resnet18 vgg11_bn on cpu, vgg16 resnet50 on cuda)")
    parser.add_argument("--batch", type=int, help="batch size (default: 8 on cpu, 32 on cuda)")
    parser.add_argument("--size", type=int, help="image height and width (default: 64 on cpu, 224 on cuda)")
    parser.add_argument("--classes", type=int, help="output classes (default: 10 on cpu, 1000 on cuda)")
    parser.add_argument("--composite", nargs="+", default=list(COMPOSITE_NAMES), help="registered composite names")
    parser.add_argument("--repeats", type=int, default=10, help="timed runs; the median is reported")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs before timing")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: 2 on cpu, unchanged on cuda)")
    parser.add_argument("--seed", type=int, default=0, help="torch.manual_seed for weights and inputs")
    parser.add_argument("--no-zennit", action="store_true", help="skip zennit even when it is importable")
    parser.add_argument("--generic", action="store_true",
                        help="force lrp_lightning's generic autograd path (lrp_lightning.core.fast_path(False))")
    args = parser.parse_args(argv)
    for key, value in DEFAULTS[args.device].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but torch.cuda.is_available() is False")
    for model_name in args.model:
        try:
            canonizer_name(model_name)
        except ValueError as error:
            parser.error(str(error))
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print one table per model.

    Parameters
    ----------
    argv
        Arguments without the program name; ``None`` reads ``sys.argv``.

    Returns
    -------
    int
        Exit status: 0 when every measurement succeeded, 1 otherwise.
    """
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    ours = load_ours(args.generic)
    zennit = None if args.no_zennit else load_zennit()
    engines = [ours] + ([zennit] if zennit is not None else [])
    print(f"# Attribution benchmark\n\n{machine_description(device)}")
    if device.type == "cuda":
        print(f"TF32: cudnn.allow_tf32={torch.backends.cudnn.allow_tf32}, "
              f"cuda.matmul.allow_tf32={torch.backends.cuda.matmul.allow_tf32}")
    print(f"median of {args.repeats} runs after {args.warmup} warm-up runs; 'context ms' = enter + leave the "
          f"composite's context; error column: max|ours - zennit| / max|zennit| on {CHECK_SAMPLES} samples "
          f"in float64\n")
    all_ok = True
    for model_name in args.model:
        table, ok = benchmark_model(model_name, args, engines, zennit)
        all_ok &= ok
        print(table + "\n", flush=True)
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
