"""Rules in the gradient x input view, used by the transformer composites (AttnLRP, CP-LRP).

In this view the backward pass carries a *modified gradient* ``g`` and the relevance of any tensor
``t`` is ``R_t = t * g_t``. A rule returns ``g_x`` for its module's input such that
``x * g_x`` is the rule's relevance ``R_x`` given ``R_y = y * g_y`` at the output. Linear maps
without bias (reshapes, scalings, residual additions, rotary embeddings, additive masks) need no
rule: their plain gradient is LRP-0. ``stab(d) = d + eps * sign(d)`` with ``sign(0) = +1``.

Two mechanisms realise the rules:

- :class:`OutputGradientHook` rescales the gradient arriving at the module output and lets the
  module's own backward pass (its transposed map ``J^T``) carry it to the inputs. This is exact for
  modules that are affine in each input (linear layers, products with the other factor fixed),
  costs one element-wise operation and needs no second forward pass.
- Rules derived from :class:`~lrp_lightning.core.Hook` replace the module's backward pass (element-
  wise non-linearities, normalisation layers).

Composites that use these rules set ``gradient_view = True``; the attributors then return
``input * gradient``. With the plain ``composite.context(model)`` API the relevance of an input
``x`` is ``x * x.grad``.
"""
from __future__ import annotations

import contextlib
import math
import weakref
from typing import Any, Callable, Optional, Union

import torch

from lrp_lightning.core import Hook, Stabilizer, _hooks_suspended, differentiable, forward_of, is_plain_stabilizer, is_variable
from lrp_lightning.rules import Gamma
from lrp_lightning.types import _defined_in

StabilizerLike = Union[float, Callable[[torch.Tensor], torch.Tensor]]


class _OutputCall:
    """What one hooked call leaves for the backward pass of an :class:`OutputGradientHook`.

    The output is kept; the tensor arguments only by weak reference, with their versions: they
    are needed only if the output is modified in place after the call, and holding them would keep
    alive tensors that autograd itself does not need (a linear layer's input when its parameters
    do not require grad).

    The autograd functions below keep the call in their context and return :meth:`output_alias`,
    never ``output`` itself: autograd sets the ``grad_fn`` of the tensor object a function returns to
    the function's node, so returning the kept tensor would close a reference cycle (kept tensor ->
    node -> context -> call -> kept tensor) through autograd's C++ graph, which Python's garbage
    collector cannot break, and every call's whole graph, activations and rules would stay alive.
    """

    __slots__ = ("hook", "module", "args", "kwargs", "output", "version", "input_versions", "share")

    def __init__(self, hook: "OutputGradientHook", module: torch.nn.Module, args: tuple, kwargs: dict, output: torch.Tensor, share: float):
        self.hook = hook
        self.module = module
        self.args = tuple(_weak(value) for value in args)
        self.kwargs = {key: _weak(value) for key, value in kwargs.items()}
        self.output = output
        self.version = output._version
        self.input_versions = _versions(args)
        self.share = share

    def output_alias(self) -> torch.Tensor:
        """A new tensor object sharing the kept output's storage (and version counter), for an
        autograd function to return."""
        return self.output.detach()

    def current_output(self) -> torch.Tensor:
        """The module output, recomputed from the inputs if it was modified in place since the call.

        Raises
        ------
        RuntimeError
            If the inputs were modified in place as well, or no longer exist.
        """
        if self.output._version == self.version:
            return self.output
        args = tuple(_strong(value) for value in self.args)
        kwargs = {key: _strong(value) for key, value in self.kwargs.items()}
        if any(value is _GONE for value in (*args, *kwargs.values())) or _versions(args) != self.input_versions:
            raise RuntimeError(
                f"the output of {type(self.module).__name__} was modified in place after the call, and its inputs "
                "were both modified in place or freed since, so its rule cannot see them; make the in-place "
                "operation after it out-of-place"
            )
        with torch.no_grad(), _hooks_suspended():
            return self.module.forward(*args, **kwargs)


_GONE = object()


def _weak(value: Any) -> Any:
    """A weak reference to a tensor; any other value as it is."""
    return weakref.ref(value) if isinstance(value, torch.Tensor) else value


def _strong(value: Any) -> Any:
    """The value behind :func:`_weak` (``_GONE`` for a freed tensor)."""
    if isinstance(value, weakref.ref):
        value = value()
        return _GONE if value is None else value
    return value


def _versions(values: tuple) -> list:
    return [value._version for value in values if isinstance(value, torch.Tensor)]


class _OutputGradientFunction(torch.autograd.Function):
    """Identity on the module output whose backward rescales the incoming gradient."""

    @staticmethod
    def forward(ctx: Any, call: _OutputCall, output: torch.Tensor) -> torch.Tensor:
        ctx.call = call
        # the output itself (no copy): a backward pass with create_graph=True differentiates through it
        ctx.save_for_backward(output)
        ctx.differentiable_forward = differentiable.enabled_now()
        ctx.relevance_done = False
        return call.output_alias()

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple:
        call = ctx.call
        if ctx.relevance_done:  # differentiating a relevance built with create_graph=True: the true derivative
            return None, grad_output
        if torch.is_grad_enabled():  # create_graph=True: the rescaling in the graph of the output
            ctx.relevance_done = ctx.differentiable_forward
            output, = ctx.saved_tensors
            return None, call.hook.output_gradient(output, grad_output, call.share)
        with torch.no_grad():
            return None, call.hook.output_gradient(call.current_output(), grad_output, call.share)


# a linear layer widening its input this many times or more is taken for a vocabulary projection
VOCABULARY_WIDENING = 8


def _frozen_vocabulary_projection(module: torch.nn.Module, args: tuple, kwargs: dict) -> bool:
    """Whether a call is an ``nn.Linear`` that widens its one input at least ``VOCABULARY_WIDENING``
    times (a language model's head) and whose parameters need no gradient (as in the attributors)."""
    return (
        isinstance(module, torch.nn.Linear)
        and type(module).forward is torch.nn.Linear.forward
        and len(args) == 1
        and not kwargs
        and module.out_features >= VOCABULARY_WIDENING * module.in_features
        and not any(parameter.requires_grad for parameter in module.parameters(recurse=False))
        and not differentiable.enabled_now()
    )


def _carrying_rows(rows: torch.Tensor) -> Optional[torch.Tensor]:
    """Indices of the rows of a 2-D gradient that are not all zero, if they are at most half of them."""
    carrying = rows.any(dim=1).nonzero().squeeze(1)
    return carrying if 2 * carrying.numel() <= rows.shape[0] else None


class _VocabularyProjectionFunction(torch.autograd.Function):
    """The output of a frozen vocabulary projection ``z = x W^T + b``, whose backward applies the
    rule's rescaling and ``W^T`` itself, to the rows (positions) that receive gradient only.

    A language model explained at one position gets gradient at that position of its logits
    alone; the layer's own backward pass would rescale and map all ``T`` positions, which for a
    vocabulary of ``V`` entries is most of the explanation's cost. Rows without gradient give
    zero rows of ``g_x``, as they would in the dense computation.
    """

    @staticmethod
    def forward(ctx: Any, call: _OutputCall, weight: torch.Tensor, input: torch.Tensor) -> torch.Tensor:
        ctx.call = call
        ctx.weight = weight
        ctx.input_dtype = input.dtype
        return call.output_alias()

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple:
        call = ctx.call
        with torch.no_grad():
            output = call.current_output()
            rows = grad_output.reshape(-1, grad_output.shape[-1])
            carrying = _carrying_rows(rows)
            if carrying is None:
                scaled = call.hook.output_gradient(output, grad_output, call.share).reshape(rows.shape)
                input_rows = scaled.mm(ctx.weight.to(scaled.dtype))
            else:
                scaled = call.hook.output_gradient(output.reshape(rows.shape)[carrying], rows[carrying], call.share)
                input_rows = rows.new_zeros(rows.shape[0], ctx.weight.shape[1])
                input_rows[carrying] = scaled.mm(ctx.weight.to(scaled.dtype))
        return None, None, input_rows.view(*grad_output.shape[:-1], -1).to(ctx.input_dtype)


class _Stabilized:
    """Mixed into rules with one stabilizer: ``epsilon`` (float or callable) and ``stabilizer``."""

    def __init__(self, epsilon: StabilizerLike = 1e-6) -> None:
        super().__init__()
        self.epsilon = epsilon
        self.stabilizer = Stabilizer.ensure(epsilon, "epsilon")

    def _repr_fields(self):
        return {"epsilon": self.epsilon}


class _InputOutputRule(_Stabilized, Hook):
    """A rule replacing the module's backward pass by :meth:`input_gradient` of its input and output.

    For PyTorch's own modules (one kernel each: ``nn.GELU``, ``nn.LayerNorm``, ...) only the input is
    kept for the backward pass and the output is recomputed from it there, so that no output-sized
    tensor stays alive per call; other modules (a Hugging Face activation or RMSNorm is a chain of
    element-wise operations in Python) keep their output, which is cheaper than running them twice.
    A kept output is not copied for the next modules: should one of them change it in place, the
    output is recomputed, which for these element-wise modules costs about what the copy would.
    """

    copies_kept_output = False

    def saves_output_of(self, module: torch.nn.Module) -> bool:
        """Whether the output of ``module`` is kept (True unless the module is one of ``torch.nn``'s)."""
        return not _defined_in(module, "torch.nn.")

    def propagate(self, module, input, output, grad_output, args, kwargs):
        """Return :meth:`input_gradient` (without autograd, unless :class:`~lrp_lightning.core.differentiable`;
        the output recomputed from the input if not kept)."""
        with _graph_unless_differentiable():
            return self.input_gradient(module, input, _module_output(module, input, output, args, kwargs), grad_output)

    def input_gradient(self, module: torch.nn.Module, input: torch.Tensor, output: torch.Tensor, grad_output: torch.Tensor) -> torch.Tensor:
        """Return the modified gradient ``g_x`` of the input for ``g_y`` at the output."""
        raise NotImplementedError


def _graph_unless_differentiable() -> contextlib.AbstractContextManager:
    """``torch.no_grad()``, or nothing while a differentiable relevance is built."""
    return contextlib.nullcontext() if differentiable.enabled_now() else torch.no_grad()


def _module_output(module: torch.nn.Module, input: torch.Tensor, output: Optional[torch.Tensor], args: tuple, kwargs: dict) -> torch.Tensor:
    """The module output saved by a :class:`~lrp_lightning.core.Hook`, or, when none was saved (the
    hook passes None), recomputed from the input (an in-place module works on a copy)."""
    return forward_of(module, input, args, kwargs) if output is None else output


class OutputGradientHook(Hook):
    """Base of rules that rescale the gradient at the module output; the module's own backward
    pass maps it to the inputs.

    Subclasses implement :meth:`output_gradient`. The rule applies to calls whose output requires
    grad; ``share`` is ``1 / n`` for ``n`` tensor arguments (positional or keyword) that require
    grad and are not parameters (at least 1).
    """

    saves_input = False

    def output_gradient(self, output: torch.Tensor, grad_output: torch.Tensor, share: float) -> torch.Tensor:
        """Return the gradient passed on to the module's own backward pass.

        Parameters
        ----------
        output : torch.Tensor
            The module output ``y``.
        grad_output : torch.Tensor
            The modified gradient ``g_y`` arriving at the output.
        share : float
            ``1 / n`` for ``n`` variable tensor inputs.
        """
        raise NotImplementedError

    def _pre_hook(self, module, args, kwargs):
        return None

    def _forward_hook(self, module, args, kwargs, output):
        if not (self._switched_on() and isinstance(output, torch.Tensor) and output.requires_grad):
            return None
        variables = sum(1 for value in (*args, *kwargs.values()) if is_variable(value))
        call = _OutputCall(self, module, args, kwargs, output.detach(), 1.0 / max(variables, 1))
        if _frozen_vocabulary_projection(module, args, kwargs):
            return _VocabularyProjectionFunction.apply(call, module.weight, args[0])
        return _OutputGradientFunction.apply(call, output)


def _scaled_ratio(output: torch.Tensor, grad_output: torch.Tensor, stabilizer: Callable, share: float = 1.0) -> torch.Tensor:
    """``share * g * y / stab(y)``, a fresh tensor (out of place when gradients are enabled)."""
    if torch.is_grad_enabled():
        return _epsilon_ratio(output, stabilizer) * grad_output * share
    ratio = _epsilon_ratio(output, stabilizer).mul_(grad_output)
    return ratio.mul_(share) if share != 1 else ratio


def _epsilon_ratio(output: torch.Tensor, stabilizer: Callable) -> torch.Tensor:
    """``y / stab(y)``; for the plain stabilizer computed as ``|y| / (|y| + eps)`` (equal, fewer passes;
    out of place when gradients are enabled)."""
    if is_plain_stabilizer(stabilizer):
        magnitude = output.abs()
        if torch.is_grad_enabled():
            return magnitude / (magnitude + stabilizer.epsilon)
        return magnitude.div_(magnitude + stabilizer.epsilon)
    return output / stabilizer(output)


class AffineEpsilon(_Stabilized, OutputGradientHook):
    """LRP-epsilon for any layer affine in its input (``nn.Linear``, convolutions, Hugging Face
    ``Conv1D``, BatchNorm in eval mode), in the gradient view.

    For ``z = W x + b``: ``R_x = x * W^T(R_z / stab(z))`` with ``R_z = z * g_z``, so
    ``g_x = W^T(g_z * z / stab(z))``: the incoming gradient is scaled by ``z / stab(z)`` and the
    layer's own backward pass applies ``W^T``. ``epsilon -> 0`` gives the plain gradient (LRP-0).

    Parameters
    ----------
    epsilon : float or callable
        Stabilizer of the denominator (a callable replaces ``stab`` wholesale).
    """

    def output_gradient(self, output, grad_output, share):
        """Return ``g_z * z / stab(z)``."""
        return _scaled_ratio(output, grad_output, self.stabilizer)


class UniformProduct(_Stabilized, OutputGradientHook):
    """Uniform rule for products of tensors (:class:`~lrp_lightning.layer.MatMul`,
    :class:`~lrp_lightning.layer.Mul`), in the gradient view (AttnLRP, Achtibat et al., 2024).

    Each of the ``n`` variable factors receives ``1/n`` of the relevance that LRP-epsilon gives it
    with the other factors held fixed. For ``Y = A B``:
    ``R_A = 1/2 * A * ((R_Y / stab(Y)) B^T)``, ``R_B = 1/2 * B * (A^T (R_Y / stab(Y)))`` with
    ``R_Y = Y * g_Y``, so ``g_A = 1/2 (g_Y * Y / stab(Y)) B^T`` and
    ``g_B = 1/2 A^T (g_Y * Y / stab(Y))``: the incoming gradient is scaled by ``Y / (n stab(Y))``
    and the product's own backward pass distributes it. For ``y = a * b`` likewise
    ``g_a = 1/2 b * g_y * y / stab(y)``. A factor that is a constant (no grad) or a parameter
    receives nothing, so a product with one variable factor is a linear map that gets LRP-epsilon
    whole.

    Parameters
    ----------
    epsilon : float or callable
        Stabilizer of the denominator.
    """

    def output_gradient(self, output, grad_output, share):
        """Return ``g_Y * Y / stab(Y) / n``."""
        return _scaled_ratio(output, grad_output, self.stabilizer, share)


class IdentityRule(_InputOutputRule):
    """Identity rule for element-wise non-linearities ``y = f(x)`` (GELU, SiLU, tanh, exp, ...).

    ``R_x = R_y``, so ``g_x = g_y * y / stab(x)`` (``x * g_x = R_y * x / stab(x)``; the stabilizer
    only matters where ``|x|`` is of the order of epsilon).

    Parameters
    ----------
    epsilon : float or callable
        Stabilizer of the division by the input.
    """

    def input_gradient(self, module, input, output, grad_output):
        """Return ``g_y * y / stab(x)``."""
        if torch.is_grad_enabled():
            return grad_output * output / self.stabilizer(input)
        return torch.mul(grad_output, output).div_(self.stabilizer(input))


def _normalized_dims(module: torch.nn.Module) -> tuple:
    """The trailing dimensions a normalisation layer normalises over (the last one if unspecified)."""
    shape = getattr(module, "normalized_shape", None)
    count = len(shape) if isinstance(shape, (tuple, list, torch.Size)) else 1
    return tuple(range(-count, 0))


class LayerNormEpsilon(_InputOutputRule):
    """LRP-epsilon on a LayerNorm with its standard deviation held constant (AttnLRP).

    With ``sigma = sqrt(var(x) + eps)`` detached, ``y = (x - mean(x)) / sigma * w + b`` is affine
    in ``x`` with the symmetric centring map ``C``: ``R_x = x * J^T(R_y / stab(y))``,
    ``J^T u = C(u * w) / sigma``, so ``g_x = (v - mean(v)) / sigma`` with
    ``v = w * g_y * y / stab(y)`` (means over the normalised dimensions).

    Parameters
    ----------
    epsilon : float or callable
        Stabilizer of the denominator.
    """

    def propagate(self, module, input, output, grad_output, args, kwargs):
        """As :meth:`_InputOutputRule.propagate`; for ``torch.nn.LayerNorm`` the output is recomputed by
        the fused kernel that also returns ``1 / sigma``."""
        if (output is not None or type(module).forward is not torch.nn.LayerNorm.forward or args or kwargs
                or differentiable.enabled_now()):
            return super().propagate(module, input, output, grad_output, args, kwargs)
        with torch.no_grad():
            output, _, inverse_sigma = torch.native_layer_norm(input, module.normalized_shape, module.weight, module.bias, module.eps)
            return self._centred(module, output, grad_output).mul_(inverse_sigma)

    def input_gradient(self, module, input, output, grad_output):
        """Return ``(v - mean(v)) / sigma`` with ``v = w * g_y * y / stab(y)``."""
        dims = _normalized_dims(module)
        sigma = (input.var(dim=dims, unbiased=False, keepdim=True) + module.eps).sqrt()
        return self._centred(module, output, grad_output) / sigma

    def _centred(self, module: torch.nn.Module, output: torch.Tensor, grad_output: torch.Tensor) -> torch.Tensor:
        """``v - mean(v)`` with ``v = w * g_y * y / stab(y)`` (a fresh tensor)."""
        scaled = _scaled_ratio(output, grad_output, self.stabilizer)
        if getattr(module, "weight", None) is not None:
            scaled = scaled * module.weight
        return scaled - scaled.mean(dim=_normalized_dims(module), keepdim=True)


class RMSNormEpsilon(_InputOutputRule):
    """LRP-epsilon on an RMSNorm with its root mean square held constant (AttnLRP).

    With ``rms = sqrt(mean(x^2) + eps)`` detached, ``y = x / rms * w`` is linear in ``x``:
    ``R_x = x * w / rms * R_y / stab(y)``, so ``g_x = w / rms * g_y * y / stab(y)``. ``eps`` is
    the module's ``variance_epsilon`` or ``eps`` (``torch.finfo`` of the input's dtype when None);
    ``rms`` is computed in at least float32, as the Hugging Face implementations do. The effective
    scale ``w`` is read from the module itself, ``w = f(1) * sqrt(1 + eps)`` for an input of ones,
    so variants scaling by ``1 + weight`` (Gemma) or by nothing are handled alike.

    Parameters
    ----------
    epsilon : float or callable
        Stabilizer of the denominator.
    """

    def input_gradient(self, module, input, output, grad_output):
        """Return ``w / rms * g_y * y / stab(y)``."""
        eps = getattr(module, "variance_epsilon", None)
        if eps is None:
            eps = getattr(module, "eps", None)
        if eps is None:
            eps = torch.finfo(input.dtype).eps
        dims = _normalized_dims(module)
        wide = input.to(torch.promote_types(input.dtype, torch.float32))
        rms = torch.sqrt(wide.pow(2).mean(dim=dims, keepdim=True) + eps)
        ones = input.new_ones((1,) * (input.dim() - len(dims)) + tuple(input.shape[dim] for dim in dims))
        scale = module.forward(ones).to(rms.dtype) * math.sqrt(1.0 + eps)
        return (grad_output * _epsilon_ratio(output, self.stabilizer) * (scale / rms)).to(input.dtype)


class ConstantAttention(Hook):
    """CP-LRP's rule for the attention softmax (Ali et al., 2022): the attention weights are constants.

    The softmax output is detached, so no relevance flows into queries and keys, and the product
    of the attention weights with the values is linear in the values (it then gets LRP-epsilon
    whole, see :class:`UniformProduct`).
    """

    saves_input = False

    def _pre_hook(self, module, args, kwargs):
        return None

    def _forward_hook(self, module, args, kwargs, output):
        if self._switched_on() and isinstance(output, torch.Tensor):
            return _constant(output)
        return None


class ConstantGate(UniformProduct):
    """CP-LRP's rule for a gated product ``y = gate * value`` (:class:`~lrp_lightning.layer.GatedMul`).

    The gate (the first factor) is detached, as CP-LRP holds attention weights constant: the product
    is then linear in the value, which gets LRP-epsilon whole,
    ``R_value = value * gate * R_y / stab(y)``; nothing flows into the gate's branch.

    Parameters
    ----------
    epsilon : float or callable
        Stabilizer of the denominator.
    """

    def _pre_hook(self, module, args, kwargs):
        if self._switched_on() and args:
            return (_constant(args[0]),) + tuple(args[1:]), kwargs
        return None


class _ScaledGradient(torch.autograd.Function):
    """Identity whose backward multiplies the gradient by a constant.

    Made inside :class:`~lrp_lightning.core.differentiable`, a node that has carried relevance in a
    backward pass with ``create_graph=True`` passes the gradient unchanged afterwards: a derivative
    of that relevance needs the forward pass's true derivative.
    """

    @staticmethod
    def forward(ctx: Any, input: torch.Tensor, factor: float) -> torch.Tensor:
        ctx.factor = factor
        ctx.differentiable_forward = differentiable.enabled_now()
        ctx.relevance_done = False
        return input.view_as(input)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple:
        if ctx.relevance_done:
            return grad_output, None
        ctx.relevance_done = ctx.differentiable_forward and torch.is_grad_enabled()
        return grad_output * ctx.factor, None


def _constant(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` held constant for the relevance: detached; inside :class:`~lrp_lightning.core.differentiable`
    a node passing no relevance but the true derivative to a pass differentiating the relevance."""
    return _ScaledGradient.apply(tensor, 0.0) if differentiable.enabled_now() else tensor.detach()


def _with_query_and_key(args: tuple, kwargs: dict, change: Callable[[torch.Tensor], torch.Tensor]) -> tuple:
    """``(args, kwargs)`` of an attention call with ``change`` applied to the query and the key
    (positional or keyword, as ``F.scaled_dot_product_attention`` takes them)."""
    args, kwargs = list(args), dict(kwargs)
    for position, name in enumerate(("query", "key")):
        if position < len(args):
            args[position] = change(args[position])
        elif name in kwargs:
            kwargs[name] = change(kwargs[name])
    return tuple(args), kwargs


class _FusedAttentionRule(_Stabilized, OutputGradientHook):
    """Base of the rules for fused attention (:class:`~lrp_lightning.layer.ScaledDotProductAttention`).

    ``O = A V`` with ``A = softmax(Q K^T * scale + M)``: the gradient arriving at ``O`` is
    rescaled by ``O / stab(O)`` (LRP-epsilon at the product ``A V``) and the fused kernel's own
    backward pass carries it to ``Q``, ``K`` and ``V``; :meth:`query_key` decides what reaches the
    query and the key.
    """

    value_share = 1.0

    def query_key(self, tensor: torch.Tensor) -> torch.Tensor:
        """The query or key as passed to the kernel (its gradient changed as the rule says)."""
        raise NotImplementedError

    def _pre_hook(self, module, args, kwargs):
        if not self._switched_on():
            return None
        return _with_query_and_key(args, kwargs, self.query_key)

    def output_gradient(self, output, grad_output, share):
        """Return ``value_share * g_O * O / stab(O)`` (one share for the whole call)."""
        return _scaled_ratio(output, grad_output, self.stabilizer, self.value_share)


class UniformAttention(_FusedAttentionRule):
    """AttnLRP's rules through fused attention ``O = softmax(Q K^T * scale + M) V``, in the gradient view.

    The uniform rule at ``O = A V`` gives ``A`` and ``V`` half each of ``g_O * O / stab(O)``; the
    softmax passes its plain gradient (see :class:`~lrp_lightning.composites.AttnLRP`); the uniform
    rule at ``S = Q K^T`` halves it again for ``Q`` and ``K``. So ``V`` receives half and ``Q`` and
    ``K`` a quarter of the kernel's gradient for ``g_O * O / stab(O)``. The kernel never forms
    ``S``, so the ratio ``S / stab(S)`` of the explicit path is not applied at ``Q K^T`` (it differs
    from 1 only where ``|S|`` is of the order of epsilon); everything else equals the explicit
    path (:class:`UniformProduct` at both products), with no ``(T, T)`` tensor kept.

    Parameters
    ----------
    epsilon : float or callable
        Stabilizer at the attention output.
    """

    value_share = 0.5

    def query_key(self, tensor):
        """The query or key with its gradient halved."""
        return _ScaledGradient.apply(tensor, 0.5) if is_variable(tensor) else tensor


class ConstantAttentionWeights(_FusedAttentionRule):
    """CP-LRP's rules through fused attention: the attention weights are constants (Ali et al., 2022).

    Query and key are detached, so no relevance flows into them, and ``O = A V`` is linear in
    ``V``, which receives LRP-epsilon whole: ``g_V = A^T (g_O * O / stab(O))``. Equal to the
    explicit path (:class:`ConstantAttention` at the softmax, :class:`UniformProduct` at ``A V``).
    The forward pass runs the fused kernel; the backward pass recomputes the weights ``A`` of one
    call at a time from the kept query and key (no ``(T, T)`` tensor is kept between the passes)
    and applies ``A^T`` itself, which costs less than the kernel's full backward pass. With
    attention dropout (training mode) the weights cannot be recomputed, and the kernel's own
    backward pass carries the gradient to ``V``.

    Parameters
    ----------
    epsilon : float or callable
        Stabilizer at the attention output.
    """

    def query_key(self, tensor):
        """The query or key, detached."""
        return _constant(tensor)

    def _forward_hook(self, module, args, kwargs, output):
        call = _attention_call(args, kwargs)
        if call["dropout_p"] or not is_variable(call["value"]) or differentiable.enabled_now():
            return super()._forward_hook(module, args, kwargs, output)
        if not (self._switched_on() and output.requires_grad):
            return None
        return _ConstantWeightsAttentionFunction.apply(self, call, output.detach(), call["value"])


_ATTENTION_ARGUMENTS = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")
_ATTENTION_DEFAULTS = {"attn_mask": None, "dropout_p": 0.0, "is_causal": False, "scale": None, "enable_gqa": False}


def _attention_call(args: tuple, kwargs: dict) -> dict:
    """The arguments of an ``F.scaled_dot_product_attention`` call by name, defaults filled in."""
    return {**_ATTENTION_DEFAULTS, **dict(zip(_ATTENTION_ARGUMENTS, args)), **kwargs}


def attention_weights(query, key, attn_mask=None, is_causal=False, scale=None, enable_gqa=False, **unused) -> torch.Tensor:
    """The weights ``softmax(Q K^T * scale + mask)`` of a ``F.scaled_dot_product_attention`` call
    (as its documentation defines them; boolean masks mark the keys taken part in, ``is_causal``
    the lower triangle); rows whose every key is masked get weights 0."""
    scale = query.shape[-1] ** -0.5 if scale is None else scale
    if enable_gqa:
        key = key.repeat_interleave(query.shape[-3] // key.shape[-3], dim=-3)
    scores = torch.matmul(query, key.transpose(-2, -1)).mul_(scale)
    if is_causal:
        allowed = torch.ones(scores.shape[-2:], dtype=torch.bool, device=scores.device).tril_()
        scores.masked_fill_(allowed.logical_not_(), float("-inf"))
    if attn_mask is None:
        return torch.softmax(scores, dim=-1)
    scores = scores.masked_fill(attn_mask.logical_not(), float("-inf")) if attn_mask.dtype == torch.bool else scores + attn_mask
    masked_rows = torch.isneginf(scores).all(dim=-1, keepdim=True)
    return torch.softmax(scores, dim=-1).masked_fill_(masked_rows, 0.0)


class _ConstantWeightsAttentionFunction(torch.autograd.Function):
    """Fused attention's output, whose backward applies CP-LRP with the weights recomputed."""

    @staticmethod
    def forward(ctx: Any, hook: ConstantAttentionWeights, call: dict, output: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        ctx.hook = hook
        ctx.call = {name: argument.detach() if isinstance(argument, torch.Tensor) else argument for name, argument in call.items()}
        ctx.output = output
        return output

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple:
        call, value = ctx.call, ctx.call["value"]
        with torch.no_grad():
            scaled = ctx.hook.output_gradient(ctx.output, grad_output, 1.0)
            grad_value = torch.matmul(attention_weights(**call).transpose(-2, -1), scaled)
            if grad_value.shape[-3:] != value.shape[-3:]:  # grouped-query attention: sum each group's heads
                grad_value = grad_value.unflatten(-3, (value.shape[-3], -1)).sum(dim=-3)
        return None, None, None, grad_value.to(value.dtype)


class AffineGamma(Hook):
    """LRP-gamma (see :class:`lrp_lightning.rules.Gamma`) for affine layers, in the gradient view.

    The Gamma rule's relevance ``R_x`` for ``R_z = z * g_z`` is a sum of terms that are each
    ``x+`` or ``x-`` times a transposed map, so ``g_x = R_x / x`` where ``x != 0`` and ``0`` where
    ``x = 0`` (where ``R_x = 0``).

    Parameters
    ----------
    gamma : float
        Weight of the positive (resp. negative) contributions added to the plain ones.
    stabilizer : float or callable
        Stabilizer of the denominators.
    """

    saves_output = True

    def __init__(self, gamma: float = 0.25, stabilizer: StabilizerLike = 1e-6) -> None:
        super().__init__()
        self.gamma = gamma
        self.rule = Gamma(gamma=gamma, stabilizer=stabilizer)

    def probe(self, input):
        """See :meth:`lrp_lightning.rules.LinearRule.probe`."""
        return self.rule.probe(input)

    def relevance(self, call, input, output, grad_output):
        """Return ``R_x / x`` (0 where ``x = 0``) for the Gamma rule's ``R_x`` with ``R_z = z * g_z``."""
        if differentiable.enabled_now():
            output = None
        with _graph_unless_differentiable():
            output = _module_output(call.module, input, output, call.extra_args, call.kwargs)
        relevance = self.rule.relevance(call, input, output, grad_output * output)
        with _graph_unless_differentiable():
            nonzero = input != 0
            return torch.where(nonzero, relevance / torch.where(nonzero, input, torch.ones_like(input)), torch.zeros_like(relevance))

    def remove(self):
        """Drop what the wrapped Gamma rule cached."""
        super().remove()
        self.rule.remove()

    def _repr_fields(self):
        return {"gamma": self.gamma, "stabilizer": self.rule.stabilizer}
