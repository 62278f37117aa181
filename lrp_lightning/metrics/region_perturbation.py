"""Region perturbation (Samek et al. 2017): AOPC of patch-wise cumulative replacement."""
from typing import Any, Optional

import torch
from torch import Tensor

from lrp_lightning.metrics._checks import Baseline, check_positive_int
from lrp_lightning.metrics._cumulative import ScoreDropMetric
from lrp_lightning.metrics._perturbation import region_ranks


class RegionPerturbation(ScoreDropMetric):
    """Area over the perturbation curve of patch-wise replacement (Samek et al. 2017).

    The input is split into non-overlapping ``patch_size`` x ``patch_size`` patches (all channels) on
    a grid centred on the input: when the size does not divide, the border patches are smaller, the
    far ones cut by the larger half of the excess (as in Quantus 0.6.0). Patches are ranked by summed relevance
    and replaced cumulatively by ``baseline``. With f the target score,
    ``curve[k]`` = mean over samples of f(x) - f(x with its first k patches replaced), ``curve[0] = 0``,
    and ``aopc`` = mean of the curve over k = 0..steps.

    Parameters
    ----------
    patch_size : int
        Side of the square patches (length of the segments for vector inputs).
    steps : int
        Number of patches replaced, at most the number of patches.
    order : str
        ``"morf"`` (most relevant first), ``"lerf"`` (least relevant first) or ``"random"``
        (a permutation drawn from the metric's own generator).
    baseline : float, int, str or callable
        Replacement value: a number, ``"mean"`` (each sample's mean), ``"blur"`` (blurred image) or a
        callable ``(x) -> fill`` returning a tensor broadcastable to ``x``.
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
        patch_size: int = 8,
        steps: int = 100,
        order: str = "morf",
        baseline: Baseline = 0.0,
        softmax: bool = False,
        max_batch_size: Optional[int] = None,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(order, baseline, softmax, max_batch_size, seed, **kwargs)
        self.patch_size = check_positive_int("patch_size", patch_size)
        self.steps = check_positive_int("steps", steps)

    def _schedule(self, relevance: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        ranks, num_patches = region_ranks(relevance, self.patch_size, self.order, generator)
        if self.steps > num_patches:
            raise ValueError(
                f"steps={self.steps} is larger than the number of {self.patch_size}-patches ({num_patches})"
            )
        return ranks, torch.arange(self.steps + 1, device=relevance.device)
