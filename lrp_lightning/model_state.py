"""Model-state preservation: context managers that leave what the user owns as it was.

:func:`preserved_random_state` restores the global random state (torch CPU and CUDA, numpy,
:mod:`random`), :func:`preserved_buffers` a module's buffer values (a training-mode forward updates
BatchNorm statistics) and :func:`frozen_parameters` the ``requires_grad`` flags it turns off for a
pass that needs no parameter gradient. The attributors and the callbacks use them.
"""
from __future__ import annotations

import contextlib
import random
from typing import Any, Iterator, Optional

import numpy as np
import torch


@contextlib.contextmanager
def preserved_random_state(device: Optional[torch.device] = None) -> Iterator[None]:
    """Restore the global random state (torch CPU and CUDA, numpy, random) on exit.

    Parameters
    ----------
    device : torch.device, optional
        Device whose CUDA generator is saved too, if it is a CUDA device; when None, the
        generators of all initialized CUDA devices are.

    Yields
    ------
    None
    """
    cuda_devices = []
    if device is None and torch.cuda.is_initialized():
        cuda_devices = list(range(torch.cuda.device_count()))
    elif device is not None and device.type == "cuda":
        cuda_devices = [device.index if device.index is not None else torch.cuda.current_device()]
    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=cuda_devices, device_type="cuda"):
            yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


@contextlib.contextmanager
def preserved_buffers(model: Any) -> Iterator[None]:
    """Copy a module's buffer values back on exit (a training-mode forward may update them)."""
    if not isinstance(model, torch.nn.Module):
        yield
        return
    saved = [(buffer, buffer.detach().clone()) for buffer in model.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, value in saved:
                buffer.copy_(value)


@contextlib.contextmanager
def frozen_parameters(model: Any) -> Iterator[None]:
    """Turn off ``requires_grad`` of a module's parameters for the duration, and back on exit.

    An attribution without ``create_graph`` needs gradients with respect to the input only; with
    the parameters frozen, autograd keeps no tensor that only a parameter gradient would need (a
    linear layer's input, for one), which lowers the peak memory of the pass.
    """
    if not isinstance(model, torch.nn.Module):
        yield
        return
    # a leaf only: a canonizer may hold a parameter computed in the graph of the originals (see MergeBatchNorm)
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad and parameter.is_leaf]
    try:
        for parameter in trainable:
            parameter.requires_grad_(False)
        yield
    finally:
        for parameter in trainable:
            parameter.requires_grad_(True)
