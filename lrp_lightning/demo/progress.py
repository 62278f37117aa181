"""The demo's progress bar: epochs counted from 1, as in the printed table (``Epoch 3/6``)."""
from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import TQDMProgressBar


class EpochProgressBar(TQDMProgressBar):
    """Lightning's progress bar with the epoch shown as ``Epoch <n>/<max_epochs>``, ``n`` from 1.

    Lightning counts ``trainer.current_epoch`` from 0; the demo's per-epoch table and the README
    count the first epoch as 1, and so does this bar.
    """

    def on_train_epoch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        """Start the epoch's bar as Lightning does, then name the epoch counted from 1.

        Parameters
        ----------
        trainer : lightning.pytorch.Trainer
            The running trainer.
        *args : Any
            Lightning's further hook arguments (passed on).
        """
        super().on_train_epoch_start(trainer, *args)
        total = "" if trainer.max_epochs is None or trainer.max_epochs < 0 else f"/{trainer.max_epochs}"
        self.train_progress_bar.set_description(f"Epoch {trainer.current_epoch + 1}{total}")
