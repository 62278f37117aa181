"""Helpers of the metrics that follow Quantus 0.6.0: its attribution options, bands of ranked
locations, rank correlation, and the settings mixin they share."""
from typing import Optional

import torch
from torch import Tensor

from lrp_lightning._arguments import boolean
from lrp_lightning.metrics._checks import Baseline, location_relevance
from lrp_lightning.metrics._docs import fill_doc
from lrp_lightning.metrics._model import Model
from lrp_lightning.metrics._model_metric import ModelPerturbationMixin
from lrp_lightning.metrics._perturbation import MaskFn
from lrp_lightning.metrics.faithfulness_correlation import pearson_rows


def quantus_attributions(attributions: Tensor, abs: bool, normalise: bool) -> Tensor:
    """Attributions after Quantus' ``abs`` and ``normalise`` options.

    ``abs`` takes ``|a|`` element-wise; ``normalise`` divides by the largest ``|a|`` of the whole
    batch, ``a / max |a|`` (Quantus 0.6.0's ``normalise_by_max`` on the batch it is given, so the
    result equals Quantus' when an ``update`` gets the batch Quantus gets).
    """
    values = attributions.double()
    if normalise:
        values = values / values.abs().amax()
    if abs:
        values = values.abs()
    return values


def band_masks(ranks: Tensor, starts: Tensor, stops: Tensor) -> MaskFn:
    """Mask function: at variant ``v`` the locations with ``starts[v] <= rank < stops[v]``."""
    extra_dims = (1,) * (ranks.ndim - 1)

    def masks(samples: Tensor, variants: Tensor) -> Tensor:
        sample_ranks = ranks[samples]
        return (sample_ranks >= starts[variants].view(-1, *extra_dims)) & (
            sample_ranks < stops[variants].view(-1, *extra_dims)
        )

    return masks


def band_sums(values: Tensor, ranks: Tensor, band_size: int, num_bands: int) -> Tensor:
    """Sum of ``values`` (N, ...) over each band of ``band_size`` consecutive ranks, (N, num_bands).

    Locations whose band is ``num_bands`` or beyond are left out.
    """
    flat_values = values.reshape(values.shape[0], -1).double()
    bands = (ranks.reshape(ranks.shape[0], -1) // band_size).clamp(max=num_bands)
    sums = flat_values.new_zeros(values.shape[0], num_bands + 1)
    return sums.scatter_add_(1, bands, flat_values)[:, :num_bands]


def average_ranks(rows: Tensor) -> Tensor:
    """Rank of each value in its row, from 1, ties given the mean of their ranks (as SciPy's ``rankdata``)."""
    ordered = rows.sort(dim=1).values
    below = torch.searchsorted(ordered, rows.contiguous(), right=False)
    up_to = torch.searchsorted(ordered, rows.contiguous(), right=True)
    return (below + up_to + 1).double() / 2


def spearman_rows(first: Tensor, second: Tensor) -> Tensor:
    """Spearman correlation of each row of ``first`` with the same row of ``second`` (NaN if constant)."""
    return pearson_rows(average_ranks(first), average_ranks(second))


@fill_doc
class QuantusRelevanceMixin(ModelPerturbationMixin):
    """``ModelPerturbationMixin`` with Quantus' ``abs`` and ``normalise`` options on the attributions.

    Its ``update`` validates the arguments and hands the relevance per location to the subclass'
    ``_evaluate(model, inputs, relevance, target, attention_mask)``; metrics with other arguments
    define their own ``update``.
    """

    def _configure_quantus(
        self, abs: bool, normalise: bool, baseline: Baseline, softmax: bool, max_batch_size: Optional[int], seed: int = 0
    ) -> None:
        self._configure(baseline, softmax, max_batch_size, seed)
        self.abs = boolean("abs", abs)
        self.normalise = boolean("normalise", normalise)

    def update(
        self, model: Model, inputs: Tensor, attributions: Tensor, target: Tensor, attention_mask: Optional[Tensor] = None
    ) -> None:
        """Perturb the inputs as the metric's class docstring describes and accumulate its value per sample.

        Parameters
        ----------
        {perturbed_update}
        """
        inputs, relevance, target, attention_mask = self._prepare_relevance(inputs, attributions, target, attention_mask)
        self._evaluate(model, inputs, relevance, target, attention_mask)

    def _evaluate(
        self, model: Model, inputs: Tensor, relevance: Tensor, target: Tensor, attention_mask: Optional[Tensor]
    ) -> None:
        raise NotImplementedError

    def _prepare_relevance(
        self, inputs: Tensor, attributions: Tensor, target: Tensor, attention_mask: Optional[Tensor] = None
    ) -> tuple[Tensor, Tensor, Tensor, Optional[Tensor]]:
        """As ``_prepare``, the relevance per location taken after ``abs`` / ``normalise``."""
        inputs, _, target, attention_mask = self._prepare(inputs, attributions, target, attention_mask)
        attributions = quantus_attributions(attributions.to(inputs.device), self.abs, self.normalise)
        return inputs, location_relevance(inputs, attributions), target, attention_mask

