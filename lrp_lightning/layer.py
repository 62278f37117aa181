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
    backward passes are not).
    """

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        """Return ``F.scaled_dot_product_attention(query, key, value, *args, **kwargs)``."""
        if differentiable.enabled_now():
            with sdpa_kernel(SDPBackend.MATH):
                return torch.nn.functional.scaled_dot_product_attention(query, key, value, *args, **kwargs)
        return torch.nn.functional.scaled_dot_product_attention(query, key, value, *args, **kwargs)
