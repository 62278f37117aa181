"""Validation of the arguments the metrics receive; every failure is a ``ValueError`` naming the problem."""
from typing import Any, Callable, Optional, Union

import torch
from torch import Tensor

from lrp_lightning.transformer.tokens import is_token_ids

Baseline = Union[float, str, Callable[[Tensor], Tensor]]
BASELINE_NAMES = ("mean", "blur", "black", "white")
ORDERS = ("morf", "lerf", "random")


def check_positive_int(name: str, value: Any) -> int:
    """Return ``value`` if it is an int >= 1, else raise ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def optional_batch_size(max_batch_size: Any) -> Optional[int]:
    """``max_batch_size`` checked: ``None`` (chunks sized to the device) or a positive int."""
    return None if max_batch_size is None else check_positive_int("max_batch_size", max_batch_size)


def check_order(order: Any) -> str:
    """Return ``order`` if it is one of ``ORDERS``, else raise ``ValueError``."""
    if order not in ORDERS:
        raise ValueError(f"unknown order {order!r}; expected one of {ORDERS}")
    return order


def check_baseline(baseline: Any) -> Baseline:
    """Return ``baseline`` if it is a number, a name in ``BASELINE_NAMES`` or a callable, else raise.

    An ``int`` stays an ``int``: for token-id inputs it is the replacement token id.
    """
    if callable(baseline) or baseline in BASELINE_NAMES:
        return baseline
    if isinstance(baseline, int) and not isinstance(baseline, bool):
        return baseline
    if isinstance(baseline, float):
        return baseline
    raise ValueError(
        f"unknown baseline {baseline!r}; expected a number, one of {BASELINE_NAMES} or a callable (x) -> fill"
    )


def check_inputs(inputs: Any) -> Tensor:
    """Check that ``inputs`` are floating images (N, C, H, W) or vectors (N, D), or integer token ids (N, T)."""
    valid = isinstance(inputs, Tensor) and (
        (inputs.ndim in (2, 4) and inputs.is_floating_point()) or is_token_ids(inputs)
    )
    if not valid:
        shape = tuple(inputs.shape) if isinstance(inputs, Tensor) else type(inputs).__name__
        dtype = f" of dtype {inputs.dtype}" if isinstance(inputs, Tensor) else ""
        raise ValueError(
            f"inputs must be a floating tensor (N, C, H, W) or (N, D), or integer token ids (N, T), got {shape}{dtype}"
        )
    if inputs.shape[0] == 0:
        raise ValueError("inputs must hold at least one sample")
    return inputs


def check_images(inputs: Any, needs: str) -> None:
    """Check that ``inputs`` are images (N, C, H, W), not vectors or token ids; ``needs`` says why, e.g.
    ``"IROF segments images into superpixels"``."""
    if not isinstance(inputs, Tensor) or inputs.ndim != 4 or is_token_ids(inputs):
        shape = tuple(inputs.shape) if isinstance(inputs, Tensor) else type(inputs).__name__
        raise ValueError(f"{needs} and needs images (N, C, H, W), got {shape}")


def location_relevance(inputs: Tensor, attributions: Tensor) -> Tensor:
    """Relevance per input location (channels summed): (N, H, W) for images, (N, D) for vectors.

    Accepted attribution shapes: the inputs' shape, or for images (N, 1, H, W) or (N, H, W).
    """
    n = inputs.shape[0]
    if inputs.ndim == 4:
        height_width = tuple(inputs.shape[2:])
        allowed = [tuple(inputs.shape), (n, 1) + height_width, (n,) + height_width]
    else:
        allowed = [tuple(inputs.shape)]
    if not isinstance(attributions, Tensor) or tuple(attributions.shape) not in allowed:
        shape = tuple(attributions.shape) if isinstance(attributions, Tensor) else type(attributions).__name__
        raise ValueError(
            f"attributions of shape {shape} fit neither the inputs {tuple(inputs.shape)} nor a "
            f"channel-reduced form; expected one of {allowed}"
        )
    relevance = attributions.to(device=inputs.device)
    if relevance.ndim == 4:
        relevance = relevance.sum(dim=1)
    return relevance


def check_target(target: Any, num_samples: int, device: torch.device) -> Tensor:
    """Check that ``target`` is (N,) non-negative class indices and return it on ``device``."""
    if not isinstance(target, Tensor) or target.dtype.is_floating_point or target.dtype == torch.bool:
        raise ValueError(f"target must be an integer tensor of class indices, got {target!r}")
    if target.ndim != 1 or target.shape[0] != num_samples:
        raise ValueError(f"target must have shape ({num_samples},), got {tuple(target.shape)}")
    if bool((target < 0).any()):
        raise ValueError(f"target holds negative class indices: {target.tolist()}")
    return target.to(device=device, dtype=torch.long)


def check_attention_mask(attention_mask: Any, inputs: Tensor) -> Optional[Tensor]:
    """Check that ``attention_mask`` is None or a tensor of the token ids' shape (N, T); return it on their device."""
    if attention_mask is None:
        return None
    if not is_token_ids(inputs):
        raise ValueError("attention_mask is only taken with integer token-id inputs (N, T)")
    if not isinstance(attention_mask, Tensor) or tuple(attention_mask.shape) != tuple(inputs.shape):
        shape = tuple(attention_mask.shape) if isinstance(attention_mask, Tensor) else type(attention_mask).__name__
        raise ValueError(f"attention_mask must have the token ids' shape {tuple(inputs.shape)}, got {shape}")
    return attention_mask.to(inputs.device)


def check_same_batch(name: str, tensor: Any, num_samples: int) -> Tensor:
    """Check that ``tensor`` is a tensor with ``num_samples`` rows."""
    if not isinstance(tensor, Tensor) or tensor.ndim == 0 or tensor.shape[0] != num_samples:
        shape = tuple(tensor.shape) if isinstance(tensor, Tensor) else type(tensor).__name__
        raise ValueError(f"{name} must be a tensor with {num_samples} samples along dim 0, got {shape}")
    return tensor


def flat_attributions(attributions: Any) -> Tensor:
    """Attributions (N, ...) as (N, F), one row per sample."""
    if not isinstance(attributions, Tensor) or attributions.ndim < 2 or attributions.shape[0] == 0:
        shape = tuple(attributions.shape) if isinstance(attributions, Tensor) else type(attributions).__name__
        raise ValueError(f"attributions must be a tensor (N, ...) with at least one sample and one value, got {shape}")
    if attributions[0].numel() == 0:
        raise ValueError(f"attributions hold no values per sample: shape {tuple(attributions.shape)}")
    return attributions.reshape(attributions.shape[0], -1)


def flat_mask(mask: Any, attributions: Tensor) -> Tensor:
    """The mask broadcast to the attributions' shape as bool (N, F); each sample needs a True entry."""
    if not isinstance(mask, Tensor):
        raise ValueError(f"mask must be a tensor, got {type(mask).__name__}")
    try:
        mask = torch.broadcast_to(mask.to(device=attributions.device, dtype=torch.bool), attributions.shape)
    except RuntimeError as error:
        raise ValueError(
            f"mask of shape {tuple(mask.shape)} is not broadcastable to the attributions {tuple(attributions.shape)}"
        ) from error
    mask = mask.reshape(attributions.shape[0], -1)
    empty = (~mask.any(dim=1)).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"empty mask (no True entry) for samples {empty}")
    return mask
