"""Continuity (Montavon et al. 2018): the strongest change of the explanation while the image is translated."""
import math
from typing import Any, Optional

import torch
from torch import Tensor

from lrp_lightning._arguments import boolean
from lrp_lightning.metrics._base import SampleMeanMetric
from lrp_lightning.metrics._checks import Baseline, check_baseline, check_positive_int, check_target, optional_batch_size
from lrp_lightning.metrics._explainer import BatchExplainer, ExplainerArg, check_explainer, explain_in_chunks
from lrp_lightning.metrics._model import Model, check_classes
from lrp_lightning.metrics._perturbation import resolve_fill
from lrp_lightning.metrics._quantus_steps import quantus_attributions


def translation_shifts(width: int, nr_steps: int) -> list[float]:
    """Quantus 0.6.0's shifts along the width: ``dx_k = width * (2 (k + 1) - nr_steps) / nr_steps``, k = 0..nr_steps-1."""
    return [width * (2 * (step + 1) - nr_steps) / nr_steps for step in range(nr_steps)]


def translate(images: Tensor, fill: Tensor, shift: float) -> Tensor:
    """``images`` (N, C, H, W) moved ``shift`` pixels along the width (right for positive shifts).

    ``out[..., j] = in[..., j - shift]``, linearly interpolated for a fractional shift, where
    positions outside the image read ``fill`` (broadcast to the images' shape).
    """
    width = images.shape[-1]
    whole = math.floor(shift)
    fraction = shift - whole
    columns = torch.arange(width, device=images.device)

    def moved(offset: int) -> Tensor:
        source = columns - offset
        inside = (source >= 0) & (source < width)
        picked = images.index_select(-1, source.clamp(0, width - 1))
        return torch.where(inside, picked, fill)

    result = moved(whole)
    if fraction == 0:
        return result
    return (1 - fraction) * result + fraction * moved(whole + 1)


class Continuity(SampleMeanMetric):
    """Mean over samples of max_k ||Φ(x) - Φ(x_k)||₁ / ||x - x_k||₂ over translated copies x_k, Quantus' Continuity.

    Quantus 0.6.0's ``Continuity`` (Montavon et al. 2018): each image is translated along its width
    by ``dx_k = W (2 (k + 1) - nr_steps) / nr_steps`` pixels, k = 0..nr_steps-1 (from left by
    almost the whole width to right by the whole width), the uncovered pixels taking
    ``perturb_baseline``; the clean and every translated image are explained and Φ is taken after
    ``abs`` and ``normalise`` (the latter dividing the explanations of one translation step by their
    largest magnitude over the whole ``update``, as Quantus does over a batch). A step whose
    translated image equals the image (dx = 0) is skipped. Lower is better.

    Quantus translates with OpenCV, which rounds the interpolation weights of a fractional shift
    to 1/32; ours are exact, so the two agree where ``2 W / nr_steps`` is an integer (as for its
    defaults, 28 steps of 28x28 images). Images only (vectors and token ids raise ``ValueError``);
    Quantus' translation supports square single-channel images. The normalisation couples the
    samples of one ``update`` (across updates and DDP ranks the per-sample values are averaged). A
    sample whose inputs, explanations or class scores are not finite counts as NaN.

    Parameters
    ----------
    explainer : str, Composite or callable
        What explains the clean and the translated images: a registry name (LRP composite or
        attributor), a Composite (built for the model as ``AttributionCallback`` builds them), or
        ``explain(model, inputs, target) -> attributions``.
    nr_steps : int
        Number of translations.
    abs : bool
        Compare ``|Φ|``.
    normalise : bool
        Divide each step's explanations by their largest magnitude first.
    perturb_baseline : float, str or callable
        What the uncovered pixels show: ``"black"`` (each sample's minimum), ``"white"``,
        ``"mean"``, ``"blur"``, a number or a callable ``(x) -> fill``.
    return_nan_when_prediction_changes : bool
        A sample whose predicted class changes under any translation counts as NaN.
    max_batch_size : int or None
        Most images explained in one call; ``None`` sizes the chunks to the inputs' device.
    **kwargs
        Passed to ``torchmetrics.Metric``.
    """

    higher_is_better = False

    def __init__(
        self,
        explainer: ExplainerArg = "gradient",
        nr_steps: int = 28,
        abs: bool = True,
        normalise: bool = True,
        perturb_baseline: Baseline = "black",
        return_nan_when_prediction_changes: bool = False,
        max_batch_size: Optional[int] = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.explainer = check_explainer(explainer)
        self.nr_steps = check_positive_int("nr_steps", nr_steps)
        self.abs = boolean("abs", abs)
        self.normalise = boolean("normalise", normalise)
        self.perturb_baseline = check_baseline(perturb_baseline)
        self.return_nan_when_prediction_changes = boolean(
            "return_nan_when_prediction_changes", return_nan_when_prediction_changes
        )
        self.max_batch_size = optional_batch_size(max_batch_size)

    def update(self, model: Model, inputs: Tensor, target: Tensor) -> None:
        """Explain ``inputs`` and ``nr_steps`` translated copies of them; accumulate one value per sample.

        Parameters
        ----------
        model : callable
            Maps a batch of images to class scores (B, classes); an ``nn.Module`` runs in eval mode
            and gets its flags back afterwards (parameters, buffers and hooks are left as they were).
        inputs : Tensor
            Floating images (N, C, H, W).
        target : Tensor
            Class indices (N,), explained for the clean and every translated copy.
        """
        if not isinstance(inputs, Tensor) or inputs.ndim != 4 or not inputs.is_floating_point() or inputs.shape[0] == 0:
            shape = tuple(inputs.shape) if isinstance(inputs, Tensor) else type(inputs).__name__
            raise ValueError(f"Continuity translates images and needs floating images (N, C, H, W), got {shape}")
        self._follow_device(inputs)
        target = check_target(target, inputs.shape[0], inputs.device)
        explain = BatchExplainer(self.explainer, model, inputs)
        num_samples = inputs.shape[0]
        clean_outputs, clean_attributions = explain(inputs, target)
        check_classes(clean_outputs, target)
        fill = resolve_fill(self.perturb_baseline, inputs)
        shifts = translation_shifts(inputs.shape[-1], self.nr_steps)
        stored = inputs.new_empty((self.nr_steps, num_samples, inputs[0].numel()))
        flips = torch.zeros(self.nr_steps, num_samples, dtype=torch.bool, device=inputs.device)
        finite = torch.ones(self.nr_steps, num_samples, dtype=torch.bool, device=inputs.device)
        predictions = clean_outputs.argmax(dim=1)

        def consume(variants: Tensor, samples: Tensor, batch: Tensor, outputs: Tensor, attributions: Tensor) -> None:
            stored[variants, samples] = attributions.reshape(attributions.shape[0], -1).to(stored.dtype)
            flips[variants, samples] = outputs.argmax(dim=1) != predictions[samples]
            finite[variants, samples] = torch.isfinite(outputs).all(dim=1)

        explain_in_chunks(explain, inputs, target, self.nr_steps, lambda step: translate(inputs, fill, shifts[step]),
                          self.max_batch_size, consume)
        clean = self._prepared(clean_attributions.reshape(num_samples, -1))
        flat_inputs = inputs.reshape(num_samples, -1).double()
        values = torch.full((self.nr_steps, num_samples), -math.inf, dtype=torch.float64, device=inputs.device)
        for step, shift in enumerate(shifts):
            moved = translate(inputs, fill, shift).reshape(num_samples, -1).double()
            distance = torch.linalg.vector_norm(moved - flat_inputs, dim=1)
            change = (self._prepared(stored[step]) - clean).abs().sum(dim=1)
            values[step] = torch.where(distance > 0, change / distance, values[step])
        per_sample = values.amax(dim=0).masked_fill(torch.isneginf(values).all(dim=0), math.nan)
        if self.return_nan_when_prediction_changes:
            per_sample = per_sample.masked_fill(flips.any(dim=0), math.nan)
        scores = clean_outputs.double().masked_fill(~finite.all(dim=0)[:, None], math.nan)
        self._accumulate(per_sample, inputs, clean_attributions, scores, stored.transpose(0, 1))

    def _prepared(self, rows: Tensor) -> Tensor:
        """Explanation rows (N, F) after ``abs`` and ``normalise``; non-finite rows are zeroed first, so
        that they stay out of the largest magnitude (their samples count as NaN anyway)."""
        finite = torch.isfinite(rows).all(dim=1, keepdim=True)
        return quantus_attributions(torch.where(finite, rows, torch.zeros_like(rows)), self.abs, self.normalise)
