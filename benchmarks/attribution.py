"""Speed, memory and correctness of LRP composites against a plain input gradient and zennit.

Run ``python -m benchmarks.attribution --device cpu`` (ResNet18 and VGG11-BN, batch 8, 64x64,
10 classes, 2 threads) or ``--device cuda`` (VGG16 and ResNet50, batch 32, 224x224, 1000 classes).
``--case dispatch-bound`` measures ResNet50 and VGG16 at batch 1, 32x32, 10 classes instead: there
even a plain gradient is bound by per-layer dispatch rather than arithmetic, so per-layer Python
overhead shows as it does on a GPU.
For each model it prints one Markdown table: the median milliseconds (all methods timed
interleaved, so a changing machine load affects them alike) of a plain input gradient (forward +
backward to the input, parameters not requiring grad), of each composite of ``lrp_lightning`` and
of the same composite of zennit 0.5.1 (when importable), their ratios, the
cost of building the composite and entering and leaving its context, CUDA peak memory, and the largest deviation
of our relevance from zennit's, computed once per composite in float64 on a few samples so that a
fast but wrong engine shows.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import sys
import traceback
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Iterator, Sequence

import torch

from benchmarks.common import (MIB, format_table, machine_description, peak_memory_bytes, synchronize,
                               time_interleaved_ms, time_ms)

COMPOSITE_NAMES = ("epsilon_gamma_box", "epsilon_plus_flat", "epsilon_alpha2_beta1")
CANONIZER_BY_FAMILY = {"vgg": "VGGCanonizer", "resnet": "ResNetCanonizer"}
DEFAULTS = {
    "cpu": {"model": ["resnet18", "vgg11_bn"], "batch": 8, "size": 64, "classes": 10, "threads": 2},
    "cuda": {"model": ["vgg16", "resnet50"], "batch": 32, "size": 224, "classes": 1000, "threads": None},
}
DISPATCH_BOUND = {"model": ["resnet50", "vgg16"], "batch": 1, "size": 32, "classes": 10}
CHECK_SAMPLES = 2
CHECK_BATCHNORM_EPS = 1e-30
BATCHNORMS = (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)
PROFILE_ROWS = 15


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
        Median milliseconds to build the composite and enter and leave its context (``None`` for
        the gradient).
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


@contextlib.contextmanager
def attributing(engine: Engine, name: str, model_name: str, model: torch.nn.Module,
                x: torch.Tensor) -> Iterator[torch.nn.Module]:
    """Open a fresh composite of ``engine`` on ``model`` in the engine's mode; yield the hooked model.

    Parameters
    ----------
    engine, name, model_name, x
        As for :func:`make_composite`.
    model
        The model to attach the composite to; restored on exit.

    Yields
    ------
    torch.nn.Module
        The model with the composite's canonizers and hooks registered.
    """
    composite = make_composite(engine, name, model_name, x)
    with engine.mode(), composite.context(model) as modified:
        yield modified


@contextlib.contextmanager
def gradient_case(model: torch.nn.Module, x: torch.Tensor, grad_output: torch.Tensor) -> Iterator[Callable[[], Any]]:
    """A timing case (see :func:`benchmarks.common.time_interleaved_ms`): the plain input gradient.

    Parameters
    ----------
    model, x, grad_output
        As for :func:`input_gradient`.

    Yields
    ------
    callable
        One plain input gradient per call.
    """
    yield lambda: input_gradient(model, x, grad_output)


@contextlib.contextmanager
def composite_case(engine: Engine, name: str, model_name: str, model: torch.nn.Module, x: torch.Tensor,
                   grad_output: torch.Tensor) -> Iterator[Callable[[], Any]]:
    """A timing case: one attribution with a composite whose context stays open while the case is.

    Parameters
    ----------
    engine, name, model_name
        As for :func:`make_composite`.
    model, x, grad_output
        As for :func:`input_gradient`.

    Yields
    ------
    callable
        One attribution per call.
    """
    with attributing(engine, name, model_name, model, x) as modified:
        yield lambda: input_gradient(modified, x, grad_output)


def setup_ms(engine: Engine, name: str, model_name: str, model: torch.nn.Module, x: torch.Tensor,
             repeats: int) -> float:
    """Median milliseconds to build a composite and enter and leave its context on ``model``.

    Parameters
    ----------
    engine, name, model_name, x
        As for :func:`make_composite`.
    model
        The model the composite is attached to.
    repeats
        Timed runs, after one warm-up run.

    Returns
    -------
    float
        Median milliseconds.
    """
    def set_up_and_tear_down() -> None:
        with attributing(engine, name, model_name, model, x):
            pass

    return time_ms(set_up_and_tear_down, x.device, 1, repeats)


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
    with attributing(engine, name, model_name, model, x) as modified:
        return input_gradient(modified, x, grad_output)


def profile_table(run: Callable[[], Any], device: torch.device, rows: int = PROFILE_ROWS) -> str:
    """Operator profile of one call of ``run`` (after one untimed call), sorted by self time.

    Parameters
    ----------
    run
        The work to profile.
    device
        Where it runs; on CUDA, kernels are recorded and sorted by self device time.
    rows
        Number of operators listed.

    Returns
    -------
    str
        torch.profiler's table of the most expensive operators.
    """
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    run()
    synchronize(device)
    with profile(activities=activities) as profiler:
        run()
        synchronize(device)
    sort_by = "self_device_time_total" if cuda else "self_cpu_time_total"
    return profiler.key_averages().table(sort_by=sort_by, row_limit=rows)


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


def table_row(method: str, measured: Measurement | str, gradient: Measurement, zennit: Measurement | str | None,
              error: str, cuda: bool) -> list[str]:
    """Cells of one table row.

    Parameters
    ----------
    method
        Row label.
    measured
        The row's measurement, or the text of its failure.
    gradient
        The plain gradient's measurement (denominator of the ratios).
    zennit
        zennit's measurement of the same composite, when there is one.
    error
        Text of the correctness column.
    cuda
        Whether the memory columns are shown.

    Returns
    -------
    list of str
        One cell per column of :func:`table_headers`.
    """
    if isinstance(measured, str):
        return [method, measured, "-", "-", "-"] + (["-", "-"] if cuda else []) + [error]
    zennit_ms = zennit.ms if isinstance(zennit, Measurement) else None
    cells = [method, f"{measured.ms:.2f}", format_ratio(measured.ms, gradient.ms), format_ratio(measured.ms, zennit_ms),
             "-" if measured.context_ms is None else f"{measured.context_ms:.2f}"]
    if cuda:
        cells += ["-" if measured.peak_bytes is None else f"{measured.peak_bytes / MIB:.0f}",
                  format_ratio(measured.peak_bytes, gradient.peak_bytes)]
    return cells + [error]


def table_headers(cuda: bool) -> list[str]:
    """Column titles of a model's table (memory columns only on CUDA)."""
    memory = ["peak MiB", "peak x gradient"] if cuda else []
    return ["method", "ms", "x gradient", "x zennit", "context ms", *memory, "max rel err vs zennit (fp64)"]


def failure_text(error: Exception) -> str:
    """Print the traceback of ``error`` to stderr and return a short cell text for it."""
    traceback.print_exception(error)
    return f"failed: {type(error).__name__}"


def correctness(ours: Engine, zennit: Engine, name: str, model_name: str, model: torch.nn.Module,
                x: torch.Tensor, grad_output: torch.Tensor) -> str:
    """Max relative error of our relevance against zennit's, in float64 on the first few samples.

    The float64 copy of the model has its BatchNorm ``eps`` set to a negligible value: on torch >= 2.10
    (which rejects ``eps = 0``) the forward of a model canonized by zennit 0.5.1's BatchNorm merge
    deviates from the original model's by about ``eps`` per BatchNorm (measured: relative 5e-5 on a
    ResNet18, 2e-5 on a VGG11-BN), while ours is exact; a negligible ``eps`` removes that known
    deviation of the reference and leaves the differences of the rules.

    Parameters
    ----------
    ours, zennit
        The engine under test and the reference.
    name, model_name
        Composite and model names.
    model, x, grad_output
        The float32 model and inputs; a float64 copy of each is used.

    Returns
    -------
    str
        The error in scientific notation, or the text of a failure.
    """
    model64 = copy.deepcopy(model).double()
    for module in model64.modules():
        if isinstance(module, BATCHNORMS):
            module.eps = CHECK_BATCHNORM_EPS
    x64 = x[:CHECK_SAMPLES].double()
    grad_output64 = grad_output[:CHECK_SAMPLES].double()
    try:
        error = max_relative_error(relevance(ours, name, model_name, model64, x64, grad_output64),
                                   relevance(zennit, name, model_name, model64, x64, grad_output64))
    except Exception as failure:  # the table should still show the timings
        return failure_text(failure)
    return f"{error:.1e}"


def benchmark_model(model_name: str, args: argparse.Namespace, ours: Engine, zennit: Engine | None) -> tuple[str, bool]:
    """Measure one model with every composite and engine and render its table (and profiles).

    Every case first runs ``args.warmup`` times (a case that raises is reported in its cell, with
    its traceback on stderr, and left out); then all cases are timed interleaved; then peak memory
    and set-up cost are measured case by case; the float64 correctness check comes last so its
    model copy is not resident during the measurements.

    Parameters
    ----------
    model_name
        torchvision model name.
    args
        Parsed command line.
    ours
        The engine under test.
    zennit
        The reference engine, or ``None``.

    Returns
    -------
    tuple of (str, bool)
        The Markdown section and whether every measurement succeeded.
    """
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    torch.manual_seed(args.seed)
    model = build_model(model_name, args.classes).to(device)
    x = torch.randn(args.batch, 3, args.size, args.size, device=device)
    grad_output = one_hot_targets(args.batch, args.classes, device)
    engines = [ours] + ([zennit] if zennit is not None else [])

    cases: dict[str, Callable[[], ContextManager[Callable[[], Any]]]] = {
        "gradient": lambda: gradient_case(model, x, grad_output)}
    for name in args.composite:
        for engine in engines:
            cases[f"{engine.label} {name}"] = functools.partial(composite_case, engine, name, model_name, model, x,
                                                                grad_output)
    failures: dict[str, str] = {}
    for label, open_case in cases.items():
        try:
            with open_case() as run:
                for _ in range(args.warmup):
                    run()
        except Exception as error:  # one broken cell must not lose the rest of a GPU run
            failures[label] = failure_text(error)
    working = {label: open_case for label, open_case in cases.items() if label not in failures}
    times = time_interleaved_ms(working, device, warmup=1, repeats=args.repeats, rounds=args.rounds)
    measured: dict[str, Measurement | str] = dict(failures)
    for label, open_case in working.items():
        with open_case() as run:
            measured[label] = Measurement(times[label], peak_memory_bytes(run, device))
    for name in args.composite:
        for engine in engines:
            label = f"{engine.label} {name}"
            if isinstance(measured[label], Measurement):
                measured[label].context_ms = setup_ms(engine, name, model_name, model, x, args.repeats)

    gradient = measured["gradient"]
    if not isinstance(gradient, Measurement):
        raise RuntimeError(f"the plain gradient of {model_name} failed: {gradient}")
    rows = [table_row("gradient", gradient, gradient, None, "-", cuda)]
    for name in args.composite:
        error = "-" if zennit is None else correctness(ours, zennit, name, model_name, model, x, grad_output)
        reference = measured[f"{zennit.label} {name}"] if zennit is not None else None
        rows.append(table_row(f"{ours.label} {name}", measured[f"{ours.label} {name}"], gradient, reference, error,
                              cuda))
        if zennit is not None:
            rows.append(table_row(f"{zennit.label} {name}", measured[f"{zennit.label} {name}"], gradient, None, "-",
                                  cuda))
    all_ok = not any(cell.startswith("failed") for row in rows for cell in row)

    sections = [f"### {model_name}: batch {args.batch}, {args.size}x{args.size}, {args.classes} classes, "
                f"float32, {args.device}", format_table(table_headers(cuda), rows)]
    if args.profile:
        for label in ["gradient", *(f"{ours.label} {name}" for name in args.composite)]:
            if label in working:
                try:
                    with working[label]() as run:
                        table = profile_table(run, device)
                except Exception as error:  # a profiler problem must not lose the remaining models
                    table = failure_text(error) + "\n"
                    all_ok = False
                sections.append(f"#### profile: {label}\n\n```\n{table}```")
    return "\n\n".join(sections), all_ok


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
    parser.add_argument("--case", choices=("standard", "dispatch-bound"), default="standard",
                        help="dispatch-bound: resnet50 and vgg16, batch 1, 32x32, 10 classes (defaults for the "
                        "settings not given)")
    parser.add_argument("--model", nargs="+", help="torchvision VGG/ResNet names "
                        "(default: resnet18 vgg11_bn on cpu, vgg16 resnet50 on cuda)")
    parser.add_argument("--batch", type=int, help="batch size (default: 8 on cpu, 32 on cuda)")
    parser.add_argument("--size", type=int, help="image height and width (default: 64 on cpu, 224 on cuda)")
    parser.add_argument("--classes", type=int, help="output classes (default: 10 on cpu, 1000 on cuda)")
    parser.add_argument("--composite", nargs="+", default=list(COMPOSITE_NAMES), help="registered composite names")
    parser.add_argument("--repeats", type=int, default=10, help="timed runs per method; the median is reported")
    parser.add_argument("--rounds", type=int, default=5,
                        help="the timed runs of all methods are interleaved in this many rounds")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs of each method before timing")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: 2 on cpu, unchanged on cuda)")
    parser.add_argument("--seed", type=int, default=0, help="torch.manual_seed for weights and inputs")
    parser.add_argument("--no-zennit", action="store_true", help="skip zennit even when it is importable")
    parser.add_argument("--profile", action="store_true",
                        help="append torch.profiler operator tables of the gradient and of our composites")
    parser.add_argument("--generic", action="store_true",
                        help="force lrp_lightning's generic autograd path (lrp_lightning.core.fast_path(False))")
    args = parser.parse_args(argv)
    defaults = dict(DEFAULTS[args.device], **(DISPATCH_BOUND if args.case == "dispatch-bound" else {}))
    for key, value in defaults.items():
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
    for name in args.composite:
        ours.get_composite(name)  # an unknown name raises a KeyError listing the registered ones
    zennit = None if args.no_zennit else load_zennit()
    print(f"# Attribution benchmark\n\n{machine_description(device)}")
    if device.type == "cuda":
        print(f"TF32: cudnn.allow_tf32={torch.backends.cudnn.allow_tf32}, "
              f"cuda.matmul.allow_tf32={torch.backends.cuda.matmul.allow_tf32}")
    print(f"median of {args.repeats} runs after {args.warmup} warm-up runs, all methods interleaved in "
          f"{args.rounds} rounds (one more warm-up run each); 'context ms' = build the composite, enter "
          f"and leave its context; error column: max|ours - zennit| / max|zennit| on {CHECK_SAMPLES} samples "
          f"in float64, BatchNorm eps {CHECK_BATCHNORM_EPS:g} (see correctness())\n")
    all_ok = True
    for model_name in args.model:
        section, ok = benchmark_model(model_name, args, ours, zennit)
        all_ok &= ok
        print(section + "\n", flush=True)
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
