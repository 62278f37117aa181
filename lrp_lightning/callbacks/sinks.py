"""Where images and text go, for each kind of Lightning logger.

:class:`TensorBoardSink` writes through a ``TensorBoardLogger``'s ``SummaryWriter`` (images, text,
the custom-scalars layout). :class:`FileSink` writes PNG and Markdown files under a directory: the
``log_dir`` of any other logger that has one (``CSVLogger``), or ``trainer.default_root_dir`` when
no logger has taken the images. Scalars never go through a sink: ``pl_module.log`` sends them to
every logger. Sinks are only used on global rank zero.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lrp_lightning.image import save_png

FILE_SINK_SUBDIR = "attribution"


class TensorBoardSink:
    """Images, text and the dashboard layout through a ``SummaryWriter``.

    Parameters
    ----------
    writer : SummaryWriter
        ``TensorBoardLogger.experiment``.
    """

    def __init__(self, writer: Any) -> None:
        self.writer = writer

    def image(self, tag: str, image: torch.Tensor, step: int, epoch: int) -> None:
        """Log a uint8 (3, H, W) image under ``tag`` at ``step``."""
        self.writer.add_image(tag, image.cpu().numpy(), global_step=step, dataformats="CHW")

    def text(self, tag: str, text: str, step: int, epoch: int) -> None:
        """Log Markdown ``text`` under ``tag`` at ``step``."""
        self.writer.add_text(tag, text, global_step=step)

    def layout(self, layout: dict) -> None:
        """Write a custom-scalars layout (see :func:`~lrp_lightning.callbacks.attribution.dashboard.custom_scalars_layout`)."""
        self.writer.add_custom_scalars(layout)


class FileSink:
    """PNG images and Markdown text files under ``<root>/attribution/<tag>/``.

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

    def image(self, tag: str, image: torch.Tensor, step: int, epoch: int) -> None:
        """Save a uint8 (3, H, W) image as a PNG file."""
        save_png(image.cpu(), self._path(tag, epoch, step, ".png"))

    def text(self, tag: str, text: str, step: int, epoch: int) -> None:
        """Save Markdown ``text`` as a ``.md`` file."""
        self._path(tag, epoch, step, ".md").write_text(text + "\n", encoding="utf-8")

    def layout(self, layout: dict) -> None:
        """Files have no dashboard; nothing to write."""


def sinks_for(trainer: Any) -> list:
    """One sink per logger that can take images, or a file sink under ``default_root_dir``.

    Parameters
    ----------
    trainer : lightning.pytorch.Trainer
        The running trainer.

    Returns
    -------
    list
        :class:`TensorBoardSink` and :class:`FileSink` instances.
    """
    from lightning.pytorch.loggers import TensorBoardLogger

    sinks: list = []
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            sinks.append(TensorBoardSink(logger.experiment))
        else:
            log_dir = getattr(logger, "log_dir", None)
            if isinstance(log_dir, (str, Path)):
                sinks.append(FileSink(log_dir))
    return sinks or [FileSink(trainer.default_root_dir)]
