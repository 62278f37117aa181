"""Modules that make implicit operations explicit, so that rules can be attached to them."""
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from lrp_lightning import _arguments
from lrp_lightning.core import differentiable


class Sum(torch.nn.Module):
    """Sum of a stacked tensor along one dimension, e.g. the addition of a residual connection.

    Parameters
    ----------
    dim : int
        Dimension to sum over; the summands are stacked along it.
    """

    def __init__(self, dim: int = -1) -> None:
        super().__init__()
        self.dim = _arguments.integer("dim", dim)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        """Return ``input.sum(dim)``."""
        return torch.sum(input, dim=self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class MatMul(torch.nn.Module):
    """Matrix product of two tensors, e.g. ``Q K^T`` or attention weights times values.

    An explicit module so that a rule can be attached to the product (``torch.matmul`` semantics,
    broadcasting included).
    """

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Return ``torch.matmul(a, b)``."""
        return torch.matmul(a, b)


class Mul(torch.nn.Module):
    """Element-wise product of two tensors (broadcasting), e.g. the gate of a gated MLP.

    An explicit module so that a rule can be attached to the product.
    """

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Return ``a * b``."""
        return a * b


class GatedMul(Mul):
    """Element-wise product of a gate and a value, ``gate * value`` (the gated MLP of Llama-style models).

    A :class:`Mul` whose first factor is a gate: AttnLRP treats it as any product (uniform rule),
    CP-LRP holds the gate constant, so that the value receives the relevance whole.
    """

    def forward(self, gate: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        """Return ``gate * value``."""
        return gate * value


class ScaledDotProductAttention(torch.nn.Module):
    """Fused attention ``softmax(Q K^T * scale + mask) V``, ``F.scaled_dot_product_attention`` as a module.

    An explicit module so that a rule can be attached to the attention of a model that computes it
    with PyTorch's fused kernel (SDPA), which never materialises ``Q K^T`` or the attention weights.
    The call takes the arguments of ``F.scaled_dot_product_attention`` (query, key, value first).
    Inside :class:`~lrp_lightning.core.differentiable` (an attribution with ``create_graph=True``) it runs
    the kernel's math backend, whose backward pass is differentiable again (the fused CPU/GPU kernels'
    backward passes are not). Elsewhere, when only the query, key and value require grad and there is no
    dropout, the fused kernel's output carries a backward pass that notices a second-order need itself:
    run with gradients enabled (a backward pass with ``create_graph=True``), it recomputes the attention
    with the math backend and differentiates that; otherwise it uses the fused kernel's own backward.
    """

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        """Return ``F.scaled_dot_product_attention(query, key, value, *args, **kwargs)``."""
        if differentiable.enabled_now():
            with sdpa_kernel(SDPBackend.MATH):
                return torch.nn.functional.scaled_dot_product_attention(query, key, value, *args, **kwargs)
        if _needs_twice_differentiable_backward((query, key, value), args, kwargs):
            return _TwiceDifferentiableAttention.apply(args, kwargs, query, key, value)
        return torch.nn.functional.scaled_dot_product_attention(query, key, value, *args, **kwargs)


def _needs_twice_differentiable_backward(tensors: tuple, args: tuple, kwargs: dict) -> bool:
    """Whether a gradient may flow through an attention call into its query, key or value only, without dropout."""
    if not torch.is_grad_enabled() or not any(tensor.requires_grad for tensor in tensors):
        return False
    others = (*args, *kwargs.values())
    if any(isinstance(other, torch.Tensor) and other.requires_grad for other in others):
        return False
    dropout = dict(zip(("attn_mask", "dropout_p"), args)).get("dropout_p", kwargs.get("dropout_p", 0.0))
    return not dropout


class _TwiceDifferentiableAttention(torch.autograd.Function):
    """``F.scaled_dot_product_attention`` of the query, key and value whose backward pass is differentiable."""

    @staticmethod
    def forward(ctx, args: tuple, kwargs: dict, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        ctx.args, ctx.kwargs = args, kwargs
        ctx.save_for_backward(query, key, value)
        with torch.enable_grad():
            ctx.leaves = [tensor.detach().requires_grad_(tensor.requires_grad) for tensor in (query, key, value)]
            ctx.output = torch.nn.functional.scaled_dot_product_attention(*ctx.leaves, *args, **kwargs)
        return ctx.output.detach()

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> tuple:
        # autograd runs a backward pass with create_graph=True with gradients enabled
        if torch.is_grad_enabled():
            tensors = ctx.saved_tensors
            with sdpa_kernel(SDPBackend.MATH):
                output = torch.nn.functional.scaled_dot_product_attention(*tensors, *ctx.args, **ctx.kwargs)
            wanted = [tensor for tensor in tensors if tensor.requires_grad]
            grads = iter(torch.autograd.grad(output, wanted, grad_output, create_graph=True, allow_unused=True))
        else:
            tensors = ctx.leaves
            wanted = [tensor for tensor in tensors if tensor.requires_grad]
            grads = iter(torch.autograd.grad(ctx.output, wanted, grad_output, retain_graph=True, allow_unused=True))
        return (None, None, *(next(grads) if tensor.requires_grad else None for tensor in tensors))
