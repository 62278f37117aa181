"""Pieces every callback of the suite shares: the explained module, the samples, scalar logging."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import torch

from lightning.pytorch import LightningModule, Trainer
from torch import nn

from lrp_lightning.callbacks.naming import check_tag_component
from lrp_lightning.callbacks.samples import BatchToInput, Samples, collect_samples, first_dataloader, split_batch
from lrp_lightning.callbacks.tokens import batch_attention_mask

SampleArg = Union[None, torch.Tensor, Sequence[Optional[torch.Tensor]], Mapping[str, torch.Tensor]]


def user_samples(samples: SampleArg) -> Optional[Samples]:
    """The user's ``samples`` argument as :class:`~lrp_lightning.callbacks.samples.Samples`.

    Parameters
    ----------
    samples : tensor, tuple, mapping or None
        ``x``, ``(x, y)`` or ``(x, y, mask)``, or a dict batch (``input_ids``, ``attention_mask``, ``labels``);
        ``x`` a tuple of tensors for a model with several inputs, ``((x1, x2), y)``.

    Returns
    -------
    Samples or None

    Raises
    ------
    TypeError
        For anything but a tensor, tuple or list.
    ValueError
        For a tuple of another length (and whatever ``Samples`` rejects).
    """
    if samples is None:
        return None
    if isinstance(samples, torch.Tensor):
        return Samples(samples)
    if isinstance(samples, Mapping):
        try:
            return Samples(*split_batch(samples), attention_mask=batch_attention_mask(samples))
        except (TypeError, ValueError) as error:
            raise type(error)(f"samples: {error}") from error
    if not isinstance(samples, (list, tuple)):
        raise TypeError(f"samples must be a tensor x or a tuple (x, y) or (x, y, mask), got {type(samples).__name__}")
    parts = list(samples)
    if not 1 <= len(parts) <= 3:
        raise ValueError("samples must be a tensor x or a tuple (x, y) or (x, y, mask)")
    return Samples(*parts)


class FixedSamplesCheckpoint:
    """Checkpoint state of a callback's fixed samples (``self.samples``), so that a resumed run
    explains the same ones. Put it before ``Callback`` in the bases; subclasses add their own keys."""

    samples: Optional[Samples]

    def state_dict(self) -> dict[str, Any]:
        """The fixed samples.

        Returns
        -------
        dict
            ``{"samples": {"inputs", "labels", "masks", "attention_mask"} or None}``.
        """
        return {"samples": None if self.samples is None else self.samples.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the samples saved by :meth:`state_dict`.

        Parameters
        ----------
        state_dict : dict
            As returned by :meth:`state_dict`.
        """
        stored = state_dict.get("samples")
        if stored is not None:
            self.samples = Samples(**stored)


def positive_int(name: str, value: Any) -> int:
    """Return ``value`` if it is a positive int.

    Parameters
    ----------
    name : str
        The argument's name, for the message.
    value : Any
        The candidate.

    Returns
    -------
    int

    Raises
    ------
    ValueError
        Otherwise (bools included).
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def explained_submodule(pl_module: LightningModule, module: Optional[str]) -> nn.Module:
    """``pl_module`` itself, or its submodule with the dotted name ``module``.

    Parameters
    ----------
    pl_module : LightningModule
        The bare LightningModule.
    module : str or None
        Dotted submodule name.

    Returns
    -------
    torch.nn.Module

    Raises
    ------
    ValueError
        If ``module`` names no submodule.
    """
    if module is None:
        return pl_module
    try:
        return pl_module.get_submodule(module)
    except AttributeError as error:
        raise ValueError(f"module={module!r} names no submodule of {type(pl_module).__name__}") from error


def validation_samples(
    trainer: Trainer, pl_module: LightningModule, num_samples: int, batch_to_input: Optional[BatchToInput], owner: str
) -> Samples:
    """The first ``num_samples`` samples of the first validation dataloader (every RNG untouched).

    Parameters
    ----------
    trainer : Trainer
        The running trainer.
    pl_module : LightningModule
        The module being trained.
    num_samples : int
        How many.
    batch_to_input : callable, optional
        See :func:`~lrp_lightning.callbacks.samples.split_batch`.
    owner : str
        The calling callback's class name, for the message.

    Returns
    -------
    Samples

    Raises
    ------
    ValueError
        If the trainer has no validation dataloader.
    """
    loader = first_dataloader(trainer, pl_module, "val")
    if loader is None:
        raise ValueError(f"{owner} found no validation dataloader; pass samples=...")
    return collect_samples(loader, num_samples, batch_to_input)


def log_scalars(trainer: Trainer, pl_module: LightningModule, scalars: Mapping[str, float], in_loop: bool) -> None:
    """Log scalars: through ``pl_module.log`` inside a loop hook (monitorable by ``ModelCheckpoint``),
    straight to every logger otherwise (e.g. at the end of training).

    Parameters
    ----------
    trainer : Trainer
        The running trainer.
    pl_module : LightningModule
        The bare LightningModule.
    scalars : mapping of str to float
        Tag to value.
    in_loop : bool
        Whether the caller is a hook in which ``pl_module.log`` is allowed.
    """
    if in_loop:
        for tag, value in scalars.items():
            pl_module.log(tag, value, on_step=False, on_epoch=True, sync_dist=False)
    elif trainer.is_global_zero:
        for logger in trainer.loggers:
            logger.log_metrics(dict(scalars), step=trainer.global_step)
            logger.save()


def table_dir(trainer: Trainer) -> Path:
    """Where the suite writes its tables: the first logger's ``log_dir``, else ``default_root_dir``.

    Parameters
    ----------
    trainer : Trainer
        The running trainer.

    Returns
    -------
    Path
    """
    for logger in trainer.loggers:
        log_dir = getattr(logger, "log_dir", None)
        if isinstance(log_dir, (str, Path)):
            return Path(log_dir)
    return Path(trainer.default_root_dir)


def gathered_from_ranks(trainer: Trainer, pl_module: LightningModule, tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` of every rank stacked, shape (world, ...), on the CPU (one collective call under DDP)."""
    if trainer.world_size == 1:
        return tensor.unsqueeze(0)
    gathered = trainer.strategy.all_gather(tensor.to(pl_module.device))
    return gathered.reshape(trainer.world_size, *tensor.shape).cpu()


def class_indices(classes: Optional[Sequence[int]]) -> Optional[list[int]]:
    """``classes`` as a list of class indices (``None`` stays: every class).

    Raises
    ------
    ValueError
        For an empty list, or an entry that is not a non-negative int.
    """
    if classes is None:
        return None
    classes = list(classes)
    if not classes or any(isinstance(c, bool) or not isinstance(c, int) or c < 0 for c in classes):
        raise ValueError(f"classes must be a non-empty list of class indices, got {classes!r}")
    return classes


def class_name_map(class_names: Union[None, Sequence[str], Mapping[int, str]]) -> dict[int, str]:
    """Class index to display name, from a sequence (index = position), a mapping or ``None`` (no names).

    Raises
    ------
    ValueError
        For a name that cannot be part of a log tag.
    """
    if isinstance(class_names, Mapping):
        names = {int(key): str(value) for key, value in class_names.items()}
    else:
        names = {} if class_names is None else {index: str(name) for index, name in enumerate(class_names)}
    for name in names.values():
        check_tag_component(name, "class")
    return names

