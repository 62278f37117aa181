"""Shared pieces of the comparisons with Quantus 0.6.0 (black-box oracle): small models, data, calls.

Images are single-channel by default: Quantus perturbs every value on its own, our metrics perturb
locations (all channels at once, relevance summed over channels); the two coincide for one channel.
"""
import numpy as np
import torch
from torch import nn

NUM_CLASSES = 4


def small_cnn(channels: int = 1, height: int = 6, width: int = 6) -> nn.Module:
    """A float64 conv net (N, C, H, W) -> (N, 4), fixed weights."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(channels, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * height * width, NUM_CLASSES)
    ).double().eval()


def small_mlp(features: int = 12) -> nn.Module:
    """A float64 MLP (N, D) -> (N, 4), fixed weights."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(features, 8), nn.ReLU(), nn.Linear(8, NUM_CLASSES)).double().eval()


def image_batch(shape=(3, 1, 6, 6), attribution_channels: int = 1, seed: int = 1):
    """Random float64 images, attributions (N, attribution_channels, H, W) and targets."""
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(shape, generator=generator, dtype=torch.float64)
    n, _, h, w = shape
    attributions = torch.randn((n, attribution_channels, h, w), generator=generator, dtype=torch.float64)
    target = torch.randint(0, NUM_CLASSES, (n,), generator=generator)
    return inputs, attributions, target


def vector_batch(shape=(4, 12), seed: int = 2):
    """Random float64 vectors, attributions of their shape and targets."""
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(shape, generator=generator, dtype=torch.float64)
    attributions = torch.randn(shape, generator=generator, dtype=torch.float64)
    target = torch.randint(0, NUM_CLASSES, (shape[0],), generator=generator)
    return inputs, attributions, target


def quantus_scores(oracle, model, inputs, attributions, target, **call_kwargs):
    """Quantus' per-sample (or aggregate) output on our data, as a NumPy array where it is one."""
    result = oracle(
        model, inputs.numpy(), target.numpy(), a_batch=attributions.numpy(), device="cpu",
        channel_first=True, **call_kwargs,
    )
    return result if isinstance(result, dict) else np.asarray(result, dtype=np.float64)
