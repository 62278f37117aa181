"""The random baseline: a seeded random attribution, evaluated by the same metrics as the explainers.

A metric value only says something when it beats chance (the SaCo study, CVPR 2024). With
``random_baseline=True`` :class:`~lrp_lightning.callbacks.AttributionCallback` adds the explainer
:data:`RANDOM_NAME`, whose attribution of the samples is standard normal noise drawn from a private
generator seeded with the same seed every epoch (the global RNG is never touched), and logs every
attribution-based metric of it as ``attribution/random/<metric>``.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Union

import torch
from torch import nn
from torchmetrics import Metric

from lrp_lightning.callbacks.explainers import Explainer
from lrp_lightning.callbacks.metric_set import update_arguments

RANDOM_NAME = "random"
DEFAULT_RANDOM_SEED = 0


class RandomAttribution:
    """Attributor protocol (``with``, ``attributor(inputs, target) -> (output, relevance)``) for noise.

    Parameters
    ----------
    model : torch.nn.Module
        The explained model (its output is returned, as by every attributor).
    composite : None
        Unused; present for the attributor signature.
    seed : int
        Seed of the private generator; the same seed gives the same attribution.
    """

    def __init__(self, model: nn.Module, composite: Optional[Any] = None, seed: int = DEFAULT_RANDOM_SEED) -> None:
        self.model = model
        self.seed = seed

    def __enter__(self) -> "RandomAttribution":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        return None

    def __call__(self, inputs: Union[torch.Tensor, tuple], target: Any = None,
                 **model_kwargs: Any) -> tuple[torch.Tensor, Union[torch.Tensor, tuple]]:
        """The model output and a standard normal attribution shaped like ``inputs``.

        The noise is drawn on the CPU, so every device (and every rank) gets the same values.

        Parameters
        ----------
        inputs : torch.Tensor or tuple of torch.Tensor
            Input batch (N, ...); a tuple for a model with several inputs, which gets one
            attribution per floating-point input (None for the others).
        target : any
            Ignored: the baseline explains no class.
        **model_kwargs
            Passed to the model (e.g. ``attention_mask`` for token ids).

        Returns
        -------
        output, relevance : torch.Tensor
        """
        generator = torch.Generator().manual_seed(self.seed)
        several = isinstance(inputs, tuple)
        with torch.no_grad():
            output = self.model(*inputs, **model_kwargs) if several else self.model(inputs, **model_kwargs)
        if several:
            return output.detach(), tuple(_noise(part, generator) if part.is_floating_point() else None for part in inputs)
        return output.detach(), _noise(inputs, generator)


def _noise(inputs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Standard normal noise of the shape of ``inputs``, drawn on the CPU, on their device in their
    dtype if floating, else in float32."""
    noise = torch.randn(inputs.shape, generator=generator, dtype=torch.float32)
    return noise.to(device=inputs.device, dtype=inputs.dtype if inputs.is_floating_point() else torch.float32)


def random_explainer(seed: int = DEFAULT_RANDOM_SEED) -> Explainer:
    """The random-baseline explainer, named :data:`RANDOM_NAME`.

    Parameters
    ----------
    seed : int
        Seed of its noise.

    Returns
    -------
    Explainer
    """
    return Explainer(RANDOM_NAME, None, RandomAttribution, {"seed": seed})


def attribution_metrics(metrics: Mapping[str, Metric]) -> dict[str, Metric]:
    """The metrics that judge an attribution (their ``update`` takes ``attributions``).

    Parameters
    ----------
    metrics : mapping of str to Metric
        Named metrics.

    Returns
    -------
    dict of str to Metric
        The subset, in order.
    """
    return {name: metric for name, metric in metrics.items() if "attributions" in update_arguments(metric)}
