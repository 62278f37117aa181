"""Where pictures and tables go: one sink per logger of the Trainer.

Every callback hands its pictures (uint8 (3, H, W) tensors: heatmap grids, token heatmaps, figures)
and its tables (:class:`~lrp_lightning.callbacks.tables.Table`: rule maps, token relevance, cluster
summaries) to :func:`sinks_for`, which gives one sink per logger in ``trainer.loggers``, each
writing with its logger's own calls:

=====================  ==========================================================================
logger                 sink
=====================  ==========================================================================
``TensorBoardLogger``  :class:`TensorBoardSink`: ``add_image``, tables as Markdown ``add_text``,
                       the custom-scalars dashboard
``WandbLogger``        :class:`~lrp_lightning.callbacks.wandb_sink.WandbSink`: ``log_image`` with
                       captions, ``wandb.Table``
``MLFlowLogger``       :class:`~lrp_lightning.callbacks.mlflow_sink.MLflowSink`: stepped
                       ``log_image``, figures through ``log_figure``, ``log_table``
``CometLogger``        :class:`~lrp_lightning.callbacks.comet_sink.CometSink`: ``log_image`` with
                       name and step, ``log_table``
another with a         :class:`FileSink`: PNG (with a caption ``.txt``), Markdown and CSV files under
                       ``<log_dir>/attribution/``
``log_dir`` (CSV)
none of these          :class:`FileSink` under ``trainer.default_root_dir``
=====================  ==========================================================================

A logger of another kind gets a sink through :func:`register_sink` (see :class:`Sink`). Scalars
never go through a sink: ``pl_module.log`` sends them to every logger (so checkpoints and early
stopping can monitor them), in the same ``log_metrics`` call of Lightning's as the user's scalars;
while a callback fits, :mod:`~lrp_lightning.callbacks.logger_guard` keeps a logger whose backend went
out of reach from stopping training. Callbacks use sinks on global rank zero only. Each sink is made
once per logger and wrapped in a :class:`GuardedSink`: a sink that fails warns once and training goes on.
The logger packages (wandb, mlflow, comet_ml) are never imported here; their sinks call the
Lightning logger they were made for.
"""
from __future__ import annotations

import csv
import io
import threading
import warnings
import weakref
from pathlib import Path
from typing import Any, Callable, Optional, Protocol, runtime_checkable

import torch

from lrp_lightning.callbacks.drawn import DrawnFigure
from lrp_lightning.callbacks.logger_guard import LoggerGuard, logger_guard
from lrp_lightning.callbacks.tables import Table
from lrp_lightning.image import save_png

FILE_SINK_SUBDIR = "attribution"


@runtime_checkable
class Sink(Protocol):
    """What a callback writes to: pictures and tables at a training step.

    Write one for a logger this library does not know (Neptune, Aim, ...) and register it with
    :func:`register_sink`; every callback then logs to it. A sink may also have a ``layout(layout)``
    method (a dashboard description, see
    :func:`~lrp_lightning.callbacks.attribution.dashboard.custom_scalars_layout`), called once per run; sinks
    without one are skipped for it. A sink may have a ``figure(tag, figure, step, epoch)`` method, given
    the ``matplotlib.figure.Figure`` of a plot (curves, spectra, prototypes); sinks without one get the
    plot's picture through :meth:`image`. A sink that writes through the logger's own client sets
    ``through_logger = True``: once the logger's calls find its backend out of reach, the sink's calls
    are dropped for the rest of the fit too. A sink whose client must only be called from the training thread
    (because the logger's own scalar logging there would race with it) sets ``thread_safe = False``;
    the AttributionCallback then writes on the training thread instead of its background thread.
    Exceptions a sink raises become one warning per sink (:class:`GuardedSink`); training goes on.

    Examples
    --------
    >>> class PrintSink:
    ...     def image(self, tag, image, step, epoch, caption=None):
    ...         print(tag, tuple(image.shape), step)
    ...     def table(self, tag, table, step, epoch):
    ...         print(tag, table.columns, len(table.rows))
    """

    def image(self, tag: str, image: torch.Tensor, step: int, epoch: int, caption: Optional[str] = None) -> None:
        """Log a uint8 (3, H, W) picture under ``tag`` at ``step`` (``trainer.global_step``).

        Parameters
        ----------
        tag : str
            E.g. ``attribution/<explainer>/grid``.
        image : torch.Tensor
            uint8, (3, H, W), on the CPU.
        step, epoch : int
            ``trainer.global_step`` and ``trainer.current_epoch`` (the step scalars of the same
            validation are logged at).
        caption : str, optional
            What the picture shows (for heatmap grids: per sample its index, label and prediction).
        """

    def table(self, tag: str, table: Table, step: int, epoch: int) -> None:
        """Log ``table`` (columns and rows, and its Markdown) under ``tag`` at ``step``.

        Parameters
        ----------
        tag : str
            E.g. ``attribution/<explainer>/rule_map``.
        table : Table
            See :class:`~lrp_lightning.callbacks.tables.Table`.
        step, epoch : int
            As for :meth:`image`.
        """


SinkFactory = Callable[[Any], Sink]
_REGISTERED: list[tuple[type, SinkFactory]] = []
# one guarded sink per logger (and one fallback per trainer), shared by every callback of the run
_MADE: "weakref.WeakKeyDictionary[Any, GuardedSink]" = weakref.WeakKeyDictionary()


def register_sink(logger_type: type, factory: SinkFactory) -> None:
    """Send the callbacks' pictures and tables to loggers of ``logger_type`` through ``factory(logger)``.

    Registered sinks take precedence over the built-in ones (the latest registration first), so a
    built-in logger can also be given a sink of the user's.

    Parameters
    ----------
    logger_type : type
        A ``lightning.pytorch.loggers.Logger`` subclass.
    factory : callable
        ``logger -> Sink``, called once per logger, on global rank zero, when a callback first logs.

    Raises
    ------
    TypeError
        If ``logger_type`` is not a class or ``factory`` not callable.
    """
    if not isinstance(logger_type, type):
        raise TypeError(f"register_sink needs a logger class, got {logger_type!r}")
    if not callable(factory):
        raise TypeError(f"register_sink needs a callable logger -> Sink, got {factory!r}")
    _REGISTERED.insert(0, (logger_type, factory))


def unregister_sink(logger_type: type) -> None:
    """Remove the sinks registered for ``logger_type`` (loggers that already have a sink keep it).

    Parameters
    ----------
    logger_type : type
        As given to :func:`register_sink`.
    """
    _REGISTERED[:] = [(registered, factory) for registered, factory in _REGISTERED if registered is not logger_type]


class TensorBoardSink:
    """Images, tables (as Markdown text) and the dashboard layout through a ``SummaryWriter``.

    Parameters
    ----------
    writer : SummaryWriter
        ``TensorBoardLogger.experiment``.
    """

    def __init__(self, writer: Any) -> None:
        self.writer = writer

    def image(self, tag: str, image: torch.Tensor, step: int, epoch: int, caption: Optional[str] = None) -> None:
        """Log a uint8 (3, H, W) image under ``tag`` at ``step`` (TensorBoard images have no caption)."""
        self.writer.add_image(tag, image.cpu().numpy(), global_step=step, dataformats="CHW")

    def table(self, tag: str, table: Table, step: int, epoch: int) -> None:
        """Log the table's Markdown as text under ``tag`` at ``step``."""
        self.writer.add_text(tag, table.markdown, global_step=step)

    def layout(self, layout: dict) -> None:
        """Write a custom-scalars layout (see :func:`~lrp_lightning.callbacks.attribution.dashboard.custom_scalars_layout`)."""
        self.writer.add_custom_scalars(layout)


class FileSink:
    """PNG images (captions as ``.txt`` files beside them), and tables as Markdown and CSV files, under
    ``<root>/attribution/<tag>/``.

    Parameters
    ----------
    root : str or Path
        The directory (e.g. a ``CSVLogger``'s ``log_dir``).
    """

    def __init__(self, root: Any) -> None:
        self.root = Path(root) / FILE_SINK_SUBDIR

    def _path(self, tag: str, epoch: int, step: int, suffix: str) -> Path:
        relative = tag.split("/", 1)[1] if tag.startswith(f"{FILE_SINK_SUBDIR}/") else tag
        path = self.root / relative / f"epoch={epoch:03d}-step={step:06d}{suffix}"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def image(self, tag: str, image: torch.Tensor, step: int, epoch: int, caption: Optional[str] = None) -> None:
        """Save a uint8 (3, H, W) image as a PNG file, its caption (if any) beside it as a ``.txt`` file of
        the same name."""
        save_png(image.cpu(), self._path(tag, epoch, step, ".png"))
        if caption is not None:
            self._path(tag, epoch, step, ".txt").write_text(caption + "\n", encoding="utf-8")

    def table(self, tag: str, table: Table, step: int, epoch: int) -> None:
        """Save the table as ``.md`` (its Markdown) and ``.csv`` (its columns and rows)."""
        self._path(tag, epoch, step, ".md").write_text(table.markdown + "\n", encoding="utf-8")
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(table.columns)
        writer.writerows(table.rows)
        self._path(tag, epoch, step, ".csv").write_text(buffer.getvalue(), encoding="utf-8")


class GuardedSink:
    """A sink whose failures do not stop training: the first one warns (naming the sink, the tag and
    the error), later ones are silent; every call is still tried (a server may come back), except after
    the logger's own calls found its backend out of reach in this fit (see
    :class:`~lrp_lightning.callbacks.logger_guard.LoggerGuard`) and the sink writes through the same
    client (it sets ``through_logger = True``): then calls are dropped. Calls are
    serialized: the AttributionCallback's background writer and the other callbacks (on the training
    thread) may log at the same time, and not every logger client takes concurrent calls (two
    concurrent ``wandb.log`` calls can lose one of the rows).

    Parameters
    ----------
    sink : Sink
        The wrapped sink.
    name : str
        How the warning names it (the logger's class).
    guard : LoggerGuard, optional
        The guard of the sink's logger (consulted for a sink with ``through_logger = True``).
    """

    def __init__(self, sink: Sink, name: str, guard: Optional[LoggerGuard] = None) -> None:
        self.sink = sink
        self.name = name
        self.guard = guard if getattr(sink, "through_logger", False) else None
        self.failed = False
        self.thread_safe = bool(getattr(sink, "thread_safe", True))
        self._lock = threading.Lock()

    def image(self, tag: str, image: torch.Tensor, step: int, epoch: int, caption: Optional[str] = None) -> None:
        """:meth:`Sink.image` of the wrapped sink, failures turned into one warning."""
        self._call(tag, self.sink.image, tag, image, step, epoch, caption=caption)

    def table(self, tag: str, table: Table, step: int, epoch: int) -> None:
        """:meth:`Sink.table` of the wrapped sink, failures turned into one warning."""
        self._call(tag, self.sink.table, tag, table, step, epoch)

    def figure(self, tag: str, figure: DrawnFigure, step: int, epoch: int) -> None:
        """The wrapped sink's ``figure`` with the matplotlib figure, when it has one; else its :meth:`Sink.image`
        with the figure's picture. Failures turned into one warning."""
        write = getattr(self.sink, "figure", None)
        if write is not None:
            self._call(tag, write, tag, figure.figure, step, epoch)
        else:
            self._call(tag, lambda: self.sink.image(tag, figure.picture(), step, epoch))

    def layout(self, layout: dict) -> None:
        """The wrapped sink's ``layout``, when it has one."""
        write = getattr(self.sink, "layout", None)
        if write is not None:
            self._call("the dashboard layout", write, layout)

    def _call(self, what: str, method: Callable, *args: Any, **kwargs: Any) -> None:
        if self.guard is not None and self.guard.gone:
            return
        try:
            with self._lock:
                method(*args, **kwargs)
        except Exception as error:  # a logger failure must not stop training
            if not self.failed:
                self.failed = True
                warnings.warn(
                    f"lrp_lightning could not log {what!r} to {self.name} ({type(error).__name__}: {error}); "
                    f"training goes on, further failures of this logger's sink are not reported",
                    RuntimeWarning,
                )


def _builtin_sink(logger: Any) -> Optional[Sink]:
    from lightning.pytorch.loggers import CometLogger, MLFlowLogger, TensorBoardLogger, WandbLogger

    if isinstance(logger, TensorBoardLogger):
        return TensorBoardSink(logger.experiment)
    if isinstance(logger, WandbLogger):
        from lrp_lightning.callbacks.wandb_sink import WandbSink

        return WandbSink(logger)
    if isinstance(logger, MLFlowLogger):
        from lrp_lightning.callbacks.mlflow_sink import MLflowSink

        return MLflowSink(logger)
    if isinstance(logger, CometLogger):
        from lrp_lightning.callbacks.comet_sink import CometSink

        return CometSink(logger)
    log_dir = getattr(logger, "log_dir", None)
    if isinstance(log_dir, (str, Path)):
        return FileSink(log_dir)
    return None


def sink_for_logger(logger: Any) -> Optional[Sink]:
    """The sink of one logger: a registered one (see :func:`register_sink`), else a built-in one.

    Parameters
    ----------
    logger : lightning.pytorch.loggers.Logger

    Returns
    -------
    Sink or None
        None for a logger that can take neither pictures nor files.
    """
    for logger_type, factory in _REGISTERED:
        if isinstance(logger, logger_type):
            return factory(logger)
    return _builtin_sink(logger)


def sinks_for(trainer: Any) -> list[GuardedSink]:
    """One sink per logger that can take pictures, or a file sink under ``default_root_dir``.

    The sinks are made on the first call for a logger and reused (by every callback of the run), so
    each warns at most once.

    Parameters
    ----------
    trainer : lightning.pytorch.Trainer
        The running trainer.

    Returns
    -------
    list of GuardedSink
    """
    sinks = []
    for logger in trainer.loggers:
        if logger not in _MADE:
            sink = sink_for_logger(logger)
            if sink is None:
                continue
            _MADE[logger] = GuardedSink(sink, type(logger).__name__, logger_guard(logger))
        sinks.append(_MADE[logger])
    if sinks:
        return sinks
    if trainer not in _MADE:
        _MADE[trainer] = GuardedSink(FileSink(trainer.default_root_dir), "the file sink")
    return [_MADE[trainer]]
