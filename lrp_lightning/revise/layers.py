"""Finding a named layer of a model and reading its output, for the revision methods."""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch


def named_layer(model: torch.nn.Module, layer: str) -> torch.nn.Module:
    """Return the submodule of ``model`` called ``layer`` (a name from ``model.named_modules()``).

    Raises
    ------
    ValueError
        If there is no such submodule; the message lists the known names.
    """
    modules = dict(model.named_modules())
    if not isinstance(layer, str) or layer not in modules or layer == "":
        known = ", ".join(repr(name) for name in modules if name)
        raise ValueError(f"model has no layer {layer!r}; pass one of its named modules: {known}")
    return modules[layer]


@contextlib.contextmanager
def captured_output(module: torch.nn.Module) -> Iterator[list]:
    """Collect the outputs of ``module``'s calls (in the graph) in the yielded list; the hook is removed on exit."""
    outputs: list = []
    handle = module.register_forward_hook(lambda _module, _args, output: outputs.append(output))
    try:
        yield outputs
    finally:
        handle.remove()


def channels_last(activation: torch.Tensor) -> torch.Tensor:
    """``(N, C, *spatial)`` as ``(N, *spatial, C)`` (a view): the channel vector of every position on the last axis."""
    return activation.movedim(1, -1) if activation.ndim > 2 else activation
