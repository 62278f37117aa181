"""Snapshots of what a call must leave as it was: a model's state as an attributor sees it, as the callbacks'
``preserved_state`` restores it, and the global RNG states in full (exposed as fixtures by ``tests/conftest.py``)."""
import random

import numpy as np
import torch
from torch import nn


def module_state(model: nn.Module) -> dict:
    """Everything of the model that an attributor must leave as it was."""
    hook_dicts = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
                  "_state_dict_hooks", "_load_state_dict_pre_hooks")
    return {
        "tensors": {name: value.detach().clone() for name, value in model.state_dict(keep_vars=True).items()},
        "tensor_ids": [id(value) for value in model.state_dict(keep_vars=True).values()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "grads": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "training": [m.training for m in model.modules()],
        "hooks": [len(getattr(m, name, {})) for m in model.modules() for name in hook_dicts],
        "param_hooks": [len(p._backward_hooks or {}) if hasattr(p, "_backward_hooks") else 0
                        for p in model.parameters()],
    }


def assert_same_module_state(before: dict, after: dict) -> None:
    """Assert two :func:`module_state` snapshots are identical (tensors bitwise)."""
    assert before["tensors"].keys() == after["tensors"].keys()
    for name in before["tensors"]:
        assert torch.equal(before["tensors"][name], after["tensors"][name]), name
    for key in ("tensor_ids", "requires_grad", "training", "hooks", "param_hooks"):
        assert before[key] == after[key], key
    for grad_before, grad_after in zip(before["grads"], after["grads"]):
        assert (grad_before is None) == (grad_after is None)
        if grad_before is not None:
            assert torch.equal(grad_before, grad_after)


def random_state() -> tuple:
    """Global RNG states; NumPy's in full (a draw moves its position, rarely its key array); compare two
    with ``assert_rng_equal``."""
    name, keys, position, has_gauss, cached = np.random.get_state()
    return torch.get_rng_state(), (name, keys.copy(), position, has_gauss, cached), random.getstate()


def preserved_model_state(model: nn.Module) -> dict:
    """Everything the callbacks' ``preserved_state`` promises to restore, as comparable values."""
    return {
        "tensors": {name: t.detach().clone() for name, t in list(model.named_parameters()) + list(model.named_buffers())},
        "objects": {name: id(t) for name, t in model.named_parameters()},
        "requires_grad": {name: p.requires_grad for name, p in model.named_parameters()},
        "grads": {name: None if p.grad is None else p.grad.clone() for name, p in model.named_parameters()},
        "training": {name: m.training for name, m in model.named_modules()},
        "modules": {name: id(m) for name, m in model.named_modules()},
        "hooks": {
            name: (len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks), len(m._backward_pre_hooks))
            for name, m in model.named_modules()
        },
        "attributes": {name: set(vars(m)) for name, m in model.named_modules()},
    }


def assert_same_preserved_state(before: dict, after: dict) -> None:
    """Assert two :func:`preserved_model_state` snapshots are identical (tensors bitwise)."""
    for name, tensor in before["tensors"].items():
        assert torch.equal(tensor, after["tensors"][name]), name
    for key in ("objects", "requires_grad", "training", "modules", "hooks", "attributes"):
        assert before[key] == after[key], key
    for name, grad in before["grads"].items():
        other = after["grads"][name]
        assert (grad is None and other is None) or torch.equal(grad, other), name
