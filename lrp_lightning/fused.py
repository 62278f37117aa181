"""Element-wise parts of closed-form rules as single fused kernels on CUDA.

In eager mode, the element-wise work of a rule such as Gamma (denominators, stabilizer, ratios,
masks) costs one pass over the layer's output per operation, about twenty passes in all, which on
a GPU takes longer than the layer's extra convolutions. The pure functions here express that work
once; on CUDA they run compiled by ``torch.compile`` (one kernel reading the output, ``W+ x`` and
the incoming relevance, writing the fused transposed map's input), elsewhere eagerly. If
compilation is unavailable or fails, the eager function is used from then on.
"""
from __future__ import annotations

import functools
import warnings
from typing import Callable

import torch

_DISABLED = False


def gamma_stacked(
    output: torch.Tensor,
    positive: torch.Tensor,
    grad_output: torch.Tensor,
    shift_pos: torch.Tensor,
    shift_neg: torch.Tensor,
    gamma: float,
    epsilon: float,
    channel_dim: int,
) -> torch.Tensor:
    """Inputs of Gamma's fused transposed map for a non-negative layer input.

    With ``z`` the layer output, ``P = W+ x``, ``z_p = z + gamma P + shift_pos`` (outputs with
    ``z > 0``), ``z_n = (1 + gamma) z - gamma P + shift_neg`` (``z < 0``) and
    ``s = R / stab(z_p or z_n)`` (0 where ``z = 0``), returns ``[s_p + (1 + gamma) s_n,
    gamma (s_p - s_n)]`` concatenated along ``channel_dim``.
    """
    is_positive = output > 0
    denominator = torch.where(
        is_positive, output + gamma * positive + shift_pos, (1.0 + gamma) * output - gamma * positive + shift_neg
    )
    denominator = denominator + torch.where(denominator >= 0, epsilon, -epsilon)
    ratio = torch.where(output == 0, 0.0, grad_output / denominator)
    first = torch.where(is_positive, ratio, (1.0 + gamma) * ratio)
    second = gamma * torch.where(is_positive, ratio, -ratio)
    return torch.cat([first, second], dim=channel_dim)


def on_device(function: Callable) -> Callable:
    """Run ``function`` compiled (dynamic shapes, compiled on first use) when its first argument is on CUDA."""
    compiled: list = []

    @functools.wraps(function)
    def dispatch(*args, **kwargs):
        global _DISABLED
        if _DISABLED or not args[0].is_cuda:
            return function(*args, **kwargs)
        try:
            if not compiled:
                compiled.append(torch.compile(function, dynamic=True))
            return compiled[0](*args, **kwargs)
        except Exception as error:  # compilation needs a working Triton toolchain
            _DISABLED = True
            warnings.warn(f"fused kernels unavailable ({type(error).__name__}: {error}); using eager element-wise code")
            return function(*args, **kwargs)

    return dispatch


gamma_stacked_on_device = on_device(gamma_stacked)
