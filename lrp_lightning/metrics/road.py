"""ROAD (Rong et al. 2022, RemOve And Debias): accuracy while the most relevant pixels are replaced by noisy linear imputation."""
from typing import Any, Optional, Sequence

import torch
from torch import Tensor

from lrp_lightning._arguments import boolean, integer, real_number
from lrp_lightning.metrics._base import CurveMeanMetric, SeededGenerators
from lrp_lightning.metrics._checks import check_images, optional_batch_size
from lrp_lightning.metrics._docs import fill_doc
from lrp_lightning.metrics._imputation import linear_imputation
from lrp_lightning.metrics._model import Model, check_classes, evaluation_mode
from lrp_lightning.metrics._perturbation import chunk_bounds, region_ranks
from lrp_lightning.metrics._quantus_steps import QuantusRelevanceMixin

# Quantus 0.6.0's default: 1, 3, ..., 99 percent
DEFAULT_PERCENTAGES = tuple(range(1, 100, 2))


def check_percentages(percentages: Any) -> tuple[float, ...]:
    """``percentages`` as a non-empty tuple of numbers in [0, 100) (at least one pixel must stay to impute from)."""
    if isinstance(percentages, (str, bytes)) or not isinstance(percentages, Sequence) or len(percentages) == 0:
        raise ValueError(f"percentages must be a non-empty list of numbers in [0, 100), got {percentages!r}")
    values = tuple(real_number("percentages", value, minimum=0.0) for value in percentages)
    if max(values) >= 100:
        raise ValueError(f"percentages must be below 100 (imputation needs a kept pixel), got {max(values)}")
    return values


@fill_doc
class ROAD(QuantusRelevanceMixin, CurveMeanMetric):
    """Accuracy after removing the most relevant pixels with noisy linear imputation (Rong et al. 2022).

    Quantus 0.6.0's ``ROAD``. Pixels (all channels) are ranked by relevance (channels summed, after
    ``abs`` and ``normalise``), most relevant first; for each percentage p the first
    ``int(p * H * W / 100)`` of them are removed and imputed as the weighted mean of their
    neighbours (:mod:`lrp_lightning.metrics._imputation`), plus Gaussian noise of standard deviation
    ``noise`` on every imputed value. ``curve[k]`` is the share of samples whose predicted class on
    the imputed image equals ``target`` at ``percentages[k]`` (Quantus' result, a dict percentage ->
    accuracy, as a tensor); ``auc`` is the area under it over the removed fraction p / 100
    (trapezoidal rule). A faster fall, a lower area, is better.

    The noise of pair (sample i, percentage k), enumerated sample-major, is
    ``torch.randn(inputs.shape[1:], generator=g, dtype=inputs.dtype)`` drawn in pair order from the
    metric's generator (seeded with ``seed`` at first use and after ``reset()``, on the inputs'
    device) and used at the removed pixels. Images only: vectors and token ids raise ``ValueError``.
    A sample whose inputs, attributions or class scores on any imputed image are not finite counts
    as NaN.

    Parameters
    ----------
    percentages : sequence of float, optional
        Percentages of pixels removed, each in [0, 100); default 1, 3, ..., 99.
    noise : float
        Standard deviation of the noise added to the imputed values (Quantus' default 0.01).
    abs, normalise : bool
        Quantus' attribution options (``|a|``; division by the batch's largest ``|a|``).
    seed : int
        Seed of the noise generator.
    max_batch_size : int or None
        Largest number of images imputed and sent through the model at once; ``None`` sizes the
        chunks to the device.
    **kwargs
        Passed to ``torchmetrics.Metric``.
    """

    higher_is_better = False

    def __init__(
        self,
        percentages: Optional[Sequence[float]] = None,
        noise: float = 0.01,
        abs: bool = False,
        normalise: bool = True,
        seed: int = 0,
        max_batch_size: Optional[int] = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.percentages = check_percentages(DEFAULT_PERCENTAGES if percentages is None else percentages)
        self.noise = real_number("noise", noise, minimum=0.0)
        self.abs, self.normalise = boolean("abs", abs), boolean("normalise", normalise)
        self.max_batch_size = optional_batch_size(max_batch_size)
        self._generators = SeededGenerators(integer("seed", seed))

    def update(self, model: Model, inputs: Tensor, attributions: Tensor, target: Tensor) -> None:
        """Impute the most relevant pixels at every percentage and accumulate whether each prediction stays ``target``.

        Parameters
        ----------
        {image_update}
        """
        check_images(inputs, "ROAD imputes pixels from their image neighbours")
        if inputs.shape[2] * inputs.shape[3] < 2:
            raise ValueError(f"ROAD needs images of at least two pixels, got {tuple(inputs.shape)}")
        inputs, relevance, target, _ = self._prepare_relevance(inputs, attributions, target)
        generator = self._generators.get(inputs.device)
        ranks, num_pixels = region_ranks(relevance, 1, "morf", generator)
        counts = torch.tensor([int(p * num_pixels / 100) for p in self.percentages], device=inputs.device)
        num_variants = len(self.percentages)
        correct = torch.empty(inputs.shape[0] * num_variants, dtype=torch.float64, device=inputs.device)
        finite = torch.empty(correct.shape[0], dtype=torch.bool, device=inputs.device)
        with evaluation_mode(model):
            for start, stop in chunk_bounds(inputs, correct.shape[0], self.max_batch_size):
                pairs = torch.arange(start, stop, device=inputs.device)
                samples, variants = pairs // num_variants, pairs % num_variants
                removed = ranks[samples] < counts[variants].view(-1, 1, 1)
                noise = torch.stack([
                    torch.randn(inputs.shape[1:], generator=generator, device=generator.device, dtype=inputs.dtype)
                    for _ in range(stop - start)
                ]).to(inputs.device)
                imputed = linear_imputation(inputs[samples], removed).to(inputs.dtype) + self.noise * noise
                outputs = model(torch.where(removed[:, None], imputed, inputs[samples]))
                check_classes(outputs, target)
                correct[start:stop] = (outputs.argmax(dim=1) == target[samples]).double()
                finite[start:stop] = torch.isfinite(outputs).all(dim=1)
        curves = correct.view(inputs.shape[0], num_variants)
        scores = curves.masked_fill(~finite.view(curves.shape), float("nan"))
        self._accumulate(curves, inputs, relevance, scores)

    def compute(self) -> dict[str, Tensor]:
        """``{"auc": tensor(), "curve": tensor(len(percentages))}``, means over all samples seen."""
        curve = self._mean_curve()
        fractions = torch.tensor(self.percentages, dtype=curve.dtype, device=curve.device) / 100
        return {"auc": torch.trapezoid(curve, fractions), "curve": curve}
