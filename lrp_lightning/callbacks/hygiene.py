"""Snapshot and exact restore of everything a user owns, around the callback's work.

:func:`preserved_state` records, for every submodule of a model, its attributes (training flag,
parameter/buffer/submodule/hook dictionaries, instance-level overrides), every parameter's and
buffer's values, ``requires_grad`` flag and ``.grad``, torch's global module hooks, and the global
random number generators (torch CPU and initialized CUDA devices, NumPy, :mod:`random`); on exit —
also when the body raised — all of it is put back as it was. :func:`attribution_mode` leaves
inference mode, enables autograd, disables autocast and runs compiled modules eagerly for the
attribution itself.
"""
from __future__ import annotations

from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Iterator, Optional

import torch
from torch import nn
from torch.nn.modules import module as torch_module

from lrp_lightning.model_state import preserved_random_state

_GLOBAL_HOOK_DICTS = (
    "_global_forward_hooks",
    "_global_forward_hooks_always_called",
    "_global_forward_hooks_with_kwargs",
    "_global_forward_pre_hooks",
    "_global_backward_hooks",
    "_global_backward_pre_hooks",
    "_global_module_registration_hooks",
    "_global_parameter_registration_hooks",
    "_global_buffer_registration_hooks",
)


@dataclass
class _TensorRecord:
    tensor: torch.Tensor
    data: torch.Tensor
    values: torch.Tensor
    requires_grad: bool
    grad: Optional[torch.Tensor]
    grad_values: Optional[torch.Tensor]


@dataclass
class _ModuleRecord:
    module: nn.Module
    attributes: dict
    containers: dict


def _container_copy(value: Any) -> Any:
    """Shallow copy of a dict or set attribute, None for anything else."""
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, set):
        return set(value)
    return None


def _record_module(module: nn.Module) -> _ModuleRecord:
    attributes = dict(module.__dict__)
    containers = {}
    for key, value in attributes.items():
        copied = _container_copy(value)
        if copied is not None:
            containers[key] = copied
    return _ModuleRecord(module, attributes, containers)


def _restore_module(record: _ModuleRecord) -> None:
    state = record.module.__dict__
    for key in [key for key in state if key not in record.attributes]:
        del state[key]
    for key, value in record.attributes.items():
        if key not in state or state[key] is not value:
            state[key] = value
    for key, content in record.containers.items():
        container = state[key]
        container.clear()
        container.update(content)


def _record_tensor(tensor: torch.Tensor) -> _TensorRecord:
    grad = tensor.grad if tensor.is_leaf else None
    return _TensorRecord(
        tensor=tensor,
        data=tensor.data,
        values=tensor.detach().clone(),
        requires_grad=tensor.requires_grad,
        grad=grad,
        grad_values=None if grad is None else grad.detach().clone(),
    )


def _restore_values(target: torch.Tensor, values: torch.Tensor) -> None:
    if not torch.equal(target, values):
        target.copy_(values)


def _restore_tensor(record: _TensorRecord) -> None:
    tensor = record.tensor
    with torch.no_grad():
        tensor.data = record.data
        _restore_values(tensor.data, record.values)
        if tensor.is_leaf:
            tensor.requires_grad_(record.requires_grad)
            tensor.grad = record.grad
            if record.grad is not None:
                _restore_values(record.grad, record.grad_values)


def _owned_tensors(model: nn.Module) -> list:
    """Every distinct parameter and buffer of ``model``, each once."""
    seen: dict = {}
    for module in model.modules():
        for tensor in list(module._parameters.values()) + list(module._buffers.values()):
            if tensor is not None:
                seen.setdefault(id(tensor), tensor)
    return list(seen.values())


@contextmanager
def preserved_state(model: nn.Module) -> Iterator[nn.Module]:
    """Run the body, then put ``model`` and the global RNGs back exactly as they were.

    Restored on exit, even when the body raised: each submodule's attributes (``training``,
    parameter, buffer, submodule and hook dictionaries, attributes set on the instance), each
    parameter's and buffer's tensor object, values, ``requires_grad`` flag and ``.grad``, torch's
    global module hooks, and the global RNG states.

    Parameters
    ----------
    model : torch.nn.Module
        The model whose state is protected.

    Yields
    ------
    torch.nn.Module
        ``model`` itself.
    """
    modules = [_record_module(module) for module in model.modules()]
    tensors = [_record_tensor(tensor) for tensor in _owned_tensors(model)]
    global_hooks = {name: dict(getattr(torch_module, name)) for name in _GLOBAL_HOOK_DICTS if hasattr(torch_module, name)}
    with preserved_random_state():
        try:
            yield model
        finally:
            for name, content in global_hooks.items():
                hooks = getattr(torch_module, name)
                hooks.clear()
                hooks.update(content)
            for record in modules:
                _restore_module(record)
            for record in tensors:
                _restore_tensor(record)


@contextmanager
def attribution_mode(device: torch.device) -> Iterator[None]:
    """Leave inference mode, enable autograd, disable autocast on ``device``'s type, and run
    ``torch.compile``'d modules and functions eagerly.

    The compiler's ``"force_eager"`` stance (torch >= 2.6) runs the original module behind a
    ``torch.compile`` wrapper: the rules' hooks act on it as on any module, and nothing is traced
    or compiled, so the compiled training graph and its guards stay as they are.

    Parameters
    ----------
    device : torch.device
        The device the attribution runs on (selects which autocast to disable).

    Yields
    ------
    None
    """
    set_stance = getattr(torch.compiler, "set_stance", None)
    eager = set_stance("force_eager") if set_stance is not None else nullcontext()
    with torch.inference_mode(False), torch.enable_grad(), torch.autocast(device.type, enabled=False), eager:
        yield
