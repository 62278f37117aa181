"""Which output class each sample is explained for.

A target specification is ``"label"`` (the sample's label), ``"prediction"`` (the argmax of the
model output), an ``int`` class index, or a callable ``(outputs, labels) -> indices``.
"""
from __future__ import annotations

from typing import Callable, Optional, Union

import torch

TargetSpec = Union[str, int, Callable[[torch.Tensor, Optional[torch.Tensor]], torch.Tensor]]
TARGET_NAMES = ("label", "prediction")


def check_target_spec(target: TargetSpec) -> None:
    """Reject a target specification that can never be valid.

    Parameters
    ----------
    target : str, int or callable
        The specification.

    Raises
    ------
    ValueError
        If ``target`` is an unknown string or a negative index.
    TypeError
        If ``target`` is of another type.
    """
    if isinstance(target, bool):
        raise TypeError("target must be 'label', 'prediction', an int class index or a callable, got a bool")
    if isinstance(target, str):
        if target not in TARGET_NAMES:
            raise ValueError(f"unknown target {target!r}; use one of {TARGET_NAMES}, an int or a callable")
    elif isinstance(target, int):
        if target < 0:
            raise ValueError(f"target class index must be non-negative, got {target}")
    elif not callable(target):
        raise TypeError(f"target must be 'label', 'prediction', an int or a callable, got {type(target).__name__}")


def resolve_targets(target: TargetSpec, outputs: torch.Tensor, labels: Optional[torch.Tensor]) -> torch.Tensor:
    """Class indices, shape (N,), on ``outputs``' device, checked against the output width.

    Parameters
    ----------
    target : str, int or callable
        The specification (see module docstring).
    outputs : torch.Tensor
        Model outputs, shape (N, K).
    labels : torch.Tensor or None
        Sample labels, shape (N,).

    Returns
    -------
    torch.Tensor
        ``int64`` indices in ``[0, K)``.

    Raises
    ------
    ValueError
        If the outputs are not (N, K), labels are missing for ``"label"``, or an index is out of range.
    """
    if outputs.ndim != 2:
        raise ValueError(
            f"the explained model must return outputs of shape (N, num_classes), got {tuple(outputs.shape)}; "
            "choose a submodule with module=... or wrap the model"
        )
    count, num_classes = outputs.shape
    if target == "label":
        if labels is None:
            raise ValueError("target='label' needs labelled samples; use target='prediction' or give labels")
        indices = labels
    elif target == "prediction":
        indices = outputs.argmax(dim=1)
    elif isinstance(target, int):
        indices = torch.full((count,), target, dtype=torch.long)
    else:
        indices = torch.as_tensor(target(outputs, labels))
    indices = indices.to(device=outputs.device, dtype=torch.long).reshape(-1)
    if indices.shape[0] != count:
        raise ValueError(f"target gives {indices.shape[0]} class indices for {count} samples")
    if indices.numel() and (indices.min() < 0 or indices.max() >= num_classes):
        raise ValueError(
            f"target class indices must lie in [0, {num_classes}) for a model with {num_classes} outputs, "
            f"got {indices.tolist()}"
        )
    return indices
