"""Faithfulness correlation (Bhatt et al. 2020): relevance of random subsets vs the score drop."""
from typing import Any, Optional

from torch import Tensor

from lrp_lightning.metrics._base import SampleMeanMetric
from lrp_lightning.metrics._checks import Baseline, check_positive_int
from lrp_lightning.metrics._docs import fill_doc
from lrp_lightning.metrics._model import Model
from lrp_lightning.metrics._model_metric import ModelPerturbationMixin
from lrp_lightning.metrics._perturbation import perturbed_scores, random_subsets, resolve_fill, subset_masks


def pearson_rows(first: Tensor, second: Tensor) -> Tensor:
    """Pearson correlation of each row of ``first`` with the same row of ``second`` (NaN if constant)."""
    first = first - first.mean(dim=1, keepdim=True)
    second = second - second.mean(dim=1, keepdim=True)
    return (first * second).sum(dim=1) / (first.square().sum(dim=1) * second.square().sum(dim=1)).sqrt()


@fill_doc
class FaithfulnessCorrelation(ModelPerturbationMixin, SampleMeanMetric):
    """Mean over samples of the Pearson r between subset relevance and score drop (Bhatt et al. 2020).

    For each sample, ``nr_runs`` random subsets of ``subset_size`` locations (pixels with all
    channels, or vector entries) are replaced by ``baseline``; r correlates the summed relevance of
    each subset with f(x) - f(x with the subset replaced). Subsets come from the metric's own
    generator: per sample in turn, ``torch.rand(nr_runs, L, generator=g)`` on the inputs' device, each
    subset the ``subset_size`` locations with the smallest keys of its row; ``g`` is seeded with
    ``seed`` at its first use and again after ``reset()``. A sample whose drops or subset relevances
    are all equal gives NaN.

    Parameters
    ----------
    nr_runs : int
        Number of random subsets per sample (at least 2).
    subset_size : int
        Locations per subset, at most the number of locations.
    baseline : float, int, str or callable
        A number, ``"mean"``, ``"blur"`` or a callable ``(x) -> fill``.
        Token-id inputs (N, T) need an ``int``: the id of the replacement token (e.g. the pad id).
    softmax : bool
        Score the target softmax probability instead of the target logit.
    seed : int
        Seed of the subset generator.
    max_batch_size : int or None
        Largest number of images sent through the model at once; ``None`` sizes the chunks to the
        inputs' device (on the CPU a few dozen images, on CUDA up to a quarter of the free memory).
    **kwargs
        Passed to ``torchmetrics.Metric``.
    """

    higher_is_better = True

    def __init__(
        self,
        nr_runs: int = 100,
        subset_size: int = 224,
        baseline: Baseline = 0.0,
        softmax: bool = False,
        seed: int = 0,
        max_batch_size: Optional[int] = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if check_positive_int("nr_runs", nr_runs) < 2:
            raise ValueError(f"nr_runs must be at least 2 for a correlation, got {nr_runs}")
        self.nr_runs = nr_runs
        self.subset_size = check_positive_int("subset_size", subset_size)
        self._configure(baseline, softmax, max_batch_size, seed)

    def update(
        self, model: Model, inputs: Tensor, attributions: Tensor, target: Tensor, attention_mask: Optional[Tensor] = None
    ) -> None:
        """Correlate subset relevance with score drops for each sample and accumulate the r values.

        Parameters
        ----------
        {token_update}
        """
        inputs, relevance, target, attention_mask = self._prepare(inputs, attributions, target, attention_mask)
        num_samples, spatial = relevance.shape[0], tuple(relevance.shape[1:])
        flat_relevance = relevance.reshape(num_samples, -1).double()
        if self.subset_size > flat_relevance.shape[1]:
            raise ValueError(
                f"subset_size={self.subset_size} is larger than the number of locations ({flat_relevance.shape[1]})"
            )
        subsets = random_subsets(
            num_samples, self.nr_runs, flat_relevance.shape[1], self.subset_size, self._generators.get(inputs.device)
        )
        subset_relevance = flat_relevance.gather(1, subsets.reshape(num_samples, -1))
        subset_relevance = subset_relevance.view(num_samples, self.nr_runs, self.subset_size).sum(dim=2)
        scores = perturbed_scores(
            model,
            inputs,
            resolve_fill(self.baseline, inputs),
            target,
            subset_masks(subsets, spatial),
            self.nr_runs + 1,
            self.softmax,
            self.max_batch_size,
            attention_mask=attention_mask,
        )
        self._accumulate(pearson_rows(subset_relevance, scores[:, :1] - scores[:, 1:]), flat_relevance, scores)
