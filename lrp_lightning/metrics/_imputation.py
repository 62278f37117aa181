"""Noisy linear imputation (Rong et al. 2022, ROAD): removed pixels become the weighted mean of their neighbours.

For each removed pixel p of an image (every channel on its own), the imputed values solve

.. math:: \\sum_{q \\in N(p)} w_{pq} (x_p - x_q) = 0,

over the in-image 8-neighbourhood N(p), with weight 1/6 for the four direct neighbours and 1/12 for
the four diagonal ones; kept pixels are fixed. The system is symmetric positive definite whenever a
pixel is kept, and is solved for a whole batch at once, matrix-free, by conjugate gradients with
a diagonal (Jacobi) preconditioner, in float64 (the neighbour sums are one 3x3 convolution).
"""
import torch
import torch.nn.functional as F
from torch import Tensor

DIRECT_WEIGHT = 1 / 6
DIAGONAL_WEIGHT = 1 / 12
# conjugate gradients stop once every system's residual is below this fraction of its right-hand side
RELATIVE_TOLERANCE = 1e-12


def neighbour_sums(images: Tensor) -> Tensor:
    """``sum_q w_pq x_q`` over the in-image neighbours q of every pixel p, for images (B, C, H, W)."""
    kernel = images.new_tensor([
        [DIAGONAL_WEIGHT, DIRECT_WEIGHT, DIAGONAL_WEIGHT],
        [DIRECT_WEIGHT, 0.0, DIRECT_WEIGHT],
        [DIAGONAL_WEIGHT, DIRECT_WEIGHT, DIAGONAL_WEIGHT],
    ])
    batch, channels, height, width = images.shape
    flat = images.reshape(batch * channels, 1, height, width)
    return F.conv2d(flat, kernel.view(1, 1, 3, 3), padding=1).view(batch, channels, height, width)


def batch_dot(first: Tensor, second: Tensor) -> Tensor:
    """Inner product of each (image, channel) plane, shape (B, C, 1, 1)."""
    return (first * second).sum(dim=(2, 3), keepdim=True)


def linear_imputation(images: Tensor, removed: Tensor) -> Tensor:
    """``images`` (B, C, H, W) with the pixels where ``removed`` (B, H, W) is True imputed (see the module docstring).

    Each image needs at least one kept pixel. Returns float64; a plane holding NaN or ±Inf gives
    non-finite values and does not hold up the others.
    """
    images = images.double()
    removed = removed[:, None].expand_as(images)
    degree = neighbour_sums(torch.ones_like(images[:1, :1]))
    known = images.masked_fill(removed, 0.0)
    rhs = torch.where(removed, neighbour_sums(known), 0.0)

    def operator(values: Tensor) -> Tensor:
        return torch.where(removed, degree * values - neighbour_sums(values), 0.0)

    solution = torch.zeros_like(images)
    residual = rhs
    preconditioned = residual / degree
    direction = preconditioned
    residual_dot = batch_dot(residual, preconditioned)
    threshold = RELATIVE_TOLERANCE * batch_dot(rhs, rhs).sqrt()
    for _ in range(images.shape[2] * images.shape[3]):
        if not bool((batch_dot(residual, residual).sqrt() > threshold).any()):  # NaN systems count as done
            break
        product = operator(direction)
        curvature = batch_dot(direction, product)
        step = torch.where(curvature > 0, residual_dot / curvature, 0.0)
        solution = solution + step * direction
        residual = residual - step * product
        preconditioned = residual / degree
        new_dot = batch_dot(residual, preconditioned)
        direction = preconditioned + torch.where(residual_dot > 0, new_dot / residual_dot, 0.0) * direction
        residual_dot = new_dot
    return torch.where(removed, solution, images)
