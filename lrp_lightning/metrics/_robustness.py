"""Shared engine of the robustness metrics: explain noisy copies of each input, compare with the clean explanation.

For every update, step ``j = 0 .. nr_samples - 1`` draws one noise tensor of the inputs' shape
(N, ...) from the metric's generator (seeded with ``seed`` at first use and after ``reset()``, on
the inputs' device), in step order; the perturbed inputs ``x_j = x + noise_j`` of all steps are
explained in chunks (all perturbations of a chunk of samples in one explainer call). Each metric
turns the clean and perturbed explanation (after ``abs`` and ``normalise``, as in Quantus) into one
value per (step, sample) and reduces the steps by a mean or a maximum.
"""
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Optional

import torch
from torch import Tensor

from lrp_lightning._arguments import boolean, integer, real_number
from lrp_lightning.metrics._base import SampleMeanMetric, SeededGenerators
from lrp_lightning.metrics._checks import check_inputs, check_positive_int, check_target, optional_batch_size
from lrp_lightning.metrics._explainer import BatchExplainer, ExplainerArg, check_explainer, explain_in_chunks
from lrp_lightning.metrics._model import Model, check_classes
from lrp_lightning.transformer.tokens import is_token_ids

REDUCTIONS = ("mean", "max")


def uniform_noise(shape: tuple, lower_bound: float, upper_bound: Optional[float], generator: torch.Generator,
                  dtype: torch.dtype) -> Tensor:
    """Noise uniform in ``[-lower_bound, lower_bound]`` (``upper_bound=None``) or ``[lower_bound, upper_bound]``:
    ``low + (high - low) * torch.rand(shape, generator=generator)``."""
    low, high = (-lower_bound, lower_bound) if upper_bound is None else (lower_bound, upper_bound)
    draw = torch.rand(shape, generator=generator, device=generator.device, dtype=dtype)
    return low + (high - low) * draw


def gaussian_noise(shape: tuple, mean: float, std: float, generator: torch.Generator, dtype: torch.dtype) -> Tensor:
    """Noise ``mean + std * torch.randn(shape, generator=generator)``."""
    return mean + std * torch.randn(shape, generator=generator, device=generator.device, dtype=dtype)


def rows(values: Tensor) -> Tensor:
    """``values`` (B, ...) as float64 rows (B, F)."""
    return values.reshape(values.shape[0], -1).double()


def norm_rows(values: Tensor) -> Tensor:
    """Euclidean (Frobenius) norm of each row (B, F)."""
    return torch.linalg.vector_norm(values, dim=1)


def nonzero(values: Tensor, eps: float) -> Tensor:
    """``values`` with exact zeros replaced by ``eps`` (a safe divisor)."""
    return values.masked_fill(values == 0, eps)


class LazyRows(Mapping):
    """A read-only mapping whose values are made by the given functions on first access, once.

    The robustness metrics hand the clean and perturbed rows of a chunk to ``_values`` this way, so
    that rows a metric does not read (the inputs for AvgSensitivity, a re-run representation) cost nothing.
    """

    def __init__(self, makers: dict[str, Callable[[], Tensor]]) -> None:
        self._makers = makers
        self._made: dict[str, Tensor] = {}

    def __getitem__(self, key: str) -> Tensor:
        if key not in self._made:
            self._made[key] = self._makers[key]()
        return self._made[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._makers)

    def __len__(self) -> int:
        return len(self._makers)


class RobustnessMetric(SampleMeanMetric):
    """Mean over samples of a per-sample reduction over noisy re-explanations (see the module docstring).

    Subclasses set ``reduction`` and implement ``_noise(shape, generator, dtype)`` and
    ``_values(clean, perturbed)``, where ``clean`` and ``perturbed`` are mappings (made on first read) with the float64 rows
    ``"inputs"``, ``"attributions"`` and ``"outputs"`` (class scores) of the pairs of a chunk.
    """

    higher_is_better = False
    reduction = "mean"

    def __init__(
        self,
        explainer: ExplainerArg,
        nr_samples: int,
        abs: bool,
        normalise: bool,
        return_nan_when_prediction_changes: bool,
        seed: int,
        max_batch_size: Optional[int],
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.explainer = check_explainer(explainer)
        self.nr_samples = check_positive_int("nr_samples", nr_samples)
        self.abs = boolean("abs", abs)
        self.normalise = boolean("normalise", normalise)
        self.return_nan_when_prediction_changes = boolean(
            "return_nan_when_prediction_changes", return_nan_when_prediction_changes
        )
        self.max_batch_size = optional_batch_size(max_batch_size)
        self._generators = SeededGenerators(integer("seed", seed))

    def _noise(self, shape: tuple, generator: torch.Generator, dtype: torch.dtype) -> Tensor:
        raise NotImplementedError

    def _values(self, clean: dict, perturbed: dict) -> Tensor:
        raise NotImplementedError

    def _representation(self, model: Model, batch: Tensor, outputs: Tensor) -> Tensor:
        """What ``"outputs"`` holds for a batch: the class scores (subclasses may take other representations)."""
        return outputs

    def _normalised(self, values: Tensor) -> Tensor:
        """Rows (B, F) divided by their largest magnitude (Quantus' ``normalise_by_max``)."""
        return values / values.abs().amax(dim=1, keepdim=True)

    def _prepared(self, attributions: Tensor) -> Tensor:
        values = rows(attributions)
        if self.abs:
            values = values.abs()
        if self.normalise:
            values = self._normalised(values)
        return values

    def update(self, model: Model, inputs: Tensor, target: Tensor) -> None:
        """Explain ``inputs`` and ``nr_samples`` noisy copies of them; accumulate one value per sample.

        Parameters
        ----------
        model : callable
            Maps a batch of inputs to class scores (B, classes); an ``nn.Module`` runs in eval mode
            and gets its flags back afterwards (parameters, buffers and hooks are left as they were).
        inputs : Tensor
            Floating inputs (N, C, H, W) or (N, D).
        target : Tensor
            Class indices (N,), explained for the clean and every perturbed copy.
        """
        inputs = check_inputs(inputs)
        if is_token_ids(inputs):
            raise ValueError(f"{type(self).__name__} adds noise to the inputs; token ids (N, T) cannot take it")
        self._follow_device(inputs)
        target = check_target(target, inputs.shape[0], inputs.device)
        explain = BatchExplainer(self.explainer, model, inputs)
        num_samples = inputs.shape[0]
        clean_outputs, clean_attributions = explain(inputs, target)
        check_classes(clean_outputs, target)
        clean = {
            "inputs": rows(inputs),
            "attributions": self._prepared(clean_attributions),
            "outputs": rows(self._representation(model, inputs, clean_outputs)),
        }
        generator = self._generators.get(inputs.device)
        values = torch.empty(self.nr_samples, num_samples, dtype=torch.float64, device=inputs.device)
        flips = torch.zeros(self.nr_samples, num_samples, dtype=torch.bool, device=inputs.device)
        predictions = clean_outputs.argmax(dim=1)

        def perturbed_inputs(step: int) -> Tensor:
            return inputs + self._noise(tuple(inputs.shape), generator, inputs.dtype)

        def consume(variants: Tensor, samples: Tensor, batch: Tensor, outputs: Tensor, attributions: Tensor) -> None:
            perturbed = LazyRows({
                "inputs": lambda: rows(batch),
                "attributions": lambda: self._prepared(attributions),
                "outputs": lambda: rows(self._representation(model, batch, outputs)),
            })
            paired = LazyRows({key: (lambda value=value: value[samples]) for key, value in clean.items()})
            values[variants, samples] = self._values(paired, perturbed)
            flips[variants, samples] = outputs.argmax(dim=1) != predictions[samples]

        explain_in_chunks(explain, inputs, target, self.nr_samples, perturbed_inputs, self.max_batch_size, consume)
        per_sample = values.mean(dim=0) if self.reduction == "mean" else values.amax(dim=0)
        if self.return_nan_when_prediction_changes:
            per_sample = per_sample.masked_fill(flips.any(dim=0), float("nan"))
        self._accumulate(per_sample, inputs, clean_attributions, clean_outputs)

    def reset(self) -> None:
        """Clear the accumulated state and re-seed the metric's noise generator."""
        super().reset()
        self._generators.reset()


def check_bounds(lower_bound: Any, upper_bound: Any) -> tuple[float, Optional[float]]:
    """Validated uniform-noise bounds: ``lower_bound >= 0``; ``upper_bound`` None or above ``lower_bound``."""
    lower = real_number("lower_bound", lower_bound, minimum=0.0)
    if upper_bound is None:
        return lower, None
    upper = real_number("upper_bound", upper_bound)
    if upper <= lower:
        raise ValueError(f"upper_bound must exceed lower_bound, got [{lower}, {upper}]")
    return lower, upper
