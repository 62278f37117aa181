"""The registry behind ``canonizers="auto"``: which canonizers a model needs, found by inspecting it.

An entry pairs a *detector* — ``module -> bool``, called on every module of the model — with a
*factory* returning a fresh canonizer. :func:`auto_canonizers` returns one canonizer per entry whose
detector matches some module, in registration order. Entries are registered by *provider* modules
when they are imported (e.g. :mod:`lrp_lightning.transformer.attention` registers the canonizers for
``nn.MultiheadAttention`` and the ``nn.Transformer*Layer`` activations); :data:`PROVIDERS` lists
the providers :func:`auto_canonizers` imports first, so a provider for another library adds its
module name there and calls :func:`register_auto_canonizer` at import. Detectors must not import
the library they detect (test ``type(module).__module__`` or the class name instead).
"""
from __future__ import annotations

import importlib
from typing import Callable, NamedTuple, Optional

import torch

PROVIDERS: list = ["lrp_lightning.transformer.attention", "lrp_lightning.transformer.huggingface", "lrp_lightning.transformer.timm"]


class AutoCanonizer(NamedTuple):
    """One registry entry.

    Attributes
    ----------
    name : str
        A unique name (re-registering a name replaces the entry).
    detects : callable
        ``module -> bool``: whether the model needs the canonizer because of this module.
    build : callable
        ``() -> Canonizer``: a fresh, unregistered canonizer.
    canonized : callable, optional
        ``module -> bool``: whether a detected module is currently canonized; lets a composite warn
        about detected modules that the canonizers it was given left as they are.
    """

    name: str
    detects: Callable[[torch.nn.Module], bool]
    build: Callable[[], object]
    canonized: Optional[Callable[[torch.nn.Module], bool]] = None


_REGISTRY: dict = {}


def register_auto_canonizer(
    name: str,
    detects: Callable[[torch.nn.Module], bool],
    build: Callable[[], object],
    canonized: Optional[Callable[[torch.nn.Module], bool]] = None,
) -> None:
    """Register (or replace) the entry ``name`` of the ``canonizers="auto"`` registry.

    Parameters
    ----------
    name : str
        Unique name of the entry.
    detects : callable
        ``module -> bool``, called on each module of a model.
    build : callable
        ``() -> Canonizer``.
    canonized : callable, optional
        ``module -> bool``: whether a detected module is canonized at the moment.
    """
    _REGISTRY[name] = AutoCanonizer(name, detects, build, canonized)


def registered_auto_canonizers() -> list:
    """Return all registry entries (after importing the providers), in registration order."""
    for provider in PROVIDERS:
        importlib.import_module(provider)
    return list(_REGISTRY.values())


def auto_canonizers(model: torch.nn.Module) -> list:
    """Return fresh canonizers for every registered entry whose detector matches a module of ``model``.

    Parameters
    ----------
    model : torch.nn.Module
        The model to inspect.

    Returns
    -------
    list of Canonizer
        In registration order.
    """
    modules = list(model.modules())
    return [entry.build() for entry in registered_auto_canonizers() if any(entry.detects(module) for module in modules)]


def uncanonized_modules(model: torch.nn.Module) -> list:
    """Return ``(module name, entry name)`` for every module a registry entry detects and reports as
    not canonized (entries without ``canonized`` are not checked)."""
    entries = [entry for entry in registered_auto_canonizers() if entry.canonized is not None]
    return [
        (name, entry.name)
        for name, module in model.named_modules()
        for entry in entries
        if entry.detects(module) and not entry.canonized(module)
    ]
