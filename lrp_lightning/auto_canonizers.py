"""The one registry behind ``canonizers="auto"``: which canonizers a model needs, found by inspecting it.

Every composite of :mod:`lrp_lightning.composites` that takes canonizers accepts ``"auto"`` and
resolves it here when it is registered on a model, and so do the callbacks: the engine and the
callbacks choose the same canonizers for the same model.

An entry pairs a *detector* — ``module -> bool``, called on every module of the model (or, with
``scope="model"``, once on the model itself) — with a *factory* returning a fresh canonizer.
:func:`auto_canonizers` returns one canonizer per entry whose detector matches, in registration
order, leaving out the entries that a matching entry *covers* (a torchvision ResNet's canonizer
already merges its BatchNorms, so its entry covers the BatchNorm merge). Each model library
registers its own entries when its module is imported; :data:`PROVIDERS` lists the modules
:func:`auto_canonizers` imports first:

- :mod:`lrp_lightning.canonizers`: the BatchNorm merge for any model in which a BatchNorm directly
  follows a linear or convolutional layer;
- :mod:`lrp_lightning.torchvision`: torchvision ResNets and VGGs;
- :mod:`lrp_lightning.transformer.attention`: ``nn.MultiheadAttention`` (torchvision's ViT) and the
  activations of ``nn.Transformer*Layer``;
- :mod:`lrp_lightning.transformer.huggingface` and :mod:`lrp_lightning.transformer.timm`: Hugging Face
  attention, gated MLPs and RMSNorms, timm's ViT attention.

A user adds an entry with :func:`register_auto_canonizer`. Detectors must not import the library
they detect (look the class up in ``sys.modules`` or test ``type(module).__module__`` instead).
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, NamedTuple, Optional, Sequence, Union

import torch

from lrp_lightning.core import collect_leaves
from lrp_lightning.types import BatchNorm, Linear

PROVIDERS: list = [
    "lrp_lightning.canonizers",
    "lrp_lightning.torchvision",
    "lrp_lightning.transformer.attention",
    "lrp_lightning.transformer.huggingface",
    "lrp_lightning.transformer.timm",
]

SCOPES = ("module", "model")

CanonizerArg = Union[str, None, Sequence[Any]]


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
    covers : tuple of str
        Names of the entries this entry's canonizer makes unnecessary: left out when this one matches.
    scope : {"module", "model"}
        ``"module"``: ``detects`` is called on every module of the model; ``"model"``: once, on the model.
    """

    name: str
    detects: Callable[[torch.nn.Module], bool]
    build: Callable[[], object]
    canonized: Optional[Callable[[torch.nn.Module], bool]] = None
    covers: tuple = ()
    scope: str = "module"

    def matches(self, model: torch.nn.Module) -> bool:
        """Whether ``model`` needs this entry's canonizer."""
        if self.scope == "model":
            return bool(self.detects(model))
        return any(self.detects(module) for module in model.modules())


_REGISTRY: dict = {}


def register_auto_canonizer(
    name: str,
    detects: Callable[[torch.nn.Module], bool],
    build: Callable[[], object],
    canonized: Optional[Callable[[torch.nn.Module], bool]] = None,
    *,
    covers: Sequence[str] = (),
    scope: str = "module",
) -> None:
    """Register (or replace) the entry ``name`` of the ``canonizers="auto"`` registry.

    Parameters
    ----------
    name : str
        Unique name of the entry.
    detects : callable
        ``module -> bool``, called on each module of a model (``scope="module"``) or on the model
        (``scope="model"``).
    build : callable
        ``() -> Canonizer``.
    canonized : callable, optional
        ``module -> bool``: whether a detected module is canonized at the moment.
    covers : sequence of str
        Names of entries left out when this one matches (its canonizer already does their work).
    scope : {"module", "model"}
        What ``detects`` is called on.

    Raises
    ------
    ValueError
        For another ``scope``.
    """
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    _REGISTRY[name] = AutoCanonizer(name, detects, build, canonized, tuple(covers), scope)


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
        In registration order, without the entries a matching entry covers.
    """
    matching = [entry for entry in registered_auto_canonizers() if entry.matches(model)]
    covered = {name for entry in matching for name in entry.covers}
    return [entry.build() for entry in matching if entry.name not in covered]


def check_canonizers(canonizers: CanonizerArg) -> CanonizerArg:
    """Return ``canonizers`` if it is ``"auto"``, None or a sequence (of canonizers: the composite checks
    the items).

    Parameters
    ----------
    canonizers : "auto", None or sequence of Canonizer
        The user's choice.

    Returns
    -------
    "auto", None or sequence of Canonizer
        ``canonizers``.

    Raises
    ------
    ValueError
        For any other string.
    """
    if isinstance(canonizers, str) and canonizers != "auto":
        raise ValueError(f'canonizers must be "auto", None or a list of canonizers, got {canonizers!r}')
    return canonizers


def resolve_canonizers(canonizers: CanonizerArg, model: torch.nn.Module) -> Optional[list]:
    """The canonizers to apply to ``model``: :func:`auto_canonizers` for ``"auto"``, else as given.

    Parameters
    ----------
    canonizers : "auto", None or sequence of Canonizer
        The user's choice.
    model : torch.nn.Module
        The model they will be applied to.

    Returns
    -------
    list of Canonizer or None
        None stays None; a sequence becomes a list.

    Raises
    ------
    ValueError
        For a string other than ``"auto"``.
    """
    if check_canonizers(canonizers) == "auto":
        return auto_canonizers(model)
    return None if canonizers is None else list(canonizers)


def batch_norm_follows_linear(model: torch.nn.Module) -> bool:
    """Whether some BatchNorm directly follows a linear/conv layer among ``model``'s leaves (in module
    order): the detector of the BatchNorm merge.

    Parameters
    ----------
    model : torch.nn.Module
        The model.

    Returns
    -------
    bool
        True if a merge candidate exists.
    """
    leaves = list(collect_leaves(model))
    return any(isinstance(a, Linear) and isinstance(b, BatchNorm) for a, b in zip(leaves, leaves[1:]))


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
