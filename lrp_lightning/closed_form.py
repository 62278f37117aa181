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

from lrp_lightning import types

_CONV_FORWARD = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_TRANSPOSE_FORWARD = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


class NegativeProbe:
    """Whether a tensor has negative entries, checked without stalling the device.

    On CUDA the check runs in the forward pass and its result is copied to pinned host memory
    asynchronously; reading it in the backward pass waits only for that copy (long finished by
    then), not for the kernels queued since. On the CPU it is computed directly.

    Parameters
    ----------
    input : torch.Tensor
        The tensor to check.
    """

    def __init__(self, input: torch.Tensor) -> None:
        flag = torch.lt(input.detach(), 0).any()
        self.event = None
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


def supports(module: torch.nn.Module) -> bool:
    """Return whether ``module`` is a layer with a closed-form rule backward.

    ``nn.Linear`` and zero-padded ``Conv1d/2d/3d`` / ``ConvTranspose1d/2d/3d`` qualify (rules
    zeroing the weight itself take the generic path).
    """
    if type(module) is torch.nn.Linear:
        return True
    return isinstance(module, types.Convolution) and getattr(module, "padding_mode", "zeros") == "zeros"


class LinearMap:
    """The linear map of a Linear or convolution layer, applied with arbitrary weights.

    Several weights are applied in one call by concatenating them (along the output channels for
    forward maps, along the input channels for transposed maps) when the layer has one group.

    Parameters
    ----------
    module : torch.nn.Module
        An ``nn.Linear`` or convolution with ``padding_mode='zeros'``.
    """

    def __init__(self, module: torch.nn.Module) -> None:
        self.module = module
        self.is_linear = isinstance(module, torch.nn.Linear)
        self.transposed = bool(getattr(module, "transposed", False))
        self.groups = 1 if self.is_linear else module.groups
        self.channel_dim = -1 if self.is_linear else 1
        # weight layout: Linear/Conv (out, in, ...), ConvTranspose (in, out, ...)
        self.weight_out_dim = 1 if self.transposed else 0
        self.weight_in_dim = 0 if self.transposed else 1

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

    def apply_many(self, input: torch.Tensor, weights: Sequence[torch.Tensor], biases: Sequence[Optional[torch.Tensor]]) -> list:
        """Return ``[W_k x + b_k for each k]``, in one call when the layer has one group."""
        if self.groups != 1 or len(weights) == 1:
            return [self.apply(input, weight, bias) for weight, bias in zip(weights, biases)]
        weight = torch.cat(list(weights), dim=self.weight_out_dim)
        bias = None
        if any(b is not None for b in biases):
            bias = torch.cat(
                [b if b is not None else w.new_zeros(w.shape[self.weight_out_dim]) for w, b in zip(weights, biases)]
            )
        output = self.apply(input, weight, bias)
        return list(output.chunk(len(weights), dim=self.channel_dim))

    def apply_summed(self, inputs: Sequence[torch.Tensor], weights: Sequence[torch.Tensor]) -> torch.Tensor:
        """Return ``sum_k W_k x_k`` (no bias), in one call when the layer has one group."""
        if self.groups != 1 or len(weights) == 1:
            return sum(self.apply(x, w) for x, w in zip(inputs, weights))
        return self.apply(torch.cat(list(inputs), dim=self.channel_dim), torch.cat(list(weights), dim=self.weight_in_dim))

    def apply_transposed_summed(self, grads: Sequence[torch.Tensor], weights: Sequence[torch.Tensor], input: torch.Tensor) -> torch.Tensor:
        """Return ``sum_k W_k^T g_k``, in one call when the layer has one group."""
        if self.groups != 1 or len(weights) == 1:
            return sum(self.apply_transposed(g, w, input) for g, w in zip(grads, weights))
        return self.apply_transposed(
            torch.cat(list(grads), dim=self.channel_dim), torch.cat(list(weights), dim=self.weight_out_dim), input
        )

    def apply_transposed_many(self, grad: torch.Tensor, weights: Sequence[torch.Tensor], input: torch.Tensor) -> list:
        """Return ``[W_k^T grad for each k]``, in one call when the layer has one group."""
        if self.groups != 1 or len(weights) == 1:
            return [self.apply_transposed(grad, w, input) for w in weights]
        result = self.apply_transposed(grad, torch.cat(list(weights), dim=self.weight_in_dim), input)
        return list(result.chunk(len(weights), dim=self.channel_dim))


def _params(module: torch.nn.Module, zero_params: Sequence[str]) -> tuple:
    """The weight and the effective bias (None when absent or zeroed); a zeroed weight is not handled here."""
    weight = module.weight.detach()
    bias = module.bias.detach() if module.bias is not None and "bias" not in zero_params else None
    return weight, bias


def _positive(tensor: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    return None if tensor is None else tensor.clamp(min=0)


def _negative(tensor: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    return None if tensor is None else tensor.clamp(max=0)


def _output(layer: LinearMap, input, output, weight, bias, zero_params) -> torch.Tensor:
    """The layer output with the effective parameters: the saved one when it is still valid."""
    if output is not None and not zero_params:
        return output
    return layer.apply(input, weight, bias)


def _names(zero_params) -> list:
    if zero_params is None:
        return []
    return [zero_params] if isinstance(zero_params, str) else list(zero_params)


def epsilon(layer: LinearMap, input, output, grad_output, stabilizer: Callable, zero_params) -> torch.Tensor:
    """Epsilon rule: ``x * W^T(R / stab(z))``."""
    zero_params = _names(zero_params)
    weight, bias = _params(layer.module, zero_params)
    z = _output(layer, input, output, weight, bias, zero_params)
    return input * layer.apply_transposed(grad_output / stabilizer(z), weight, input)


def alpha_beta(
    layer: LinearMap, input, grad_output, has_negatives: bool, alpha: float, beta: float, stabilizer: Callable, zero_params
) -> torch.Tensor:
    """Alpha-beta rule (``alpha=1, beta=0`` is z+), see :class:`lrp_lightning.rules.AlphaBeta`."""
    weight, bias = _params(layer.module, _names(zero_params))
    w_pos, w_neg = weight.clamp(min=0), weight.clamp(max=0)
    b_pos, b_neg = _positive(bias), _negative(bias)
    if not has_negatives:
        if beta == 0:
            z_pos = layer.apply(input, w_pos, b_pos)
            return input * layer.apply_transposed(alpha * grad_output / stabilizer(z_pos), w_pos, input)
        z_pos, z_neg = layer.apply_many(input, [w_pos, w_neg], [b_pos, b_neg])
        s_pos, s_neg = grad_output / stabilizer(z_pos), grad_output / stabilizer(z_neg)
        return input * layer.apply_transposed_summed([alpha * s_pos, -beta * s_neg], [w_pos, w_neg], input)
    x_pos, x_neg = input.clamp(min=0), input.clamp(max=0)
    pos_of_pos, neg_of_pos = layer.apply_many(x_pos, [w_pos, w_neg], [None, None])
    pos_of_neg, neg_of_neg = layer.apply_many(x_neg, [w_pos, w_neg], [None, None])
    s_pos = grad_output / stabilizer(_plus_bias(pos_of_pos + neg_of_neg, b_pos, layer))
    if beta == 0:
        grads_pos, grads_neg = layer.apply_transposed_many(alpha * s_pos, [w_pos, w_neg], input)
        return x_pos * grads_pos + x_neg * grads_neg
    s_neg = grad_output / stabilizer(_plus_bias(neg_of_pos + pos_of_neg, b_neg, layer))
    grads_pos = layer.apply_transposed_summed([alpha * s_pos, -beta * s_neg], [w_pos, w_neg], input)
    grads_neg = layer.apply_transposed_summed([alpha * s_pos, -beta * s_neg], [w_neg, w_pos], input)
    return x_pos * grads_pos + x_neg * grads_neg


def _plus_bias(value: torch.Tensor, bias: Optional[torch.Tensor], layer: LinearMap) -> torch.Tensor:
    if bias is None:
        return value
    if layer.is_linear:
        return value + bias
    return value + bias.view(-1, *([1] * (value.dim() - 2)))


def gamma(
    layer: LinearMap, input, output, grad_output, has_negatives: bool, gamma: float, stabilizer: Callable, zero_params
) -> torch.Tensor:
    """Gamma rule (signed inputs), see :class:`lrp_lightning.rules.Gamma`."""
    weight, bias = _params(layer.module, _names(zero_params))
    original_bias = layer.module.bias.detach() if layer.module.bias is not None else None
    w_pos = weight.clamp(min=0)
    bias_pos = None if bias is None else bias + gamma * bias.clamp(min=0)
    bias_neg = None if bias is None else bias + gamma * bias.clamp(max=0)
    if not has_negatives:
        # A x = W x + gamma W+ x and B x = (1 + gamma) W x - gamma W+ x: only W+ x is an extra map.
        if output is None:
            linear_part, positive = layer.apply_many(input, [weight, w_pos], [None, None])
            output = _plus_bias(linear_part, original_bias, layer)
        else:
            positive = layer.apply(input, w_pos)
            linear_part = output if original_bias is None else _plus_bias(output, -original_bias, layer)
        z_pos = _plus_bias(linear_part + gamma * positive, bias_pos, layer)
        z_neg = _plus_bias((1 + gamma) * linear_part - gamma * positive, bias_neg, layer)
        s_pos = grad_output * (output > 0) / stabilizer(z_pos)
        s_neg = grad_output * (output < 0) / stabilizer(z_neg)
        grads = layer.apply_transposed_summed([s_pos + (1 + gamma) * s_neg, gamma * (s_pos - s_neg)], [weight, w_pos], input)
        return input * grads
    x_pos, x_neg = input.clamp(min=0), input.clamp(max=0)
    boost_pos = weight + gamma * w_pos
    boost_neg = weight + gamma * weight.clamp(max=0)
    pos_a, pos_b = layer.apply_many(x_pos, [boost_pos, boost_neg], [None, None])
    neg_a, neg_b = layer.apply_many(x_neg, [boost_pos, boost_neg], [None, None])
    if output is None:
        output = layer.apply(input, weight, original_bias)
    s_pos = grad_output * (output > 0) / stabilizer(_plus_bias(pos_a + neg_b, bias_pos, layer))
    s_neg = grad_output * (output < 0) / stabilizer(_plus_bias(pos_b + neg_a, bias_neg, layer))
    grads_pos = layer.apply_transposed_summed([s_pos, s_neg], [boost_pos, boost_neg], input)
    grads_neg = layer.apply_transposed_summed([s_pos, s_neg], [boost_neg, boost_pos], input)
    return x_pos * grads_pos + x_neg * grads_neg


def zbox(layer: LinearMap, input, output, grad_output, low, high, stabilizer: Callable, zero_params) -> torch.Tensor:
    """ZBox rule: ``x W^T s - l W+^T s - h W-^T s`` with ``s = R / stab(z - W+ l - b+ - W- h - b-)``."""
    zero_params = _names(zero_params)
    weight, bias = _params(layer.module, zero_params)
    w_pos, w_neg = weight.clamp(min=0), weight.clamp(max=0)
    z = _output(layer, input, output, weight, bias, zero_params)
    bounds = layer.apply_summed([low, high], [w_pos, w_neg])
    # b+ + b- = b
    bounds = _plus_bias(bounds, bias, layer)
    s = grad_output / stabilizer(z - bounds)
    plain, positive, negative = layer.apply_transposed_many(s, [weight, w_pos, w_neg], input)
    return input * plain - low * positive - high * negative


def uniform_spread(layer: LinearMap, input, grad_output, stabilizer: Callable, zero_params, squared: bool) -> torch.Tensor:
    """WSquare (``squared=True``: ``V = W^2``, ``c = b^2``) or Flat (``V = 1``, ``c = 0``) rule:
    ``V^T(R / stab(V 1 + c))``."""
    zero_params = _names(zero_params)
    weight, bias = _params(layer.module, zero_params)
    if squared:
        weight = weight**2
        bias = None if bias is None else bias**2
    else:
        weight = torch.ones_like(weight)
        bias = None
    ones = torch.ones_like(input)
    return layer.apply_transposed(grad_output / stabilizer(layer.apply(ones, weight, bias)), weight, input)
