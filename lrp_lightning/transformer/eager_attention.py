"""Make the attention of a library's attention module explicit, without rewriting it.

Attention modules of Hugging Face transformers and timm compute ``softmax(Q K^T * scale + mask) V``
either with PyTorch's fused kernel (``F.scaled_dot_product_attention``, SDPA) or, in their eager
path, with two ``torch.matmul`` / ``@`` calls and one softmax, surrounded by projections, reshapes,
rotary embeddings, caches and masks that differ from model to model and from version to version.
Instead of copying each of those forwards, the canonizer here keeps the module's own forward and
runs it inside a :class:`torch.overrides.TorchFunctionMode` that routes exactly these calls into
explicit submodules, so that rules can be attached to them: the fused call into a
:class:`~lrp_lightning.layer.ScaledDotProductAttention` (the kernel itself still runs, and no
``(T, T)`` tensor is formed), the eager path's three calls into a
:class:`~lrp_lightning.layer.MatMul` for the scores, an ``nn.Softmax`` for the attention weights and
a :class:`~lrp_lightning.layer.MatMul` for the weighted sum of the values. Every other operation
runs as it would. The mode is active only while that module's forward runs, in that thread.

Only products of two tensors with at least three dimensions (batch, heads, ...) are taken as
attention products; anything else (a hook's matrix product with a weight, say) passes through. A
forward that computes neither one fused attention nor ``matmul, softmax, matmul`` in this order
raises a RuntimeError naming the module, rather than silently leaving attention implicit.

A softmax requested in a dtype (``softmax(x, dtype=torch.float32)``, as the Hugging Face eager
path does) is computed in the wider of that dtype and the input's: equal to the original for
float32 and half precision, and without the float32 round trip for float64 inputs (which then
agree with the SDPA path to float64 precision).
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch.overrides import TorchFunctionMode

from lrp_lightning.canonizers import AttributeCanonizer
from lrp_lightning.layer import MatMul, ScaledDotProductAttention

_MATMULS = frozenset({torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__})
_SOFTMAXES = frozenset({torch.softmax, torch.nn.functional.softmax, torch.Tensor.softmax})
_FUSED = torch.nn.functional.scaled_dot_product_attention
_EXPLICIT = ("matmul", "softmax", "matmul")
_EXPECTED = (_EXPLICIT, ("fused",))


def _attention_operands(args: tuple, kwargs: dict) -> bool:
    """Whether a matrix product is one of attention's: two tensors of at least three dimensions, no ``out``."""
    return (
        len(args) == 2
        and not kwargs
        and all(isinstance(arg, torch.Tensor) and arg.dim() >= 3 for arg in args)
    )


def _softmax_arguments(args: tuple, kwargs: dict) -> tuple:
    """Return ``(input, dim, dtype)`` of a ``softmax`` call in any of its spellings."""
    input = args[0]
    dim = args[1] if len(args) > 1 else kwargs.get("dim")
    dtype = kwargs.get("dtype")
    if dtype is None:
        dtype = next((arg for arg in args[2:] if isinstance(arg, torch.dtype)), None)
    return input, dim, dtype


class _ExplicitAttentionMode(TorchFunctionMode):
    """Routes one attention forward's fused attention, or its two products and softmax, into the module's submodules."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = module
        self.calls: list = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is _FUSED:
            self._expect("fused")
            return self.module.canonizer_attention(*args, **kwargs)
        if func in _MATMULS and _attention_operands(args, kwargs):
            self._expect("matmul")
            submodule = self.module.canonizer_scores if len(self.calls) == 1 else self.module.canonizer_context
            return submodule(*args)
        if func in _SOFTMAXES:
            input, dim, dtype = _softmax_arguments(args, kwargs)
            if dim is None or dim % input.dim() != input.dim() - 1:
                raise RuntimeError(
                    f"{type(self.module).__name__}: the attention softmax must run over the last dimension, got dim={dim}"
                )
            self._expect("softmax")
            if dtype is not None:
                input = input.to(torch.promote_types(input.dtype, dtype))
            return self.module.canonizer_softmax(input)
        return func(*args, **kwargs)

    def _expect(self, operation: str) -> None:
        calls = tuple(self.calls) + (operation,)
        if not any(expected[: len(calls)] == calls for expected in _EXPECTED):
            raise RuntimeError(self._mismatch(list(calls)))
        self.calls.append(operation)

    def _mismatch(self, calls: list) -> str:
        return (
            f"cannot make the attention of {type(self.module).__name__} explicit: its forward computed "
            f"{', '.join(calls) or 'no attention'} where softmax(Q K^T) V needs one fused attention "
            "(F.scaled_dot_product_attention) or matmul, softmax, matmul. Use its eager or SDPA attention "
            "implementation, or give the composite canonizers for this module."
        )

    def check_complete(self) -> None:
        """Raise unless the forward computed one fused attention or the whole ``matmul, softmax, matmul``."""
        if tuple(self.calls) not in _EXPECTED:
            raise RuntimeError(self._mismatch(self.calls))


def explicit_attention_forward(original: Callable) -> Callable:
    """Return a forward (a function of ``self``) running ``original`` with its attention made explicit.

    Parameters
    ----------
    original : callable
        The module's forward as it was (a bound method or an instance-level function).

    Returns
    -------
    callable
        ``forward(self, *args, **kwargs)``, to be bound to the module.
    """

    def forward(self, *args, **kwargs):
        mode = _ExplicitAttentionMode(self)
        with mode:
            output = original(*args, **kwargs)
        mode.check_complete()
        return output

    return forward


class ExplicitAttentionCanonizer(AttributeCanonizer):
    """Give matching attention modules explicit attention submodules.

    Each matching module gets, until removed, the submodules ``canonizer_attention``
    (:class:`~lrp_lightning.layer.ScaledDotProductAttention`, for a fused call),
    ``canonizer_scores`` (:class:`~lrp_lightning.layer.MatMul`), ``canonizer_softmax``
    (``nn.Softmax(dim=-1)``) and ``canonizer_context`` (:class:`~lrp_lightning.layer.MatMul`) for an
    eager one, and a forward that runs the module's own forward with these operations routed into
    the submodules (see the module docstring). Nothing is written to the module's parameters,
    buffers or class.

    Parameters
    ----------
    detects : callable
        ``module -> bool``: whether a module is an attention module to make explicit.
    """

    def __init__(self, detects: Callable[[torch.nn.Module], bool]) -> None:
        self.detects = detects
        super().__init__(self._attribute_map)

    def _attribute_map(self, name: str, module: torch.nn.Module) -> Optional[dict]:
        if not self.detects(module):
            return None
        return {
            "canonizer_attention": ScaledDotProductAttention(),
            "canonizer_scores": MatMul(),
            "canonizer_softmax": torch.nn.Softmax(dim=-1),
            "canonizer_context": MatMul(),
            "forward": explicit_attention_forward(module.forward).__get__(module),
        }
