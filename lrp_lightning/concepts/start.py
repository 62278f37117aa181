"""Where a conditional backward pass begins and with which relevance (zennit-crp's ``"y"``, ``start_layer`` and
``init_rel``).

The pass begins at the model output or, with ``start_layer``, at that layer's output. Its initial relevance is
``init_rel`` evaluated there: None takes the values themselves (the logits, or the layer's output), a callable
``f`` takes ``f(values)``, a tensor is taken as it is (one row per explained row, or broadcast to each row), a
number ``k`` fills the values' shape with ``k``. At the model output the relevance is then kept on each row's
classes ``"y"`` only (zero elsewhere); at a start layer the layer's own condition masks it, as every condition
masks its layer. In the gradient view (AttnLRP, CP-LRP) relevance is ``values * gradient``, so the pass starts
with the gradient ``R / values`` (0 where the values are 0).
"""
from __future__ import annotations

import numbers
from typing import Callable, Optional, Sequence, Union

import torch

InitRel = Union[None, Callable[[torch.Tensor], torch.Tensor], torch.Tensor, int, float]


def check_init_rel(init_rel: InitRel) -> None:
    """Raise a TypeError unless ``init_rel`` is None, a callable, a tensor or a real number."""
    if init_rel is None or callable(init_rel) or isinstance(init_rel, torch.Tensor):
        return
    if isinstance(init_rel, numbers.Real) and not isinstance(init_rel, bool):
        return
    raise TypeError(
        f"init_rel must be None, a callable values -> relevance, a tensor or a number, got {type(init_rel).__name__}"
    )


def _tensor_rows(init_rel: torch.Tensor, values: torch.Tensor, rows: torch.Tensor, total_rows: int) -> torch.Tensor:
    """The rows ``rows`` of a per-row ``init_rel`` (``(total_rows, ...)``), or ``init_rel`` broadcast to ``values``."""
    tensor = init_rel.detach().to(values.device, values.dtype)
    if tensor.dim() == values.dim() and tensor.shape[0] == total_rows and tensor.shape[1:] == values.shape[1:]:
        return tensor[rows.to(values.device)]
    try:
        return torch.broadcast_to(tensor, values.shape).clone()
    except RuntimeError:
        raise ValueError(
            f"init_rel of shape {tuple(init_rel.shape)} fits neither the {total_rows} explained rows of shape "
            f"{tuple(values.shape[1:])} nor broadcasts to one row; pass a tensor ({total_rows}, "
            f"{', '.join(map(str, values.shape[1:]))}) or one that broadcasts to a row"
        ) from None


def initial_relevance(values: torch.Tensor, init_rel: InitRel, rows: torch.Tensor, total_rows: int,
                      classes: Optional[Sequence[Optional[Sequence[int]]]] = None) -> torch.Tensor:
    """The relevance a pass begins with.

    Parameters
    ----------
    values : torch.Tensor
        The (detached) values where the pass begins, ``(B, ...)``: the model output or the start layer's output.
    init_rel : None, callable, torch.Tensor or number
        See the module's description.
    rows : torch.Tensor
        ``(B,)`` the indices of these rows among all ``total_rows`` rows of the call.
    total_rows : int
        The call's rows (samples times conditions).
    classes : sequence of (sequence of int or None), optional
        Per row the classes kept (dim 1 of the model output); None (or a None row) keeps all.

    Returns
    -------
    torch.Tensor
        Shaped like ``values``.
    """
    if init_rel is None:
        relevance = values.clone()
    elif isinstance(init_rel, torch.Tensor):
        relevance = _tensor_rows(init_rel, values, rows, total_rows)
    elif callable(init_rel):
        relevance = torch.as_tensor(init_rel(values)).to(values.device, values.dtype)
    else:
        relevance = torch.full_like(values, float(init_rel))
    if relevance.shape != values.shape:
        raise ValueError(
            f"init_rel gave relevance of shape {tuple(relevance.shape)} for values of shape {tuple(values.shape)}; "
            "it must return the shape of its input"
        )
    if classes is None or all(ids is None for ids in classes):
        return relevance
    return relevance * _class_mask(values, classes)


def _class_mask(output: torch.Tensor, classes: Sequence[Optional[Sequence[int]]]) -> torch.Tensor:
    """1 on each row's classes (all of a row without classes), 0 elsewhere."""
    if output.dim() != 2:
        raise ValueError(f"the model output must be (N, classes) to select classes with 'y', got {tuple(output.shape)}")
    keep = torch.zeros_like(output)
    for row, ids in enumerate(classes):
        if ids is None:
            keep[row] = 1
            continue
        if max(ids) >= output.shape[1] or min(ids) < -output.shape[1]:
            raise IndexError(f"class {ids} out of range for a model with {output.shape[1]} outputs")
        keep[row, ids] = 1
    return keep


def start_gradient(relevance: torch.Tensor, values: torch.Tensor, gradient_view: bool) -> torch.Tensor:
    """The gradient the backward pass begins with: the relevance itself, or in the gradient view
    ``relevance / values`` (0 where the values are 0), so that ``values * gradient`` is the relevance."""
    if not gradient_view:
        return relevance
    nonzero = values != 0
    return torch.where(nonzero, relevance / torch.where(nonzero, values, torch.ones_like(values)), torch.zeros_like(values))
