"""Timing, peak-memory and table helpers shared by the benchmark scripts.

Timing on CUDA uses CUDA events around each run and synchronizes before reading them; on the CPU it
uses :func:`time.perf_counter`. Every measurement runs the callable a few times first (warm-up) and
reports the median of the repeats; :func:`time_interleaved_ms` interleaves several cases so that
their ratios survive a machine whose load changes.
"""
from __future__ import annotations

import gc
import math
import platform
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, ContextManager, Mapping, Sequence

import torch

MIB = 2 ** 20


def synchronize(device: torch.device) -> None:
    """Wait for all queued work on ``device`` (a no-op on the CPU).

    Parameters
    ----------
    device
        The device whose queue is drained.
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_once_ms(fn: Callable[[], Any], device: torch.device) -> float:
    """Run ``fn`` once and return its wall time in milliseconds, measured as the device sees it."""
    if device.type == "cuda":
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize(device)
        return start.elapsed_time(end)
    begin = time.perf_counter()
    fn()
    return (time.perf_counter() - begin) * 1e3


def time_ms(fn: Callable[[], Any], device: torch.device, warmup: int = 3, repeats: int = 10) -> float:
    """Median wall time of ``fn`` in milliseconds after ``warmup`` untimed runs.

    Parameters
    ----------
    fn
        The work to time; its return value is discarded after each run.
    device
        Where the work runs: CUDA devices are timed with CUDA events, anything else with
        :func:`time.perf_counter`.
    warmup
        Untimed runs before the measurement (allocator, cuDNN autotuning, lazy initialisation).
    repeats
        Timed runs; the median is returned.

    Returns
    -------
    float
        Median milliseconds per run.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    synchronize(device)
    for _ in range(warmup):
        fn()
    synchronize(device)
    return statistics.median(_time_once_ms(fn, device) for _ in range(repeats))


def time_interleaved_ms(cases: Mapping[str, Callable[[], ContextManager[Callable[[], Any]]]],
                        device: torch.device, warmup: int = 1, repeats: int = 10,
                        rounds: int = 5) -> dict[str, float]:
    """Median wall time of several cases in milliseconds, their runs interleaved in rounds.

    Each round opens every case in turn, runs it ``warmup`` times untimed and then times
    ``ceil(repeats / rounds)`` runs, so a machine whose load changes during the measurement
    (other jobs on a shared CPU, GPU clocks) affects all cases alike and their ratios stay meaningful.

    Parameters
    ----------
    cases
        Label -> factory of a context manager that sets the case up, yields the callable to time and
        tears the case down on exit (e.g. registers and removes hooks). Setting up is not timed.
    device
        Where the work runs (CUDA events on CUDA, :func:`time.perf_counter` elsewhere).
    warmup
        Untimed runs of a case after it is opened in each round.
    repeats
        Timed runs per case over all rounds (rounded up to a multiple of ``rounds``).
    rounds
        Number of rounds.

    Returns
    -------
    dict of str to float
        Label -> median milliseconds per run.
    """
    if repeats < 1 or rounds < 1:
        raise ValueError(f"repeats and rounds must be at least 1, got {repeats} and {rounds}")
    per_round = math.ceil(repeats / rounds)
    times: dict[str, list[float]] = {label: [] for label in cases}
    for _ in range(rounds):
        for label, open_case in cases.items():
            with open_case() as run:
                for _ in range(warmup):
                    run()
                synchronize(device)
                times[label] += [_time_once_ms(run, device) for _ in range(per_round)]
    return {label: statistics.median(values) for label, values in times.items()}


def peak_memory_bytes(fn: Callable[[], Any], device: torch.device) -> int | None:
    """Peak CUDA memory allocated while ``fn`` runs once, or ``None`` off CUDA.

    The figure is :func:`torch.cuda.max_memory_allocated` after resetting the peak statistics, so it
    includes everything already resident (model weights, inputs) plus what ``fn`` allocates at its
    high-water mark; the return value of ``fn`` is dropped before the next measurement.

    Parameters
    ----------
    fn
        The work to measure.
    device
        The device to measure; non-CUDA devices give ``None``.

    Returns
    -------
    int or None
        Peak allocated bytes on ``device``.
    """
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device)


def _process_status_kib(field: str) -> int:
    """A ``kB`` field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def rss_peak_growth_bytes(fn: Callable[[], Any]) -> int:
    """Growth of the resident set's high-water mark while ``fn`` runs once (Linux).

    The kernel's peak (``VmHWM``) is reset to the current resident set first (``5`` written to
    ``/proc/self/clear_refs``), so a higher peak earlier in the process (building the model) does
    not hide the one of ``fn``. Run it in a fresh process: memory freed earlier but kept by the
    allocator would otherwise be reused unseen.

    Parameters
    ----------
    fn
        The work to measure.

    Returns
    -------
    int
        Peak resident bytes during ``fn`` minus resident bytes before it.
    """
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")
    before = _process_status_kib("VmRSS")
    fn()
    return (_process_status_kib("VmHWM") - before) * 1024


def machine_description(device: torch.device) -> str:
    """One line naming the machine, the torch version, the thread count and the UTC date.

    Parameters
    ----------
    device
        The device the benchmark runs on.

    Returns
    -------
    str
        A description suitable for the head of a results table.
    """
    if device.type == "cuda":
        hardware = f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    else:
        hardware = f"CPU {platform.processor() or platform.machine()}"
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (f"{hardware}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
            f"python {platform.python_version()}, {date}")


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Render rows as an aligned Markdown (pipe) table.

    Parameters
    ----------
    headers
        Column titles.
    rows
        One sequence of cells per row, as many as ``headers``; cells are rendered with ``str``.

    Returns
    -------
    str
        The table, one line per row, without a trailing newline.
    """
    cells = [[str(cell) for cell in row] for row in rows]
    for row in cells:
        if len(row) != len(headers):
            raise ValueError(f"row has {len(row)} cells, expected {len(headers)}: {row}")
    widths = [max([len(str(title)), *(len(row[i]) for row in cells)]) for i, title in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        return "| " + " | ".join(value.ljust(width) for value, width in zip(values, widths)) + " |"

    separator = "|" + "|".join("-" * (width + 2) for width in widths) + "|"
    return "\n".join([line([str(title) for title in headers]), separator, *(line(row) for row in cells)])
