"""Pixel flipping (Bach et al. 2015): cumulative replacement of single locations."""
from typing import Any, Optional

import torch
from torch import Tensor

from lrp_lightning.metrics._checks import Baseline, check_positive_int
from lrp_lightning.metrics._cumulative import ScoreDropMetric
from lrp_lightning.metrics._perturbation import region_ranks


class PixelFlipping(ScoreDropMetric):
    """Score drop while single pixels are replaced, ``features_in_step`` per step (Bach et al. 2015).

    Locations (pixels with all their channels, or vector entries) are ranked by relevance and
    replaced cumulatively by ``baseline``, ``features_in_step`` per step. ``curve[k]`` = mean over
    samples of f(x) - f(x after k steps), ``curve[0] = 0``; ``aopc`` = mean of the curve.

    Parameters
    ----------
    features_in_step : int
        Locations replaced per step (the last step may replace fewer).
    steps : int, optional
        Number of steps; ``None`` runs until every location is replaced.
    order : str
        ``"morf"``, ``"lerf"`` or ``"random"``.
    baseline : float, int, str or callable
        A number, ``"mean"``, ``"blur"`` or a callable ``(x) -> fill``.
        Token-id inputs (N, T) need an ``int``: the id of the replacement token (e.g. the pad id).
    softmax : bool
        Score the target softmax probability instead of the target logit.
    max_batch_size : int or None
        Largest number of images sent through the model at once; ``None`` sizes the chunks to the
        inputs' device (on the CPU a few dozen images, on CUDA up to a quarter of the free memory).
    seed : int
        Seed of the generator behind ``order="random"``; re-seeded by ``reset()``.
    **kwargs
        Passed to ``torchmetrics.Metric``.
    """

    def __init__(
        self,
        features_in_step: int = 1,
        steps: Optional[int] = None,
        order: str = "morf",
        baseline: Baseline = 0.0,
        softmax: bool = False,
        max_batch_size: Optional[int] = None,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(order, baseline, softmax, max_batch_size, seed, **kwargs)
        self.features_in_step = check_positive_int("features_in_step", features_in_step)
        self.steps = None if steps is None else check_positive_int("steps", steps)

    def _schedule(self, relevance: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        ranks, num_locations = region_ranks(relevance, 1, self.order, generator)
        all_steps = -(-num_locations // self.features_in_step)
        steps = all_steps if self.steps is None else self.steps
        if steps > all_steps:
            raise ValueError(
                f"steps={steps} is larger than the {all_steps} steps of {self.features_in_step} "
                f"features that {num_locations} locations allow"
            )
        counts = torch.arange(steps + 1, device=relevance.device) * self.features_in_step
        return ranks, counts.clamp(max=num_locations)
