"""Closed-form backward passes of the LRP rules for ``nn.Linear`` and convolutions.

Every rule for a linear layer is a handful of extra forward maps ``W' x'`` and transposed maps
``W'^T s``. Instead of re-running the layer under autograd once per modified weight (the generic
path), the functions here call the layer's linear map and its transpose directly, fuse several of
them into one call on concatenated weights, and use the sign of the actual input: after a ReLU,
``x- = 0`` and half of the terms vanish (detected per call, never assumed).
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F

from lrp_lightning import fused, types
from lrp_lightning.core import Stabilizer, _as_name_list, is_plain_stabilizer

_CONV_FORWARD = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_TRANSPOSE_FORWARD = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


class NegativeProbe:
    """Whether a tensor has negative entries, checked without stalling the device.

    On CUDA the check runs in the forward pass and its result is copied to pinned host memory
    asynchronously; reading it in the backward pass waits only for that copy (long finished by
    then), not for the kernels queued since. On the CPU it is computed directly, as the sign of
    the minimum (one reduction; a comparison producing a boolean tensor costs several times more).

    Parameters
    ----------
    input : torch.Tensor
        The tensor to check.
    """

    def __init__(self, input: torch.Tensor) -> None:
        self.event = None
        if input.device.type == "cpu":
            # NaN (a minimum that is not >= 0) counts as negative: the signed path is always exact
            self.flag = input.numel() > 0 and not input.detach().min().item() >= 0
            return
        flag = torch.lt(input.detach(), 0).any()
        if flag.is_cuda:
            self.flag = torch.empty((), dtype=torch.bool, pin_memory=True)
            self.flag.copy_(flag, non_blocking=True)
            self.event = torch.cuda.Event()
            self.event.record()
        else:
            self.flag = flag

    def __bool__(self) -> bool:
        if self.event is not None:
            self.event.synchronize()
        return bool(self.flag)


def supports(module: torch.nn.Module, input: Optional[torch.Tensor] = None) -> bool:
    """Return whether ``module`` is a layer with a closed-form rule backward (for a call with ``input``).

    ``nn.Linear`` and zero-padded ``Conv1d/2d/3d`` / ``ConvTranspose1d/2d/3d`` qualify, the
    convolutions with a batched input (rules zeroing the weight itself, and unbatched convolution
    calls, take the generic path).
    """
    if type(module) is torch.nn.Linear:
        return True
    return (
        isinstance(module, types.Convolution)
        and getattr(module, "padding_mode", "zeros") == "zeros"
        and (input is None or input.dim() == module.weight.dim())
    )


class LinearMap:
    """The linear map of a Linear or convolution layer, applied with arbitrary weights.

    Several weights are applied in one call by concatenating them (along the output channels for
    forward maps, along the input channels for transposed maps) when the layer has one group.

    Parameters
    ----------
    module : torch.nn.Module
        An ``nn.Linear`` or convolution with ``padding_mode='zeros'``.
    """

    def __init__(self, module: torch.nn.Module, cache: Optional[dict] = None) -> None:
        self.module = module
        self.is_linear = isinstance(module, torch.nn.Linear)
        self.transposed = bool(getattr(module, "transposed", False))
        self.groups = 1 if self.is_linear else module.groups
        self.channel_dim = -1 if self.is_linear else 1
        # weight layout: Linear/Conv (out, in, ...), ConvTranspose (in, out, ...)
        self.weight_out_dim = 1 if self.transposed else 0
        self.weight_in_dim = 0 if self.transposed else 1
        self.cache = {} if cache is None else cache
        stamp = tuple(_stamp(param) for param in (module.weight, module.bias))
        if self.cache.get("stamp") != stamp:
            self.cache.clear()
            self.cache["stamp"] = stamp

    def memo(self, key: object, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        """Return ``compute()``, computed once per value of the layer's parameters.

        Derived weights (``W+``, concatenations, ...) are kept in ``cache`` until the layer's
        weight or bias changes (another tensor, storage or in-place version).
        """
        if key not in self.cache:
            self.cache[key] = compute()
        return self.cache[key]

    @property
    def weight(self) -> torch.Tensor:
        """The layer's weight, detached."""
        return self.memo("weight", self.module.weight.detach)

    @property
    def weight_pos(self) -> torch.Tensor:
        """``W+``."""
        return self.memo("weight_pos", lambda: self.weight.clamp(min=0))

    @property
    def weight_neg(self) -> torch.Tensor:
        """``W-``."""
        return self.memo("weight_neg", lambda: self.weight.clamp(max=0))

    def concatenated(self, weights: Sequence[torch.Tensor], dim: int) -> torch.Tensor:
        """``torch.cat(weights, dim)``, cached (the weights must themselves be cached derived weights)."""
        return self.memo(("cat", dim, tuple(id(weight) for weight in weights)), lambda: torch.cat(list(weights), dim=dim))

    def apply(self, input: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Return the layer's forward map of ``input`` with ``weight`` and ``bias``."""
        module = self.module
        if self.is_linear:
            return F.linear(input, weight, bias)
        dims = weight.dim() - 2
        if self.transposed:
            return _CONV_TRANSPOSE_FORWARD[dims](
                input, weight, bias, module.stride, module.padding, module.output_padding, module.groups, module.dilation
            )
        return _CONV_FORWARD[dims](input, weight, bias, module.stride, module.padding, module.dilation, module.groups)

    def apply_transposed(self, grad: torch.Tensor, weight: torch.Tensor, input: torch.Tensor) -> torch.Tensor:
        """Return ``W^T grad``: the input-gradient of the forward map (``input`` gives the batch and spatial size)."""
        if self.is_linear:
            return grad.matmul(weight)
        module = self.module
        shape = list(input.shape)
        shape[1] = weight.shape[0] if self.transposed else weight.shape[1] * self.groups
        grad_input, _, _ = torch.ops.aten.convolution_backward(
            grad,
            input.new_empty(()).expand(shape),
            weight,
            None,
            module.stride,
            module.padding,
            module.dilation,
            self.transposed,
            module.output_padding,
            module.groups,
            [True, False, False],
        )
        return grad_input

    def stack_like(self, tensor: torch.Tensor, count: int) -> torch.Tensor:
        """An uninitialized tensor of ``count`` times ``tensor``'s channels, to be filled chunk by chunk."""
        shape = list(tensor.shape)
        shape[self.channel_dim] *= count
        return tensor.new_empty(shape)

    def concatenated_biases(self, biases: Sequence[Optional[torch.Tensor]], weights: Sequence[torch.Tensor]) -> Optional[torch.Tensor]:
        """The biases of ``weights`` concatenated like them (absent ones as zeros; None if all are absent),
        cached like :meth:`concatenated` (the biases must be cached derived tensors or None)."""
        if all(bias is None for bias in biases):
            return None
        return self.memo(
            ("bias_cat", tuple(id(bias) for bias in biases)),
            lambda: torch.cat(
                [bias if bias is not None else w.new_zeros(w.shape[self.weight_out_dim]) for w, bias in zip(weights, biases)]
            ),
        )

    def apply_stacked(self, input: torch.Tensor, weights: Sequence[torch.Tensor], biases: Sequence[Optional[torch.Tensor]]) -> torch.Tensor:
        """Return ``[W_k x + b_k]`` stacked along the channels, in one call when the layer has one group."""
        if self.groups != 1:
            return torch.cat([self.apply(input, w, b) for w, b in zip(weights, biases)], dim=self.channel_dim)
        return self.apply(input, self.concatenated(weights, self.weight_out_dim), self.concatenated_biases(biases, weights))

    def apply_many(self, input: torch.Tensor, weights: Sequence[torch.Tensor], biases: Sequence[Optional[torch.Tensor]]) -> list:
        """Return ``[W_k x + b_k for each k]``, in one call when the layer has one group."""
        if len(weights) == 1:
            return [self.apply(input, weights[0], biases[0])]
        return list(self.apply_stacked(input, weights, biases).chunk(len(weights), dim=self.channel_dim))

    def apply_summed(self, inputs: Sequence[torch.Tensor], weights: Sequence[torch.Tensor]) -> torch.Tensor:
        """Return ``sum_k W_k x_k`` (no bias), in one call when the layer has one group."""
        if self.groups != 1 or len(weights) == 1:
            return sum(self.apply(x, w) for x, w in zip(inputs, weights))
        return self.apply(torch.cat(list(inputs), dim=self.channel_dim), self.concatenated(weights, self.weight_in_dim))

    def apply_transposed_stacked(self, stacked: torch.Tensor, weights: Sequence[torch.Tensor], input: torch.Tensor) -> torch.Tensor:
        """Return ``sum_k W_k^T g_k`` for ``g_k`` stacked along the channels, in one call when the layer has one group."""
        if self.groups != 1:
            grads = stacked.chunk(len(weights), dim=self.channel_dim)
            return sum(self.apply_transposed(g, w, input) for g, w in zip(grads, weights))
        return self.apply_transposed(stacked, self.concatenated(weights, self.weight_out_dim), input)

    def apply_transposed_summed(self, grads: Sequence[torch.Tensor], weights: Sequence[torch.Tensor], input: torch.Tensor) -> torch.Tensor:
        """Return ``sum_k W_k^T g_k``, in one call when the layer has one group."""
        if self.groups != 1 or len(weights) == 1:
            return sum(self.apply_transposed(g, w, input) for g, w in zip(grads, weights))
        return self.apply_transposed_stacked(torch.cat(list(grads), dim=self.channel_dim), weights, input)

    def apply_transposed_many(self, grad: torch.Tensor, weights: Sequence[torch.Tensor], input: torch.Tensor) -> list:
        """Return ``[W_k^T grad for each k]``, in one call when the layer has one group."""
        if self.groups != 1 or len(weights) == 1:
            return [self.apply_transposed(grad, w, input) for w in weights]
        result = self.apply_transposed(grad, self.concatenated(weights, self.weight_in_dim), input)
        return list(result.chunk(len(weights), dim=self.channel_dim))


def _stamp(param: Optional[torch.Tensor]) -> Optional[tuple]:
    if param is None:
        return None
    return id(param), param._version, param.data_ptr(), param.device, param.dtype


def _params(layer: LinearMap, zero_params: Sequence[str]) -> tuple:
    """The weight and the effective bias (None when absent or zeroed); a zeroed weight is not handled here."""
    bias = layer.module.bias
    return layer.weight, bias.detach() if bias is not None and "bias" not in zero_params else None


def _positive(tensor: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    return None if tensor is None else tensor.clamp(min=0)


def _negative(tensor: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    return None if tensor is None else tensor.clamp(max=0)


def _output(layer: LinearMap, input, output, weight, bias, zero_params) -> torch.Tensor:
    """The layer output with the effective parameters: the saved one when it is still valid."""
    if output is not None and not zero_params:
        return output
    return layer.apply(input, weight, bias)


def _channels(bias: torch.Tensor, layer: LinearMap, like: torch.Tensor) -> torch.Tensor:
    """A per-output-channel vector shaped to broadcast against ``like``."""
    return bias if layer.is_linear else bias.view(-1, *([1] * (like.dim() - 2)))


def _add_bias_(value: torch.Tensor, bias: Optional[torch.Tensor], layer: LinearMap) -> torch.Tensor:
    """Add a per-channel bias to a freshly computed ``value`` in place."""
    return value if bias is None else value.add_(_channels(bias, layer, value))


def _ratio_(grad_output: torch.Tensor, denominator: torch.Tensor, stabilizer: Callable) -> torch.Tensor:
    """``grad_output / stabilizer(denominator)``, written into the stabilized buffer when that is safe."""
    stabilized = stabilizer(denominator)
    if isinstance(stabilizer, Stabilizer):  # returns a fresh tensor, which may be overwritten
        return torch.div(grad_output, stabilized, out=stabilized)
    return grad_output / stabilized


def _ratio_of_nonnegative_(grad_output: torch.Tensor, denominator: torch.Tensor, stabilizer: Callable) -> torch.Tensor:
    """:func:`_ratio_` of a fresh denominator known to be ``>= 0``: the plain stabilizer is then
    the addition of ``eps`` (``sign(0) = +1``), the same values bit for bit in one pass, not four."""
    if is_plain_stabilizer(stabilizer):
        return torch.div(grad_output, denominator.add_(stabilizer.epsilon), out=denominator)
    return _ratio_(grad_output, denominator, stabilizer)


def epsilon(layer: LinearMap, input, output, grad_output, stabilizer: Callable, zero_params) -> torch.Tensor:
    """Epsilon rule: ``x * W^T(R / stab(z))``."""
    zero_params = _as_name_list(zero_params)
    weight, bias = _params(layer, zero_params)
    z = _output(layer, input, output, weight, bias, zero_params)
    return layer.apply_transposed(_ratio_(grad_output, z, stabilizer), weight, input).mul_(input)


def alpha_beta(
    layer: LinearMap, input, grad_output, has_negatives: bool, alpha: float, beta: float, stabilizer: Callable, zero_params
) -> torch.Tensor:
    """Alpha-beta rule (``alpha=1, beta=0`` is z+), see :class:`lrp_lightning.rules.AlphaBeta`."""
    _, bias = _params(layer, _as_name_list(zero_params))
    w_pos, w_neg = layer.weight_pos, layer.weight_neg
    b_pos, b_neg = layer.memo("signed_biases", lambda: (_positive(bias), _negative(bias)))
    if not has_negatives:
        if beta == 0:
            scaled = _ratio_of_nonnegative_(grad_output, layer.apply(input, w_pos, b_pos), stabilizer)
            if alpha != 1:
                scaled.mul_(alpha)
            return layer.apply_transposed(scaled, w_pos, input).mul_(input)
        # both denominators from one fused map; the ratios overwrite them in place and feed one fused
        # transposed map
        weights = [w_pos, w_neg]
        stabilized = stabilizer(layer.apply_stacked(input, weights, [b_pos, b_neg]))
        if not isinstance(stabilizer, Stabilizer):  # a user's stabilizer may return a tensor we must not overwrite
            stabilized = stabilized.clone()
        positive, negative = stabilized.chunk(2, dim=layer.channel_dim)
        torch.div(grad_output, positive, out=positive).mul_(alpha)
        torch.div(grad_output, negative, out=negative).mul_(-beta)
        return layer.apply_transposed_stacked(stabilized, weights, input).mul_(input)
    x_pos, x_neg = input.clamp(min=0), input.clamp(max=0)
    pos_of_pos, neg_of_pos = layer.apply_many(x_pos, [w_pos, w_neg], [None, None])
    pos_of_neg, neg_of_neg = layer.apply_many(x_neg, [w_pos, w_neg], [None, None])
    s_pos = _ratio_(grad_output, _add_bias_(pos_of_pos.add_(neg_of_neg), b_pos, layer), stabilizer).mul_(alpha)
    if beta == 0:
        grads_pos, grads_neg = layer.apply_transposed_many(s_pos, [w_pos, w_neg], input)
        return grads_pos.mul_(x_pos).add_(grads_neg.mul_(x_neg))
    s_neg = _ratio_(grad_output, _add_bias_(neg_of_pos.add_(pos_of_neg), b_neg, layer), stabilizer).mul_(-beta)
    grads_pos = layer.apply_transposed_summed([s_pos, s_neg], [w_pos, w_neg], input)
    grads_neg = layer.apply_transposed_summed([s_pos, s_neg], [w_neg, w_pos], input)
    return grads_pos.mul_(x_pos).add_(grads_neg.mul_(x_neg))


def gamma(
    layer: LinearMap, input, output, grad_output, has_negatives: bool, gamma: float, stabilizer: Callable, zero_params
) -> torch.Tensor:
    """Gamma rule (signed inputs), see :class:`lrp_lightning.rules.Gamma`."""
    weight, bias = _params(layer, _as_name_list(zero_params))
    original_bias = layer.module.bias.detach() if layer.module.bias is not None else None
    w_pos = layer.weight_pos
    bias_pos, bias_neg = layer.memo(
        ("gamma_biases", gamma),
        lambda: (None, None) if bias is None else (bias + gamma * bias.clamp(min=0), bias + gamma * bias.clamp(max=0)),
    )
    if not has_negatives:
        return _gamma_nonnegative(layer, input, output, grad_output, gamma, stabilizer, weight, w_pos, original_bias, bias_pos, bias_neg)
    x_pos, x_neg = input.clamp(min=0), input.clamp(max=0)
    boost_pos = _gamma_boosted(layer, gamma)
    boost_neg = layer.memo(("gamma_neg", gamma), lambda: weight + gamma * layer.weight_neg)
    pos_a, pos_b = layer.apply_many(x_pos, [boost_pos, boost_neg], [None, None])
    neg_a, neg_b = layer.apply_many(x_neg, [boost_pos, boost_neg], [None, None])
    if output is None:
        output = layer.apply(input, weight, original_bias)
    s_pos = _ratio_(grad_output, _add_bias_(pos_a.add_(neg_b), bias_pos, layer), stabilizer).mul_(output > 0)
    s_neg = _ratio_(grad_output, _add_bias_(pos_b.add_(neg_a), bias_neg, layer), stabilizer).mul_(output < 0)
    grads_pos = layer.apply_transposed_summed([s_pos, s_neg], [boost_pos, boost_neg], input)
    grads_neg = layer.apply_transposed_summed([s_pos, s_neg], [boost_neg, boost_pos], input)
    return grads_pos.mul_(x_pos).add_(grads_neg.mul_(x_neg))


def _gamma_nonnegative(layer, input, output, grad_output, gamma, stabilizer, weight, w_pos, original_bias, bias_pos, bias_neg):
    """Gamma for ``x >= 0``: ``A x = W x + gamma W+ x``, ``B x = (1 + gamma) W x - gamma W+ x``, so
    ``W+ x`` is the only extra forward map, and ``A^T s_p + B^T s_n = W^T (s_p + (1 + gamma) s_n) +
    gamma W+^T (s_p - s_n)`` is one fused transposed map."""
    if output is None:
        linear_part, positive = layer.apply_many(input, [weight, w_pos], [None, None])
        output = _add_bias_(linear_part, original_bias, layer)
    else:
        positive = layer.apply(input, w_pos)
    # with z the layer output (bias b): z_p = z + gamma W+x + (b_p - b), z_n = (1 + gamma) z - gamma W+x + (b_n - (1 + gamma) b)
    shift_pos, shift_neg = layer.memo(
        ("gamma_shifts", gamma),
        lambda: (_difference(bias_pos, original_bias, 1.0), _difference(bias_neg, original_bias, 1.0 + gamma)),
    )
    if _fused_eligible(output, layer, stabilizer):
        fused_shifts = layer.memo(
            ("gamma_fused_shifts", gamma),
            lambda: tuple(
                _channels(output.new_zeros(output.shape[layer.channel_dim]) if shift is None else shift, layer, output)
                for shift in (shift_pos, shift_neg)
            ),
        )
        stacked = fused.gamma_stacked_on_device(
            output, positive, grad_output, *fused_shifts, gamma, stabilizer.epsilon, layer.channel_dim
        )
    else:
        signed_epsilon = _signed_epsilon(layer, shift_pos, shift_neg, gamma, stabilizer)
        if signed_epsilon is not None:
            return _gamma_folded(layer, input, output, positive, grad_output, shift_pos, shift_neg, gamma, signed_epsilon)
        stacked = _gamma_stacked_in_place(layer, output, positive, grad_output, shift_pos, shift_neg, gamma, stabilizer)
    return layer.apply_transposed_stacked(stacked, [weight, w_pos], input).mul_(input)


def _gamma_stacked_in_place(layer, output, positive, grad_output, shift_pos, shift_neg, gamma, stabilizer) -> torch.Tensor:
    """What :func:`lrp_lightning.fused.gamma_stacked` computes, with in-place eager operations (any stabilizer)."""
    denominator, negative_side = _gamma_denominators(layer, output, positive.mul_(gamma), shift_pos, shift_neg, gamma)
    del positive
    is_positive = output > 0
    torch.where(is_positive, denominator, negative_side, out=denominator)
    del negative_side
    stacked = layer.stack_like(grad_output, 2)
    first, second = stacked.chunk(2, dim=layer.channel_dim)
    ratio = _ratio_(grad_output, denominator, stabilizer)
    ratio.masked_fill_(output == 0, 0)  # outputs with z = 0 pass nothing
    # first = s_p + (1 + gamma) s_n, second = gamma (s_p - s_n)
    torch.where(is_positive, ratio, ratio * (1.0 + gamma), out=first)
    torch.where(is_positive, ratio, -ratio, out=second)
    second.mul_(gamma)
    return stacked


def _gamma_folded(layer, input, output, positive, grad_output, shift_pos, shift_neg, gamma, epsilon) -> torch.Tensor:
    """Gamma for ``x >= 0`` with the plain stabilizer folded into the denominators.

    With shifts ``shift_pos >= 0 >= shift_neg`` (the layer's own bias) and ``eps > 0``, ``z_p > 0``
    wherever ``z > 0`` and ``z_n < 0`` wherever ``z <= 0``, so ``stab`` is the addition of ``+eps`` or
    ``-eps``, and no denominator below is zero.
    The output's sign enters as float masks ``p = [z > 0]``, ``n = [z < 0]`` (element-wise
    arithmetic, several times cheaper on the CPU than comparisons, ``torch.where`` or
    ``masked_fill``), with the values of :func:`_gamma_stacked_in_place` bit for bit.

    Where no relevance arrives at the outputs ``z <= 0`` (checked per call on the CPU; on an
    asynchronous device the check would stall the stream), ``s_n = 0`` and ``A^T s_p = (W + gamma
    W+)^T s_p`` is one transposed map of the layer's width instead of two. That is the usual case
    when a ReLU follows: LRP relevance is proportional to the activation, so none reaches the
    positions the ReLU sets to zero.
    """
    sign = torch.sign(output)
    is_positive = sign.clamp(min=0)
    positive.mul_(gamma)
    if output.device.type == "cpu":
        kept = torch.mul(grad_output, is_positive)
        if _is_zero(torch.sub(grad_output, kept)):
            return _gamma_single_map(layer, input, output, positive, kept, shift_pos, gamma, epsilon)
    denominator, negative_side = _gamma_denominators(layer, output, positive, shift_pos, shift_neg, gamma, epsilon)
    del positive
    # z_p where z > 0, else z_n (at most -eps: no division by zero where z = 0)
    denominator.mul_(is_positive).addcmul_(negative_side, torch.rsub(is_positive, 1))
    del negative_side
    ratio = torch.div(grad_output, denominator, out=denominator)
    stacked = layer.stack_like(grad_output, 2)
    first, second = stacked.chunk(2, dim=layer.channel_dim)
    # first = s_p + (1 + gamma) s_n, second = gamma (s_p - s_n); both zero where z = 0
    is_negative = torch.sub(is_positive, sign)
    torch.mul(ratio, is_negative.mul_(1.0 + gamma).add_(is_positive), out=first)
    torch.mul(ratio, sign.mul_(gamma), out=second)
    return layer.apply_transposed_stacked(stacked, [layer.weight, layer.weight_pos], input).mul_(input)


def _gamma_single_map(layer, input, output, scaled_positive, kept, shift_pos, gamma, epsilon) -> torch.Tensor:
    """``x * A^T (R [z > 0] / (z_p + eps))``: Gamma when ``kept``, the relevance at the outputs ``z > 0``,
    is all the relevance there is (``s_n = 0``); the denominator is ``z_p + eps`` where ``z > 0`` and at
    least ``eps`` elsewhere (``relu(z)`` in place of ``z``), so nothing divides by zero."""
    denominator = _add_bias_(torch.relu(output).add_(scaled_positive), shift_pos, layer).add_(epsilon)
    ratio = torch.div(kept, denominator, out=denominator)
    return layer.apply_transposed(ratio, _gamma_boosted(layer, gamma), input).mul_(input)


def _gamma_denominators(layer, output, scaled_positive, shift_pos, shift_neg, gamma, epsilon: float = 0.0) -> tuple:
    """``z_p = z + gamma W+ x + shift_pos + eps`` and ``z_n = (1 + gamma) z - gamma W+ x + shift_neg - eps``
    (``scaled_positive`` is ``gamma W+ x``; ``eps`` is the folded stabilizer's, 0 when it is not folded)."""
    denominator = _add_bias_(torch.add(output, scaled_positive), shift_pos, layer)
    negative_side = _add_bias_(torch.mul(output, 1.0 + gamma).sub_(scaled_positive), shift_neg, layer)
    if epsilon:
        denominator.add_(epsilon)
        negative_side.sub_(epsilon)
    return denominator, negative_side


def _gamma_boosted(layer: LinearMap, gamma: float) -> torch.Tensor:
    """``A = W + gamma W+``, cached."""
    return layer.memo(("gamma_pos", gamma), lambda: layer.weight + gamma * layer.weight_pos)


def _is_zero(tensor: torch.Tensor) -> bool:
    """Whether every entry of ``tensor`` is zero (NaN is not), in one reduction."""
    if tensor.numel() == 0:
        return True
    low, high = torch.aminmax(tensor)
    return low.item() == 0 and high.item() == 0


def _signed_epsilon(layer: LinearMap, shift_pos, shift_neg, gamma: float, stabilizer: Callable) -> Optional[float]:
    """The stabilizer's epsilon when it can be folded into Gamma's denominators (see
    :func:`_gamma_folded`; a positive one, which keeps them away from zero), else None."""
    if not is_plain_stabilizer(stabilizer) or not stabilizer.epsilon > 0:
        return None
    signs_known = layer.memo(
        ("gamma_signs_known", gamma),
        lambda: (shift_pos is None or bool((shift_pos >= 0).all())) and (shift_neg is None or bool((shift_neg <= 0).all())),
    )
    return stabilizer.epsilon if signs_known else None


def _fused_eligible(output: torch.Tensor, layer: LinearMap, stabilizer: Callable) -> bool:
    """Whether the fused kernel applies: CUDA, one group, and the plain ``d + eps * sign(d)`` stabilizer."""
    return output.is_cuda and layer.groups == 1 and is_plain_stabilizer(stabilizer)


def _difference(bias: Optional[torch.Tensor], original: Optional[torch.Tensor], scale: float) -> Optional[torch.Tensor]:
    """``bias - scale * original`` with absent biases as zero (None when both are absent)."""
    if bias is None and original is None:
        return None
    if original is None:
        return bias
    return -scale * original if bias is None else bias - scale * original


def zbox(layer: LinearMap, input, output, grad_output, low, high, stabilizer: Callable, zero_params) -> torch.Tensor:
    """ZBox rule: ``x W^T s - l W+^T s - h W-^T s`` with ``s = R / stab(z - W+ l - b+ - W- h - b-)``,
    computed as ``(x - l) W+^T s + (x - h) W-^T s`` (``W = W+ + W-``: two transposed maps, not three)."""
    zero_params = _as_name_list(zero_params)
    weight, bias = _params(layer, zero_params)
    w_pos, w_neg = layer.weight_pos, layer.weight_neg
    z = _output(layer, input, output, weight, bias, zero_params)
    # d = z - (W+ l + W- h) - (b+ + b-), and b+ + b- = b
    denominator = torch.sub(z, _bounds_map(layer, low, high))
    if bias is not None:
        denominator.sub_(_channels(bias, layer, denominator))
    ratio = _ratio_(grad_output, denominator, stabilizer)
    positive, negative = layer.apply_transposed_many(ratio, [w_pos, w_neg], input)
    return positive.mul_(input - low).add_(negative.mul_(input - high))


def _bounds_map(layer: LinearMap, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """``W+ l + W- h``, computed once per value of the parameters and the bounds (the same bounds
    every call, as a first layer's usually are: the term does not depend on the input)."""
    signature = tuple((bound.data_ptr(), bound.shape, bound.stride(), bound._version) for bound in (low, high))
    cached = layer.cache.get("zbox_bounds")
    if cached is None or cached[0] != signature:
        # the bounds are kept with the result, so that their memory cannot be reused for other values
        cached = (signature, layer.apply_summed([low, high], [layer.weight_pos, layer.weight_neg]), low, high)
        layer.cache["zbox_bounds"] = cached
    return cached[1]


def uniform_spread(layer: LinearMap, input, grad_output, stabilizer: Callable, zero_params, squared: bool) -> torch.Tensor:
    """WSquare (``squared=True``: ``V = W^2``, ``c = b^2``) or Flat (``V = 1``, ``c = 0``) rule:
    ``V^T(R / stab(V 1 + c))``.

    The denominator does not depend on the input's values, nor on its batch: it is computed once
    per sample shape (and value of the parameters) and broadcast over the batch. Flat's transposed
    map with one group is that of a single all-ones channel, given to every input channel.
    """
    zero_params = _as_name_list(zero_params)
    weight, bias = _params(layer, zero_params)
    if squared:
        weight = layer.memo("squared", lambda: weight**2)
    else:
        weight = layer.memo("ones", lambda: torch.ones_like(weight))
        bias = None
    shape = _sample_shape(layer, input)
    denominator = layer.memo(
        ("spread_denominator", squared, shape),
        lambda: layer.apply(input.new_ones(shape), weight, None if bias is None else bias**2),
    )
    if is_plain_stabilizer(stabilizer):
        stabilized = layer.memo(("spread_stabilized", squared, shape, stabilizer.epsilon), lambda: stabilizer(denominator))
    else:  # a stabilizer of the caller's may look at the whole batch
        stabilized = stabilizer(denominator.expand(grad_output.shape).contiguous())
    ratio = torch.div(grad_output, stabilized)
    if squared or layer.groups != 1:
        return layer.apply_transposed(ratio, weight, input)
    return _all_ones_transposed(layer, ratio, input)


def _sample_shape(layer: LinearMap, input: torch.Tensor) -> tuple:
    """The smallest input shape whose map broadcasts to that of ``input`` when the values do not
    matter: one feature vector for ``nn.Linear``, one sample for a batched convolution."""
    if layer.is_linear:
        return (input.shape[-1],)
    if input.dim() == layer.weight.dim():
        return (1, *input.shape[1:])
    return tuple(input.shape)


def _all_ones_transposed(layer: LinearMap, grad: torch.Tensor, input: torch.Tensor) -> torch.Tensor:
    """``1^T grad`` for an all-ones weight and one group: the sum over the output channels, mapped
    by a one-channel all-ones kernel, is the same for every input channel."""
    summed = grad.sum(dim=layer.channel_dim, keepdim=True)
    if not layer.is_linear:
        kernel = layer.memo("ones_kernel", lambda: layer.weight.new_ones((1, 1, *layer.weight.shape[2:])))
        one_channel = list(input.shape)
        one_channel[1] = 1
        summed = layer.apply_transposed(summed, kernel, input.new_empty(()).expand(one_channel))
    return summed.expand(input.shape).contiguous()
