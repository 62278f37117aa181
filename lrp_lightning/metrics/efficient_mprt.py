"""Efficient MPRT (Hedström et al. 2023): the relative rise in explanation complexity after full randomisation."""
from typing import Any, Optional

import torch
from torch import Tensor

from lrp_lightning._arguments import boolean, integer
from lrp_lightning.metrics._base import SampleMeanMetric
from lrp_lightning.metrics._checks import check_inputs, check_positive_int, check_target, optional_batch_size
from lrp_lightning.metrics._explainer import BatchExplainer, ExplainerArg, check_explainer
from lrp_lightning.metrics._model import Model
from lrp_lightning.metrics._randomisation import check_layer_order, explain_all, model_copy, prepared, randomised_states


def discrete_entropy_rows(values: Tensor, n_bins: int) -> Tensor:
    """Entropy (natural log) of the histogram of each row with ``n_bins`` equal bins over [min, max] of the row.

    Bins are half-open ``[e_i, e_{i+1})`` except the last, which holds the maximum (NumPy's
    ``histogram``); a constant row has entropy 0.
    """
    low, high = values.amin(dim=1, keepdim=True), values.amax(dim=1, keepdim=True)
    steps = torch.arange(n_bins + 1, dtype=values.dtype, device=values.device) / n_bins
    edges = low + (high - low) * steps
    index = (torch.searchsorted(edges.contiguous(), values.contiguous(), right=True) - 1).clamp(0, n_bins - 1)
    counts = torch.zeros(values.shape[0], n_bins, dtype=values.dtype, device=values.device)
    counts.scatter_add_(1, index, torch.ones_like(values))
    probabilities = counts / values.shape[1]
    return -torch.xlogy(probabilities, probabilities).sum(dim=1)


class EfficientMPRT(SampleMeanMetric):
    """Mean over samples of ``H(ê) / H(e) - 1``: the relative rise in explanation complexity (Hedström et al. 2023).

    Quantus' ``EfficientMPRT``; also exported as ``EfficientModelParameterRandomisation``. ``e`` is
    the explanation of the original model, ``ê`` that of a deep copy whose layers were all
    randomised (``layer_order``, seeds as :class:`~lrp_lightning.metrics.MPRT`; the user's model is
    never touched), both after ``abs``/``normalise``; ``H`` the discrete entropy of a histogram of
    ``n_bins`` equal bins over each explanation's range (Quantus' ``discrete_entropy``). A faithful
    explainer becomes noisier as the model is randomised: higher is better.

    Parameters
    ----------
    explainer : str, Composite or callable
        A registry name (LRP composite or attributor), a Composite (built for the copy as
        ``AttributionCallback`` builds them), or ``explain(model, inputs, target) -> attributions``.
    layer_order : {"bottom_up", "top_down", "independent"}
        Randomisation order (all layers are randomised in the end either way; with ``"independent"``
        only the last layer is).
    seed : int
        Re-initialisation seed (each layer: torch's RNG seeded with ``seed + 1``, as Quantus).
    n_bins : int
        Histogram bins of the entropy.
    abs : bool
        Use ``|a|``.
    normalise : bool
        Divide each explanation by its largest magnitude first.
    max_batch_size : int or None
        Most inputs explained in one call; ``None`` sizes the chunks to the inputs' device.
    **kwargs
        Passed to ``torchmetrics.Metric``.
    """

    higher_is_better = True

    def __init__(
        self,
        explainer: ExplainerArg = "gradient",
        layer_order: str = "bottom_up",
        seed: int = 42,
        n_bins: int = 100,
        abs: bool = False,
        normalise: bool = False,
        max_batch_size: Optional[int] = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.explainer = check_explainer(explainer)
        self.layer_order = check_layer_order(layer_order)
        self.seed = integer("seed", seed)
        self.n_bins = check_positive_int("n_bins", n_bins)
        self.abs = boolean("abs", abs)
        self.normalise = boolean("normalise", normalise)
        self.max_batch_size = optional_batch_size(max_batch_size)

    def update(self, model: Model, inputs: Tensor, target: Tensor) -> None:
        """Explain ``inputs`` with the original and the fully randomised copy; accumulate the complexity rise.

        Parameters
        ----------
        model : torch.nn.Module
            The model (copied; never modified).
        inputs : Tensor
            Floating inputs (N, C, H, W) or (N, D).
        target : Tensor
            Class indices (N,).
        """
        inputs = check_inputs(inputs)
        self._follow_device(inputs)
        target = check_target(target, inputs.shape[0], inputs.device)
        subject = model_copy(model)
        explain = BatchExplainer(self.explainer, subject, inputs)
        original = explain_all(explain, inputs, target, self.max_batch_size)
        for _ in randomised_states(subject, self.layer_order, self.seed, skip_layers=True):
            pass
        randomised = explain_all(explain, inputs, target, self.max_batch_size)
        entropy = [
            discrete_entropy_rows(prepared(values, self.abs, self.normalise).flatten(1), self.n_bins)
            for values in (original, randomised)
        ]
        self._accumulate(entropy[1] / entropy[0] - 1.0, inputs, original, randomised)


EfficientModelParameterRandomisation = EfficientMPRT
