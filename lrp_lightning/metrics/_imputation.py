"""Noisy linear imputation (Rong et al. 2022, ROAD): removed pixels become the weighted mean of their neighbours.

For each removed pixel p of an image (every channel on its own), the imputed values solve

.. math:: \\sum_{q \\in N(p)} w_{pq} (x_p - x_q) = 0,

over the in-image 8-neighbourhood N(p), with weight 1/6 for the four direct neighbours and 1/12 for
the four diagonal ones; kept pixels are fixed. The system is symmetric positive definite whenever a
pixel is kept, and is solved for a whole batch at once, matrix-free, by conjugate gradients with
a diagonal (Jacobi) preconditioner, in float64.
"""
import torch
import torch.nn.functional as F
from torch import Tensor

DIAGONAL_WEIGHT = 1 / 12  # the direct neighbours weigh twice as much, 1/6
# conjugate gradients stop once every system's residual is below this fraction of its right-hand side,
# or below the resolution of the inputs' dtype where that is coarser (the result is cast back to it)
RELATIVE_TOLERANCE = 1e-12


def neighbour_sums(images: Tensor) -> Tensor:
    """``sum_q w_pq x_q`` over the in-image neighbours q of every pixel p, for images (B, C, H, W).

    The 8-neighbour kernel (1/6 direct, 1/12 diagonal, 0 centre) is ``[1, 2, 1]ᵀ[1, 2, 1] / 12`` less
    a third of the centre, so it takes two 1-D passes over the zero-padded images.
    """
    height, width = images.shape[-2:]
    padded = F.pad(images, (1, 1, 1, 1))
    rows = padded[..., :, :width] + 2 * padded[..., :, 1 : width + 1] + padded[..., :, 2:]
    both = rows[..., :height, :] + 2 * rows[..., 1 : height + 1, :] + rows[..., 2:, :]
    return both * DIAGONAL_WEIGHT - images / 3


def batch_dot(first: Tensor, second: Tensor) -> Tensor:
    """Inner product of each (image, channel) plane, shape (B, C, 1, 1)."""
    return (first * second).sum(dim=(2, 3), keepdim=True)


def linear_imputation(images: Tensor, removed: Tensor) -> Tensor:
    """``images`` (B, C, H, W) with the pixels where ``removed`` (B, H, W) is True imputed (see the module docstring).

    Each image needs at least one kept pixel. Returns float64, solved to the resolution of the
    inputs' dtype; a plane holding NaN or ±Inf gives non-finite values and does not hold up the others.
    """
    tolerance = max(RELATIVE_TOLERANCE, torch.finfo(images.dtype).eps)
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
    threshold = tolerance * batch_dot(rhs, rhs).sqrt()
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
