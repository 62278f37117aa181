"""Monotonicity correlation (Nguyen & Martínez 2020): relevance vs the score variance its removal causes."""
from typing import Any, Optional

import torch
from torch import Tensor

from lrp_lightning._arguments import integer, real_number
from lrp_lightning.metrics._base import SampleMeanMetric
from lrp_lightning.metrics._checks import Baseline, check_positive_int
from lrp_lightning.metrics._docs import fill_doc
from lrp_lightning.metrics._model import Model
from lrp_lightning.metrics._perturbation import perturbed_scores, region_ranks, resolve_fill
from lrp_lightning.metrics._quantus_steps import QuantusRelevanceMixin, band_masks, band_sums, spearman_rows

UNIFORM = "uniform"


@fill_doc
class MonotonicityCorrelation(QuantusRelevanceMixin, SampleMeanMetric):
    """Mean over samples of the Spearman rank correlation between step relevance and score variance.

    Locations (pixels with all channels, or vector entries) are ranked by relevance, lowest first,
    and cut into K = L / ``features_in_step`` steps. Each step alone is replaced ``nr_samples``
    times by ``baseline``; with f the target score and :math:`y = f(x)`,

    .. math:: v_k = \\frac{1}{R} \\sum_{r=1}^{R} \\big(f(x^{(k, r)}) - y\\big)^2 \\cdot
        \\begin{cases} 1 & |y| < \\epsilon \\\\ 1 / y^2 & \\text{else} \\end{cases}

    and the sample's value is Spearman's :math:`\\rho` of the step relevances
    :math:`\\sum_{i \\in S_k} a_i` with :math:`v_k`, as Quantus 0.6.0's ``MonotonicityCorrelation``
    (its default similarity). With ``baseline="uniform"`` (the default) each replacement fills a
    step with one value per channel drawn from U(``uniform_low``, ``uniform_high``): the metric's
    generator (seeded with ``seed`` at first use and after ``reset()``) draws, per update,
    ``torch.rand(N, K, nr_samples, C)`` on the inputs' device (C = 1 for vectors), in that order.

    Parameters
    ----------
    nr_samples : int
        Replacements per step.
    features_in_step : int
        Locations per step; must divide the number of locations.
    eps : float
        Below this ``|f(x)|`` the variance is not divided by ``f(x)^2``.
    {relevance_options}
    baseline : float, int, str or callable
        ``"uniform"`` (random, see above), or a fixed fill as Quantus' ``perturb_baseline``:
        ``"black"`` (each sample's minimum), ``"white"``, ``"mean"``, ``"blur"``, a number or a
        callable ``(x) -> fill``; a token id for token-id inputs.
    uniform_low, uniform_high : float
        Range of the uniform fill (Quantus' defaults).
    {softmax_by_default}
    seed : int
        Seed of the uniform draws.
    {images_per_call}
    """

    higher_is_better = True

    def __init__(
        self,
        nr_samples: int = 100,
        features_in_step: int = 1,
        eps: float = 1e-5,
        abs: bool = True,
        normalise: bool = True,
        baseline: Baseline = UNIFORM,
        uniform_low: float = 0.0,
        uniform_high: float = 1.0,
        softmax: bool = True,
        seed: int = 0,
        max_batch_size: Optional[int] = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.nr_samples = check_positive_int("nr_samples", nr_samples)
        self.features_in_step = check_positive_int("features_in_step", features_in_step)
        self.eps = real_number("eps", eps, minimum=0.0)
        self.uniform_low = real_number("uniform_low", uniform_low)
        self.uniform_high = real_number("uniform_high", uniform_high)
        if self.uniform_high < self.uniform_low:
            raise ValueError(f"uniform_high={uniform_high} is below uniform_low={uniform_low}")
        # the fixed fills are checked by _configure; "uniform" is drawn by this metric alone
        self._configure_quantus(abs, normalise, 0.0 if baseline == UNIFORM else baseline, softmax, max_batch_size,
                                integer("seed", seed))
        self.baseline = baseline

    def update(
        self, model: Model, inputs: Tensor, attributions: Tensor, target: Tensor, attention_mask: Optional[Tensor] = None
    ) -> None:
        """Replace each step ``nr_samples`` times and accumulate each sample's rank correlation.

        Parameters
        ----------
        model : callable
            Maps a batch of inputs to class scores (B, classes); an ``nn.Module`` runs in eval mode
            under ``torch.no_grad()`` and gets its training flags back.
        inputs : Tensor
            Images (N, C, H, W), vectors (N, D) or integer token ids (N, T) (with a token-id baseline).
        attributions : Tensor
            The inputs' shape, or for images (N, 1, H, W) / (N, H, W); channels are summed.
        target : Tensor
            Class indices (N,).
        attention_mask : Tensor, optional
            For token ids: the mask (N, T) given to the model with every perturbed copy.
        """
        inputs, relevance, target, attention_mask = self._prepare_relevance(inputs, attributions, target, attention_mask)
        generator = self._generators.get(inputs.device)
        ranks, num_locations = region_ranks(relevance, 1, "lerf", generator)
        if num_locations % self.features_in_step:
            raise ValueError(
                f"features_in_step={self.features_in_step} does not divide the {num_locations} locations; "
                "choose a divisor"
            )
        steps, draws = num_locations // self.features_in_step, self.nr_samples
        step_of_variant = torch.arange(steps * draws, device=inputs.device) // draws
        starts = torch.cat([step_of_variant.new_zeros(1), step_of_variant * self.features_in_step])
        stops = torch.cat([step_of_variant.new_zeros(1), (step_of_variant + 1) * self.features_in_step])
        scores = perturbed_scores(
            model, inputs, self._fill(inputs, steps, generator), target, band_masks(ranks, starts, stops),
            steps * draws + 1, self.softmax, self.max_batch_size, attention_mask=attention_mask,
        )
        clean = scores[:, :1]
        scale = torch.where(clean.abs() < self.eps, torch.ones_like(clean), clean.square().reciprocal())
        variance = (scores[:, 1:] - clean).square().view(-1, steps, draws).mean(dim=2) * scale
        step_relevance = band_sums(relevance, ranks, self.features_in_step, steps)
        self._accumulate(spearman_rows(step_relevance, variance), relevance, scores)

    def _fill(self, inputs: Tensor, steps: int, generator: torch.Generator):
        if self.baseline != UNIFORM:
            return resolve_fill(self.baseline, inputs)
        if not inputs.is_floating_point():
            raise ValueError("baseline 'uniform' draws real values; token-id inputs need a token-id baseline")
        channels = inputs.shape[1] if inputs.ndim == 4 else 1
        draws = torch.rand(
            (inputs.shape[0], steps, self.nr_samples, channels), generator=generator, device=generator.device
        ).to(device=inputs.device, dtype=inputs.dtype)
        values = self.uniform_low + (self.uniform_high - self.uniform_low) * draws
        unperturbed = values.new_zeros(inputs.shape[0], 1, channels)
        per_variant = torch.cat([unperturbed, values.view(inputs.shape[0], -1, channels)], dim=1)
        spatial = (1,) * (inputs.ndim - 2)

        def fill(samples: Tensor, variants: Tensor) -> Tensor:
            rows = per_variant[samples, variants]
            return rows.view(rows.shape + spatial)

        return fill
