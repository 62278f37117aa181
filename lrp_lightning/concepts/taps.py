"""Taps on a layer's output: a gate in the backward pass that masks the relevance to the chosen concepts
and records what passes.

A tap's forward hook (registered after the composite's, so it sees the rule's output) routes the layer's
output through :class:`_Gate`, an identity in the forward pass whose backward multiplies the arriving
gradient by the tap's mask (one row per sample, 1 where there is no condition) and adds the masked
relevance to the tap's record. With a gradient-view composite the gradient ``g`` is not the relevance:
the record is ``output * g``.
"""
from __future__ import annotations

from typing import Any, Optional

import torch

from lrp_lightning.concepts.conditions import INPUT_SUFFIX


class Tap:
    """What the conditional pass keeps for one layer: its output, the gate's input and output, mask and relevance.

    Parameters
    ----------
    name : str
        The layer's module name, or ``"<module>:input"`` for the module's first input.
    records : bool
        Keep the activation and the relevance.
    gradient_view : bool
        The backward pass carries gradients, so relevance is ``output * gradient``.
    """

    def __init__(self, name: str, records: bool, gradient_view: bool) -> None:
        self.name = name
        self.records = records
        self.gradient_view = gradient_view
        self.order: Optional[int] = None
        self.gate_input: Optional[torch.Tensor] = None
        self.gate_output: Optional[torch.Tensor] = None
        self.activation: Optional[torch.Tensor] = None
        self.mask: Optional[torch.Tensor] = None
        self.relevance: Optional[torch.Tensor] = None

    def register(self, module: torch.nn.Module, counter: list) -> Any:
        """Attach the tap to ``module``'s output (a forward hook) or, for an ``:input`` tap, its first input (a
        forward pre-hook); ``counter`` numbers the taps in the order they are passed. Returns the handle."""
        if self.name.endswith(INPUT_SUFFIX):
            def pre_hook(module: torch.nn.Module, args: tuple) -> Optional[tuple]:
                if not args:
                    raise TypeError(f"{self.name!r}: the module was called without a positional input to tap")
                gated = self._gated(args[0], counter)
                return None if gated is None else (gated, *args[1:])

            return module.register_forward_pre_hook(pre_hook)

        def forward_hook(module: torch.nn.Module, args: tuple, output: Any) -> Optional[torch.Tensor]:
            return self._gated(output, counter)

        return module.register_forward_hook(forward_hook)

    def _gated(self, value: Any, counter: list) -> Optional[torch.Tensor]:
        """``value`` routed through the gate (None on later calls and without gradients)."""
        if self.order is not None or not torch.is_grad_enabled():
            return None
        if not isinstance(value, torch.Tensor):
            raise TypeError(
                f"layer {self.name!r} is {type(value).__name__}, not a tensor; condition on or record a "
                "module whose output (or first input) is one tensor"
            )
        self.order = counter[0]
        counter[0] += 1
        if self.records or self.gradient_view:
            self.activation = value.detach().clone()
        self.gate_input = value
        self.gate_output = _Gate.apply(self, value)
        return self.gate_output

    def passed(self, gradient: torch.Tensor) -> torch.Tensor:
        """Mask ``gradient`` and record the relevance that passes; return the masked gradient."""
        if self.mask is not None:
            gradient = gradient * self.mask
        if self.records:
            relevance = self.activation * gradient if self.gradient_view else gradient
            self.relevance = relevance if self.relevance is None else self.relevance + relevance
        return gradient


class _Gate(torch.autograd.Function):
    """Identity (a copy, so that later in-place operations leave the recorded output alone) whose
    backward pass is :meth:`Tap.passed`."""

    @staticmethod
    def forward(ctx: Any, tap: Tap, output: torch.Tensor) -> torch.Tensor:
        ctx.tap = tap
        return output.clone()

    @staticmethod
    def backward(ctx: Any, gradient: torch.Tensor) -> tuple:
        return None, ctx.tap.passed(gradient)
