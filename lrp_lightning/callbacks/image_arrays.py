"""Pictures as the arrays the loggers' own image calls take."""
import numpy as np
import torch


def image_hwc(image: torch.Tensor) -> np.ndarray:
    """A uint8 (3, H, W) tensor as the (H, W, 3) NumPy array the loggers' image calls take.

    Parameters
    ----------
    image : torch.Tensor

    Returns
    -------
    numpy.ndarray
    """
    return np.ascontiguousarray(image.detach().cpu().permute(1, 2, 0).numpy())
