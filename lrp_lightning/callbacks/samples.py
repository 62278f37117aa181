"""The fixed samples the callback explains: taking them from a batch or a dataloader.

A batch is split into inputs, labels and masks by :func:`split_batch`: ``(x, y, ...)``
tuples/lists, dicts with an input key (``x``, ``input``, ``inputs``, ``image``, ``images``,
``data``, ``input_ids`` — integer token ids, whose ``attention_mask`` is kept too), an optional label key (``y``, ``label``, ``labels``, ``target``, ``targets``) and an
optional ground-truth mask key (``mask``, ``masks``), a bare tensor, or anything a user
``batch_to_input`` callable maps to ``x``, ``(x, y)`` or ``(x, y, mask)``.

A model with several inputs (``forward(x1, x2, ...)``) gets a tuple or list of tensors in the place
of ``x``: ``batch_to_input`` returns ``((x1, x2), y)``, ``((x1, x2), y, mask)`` or
``((x1, x2), None)``, and batches ``((x1, x2), y, ...)`` are understood without one. The inputs
element is itself a tuple or list, so this never reads as today's ``(x, y)``.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional, Sequence, Union

import torch
from lightning.pytorch.core.hooks import DataHooks
from torch.utils.data import DataLoader, DistributedSampler, IterableDataset

from lrp_lightning.model_state import preserved_random_state
from lrp_lightning.callbacks.tokens import TOKEN_IDS_KEY, batch_attention_mask
from lrp_lightning.transformer.tokens import is_token_ids

BatchToInput = Callable[[Any], Any]

INPUT_KEYS = ("x", "input", "inputs", "image", "images", "data", TOKEN_IDS_KEY)
LABEL_KEYS = ("y", "label", "labels", "target", "targets")
MASK_KEYS = ("mask", "masks")


@dataclass
class Samples:
    """Inputs to explain and, when known, their labels and ground-truth masks.

    Attributes
    ----------
    inputs : torch.Tensor or tuple of torch.Tensor
        Shape (N, ...), float32 — or integer token ids (N, T), int64 —, on the CPU, outside autograd.
        For a model with several inputs a tuple of tensors with the same N (a list is taken as a
        tuple): floating-point ones become float32 (at least one is needed), others keep their dtype.
    labels : torch.Tensor or None
        Integer class labels, shape (N,), or None when the data has none.
    masks : torch.Tensor or None
        Ground-truth masks (N, ...) for localisation metrics, or None.
    attention_mask : torch.Tensor or None
        For token ids: (N, T), 0 at padding; passed to the model as ``attention_mask=``.
    """

    inputs: Union[torch.Tensor, tuple]
    labels: Optional[torch.Tensor] = None
    masks: Optional[torch.Tensor] = None
    attention_mask: Optional[torch.Tensor] = None

    def __post_init__(self) -> None:
        if isinstance(self.inputs, (tuple, list)):
            self.inputs = _several_inputs(self.inputs)
        else:
            self.inputs = _single_input(self.inputs)
        count = len(self)
        if self.labels is not None:
            self.labels = _detached_cpu(self.labels, "labels").reshape(-1)
            if self.labels.shape[0] != count:
                raise ValueError(f"got {count} sample inputs but {self.labels.shape[0]} labels")
            if torch.is_floating_point(self.labels) or self.labels.dtype == torch.bool:
                raise TypeError(f"sample labels must be integer class indices, got dtype {self.labels.dtype}")
            self.labels = self.labels.long()
        if self.masks is not None:
            self.masks = _detached_cpu(self.masks, "masks")
            if self.masks.shape[0] != count:
                raise ValueError(f"got {count} sample inputs but {self.masks.shape[0]} masks")
        if self.attention_mask is not None:
            self.attention_mask = _detached_cpu(self.attention_mask, "attention_mask")
            if not self.is_tokens or self.attention_mask.shape != self.inputs.shape:
                raise ValueError(
                    f"an attention_mask needs integer token ids of its shape; got a mask of shape "
                    f"{tuple(self.attention_mask.shape)} for inputs of shape {input_shapes(self.inputs)}"
                    + ("" if self.several else f" and dtype {self.inputs.dtype}")
                )
            self.attention_mask = self.attention_mask.long()

    @property
    def several(self) -> bool:
        """Whether the samples are inputs of a model with several inputs (``inputs`` is a tuple)."""
        return isinstance(self.inputs, tuple)

    def inputs_on(self, device: torch.device) -> Union[torch.Tensor, tuple]:
        """The inputs moved to ``device`` (a tuple for several inputs).

        Parameters
        ----------
        device : torch.device
            Where to.

        Returns
        -------
        torch.Tensor or tuple of torch.Tensor
        """
        if self.several:
            return tuple(part.to(device) for part in self.inputs)
        return self.inputs.to(device)

    def require_single_input(self, owner: str) -> None:
        """Raise unless the samples are inputs of a model with one input.

        Parameters
        ----------
        owner : str
            The callback's name, for the message.

        Raises
        ------
        TypeError
            For several inputs.
        """
        if self.several:
            raise TypeError(
                f"{owner} explains models with one input, got samples of {len(self.inputs)} inputs; "
                "AttributionCallback explains models with several inputs"
            )

    @property
    def is_tokens(self) -> bool:
        """Whether the inputs are integer token ids (N, T)."""
        return not self.several and is_token_ids(self.inputs)

    def __len__(self) -> int:
        return _count(self.inputs)

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
            _first(self.inputs, count),
            None if self.labels is None else self.labels[:count],
            None if self.masks is None else self.masks[:count],
            None if self.attention_mask is None else self.attention_mask[:count],
        )

    def state_dict(self) -> dict:
        """Tensors to store in a checkpoint.

        Returns
        -------
        dict
            ``{"inputs": tensor (a tuple of them for several inputs), "labels": tensor or None,
            "masks": tensor or None, "attention_mask": tensor or None}``.
        """
        return {"inputs": self.inputs, "labels": self.labels, "masks": self.masks, "attention_mask": self.attention_mask}


def input_shapes(inputs: Union[torch.Tensor, tuple]) -> str:
    """The shape of ``inputs``, or the shapes of a tuple of inputs, as text (for messages).

    Parameters
    ----------
    inputs : torch.Tensor or tuple of torch.Tensor
        Sample inputs.

    Returns
    -------
    str
    """
    if isinstance(inputs, (tuple, list)):
        return "(" + ", ".join(str(tuple(part.shape)) for part in inputs) + ")"
    return str(tuple(inputs.shape))


def _single_input(inputs: Any) -> torch.Tensor:
    """One input tensor checked: float32, or int64 token ids (N, T); shape (N, ...) with N >= 1."""
    inputs = _detached_cpu(inputs, "inputs")
    if is_token_ids(inputs):
        inputs = inputs.long()
    elif not torch.is_floating_point(inputs):
        raise TypeError(
            f"sample inputs must be floating point or integer token ids (N, T), got dtype {inputs.dtype} "
            f"and shape {tuple(inputs.shape)}"
        )
    else:
        inputs = inputs.float()
    if inputs.ndim < 2 or inputs.shape[0] == 0:
        raise ValueError(f"sample inputs must have shape (N, ...) with N >= 1, got {tuple(inputs.shape)}")
    return inputs


def _several_inputs(inputs: Sequence) -> tuple:
    """The inputs of a model with several inputs checked: a tuple of tensors (N, ...) with one N >= 1,
    floating-point ones as float32 (at least one), others as they are."""
    if not inputs:
        raise ValueError("sample inputs: got an empty tuple; give one tensor per model input")
    parts = tuple(_detached_cpu(part, f"inputs[{index}]") for index, part in enumerate(inputs))
    parts = tuple(part.float() if torch.is_floating_point(part) else part for part in parts)
    if not any(torch.is_floating_point(part) for part in parts):
        raise TypeError(f"sample inputs {input_shapes(parts)} hold no floating-point tensor to explain")
    sizes = {part.shape[0] if part.ndim else 0 for part in parts}
    if len(sizes) != 1 or 0 in sizes:
        raise ValueError(f"sample inputs must share one batch size N >= 1, got shapes {input_shapes(parts)}")
    return parts


def _count(inputs: Union[torch.Tensor, Sequence[torch.Tensor]]) -> int:
    """The number of samples in ``inputs`` (a tensor, or a tuple or list of them)."""
    return (inputs[0] if isinstance(inputs, (tuple, list)) else inputs).shape[0]


def _first(inputs: Union[torch.Tensor, Sequence[torch.Tensor]], count: int) -> Union[torch.Tensor, tuple]:
    """The first ``count`` samples of ``inputs`` (of each input for a tuple or list)."""
    if isinstance(inputs, (tuple, list)):
        return tuple(part[:count] for part in inputs)
    return inputs[:count]


def _joined(parts: list) -> Union[torch.Tensor, tuple]:
    """The concatenation of batches of inputs (input by input for tuples)."""
    if isinstance(parts[0], (tuple, list)):
        if len({len(part) for part in parts}) != 1:
            raise ValueError(f"the batches hold different numbers of inputs: {[len(part) for part in parts]}")
        return tuple(torch.cat([part[index] for part in parts]) for index in range(len(parts[0])))
    return torch.cat(parts)


def _is_input_tuple(value: Any) -> bool:
    """Whether ``value`` is the inputs of a model with several inputs: a tuple or list of tensors."""
    return isinstance(value, (tuple, list)) and len(value) > 0 and all(isinstance(part, torch.Tensor) for part in value)


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
        the built-in rules. For a model with several inputs ``inputs`` is a tuple or list of
        tensors, e.g. ``((x1, x2), y)``.

    Returns
    -------
    tuple
        ``(inputs, labels, masks)``; ``inputs`` a tensor or, for several inputs, a tuple or list.

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
            raise ValueError(
                f"batch_to_input must return x, (x, y) or (x, y, mask) (x a tuple of tensors for a model with several "
                f"inputs: ((x1, x2), y)), got {len(parts)} items"
            )
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
    if isinstance(batch, Sequence) and len(batch) > 0 and (isinstance(batch[0], torch.Tensor) or _is_input_tuple(batch[0])):
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

    Dict batches of token ids keep their ``attention_mask``; the inputs of a model with several
    inputs are collected input by input. Multi-process DataLoaders are read
    through a worker-free copy; the global RNGs and the
    loader's own generators are restored afterwards.

    Parameters
    ----------
    loader : iterable
        Yields batches (a DataLoader or any iterable).
    num_samples : int
        How many samples to take (fewer, with a warning, if the loader has fewer).
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
            inputs.append(_first(x, wanted))
            labels.append(None if y is None else y[:wanted])
            masks.append(None if mask is None else mask[:wanted])
            attention_masks.append(None if attention_mask is None else attention_mask[:wanted])
            taken += _count(inputs[-1])
            if taken >= num_samples:
                break
    finally:
        batches.close()
    if taken == 0:
        raise ValueError("the validation dataloader yielded no samples to explain; pass samples=...")
    if taken < num_samples:
        warnings.warn(
            f"num_samples={num_samples}, but the validation dataloader holds only {taken} samples; explaining "
            f"those {taken} (lower num_samples or pass samples=... to silence this)",
            UserWarning,
        )
    return Samples(_joined(inputs), _cat_or_none(labels), _cat_or_none(masks), _cat_or_none(attention_masks))


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
