"""Sufficiency (Dasgupta et al. 2022): samples explained alike are predicted alike."""
from typing import Any, Optional

import torch
from torch import Tensor

from lrp_lightning._arguments import boolean, real_number
from lrp_lightning.metrics._base import SampleMeanMetric
from lrp_lightning.metrics._checks import (
    check_attention_mask,
    check_inputs,
    location_relevance,
    optional_batch_size,
)
from lrp_lightning.metrics._docs import fill_doc
from lrp_lightning.metrics._model import Model, evaluation_mode
from lrp_lightning.metrics._perturbation import chunk_bounds
from lrp_lightning.metrics._quantus_steps import quantus_attributions
from lrp_lightning.transformer.tokens import class_scores

DISTANCES = ("seuclidean",)


@fill_doc
class Sufficiency(SampleMeanMetric):
    """Mean over samples of how often the samples explained alike share its predicted class (Dasgupta et al. 2022).

    Within each update's batch, the attributions (every value, after Quantus' ``abs`` /
    ``normalise``) are compared pairwise with ``distance_func``; distances are divided by the
    batch's largest. Sample i's neighbours are the other samples j with
    :math:`d_{ij} / \\max d \\le` ``threshold``, and its value is the fraction of them with i's
    predicted class (0 without neighbours) — as Quantus 0.6.0's ``Sufficiency``. The value depends
    on the batch: an update scores its batch as one Quantus call of that batch does.

    ``"seuclidean"`` weights each value by 1 / its variance over the batch (SciPy's standardised
    Euclidean distance; values constant over the batch are left out, where SciPy divides by zero).
    It is the one distance Quantus 0.6.0's ``Sufficiency`` runs with (``"euclidean"`` raises there).

    Parameters
    ----------
    threshold : float
        Largest normalised distance of a neighbour.
    distance_func : str
        ``"seuclidean"``.
    {relevance_options}
    max_batch_size : int or None
        Largest number of inputs sent through the model at once; ``None`` sizes the chunks to the device.
    **kwargs
        Passed to ``torchmetrics.Metric``.
    """

    higher_is_better = True

    def __init__(
        self,
        threshold: float = 0.6,
        distance_func: str = "seuclidean",
        abs: bool = True,
        normalise: bool = True,
        max_batch_size: Optional[int] = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.threshold = real_number("threshold", threshold, minimum=0.0)
        if distance_func not in DISTANCES:
            raise ValueError(f"unknown distance_func {distance_func!r}; expected one of {DISTANCES}")
        self.distance_func = distance_func
        self.abs = boolean("abs", abs)
        self.normalise = boolean("normalise", normalise)
        self.max_batch_size = optional_batch_size(max_batch_size)

    def update(
        self, model: Model, inputs: Tensor, attributions: Tensor, attention_mask: Optional[Tensor] = None
    ) -> None:
        """Score each sample of the batch by its attribution neighbours' predicted classes.

        Parameters
        ----------
        model : callable
            Maps a batch of inputs to class scores (B, classes); an ``nn.Module`` runs in eval mode
            under ``torch.no_grad()`` and gets its training flags back.
        inputs : Tensor
            Images (N, C, H, W), vectors (N, D) or integer token ids (N, T).
        attributions : Tensor
            The inputs' shape, or for images (N, 1, H, W) / (N, H, W).
        attention_mask : Tensor, optional
            For token ids: the mask (N, T) given to the model.
        """
        inputs = check_inputs(inputs)
        self._follow_device(inputs)
        location_relevance(inputs, attributions)
        attention_mask = check_attention_mask(attention_mask, inputs)
        values = quantus_attributions(attributions.to(inputs.device), self.abs, self.normalise)
        values = values.reshape(values.shape[0], -1)
        predicted = self._predictions(model, inputs, attention_mask)
        variance = values.var(dim=0) if values.shape[0] > 1 else torch.zeros_like(values[0])
        standardised = torch.where(variance > 0, values / variance.sqrt(), torch.zeros_like(values))
        distances = torch.cdist(standardised, standardised)
        distances = distances / distances.max()
        neighbours = (distances <= self.threshold) & ~torch.eye(values.shape[0], dtype=torch.bool, device=values.device)
        same_class = predicted[:, None] == predicted[None, :]
        count = neighbours.sum(dim=1)
        agreeing = (neighbours & same_class).sum(dim=1)
        fraction = torch.where(count > 0, agreeing.double() / count.clamp(min=1), torch.zeros_like(count, dtype=torch.float64))
        self._accumulate(fraction, values)

    def _predictions(self, model: Model, inputs: Tensor, attention_mask: Optional[Tensor]) -> Tensor:
        predicted = torch.empty(inputs.shape[0], dtype=torch.long, device=inputs.device)
        with evaluation_mode(model):
            for start, stop in chunk_bounds(inputs, inputs.shape[0], self.max_batch_size):
                rows = inputs[start:stop]
                if attention_mask is None:
                    outputs = class_scores(model(rows), rows)
                else:
                    outputs = class_scores(model(rows, attention_mask=attention_mask[start:stop]), rows, attention_mask[start:stop])
                predicted[start:stop] = outputs.argmax(dim=1)
        return predicted
