"""Canonizers: temporary, exactly reversible rewrites of a model into a form LRP rules handle well.

A canonizer's :meth:`Canonizer.apply` finds the places in a model it applies to and returns one
registered instance per place; :meth:`Canonizer.remove` on each instance undoes it exactly. The
original parameter objects are never written to: modified values are swapped in and the originals
swapped back.
"""
from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from typing import Callable, Optional, Sequence

import torch

from lrp_lightning import _arguments, types
from lrp_lightning.auto_canonizers import batch_norm_follows_linear, register_auto_canonizer
from lrp_lightning.core import collect_leaves, differentiable

_MISSING = object()


class Canonizer(ABC):
    """Base class of canonizers."""

    @abstractmethod
    def apply(self, root_module: torch.nn.Module) -> list:
        """Register copies of this canonizer wherever it applies in ``root_module``; return them.

        The base implementation applies nowhere and returns an empty list.
        """
        return []

    @abstractmethod
    def remove(self) -> None:
        """Undo this (registered) canonizer."""

    def copy(self) -> "Canonizer":
        """Return an unregistered copy of this canonizer."""
        return copy.copy(self)


def _identity_forward(input: torch.Tensor) -> torch.Tensor:
    return input


class MergeBatchNorm(Canonizer):
    """Fold a BatchNorm into the linear layers before it and make the BatchNorm an identity.

    With ``s = gamma / sqrt(running_var + eps)`` the linear layer's weight becomes ``W * s`` (per
    output channel) and its bias ``(b - running_mean) * s + beta``; the BatchNorm's forward is
    replaced by the identity (exact, also on torch >= 2.10, which rejects ``eps = 0``). Valid for
    BatchNorm in eval mode (running statistics).

    The merged parameters are detached copies; a forward pass of a linear layer inside
    :class:`~lrp_lightning.core.differentiable` with gradients enabled (an attribution with
    ``create_graph=True``) swaps in the same values computed in the graph of the original weight, bias,
    ``gamma`` and ``beta``, so that a derivative of the relevance reaches them (the next other call swaps
    the copies back).
    """

    def __init__(self) -> None:
        self.linears: list = []
        self.batch_norm: Optional[torch.nn.Module] = None
        self.saved_params: list = []
        self.merged_params: dict = {}
        self.handles: list = []
        self.saved_forward = _MISSING

    def apply(self, root_module: torch.nn.Module) -> list:
        """Not applicable on its own: use :meth:`register` or a subclass that finds the pairs."""
        raise NotImplementedError("MergeBatchNorm needs explicit layers: use register(linears, batch_norm)")

    def register(self, linears: Sequence[torch.nn.Module], batch_norm: torch.nn.Module) -> None:
        """Fold ``batch_norm`` into each of ``linears`` until :meth:`remove`."""
        self.linears = list(linears)
        self.batch_norm = batch_norm
        self._scale_shift(batch_norm, in_graph=False)  # raises before anything is changed
        for linear in self.linears:
            self.saved_params.append((linear, linear._parameters["weight"], linear._parameters.get("bias")))
            weight, bias = self._merged(linear, in_graph=False)
            trainable = linear.weight.requires_grad
            self.merged_params[linear] = (torch.nn.Parameter(weight, requires_grad=trainable),
                                          torch.nn.Parameter(bias, requires_grad=trainable))
            linear._parameters["weight"], linear._parameters["bias"] = self.merged_params[linear]
            self.handles.append(linear.register_forward_pre_hook(self._swap_in, prepend=True))
        self.saved_forward = batch_norm.__dict__.get("forward", _MISSING)
        batch_norm.forward = _identity_forward

    def _swap_in(self, linear: torch.nn.Module, args: tuple) -> None:
        """Forward pre-hook: the merged parameters in the originals' graph inside a differentiable call, else
        the detached copies."""
        if differentiable.enabled_now() and torch.is_grad_enabled():
            linear._parameters["weight"], linear._parameters["bias"] = self._merged(linear, in_graph=True)
        else:
            linear._parameters["weight"], linear._parameters["bias"] = self.merged_params[linear]

    def _merged(self, linear: torch.nn.Module, in_graph: bool) -> tuple:
        """The merged ``(weight, bias)`` of ``linear`` from its saved originals (detached unless ``in_graph``)."""
        _, weight, bias = next(saved for saved in self.saved_params if saved[0] is linear)
        scale, shift = self._scale_shift(self.batch_norm, in_graph)
        weight = weight if in_graph else weight.detach()
        out_dim = 1 if getattr(linear, "transposed", False) else 0
        shape = [1] * weight.dim()
        shape[out_dim] = -1
        merged_weight = weight * scale.view(shape).to(weight)
        if bias is None:
            bias = torch.zeros_like(scale).to(weight)
        merged_bias = (bias if in_graph else bias.detach()) * scale.to(weight) + shift.to(weight)
        return merged_weight, merged_bias

    @staticmethod
    def _scale_shift(batch_norm: torch.nn.Module, in_graph: bool = False) -> tuple:
        if batch_norm.running_var is None or batch_norm.running_mean is None:
            raise ValueError(
                f"cannot merge {type(batch_norm).__name__} without running statistics (track_running_stats=False)"
            )
        variance = batch_norm.running_var.detach()
        mean = batch_norm.running_mean.detach()
        scale = torch.rsqrt(variance + batch_norm.eps)
        if batch_norm.weight is not None:
            scale = (batch_norm.weight if in_graph else batch_norm.weight.detach()) * scale
        shift = -mean * scale
        if batch_norm.bias is not None:
            shift = shift + (batch_norm.bias if in_graph else batch_norm.bias.detach())
        return scale, shift

    def remove(self) -> None:
        """Put the original parameters and the BatchNorm's forward back."""
        for handle in reversed(self.handles):
            handle.remove()
        self.handles = []
        for linear, weight, bias in reversed(self.saved_params):
            linear._parameters["weight"] = weight
            linear._parameters["bias"] = bias
        self.saved_params = []
        self.merged_params = {}
        if self.batch_norm is not None:
            if self.saved_forward is _MISSING:
                del self.batch_norm.forward
            else:
                self.batch_norm.forward = self.saved_forward
        self.batch_norm = None
        self.saved_forward = _MISSING

    @staticmethod
    def compatible(linear: torch.nn.Module, batch_norm: torch.nn.Module) -> bool:
        """Return whether ``batch_norm`` normalizes the output channels of ``linear``."""
        if not isinstance(linear, types.Linear) or not isinstance(batch_norm, types.BatchNorm):
            return False
        out_dim = 1 if getattr(linear, "transposed", False) else 0
        channels = linear.weight.shape[out_dim] * (linear.groups if out_dim == 1 else 1)
        return channels == batch_norm.num_features


class SequentialMergeBatchNorm(MergeBatchNorm):
    """Merge every BatchNorm that directly follows a Linear or convolution in leaf-module order."""

    def apply(self, root_module: torch.nn.Module) -> list:
        """Register one :class:`MergeBatchNorm` per (linear, BatchNorm) pair found; return them."""
        instances = []
        leaves = list(collect_leaves(root_module))
        try:
            for linear, batch_norm in zip(leaves, leaves[1:]):
                if self.compatible(linear, batch_norm):
                    instance = MergeBatchNorm()
                    instance.register([linear], batch_norm)
                    instances.append(instance)
        except BaseException:
            for instance in reversed(instances):
                instance.remove()
            raise
        return instances


class NamedMergeBatchNorm(MergeBatchNorm):
    """Merge BatchNorms into linear layers given by name.

    Parameters
    ----------
    name_map : list of (tuple of str, str)
        Pairs of (names of the linear layers, name of the BatchNorm folded into them).
    """

    def __init__(self, name_map: Sequence[tuple]) -> None:
        super().__init__()
        self.name_map = _arguments.name_map("name_map", name_map, _arguments.text)

    def apply(self, root_module: torch.nn.Module) -> list:
        """Register one :class:`MergeBatchNorm` per entry of the name map; return them."""
        modules = dict(root_module.named_modules())
        missing = [name for linears, bn in self.name_map for name in (*linears, bn) if name not in modules]
        if missing:
            raise KeyError(f"NamedMergeBatchNorm: no modules named {missing} in the model")
        instances = []
        for linear_names, batch_norm_name in self.name_map:
            instance = MergeBatchNorm()
            instance.register([modules[name] for name in linear_names], modules[batch_norm_name])
            instances.append(instance)
        return instances


class AttributeCanonizer(Canonizer):
    """Temporarily set attributes (e.g. ``forward``, new submodules) on matching modules.

    Parameters
    ----------
    attribute_map : callable
        ``(name, module) -> dict or None``: the attributes to set on ``module``, or None to skip it.
        Values are set as they are, as in zennit: a plain function set as ``forward`` is called
        without the module; bind it (``function.__get__(module)``) to get ``self``.
    """

    def __init__(self, attribute_map: Callable[[str, torch.nn.Module], Optional[dict]]) -> None:
        if not callable(attribute_map):
            raise TypeError(f"attribute_map must be callable, got {type(attribute_map).__name__} {attribute_map!r}")
        self.attribute_map = attribute_map
        self.module: Optional[torch.nn.Module] = None
        self.saved: dict = {}

    def apply(self, root_module: torch.nn.Module) -> list:
        """Register a copy on every module for which ``attribute_map`` returns attributes."""
        instances = []
        try:
            for name, module in list(root_module.named_modules()):
                attributes = self.attribute_map(name, module)
                if attributes:
                    instance = self.copy()
                    instances.append(instance)
                    instance.register(module, attributes)
        except BaseException:
            for instance in reversed(instances):
                instance.remove()
            raise
        return instances

    def register(self, module: torch.nn.Module, attributes: dict) -> None:
        """Set ``attributes`` on ``module`` until :meth:`remove`."""
        self.module = module
        self.saved = {}
        for key, value in attributes.items():
            self.saved[key] = (module.__dict__.get(key, _MISSING), module._modules.get(key, _MISSING))
            setattr(module, key, value)

    def remove(self) -> None:
        """Delete the set attributes and restore what was there before."""
        module = self.module
        if module is None:
            return
        for key, (instance_value, submodule) in reversed(list(self.saved.items())):
            if key in module._modules:
                del module._modules[key]
            module.__dict__.pop(key, None)
            if submodule is not _MISSING:
                module._modules[key] = submodule
            if instance_value is not _MISSING:
                module.__dict__[key] = instance_value
        self.module = None
        self.saved = {}

    def copy(self) -> "AttributeCanonizer":
        """Return an unregistered copy."""
        instance = copy.copy(self)
        instance.module = None
        instance.saved = {}
        return instance


class CompositeCanonizer(Canonizer):
    """Several canonizers applied in order and removed in reverse order.

    Parameters
    ----------
    canonizers : list of Canonizer
        The canonizers to apply.
    """

    def __init__(self, canonizers: Sequence[Canonizer]) -> None:
        self.canonizers = _arguments.sequence("canonizers", canonizers, _arguments.instance(Canonizer), allow_none=False)

    def apply(self, root_module: torch.nn.Module) -> list:
        """Apply each canonizer; return all registered instances."""
        instances: list = []
        try:
            for canonizer in self.canonizers:
                instances.extend(canonizer.apply(root_module))
        except BaseException:
            for instance in reversed(instances):
                instance.remove()
            raise
        return instances

    def remove(self) -> None:
        """Nothing to undo: the instances returned by :meth:`apply` are removed individually."""


BATCH_NORM_MERGE = "batch norm merge"

register_auto_canonizer(BATCH_NORM_MERGE, batch_norm_follows_linear, SequentialMergeBatchNorm, scope="model")
