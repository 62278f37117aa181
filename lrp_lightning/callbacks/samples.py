"""The fixed samples the callback explains: taking them from a batch or a dataloader.

A batch is split into inputs, labels and masks by :func:`split_batch`: ``(x, y, ...)``
tuples/lists, dicts with an input key (``x``, ``input``, ``inputs``, ``image``, ``images``,
``data``, ``input_ids`` — integer token ids, whose ``attention_mask`` is kept too), an optional label key (``y``, ``label``, ``labels``, ``target``, ``targets``) and an
optional ground-truth mask key (``mask``, ``masks``), a bare tensor, or anything a user
``batch_to_input`` callable maps to ``x``, ``(x, y)`` or ``(x, y, mask)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional, Sequence

import torch
from lightning.pytorch.core.hooks import DataHooks
from torch.utils.data import DataLoader, DistributedSampler, IterableDataset

from lrp_lightning.attribution import preserved_random_state
from lrp_lightning.callbacks.tokens import TOKEN_IDS_KEY, batch_attention_mask
from lrp_lightning.metrics._checks import is_token_ids

BatchToInput = Callable[[Any], Any]

INPUT_KEYS = ("x", "input", "inputs", "image", "images", "data", TOKEN_IDS_KEY)
LABEL_KEYS = ("y", "label", "labels", "target", "targets")
MASK_KEYS = ("mask", "masks")


@dataclass
class Samples:
    """Inputs to explain and, when known, their labels and ground-truth masks.

    Attributes
    ----------
    inputs : torch.Tensor
        Shape (N, ...), float32 — or integer token ids (N, T), int64 —, on the CPU, outside autograd.
    labels : torch.Tensor or None
        Integer class labels, shape (N,), or None when the data has none.
    masks : torch.Tensor or None
        Ground-truth masks (N, ...) for localisation metrics, or None.
    attention_mask : torch.Tensor or None
        For token ids: (N, T), 0 at padding; passed to the model as ``attention_mask=``.
    """

    inputs: torch.Tensor
    labels: Optional[torch.Tensor] = None
    masks: Optional[torch.Tensor] = None
    attention_mask: Optional[torch.Tensor] = None

    def __post_init__(self) -> None:
        self.inputs = _detached_cpu(self.inputs, "inputs")
        if is_token_ids(self.inputs):
            self.inputs = self.inputs.long()
        elif not torch.is_floating_point(self.inputs):
            raise TypeError(
                f"sample inputs must be floating point or integer token ids (N, T), got dtype {self.inputs.dtype} "
                f"and shape {tuple(self.inputs.shape)}"
            )
        else:
            self.inputs = self.inputs.float()
        if self.inputs.ndim < 2 or self.inputs.shape[0] == 0:
            raise ValueError(f"sample inputs must have shape (N, ...) with N >= 1, got {tuple(self.inputs.shape)}")
        if self.labels is not None:
            self.labels = _detached_cpu(self.labels, "labels").reshape(-1)
            if self.labels.shape[0] != self.inputs.shape[0]:
                raise ValueError(
                    f"got {self.inputs.shape[0]} sample inputs but {self.labels.shape[0]} labels"
                )
            if torch.is_floating_point(self.labels) or self.labels.dtype == torch.bool:
                raise TypeError(f"sample labels must be integer class indices, got dtype {self.labels.dtype}")
            self.labels = self.labels.long()
        if self.masks is not None:
            self.masks = _detached_cpu(self.masks, "masks")
            if self.masks.shape[0] != self.inputs.shape[0]:
                raise ValueError(f"got {self.inputs.shape[0]} sample inputs but {self.masks.shape[0]} masks")
        if self.attention_mask is not None:
            self.attention_mask = _detached_cpu(self.attention_mask, "attention_mask")
            if not self.is_tokens or self.attention_mask.shape != self.inputs.shape:
                raise ValueError(
                    f"an attention_mask needs integer token ids of its shape; got a mask of shape "
                    f"{tuple(self.attention_mask.shape)} for inputs of shape {tuple(self.inputs.shape)} "
                    f"and dtype {self.inputs.dtype}"
                )
            self.attention_mask = self.attention_mask.long()

    @property
    def is_tokens(self) -> bool:
        """Whether the inputs are integer token ids (N, T)."""
        return is_token_ids(self.inputs)

    def __len__(self) -> int:
        return self.inputs.shape[0]

    def head(self, count: int) -> "Samples":
        """The first ``count`` samples.

        Parameters
        ----------
        count : int
            How many.

        Returns
        -------
        Samples
        """
        return Samples(
            self.inputs[:count],
            None if self.labels is None else self.labels[:count],
            None if self.masks is None else self.masks[:count],
            None if self.attention_mask is None else self.attention_mask[:count],
        )

    def state_dict(self) -> dict:
        """Tensors to store in a checkpoint.

        Returns
        -------
        dict
            ``{"inputs": tensor, "labels": tensor or None, "masks": tensor or None,
            "attention_mask": tensor or None}``.
        """
        return {"inputs": self.inputs, "labels": self.labels, "masks": self.masks, "attention_mask": self.attention_mask}


def _detached_cpu(tensor: Any, what: str) -> torch.Tensor:
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"sample {what} must be a torch.Tensor, got {type(tensor).__name__}")
    with torch.inference_mode(False):
        return tensor.detach().to("cpu").clone()


def _first_key(batch: Mapping, keys: Sequence[str]) -> Optional[Any]:
    for key in keys:
        if key in batch:
            return batch[key]
    return None


def split_batch(batch: Any, batch_to_input: Optional[BatchToInput] = None) -> tuple:
    """Split one batch into ``(inputs, labels, masks)``; labels and masks may be None.

    Parameters
    ----------
    batch : Any
        A batch as the dataloader yields it.
    batch_to_input : callable, optional
        Maps a batch to ``inputs``, ``(inputs, labels)`` or ``(inputs, labels, masks)``; replaces
        the built-in rules.

    Returns
    -------
    tuple
        ``(inputs, labels, masks)``.

    Raises
    ------
    TypeError
        If the batch has a form the built-in rules do not know; pass ``batch_to_input``.
    """
    if batch_to_input is not None:
        batch = batch_to_input(batch)
        if isinstance(batch, torch.Tensor):
            return batch, None, None
        parts = tuple(batch)
        if len(parts) not in (2, 3):
            raise ValueError(f"batch_to_input must return x, (x, y) or (x, y, mask), got {len(parts)} items")
        return parts + (None,) * (3 - len(parts))
    if isinstance(batch, torch.Tensor):
        return batch, None, None
    if isinstance(batch, Mapping):
        inputs = _first_key(batch, INPUT_KEYS)
        if inputs is None:
            raise TypeError(
                f"cannot find the inputs in a batch with keys {list(batch)}; expected one of {INPUT_KEYS} "
                "or pass batch_to_input"
            )
        return inputs, _first_key(batch, LABEL_KEYS), _first_key(batch, MASK_KEYS)
    if isinstance(batch, Sequence) and len(batch) > 0 and isinstance(batch[0], torch.Tensor):
        labels = batch[1] if len(batch) > 1 and isinstance(batch[1], torch.Tensor) else None
        return batch[0], labels, None
    raise TypeError(f"cannot split a batch of type {type(batch).__name__} into inputs and labels; pass batch_to_input")


def _single_process(loader: Iterable) -> Iterable:
    """A worker-free copy of a multi-process DataLoader (same dataset, order and collation)."""
    if not isinstance(loader, DataLoader) or loader.num_workers == 0:
        return loader
    if isinstance(loader.dataset, IterableDataset):
        return DataLoader(
            loader.dataset, batch_size=loader.batch_size, drop_last=loader.drop_last, collate_fn=loader.collate_fn
        )
    if loader.batch_sampler is not None:
        return DataLoader(loader.dataset, batch_sampler=loader.batch_sampler, collate_fn=loader.collate_fn)
    return DataLoader(loader.dataset, sampler=loader.sampler, batch_size=None, collate_fn=loader.collate_fn)


def _loader_generators(loader: Iterable) -> list:
    """The user's torch.Generators that iterating ``loader`` would advance."""
    owners = [loader, getattr(loader, "sampler", None), getattr(loader, "batch_sampler", None)]
    owners.append(getattr(owners[-1], "sampler", None))
    generators = {id(g): g for g in (getattr(o, "generator", None) for o in owners) if isinstance(g, torch.Generator)}
    return list(generators.values())


def _batches(loader: Iterable) -> Iterator:
    generators = _loader_generators(loader)
    states = [generator.get_state() for generator in generators]
    try:
        with preserved_random_state():
            yield from iter(_single_process(loader))
    finally:
        for generator, state in zip(generators, states):
            generator.set_state(state)


def collect_samples(loader: Iterable, num_samples: int, batch_to_input: Optional[BatchToInput] = None) -> Samples:
    """The first ``num_samples`` samples of ``loader``, leaving every RNG as it was.

    Dict batches of token ids keep their ``attention_mask``. Multi-process DataLoaders are read
    through a worker-free copy; the global RNGs and the
    loader's own generators are restored afterwards.

    Parameters
    ----------
    loader : iterable
        Yields batches (a DataLoader or any iterable).
    num_samples : int
        How many samples to take (fewer if the loader has fewer).
    batch_to_input : callable, optional
        See :func:`split_batch`.

    Returns
    -------
    Samples
        The samples on the CPU.

    Raises
    ------
    ValueError
        If the loader yields no samples.
    """
    inputs, labels, masks, attention_masks = [], [], [], []
    taken = 0
    batches = _batches(loader)
    try:
        for batch in batches:
            x, y, mask = split_batch(batch, batch_to_input)
            attention_mask = None if batch_to_input is not None else batch_attention_mask(batch)
            wanted = num_samples - taken
            inputs.append(x[:wanted])
            labels.append(None if y is None else y[:wanted])
            masks.append(None if mask is None else mask[:wanted])
            attention_masks.append(None if attention_mask is None else attention_mask[:wanted])
            taken += inputs[-1].shape[0]
            if taken >= num_samples:
                break
    finally:
        batches.close()
    if taken == 0:
        raise ValueError("the validation dataloader yielded no samples to explain; pass samples=...")
    return Samples(torch.cat(inputs), _cat_or_none(labels), _cat_or_none(masks), _cat_or_none(attention_masks))


def _cat_or_none(parts: list) -> Optional[torch.Tensor]:
    return None if any(part is None for part in parts) else torch.cat(parts)


def _first_loader(loaders: Any) -> Any:
    flattened = getattr(loaders, "flattened", None)
    if flattened is not None:
        loaders = flattened
    if isinstance(loaders, Mapping):
        loaders = list(loaders.values())
    if isinstance(loaders, (list, tuple)):
        return loaders[0] if loaders else None
    return loaders


def _overrides(owner: Any, hook: str) -> bool:
    """Whether ``owner`` (a LightningModule or LightningDataModule) defines its own ``hook``."""
    return owner is not None and getattr(type(owner), hook, None) is not getattr(DataHooks, hook)


def _undistributed(loader: Any) -> Any:
    """The loader itself, or, when Lightning gave it a distributed sampler, a sequential loader over
    the same dataset (so every rank takes the same samples, the first ones of the dataset)."""
    if not isinstance(loader, DataLoader):
        return loader
    sampler = loader.batch_sampler.sampler if loader.batch_sampler is not None else loader.sampler
    if not isinstance(sampler, DistributedSampler):
        return loader
    batch_size = loader.batch_size if loader.batch_size is not None else getattr(loader.batch_sampler, "batch_size", 1)
    return DataLoader(loader.dataset, batch_size=batch_size, collate_fn=loader.collate_fn)


def first_dataloader(trainer: Any, pl_module: Any, stage: str) -> Optional[Iterable]:
    """The user's first validation or test dataloader, found through public Lightning API only.

    Looked up, in order: the dataloaders the trainer has loaded (``trainer.val_dataloaders`` /
    ``trainer.test_dataloaders``: set once the loop has started, e.g. at
    ``on_validation_start``), then the ``val_dataloader``/``test_dataloader`` hook of
    ``trainer.datamodule``, then that of ``pl_module``. A loader Lightning gave a
    ``DistributedSampler`` is replaced by a sequential one over the same dataset, so that every
    rank sees the same samples.

    Parameters
    ----------
    trainer : lightning.pytorch.Trainer
        The running trainer.
    pl_module : lightning.pytorch.LightningModule
        The module being trained, validated or tested.
    stage : str
        ``"val"`` (validation while fitting), ``"validate"`` (``trainer.validate``) or ``"test"``.

    Returns
    -------
    iterable or None
        The first dataloader, or None when none can be found (yet).
    """
    hook = "test_dataloader" if stage == "test" else "val_dataloader"
    loaders = trainer.test_dataloaders if stage == "test" else trainer.val_dataloaders
    if loaders is None:
        owner = next((o for o in (trainer.datamodule, pl_module) if _overrides(o, hook)), None)
        if owner is not None:
            loaders = getattr(owner, hook)()
    loader = _first_loader(loaders)
    return None if loader is None else _undistributed(loader)
