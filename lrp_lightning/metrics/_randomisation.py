"""Shared engine of the randomisation metrics: explanations of a deep copy of the model whose layers are
re-initialised, compared with the explanations of the original.

Layers are the modules that own parameters, in registration order (``"bottom_up"``: input first) or
reversed (``"top_down"``: output first). Each is re-initialised as Quantus 0.6.0 does it: torch's RNG
seeded with ``seed + 1``, then the layer's ``reset_parameters`` (a layer without one gets
standard-normal parameters scaled by each tensor's own standard deviation), inside a block that
restores the global RNG afterwards (:func:`lrp_lightning.callbacks.randomisation.randomise_layer`).
The user's model is never touched: everything happens on a deep copy.
"""
import copy
from typing import Any, Iterator, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lrp_lightning.attribution import preserved_random_state
from lrp_lightning.metrics.similarity import feature_ranks
from lrp_lightning.parameter_randomisation import parameter_layers, randomise_layer
from lrp_lightning.metrics._explainer import BatchExplainer, explain_in_chunks

LAYER_ORDERS = ("top_down", "bottom_up", "independent")
SIMILARITIES = ("spearman", "ssim")
SSIM_WINDOW = 7
SSIM_K1, SSIM_K2 = 0.01, 0.03


def check_layer_order(layer_order: Any) -> str:
    """Return ``layer_order`` if it is one of :data:`LAYER_ORDERS`, else raise ``ValueError``."""
    if layer_order not in LAYER_ORDERS:
        raise ValueError(f"unknown layer_order {layer_order!r}; expected one of {LAYER_ORDERS}")
    return layer_order


def check_similarity(similarity_func: Any) -> str:
    """Return ``similarity_func`` if it is one of :data:`SIMILARITIES`, else raise ``ValueError``."""
    if similarity_func not in SIMILARITIES:
        raise ValueError(f"unknown similarity_func {similarity_func!r}; expected one of {SIMILARITIES}")
    return similarity_func


def model_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` in eval mode (the global RNG left as it was)."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"the randomisation metrics re-initialise layers; the model must be an nn.Module, got {type(model).__name__}")
    with preserved_random_state():
        subject = copy.deepcopy(model)
    return subject.eval()


def randomised_states(model: nn.Module, layer_order: str, seed: int, skip_layers: bool) -> Iterator[str]:
    """Re-initialise the layers of ``model`` (a copy) step by step; yield each step's layer name.

    ``"top_down"``/``"bottom_up"``: cumulatively, one more layer per step (with ``skip_layers``
    all of them in one step, yielding the last name); ``"independent"``: one layer per step, the one
    before restored (bottom up).
    """

    layers = parameter_layers(model)
    if not layers:
        raise ValueError("the model has no layers with parameters to randomise")
    if layer_order != "top_down":
        layers = layers[::-1]
    pristine: Optional[tuple] = None
    for index, (name, module) in enumerate(layers):
        if layer_order == "independent":
            if pristine is not None:
                pristine[0].load_state_dict(pristine[1])
            pristine = (module, copy.deepcopy(module.state_dict()))
        randomise_layer(module, seed + 1)
        if not skip_layers or index == len(layers) - 1:
            yield name


def explain_all(explain: BatchExplainer, inputs: Tensor, target: Tensor, max_batch_size: Optional[int]) -> Tensor:
    """Attributions of ``inputs`` for ``target``, explained in device-sized chunks."""
    attributions: list = []
    explain_in_chunks(explain, inputs, target, 1, lambda step: inputs, max_batch_size,
                      lambda variants, samples, batch, outputs, relevance: attributions.append(relevance))
    return torch.cat(attributions)


def prepared(attributions: Tensor, abs: bool, normalise: bool) -> Tensor:
    """float64 attributions (shape kept) after ``abs`` and division by each sample's largest magnitude."""
    values = attributions.double()
    if abs:
        values = values.abs()
    if normalise:
        scale = values.reshape(values.shape[0], -1).abs().amax(dim=1)
        values = values / scale.view(-1, *([1] * (values.ndim - 1)))
    return values


def spearman_rows(a: Tensor, b: Tensor) -> Tensor:
    """Spearman's ρ of each sample's entries (average ranks for ties, as ``scipy.stats.spearmanr``)."""

    first, second = feature_ranks(a), feature_ranks(b)
    first = first - first.mean(dim=1, keepdim=True)
    second = second - second.mean(dim=1, keepdim=True)
    return (first * second).sum(dim=1) / (first.square().sum(dim=1) * second.square().sum(dim=1)).sqrt()


def ssim_rows(a: Tensor, b: Tensor) -> Tensor:
    """SSIM (Wang et al. 2004) of each sample's map, with the conventions of
    ``skimage.metrics.structural_similarity`` (which Quantus' ``ssim`` calls): a uniform window of
    7 (7 × 7 for 2-D maps), sample (co)variances, ``data_range = max(a, b) - min(a, b)`` (the joint
    range), the mean over the windows that fit.

    ``a`` and ``b`` are 2-D maps (N, H, W), images (N, C, H, W) (compared as their channel sums, the
    heatmaps), or vectors (N, D) / (N, 1, D); each side at least 7.
    """
    maps_a, maps_b = a.double(), b.double()
    if maps_a.ndim == 4:
        maps_a, maps_b = maps_a.sum(dim=1), maps_b.sum(dim=1)
    elif maps_a.ndim == 3 and maps_a.shape[1] == 1:
        maps_a, maps_b = maps_a[:, 0], maps_b[:, 0]
    if maps_a.ndim not in (2, 3) or min(maps_a.shape[1:]) < SSIM_WINDOW:
        raise ValueError(
            f"ssim compares 2-D maps or vectors with sides of at least {SSIM_WINDOW}, got attributions "
            f"of shape {tuple(a.shape)}; use similarity_func='spearman'"
        )
    flat_a, flat_b = maps_a.flatten(1), maps_b.flatten(1)
    data_range = torch.maximum(flat_a.amax(dim=1), flat_b.amax(dim=1)) - torch.minimum(flat_a.amin(dim=1), flat_b.amin(dim=1))
    spatial = maps_a.ndim - 1
    c1 = (SSIM_K1 * data_range).square().view(-1, *([1] * spatial))
    c2 = (SSIM_K2 * data_range).square().view(-1, *([1] * spatial))
    count = SSIM_WINDOW**spatial
    correction = count / (count - 1)
    # the five window means in one pass: the uniform window's mean is an average pool
    pool = F.avg_pool2d if spatial == 2 else F.avg_pool1d
    stacked = torch.stack([maps_a, maps_b, maps_a * maps_a, maps_b * maps_b, maps_a * maps_b], dim=1)
    mean_a, mean_b, mean_aa, mean_bb, mean_ab = pool(stacked, SSIM_WINDOW, stride=1).unbind(dim=1)
    var_a = correction * (mean_aa - mean_a.square())
    var_b = correction * (mean_bb - mean_b.square())
    covariance = correction * (mean_ab - mean_a * mean_b)
    index = ((2 * mean_a * mean_b + c1) * (2 * covariance + c2)) / (
        (mean_a.square() + mean_b.square() + c1) * (var_a + var_b + c2)
    )
    return index.flatten(1).mean(dim=1)


def similarity_rows(name: str, a: Tensor, b: Tensor) -> Tensor:
    """The similarity ``name`` (one of :data:`SIMILARITIES`) of each sample's two explanations."""
    return spearman_rows(a, b) if name == "spearman" else ssim_rows(a, b)
