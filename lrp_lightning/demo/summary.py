"""Reading the demo's scalars back from its TensorBoard event files and printing them per epoch."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lrp_lightning.callbacks.attribution.dashboard import metric_tag

ACCURACY_TAG = "val/acc"


def read_scalars(log_dir: str | Path) -> dict[str, list[float]]:
    """Every scalar series in the event files of one run, in step order.

    Parameters
    ----------
    log_dir : str or Path
        A run's directory (the one holding ``events.out.tfevents.*``).

    Returns
    -------
    dict of str to list of float
        Tag to its values, one per logged step.
    """
    accumulator = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    accumulator.Reload()
    return {tag: [event.value for event in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]}


def epoch_table(
    scalars: Mapping[str, Sequence[float]], explainers: Sequence[str], metrics: Mapping[str, str]
) -> str:
    """A plain-text table: one row per validation epoch, ``val/acc`` and each explainer's metrics.

    Parameters
    ----------
    scalars : dict of str to list of float
        As returned by :func:`read_scalars`.
    explainers : sequence of str
        Explainer display names (the ``<name>`` of ``attribution/<name>/<metric>``).
    metrics : mapping of str to str
        Metric name to its column heading; one column each per explainer.

    Returns
    -------
    str
        The table; a missing value shows as ``-``.
    """
    columns = [(explainer, metric) for explainer in explainers for metric in metrics]
    series = [scalars.get(ACCURACY_TAG, [])] + [scalars.get(metric_tag(e, m), []) for e, m in columns]
    width = max([len(heading) for heading in metrics.values()] + [6])
    group = len(metrics) * (width + 1) - 1
    header_groups = " | ".join(f"{explainer[:group]:^{group}}" for explainer in explainers)
    header_metrics = " | ".join(" ".join(f"{heading:>{width}}" for heading in metrics.values()) for _ in explainers)
    lines = [f"{'':>5} {'':>7} | {header_groups}", f"{'epoch':>5} {'val/acc':>7} | {header_metrics}"]
    for row in range(max(len(values) for values in series)):
        cells = [f"{values[row]:.3f}" if row < len(values) else "-" for values in series]
        groups = [
            " ".join(f"{cell:>{width}}" for cell in cells[1 + i * len(metrics) : 1 + (i + 1) * len(metrics)])
            for i in range(len(explainers))
        ]
        lines.append(f"{row + 1:>5} {cells[0]:>7} | " + " | ".join(groups))
    return "\n".join(lines)
