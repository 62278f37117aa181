"""When the analyses of the suite run: every n-th validation epoch while fitting, and at the end of training."""
from __future__ import annotations

from typing import Optional

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.trainer.states import TrainerFn

from lrp_lightning.callbacks.common import positive_int
from lrp_lightning.callbacks.logger_guard import guard_loggers
from lrp_lightning.callbacks.samples import first_dataloader


class ScheduledCallback(Callback):
    """Base of :class:`~lrp_lightning.callbacks.SanityCheckCallback` and
    :class:`~lrp_lightning.callbacks.RelevanceClusterCallback`: calls :meth:`run` at the end of every
    ``every_n_epochs``-th validation epoch while fitting (never in the sanity check; scalars through
    ``pl_module.log``) and, with ``at_fit_end``, once at the end of training (scalars straight to the
    loggers) — unless the last validation epoch already ran it at that step (the model is the same:
    nothing is logged twice). Guards the loggers for the fit (see
    :mod:`~lrp_lightning.callbacks.logger_guard`).

    Parameters
    ----------
    every_n_epochs : int, optional
        Period in epochs; None: only at the end of training.
    at_fit_end : bool
        Run once when training ends.

    Raises
    ------
    ValueError
        If neither is set, or ``every_n_epochs`` is not a positive int.
    """

    def __init__(self, every_n_epochs: Optional[int], at_fit_end: bool) -> None:
        self.every_n_epochs = None if every_n_epochs is None else positive_int("every_n_epochs", every_n_epochs)
        if self.every_n_epochs is None and not at_fit_end:
            raise ValueError(f"{type(self).__name__} never runs: set every_n_epochs or at_fit_end=True")
        self.at_fit_end = at_fit_end
        self._prepared = False
        self._last_run_step: Optional[int] = None

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Guard the loggers; prepare now when samples were given or the validation data can be reached,
        else at the first validation."""
        guard_loggers(trainer)
        self._prepared = False
        self._last_run_step = None
        if getattr(self, "samples", None) is not None or first_dataloader(trainer, pl_module, "val") is not None:
            self._prepare_once(trainer, pl_module)

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Prepare at the first validation while fitting, once the trainer has loaded its dataloaders."""
        if trainer.state.fn == TrainerFn.FITTING:
            self._prepare_once(trainer, pl_module)

    def _prepare_once(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self._prepared:
            self.prepare(trainer, pl_module)
            self._prepared = True

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Run every ``every_n_epochs`` epochs while fitting (never in the sanity check)."""
        if trainer.sanity_checking or self.every_n_epochs is None or trainer.state.fn != TrainerFn.FITTING:
            return
        if (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self.run(trainer, pl_module, in_loop=True)
            self._last_run_step = trainer.global_step

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """With ``at_fit_end``: run once after the last epoch, unless a validation epoch end ran at this step."""
        if self.at_fit_end and self._last_run_step != trainer.global_step:
            self.run(trainer, pl_module, in_loop=False)

    def prepare(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Take the samples and build the explainers (once per fit).

        Parameters
        ----------
        trainer : Trainer
            The running trainer.
        pl_module : LightningModule
            The bare LightningModule.
        """
        raise NotImplementedError

    def run(self, trainer: Trainer, pl_module: LightningModule, in_loop: bool) -> None:
        """The analysis; ``in_loop`` tells whether ``pl_module.log`` may be used.

        Parameters
        ----------
        trainer : Trainer
            The running trainer.
        pl_module : LightningModule
            The bare LightningModule.
        in_loop : bool
            True at validation epoch end, False at the end of training.
        """
        raise NotImplementedError
