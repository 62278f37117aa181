"""Completeness (Sundararajan et al. 2017): the attributions sum to the score change from the baseline."""
from typing import Any, Optional

import torch
from torch import Tensor

from lrp_lightning._arguments import real_number
from lrp_lightning.metrics._base import SampleMeanMetric
from lrp_lightning.metrics._checks import Baseline
from lrp_lightning.metrics._docs import fill_doc
from lrp_lightning.metrics._model import Model
from lrp_lightning.metrics._perturbation import perturbed_scores, resolve_fill
from lrp_lightning.metrics._quantus_steps import QuantusRelevanceMixin, quantus_attributions


@fill_doc
class Completeness(QuantusRelevanceMixin, SampleMeanMetric):
    """Fraction of samples whose attributions sum to the target-score change from the baseline.

    With b the ``baseline`` input (every value replaced) and f the target score, a sample is
    complete when

    .. math:: \\Big|\\sum_i a_i - (f(x) - f(b))\\Big| \\le \\mathrm{atol} + \\mathrm{rtol}\\,|f(x) - f(b)|

    (Sundararajan et al. 2017's completeness axiom). Quantus 0.6.0's ``Completeness`` tests exact
    float equality, which depends on summation order; ``rtol=0, atol=0`` gives that test, the
    defaults are NumPy's ``isclose`` tolerances. The sum runs over every attribution value after
    Quantus' ``abs`` / ``normalise`` options (``normalise=True`` is Quantus' default, though
    completeness speaks of raw attributions; pass ``normalise=False`` for the axiom itself).

    Parameters
    ----------
    {relevance_options}
    {quantus_baseline}
    softmax : bool
        Score the target softmax probability instead of the logit.
    rtol, atol : float
        Relative and absolute tolerance of the comparison.
    {images_per_call}
    """

    higher_is_better = True

    def __init__(
        self,
        abs: bool = False,
        normalise: bool = True,
        baseline: Baseline = "black",
        softmax: bool = False,
        rtol: float = 1e-5,
        atol: float = 1e-8,
        max_batch_size: Optional[int] = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.rtol = real_number("rtol", rtol, minimum=0.0)
        self.atol = real_number("atol", atol, minimum=0.0)
        self._configure_quantus(abs, normalise, baseline, softmax, max_batch_size)

    def update(
        self, model: Model, inputs: Tensor, attributions: Tensor, target: Tensor, attention_mask: Optional[Tensor] = None
    ) -> None:
        """Compare each sample's attribution sum with f(x) - f(baseline) and accumulate the outcome.

        Parameters
        ----------
        model : callable
            Maps a batch of inputs to class scores (B, classes); an ``nn.Module`` runs in eval mode
            under ``torch.no_grad()`` and gets its training flags back.
        inputs : Tensor
            Images (N, C, H, W), vectors (N, D) or integer token ids (N, T).
        attributions : Tensor
            The inputs' shape, or for images (N, 1, H, W) / (N, H, W).
        target : Tensor
            Class indices (N,).
        attention_mask : Tensor, optional
            For token ids: the mask (N, T) given to the model with the input and the baseline.
        """
        inputs, relevance, target, attention_mask = self._prepare_relevance(inputs, attributions, target, attention_mask)
        total = quantus_attributions(attributions.to(inputs.device), self.abs, self.normalise)
        total = total.reshape(total.shape[0], -1).sum(dim=1)
        replaced = torch.tensor([False, True], device=inputs.device)
        extra_dims = (1,) * (relevance.ndim - 1)

        def masks(samples: Tensor, variants: Tensor) -> Tensor:
            return replaced[variants].view(-1, *extra_dims).expand((samples.shape[0],) + tuple(relevance.shape[1:]))

        scores = perturbed_scores(
            model, inputs, resolve_fill(self.baseline, inputs), target, masks, 2, self.softmax,
            self.max_batch_size, attention_mask=attention_mask,
        )
        change = scores[:, 0] - scores[:, 1]
        complete = (total - change).abs() <= self.atol + self.rtol * change.abs()
        self._accumulate(complete.double(), relevance, scores)
