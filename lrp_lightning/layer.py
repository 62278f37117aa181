"""Modules that make implicit operations explicit, so that rules can be attached to them."""
import torch

from lrp_lightning import _arguments


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
