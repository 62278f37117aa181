"""Smooth MPRT (Hedström et al. 2023): MPRT on explanations denoised by averaging over noisy inputs."""
from typing import Any, Optional

import torch
from torch import Tensor

from lrp_lightning._arguments import integer, real_number
from lrp_lightning.metrics._base import SeededGenerators
from lrp_lightning.metrics._checks import check_positive_int
from lrp_lightning.metrics._explainer import BatchExplainer, ExplainerArg, explain_in_chunks
from lrp_lightning.metrics.mprt import MPRT


class SmoothMPRT(MPRT):
    """MPRT whose explanations are averages over ``nr_samples`` noisy copies of each input (Hedström et al. 2023).

    Quantus' ``SmoothMPRT``; also exported as ``SmoothModelParameterRandomisation``. The denoised
    explanation is ``ē(x) = 1/n Σ_k e(x + δ_k)``, ``δ_k ~ N(0, σ²)`` per entry with
    ``σ = noise_magnitude · (max x - min x)`` of each sample; the same draws serve the original and
    every randomised model (common random numbers: the curve moves only with the parameters). The
    draws come from the metric's generator: per update, ``torch.randn`` of the inputs' shape once per
    k in turn, on the inputs' device, seeded with ``noise_seed`` at first use and after ``reset()``.
    All noisy copies of a chunk of samples are explained in one call. Everything else as
    :class:`~lrp_lightning.metrics.MPRT`, with the paper's default ``layer_order="bottom_up"``.
    (Quantus 0.6.0's ``SmoothMPRT`` ignores a custom ``explain_func``; see ``docs/metrics_quantus_b.md``.)

    Parameters
    ----------
    explainer, similarity_func, layer_order, seed, skip_layers, abs, normalise, max_batch_size
        As for :class:`~lrp_lightning.metrics.MPRT`.
    nr_samples : int
        Noisy copies averaged per explanation.
    noise_magnitude : float
        Noise standard deviation relative to each sample's value range.
    noise_seed : int
        Seed of the noise generator.
    **kwargs
        Passed to ``torchmetrics.Metric``.
    """

    def __init__(
        self,
        explainer: ExplainerArg = "gradient",
        similarity_func: str = "spearman",
        layer_order: str = "bottom_up",
        seed: int = 42,
        nr_samples: int = 50,
        noise_magnitude: float = 0.1,
        skip_layers: bool = False,
        abs: bool = True,
        normalise: bool = True,
        noise_seed: int = 0,
        max_batch_size: Optional[int] = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(explainer, similarity_func, layer_order, seed, skip_layers, abs, normalise, max_batch_size,
                         **kwargs)
        self.nr_samples = check_positive_int("nr_samples", nr_samples)
        self.noise_magnitude = real_number("noise_magnitude", noise_magnitude, minimum=0.0)
        self._generators = SeededGenerators(integer("noise_seed", noise_seed))
        self._noise: list[Tensor] = []

    def _draw_noise(self, inputs: Tensor) -> list[Tensor]:
        """The ``nr_samples`` noise tensors of this update (see the class docstring)."""
        generator = self._generators.get(inputs.device)
        flat = inputs.reshape(inputs.shape[0], -1)
        sigma = (self.noise_magnitude * (flat.amax(dim=1) - flat.amin(dim=1))).view(-1, *([1] * (inputs.ndim - 1)))
        return [sigma * torch.randn(inputs.shape, generator=generator, device=generator.device, dtype=inputs.dtype)
                for _ in range(self.nr_samples)]

    def _begin(self, inputs: Tensor) -> None:
        self._noise = self._draw_noise(inputs)

    def _explanations(self, explain: BatchExplainer, inputs: Tensor, target: Tensor) -> Tensor:
        total = torch.zeros(inputs.shape, dtype=torch.float64, device=inputs.device)

        def consume(variants: Tensor, samples: Tensor, batch: Tensor, outputs: Tensor, attributions: Tensor) -> None:
            total.index_add_(0, samples, attributions.double())

        explain_in_chunks(explain, inputs, target, self.nr_samples, lambda step: inputs + self._noise[step],
                          self.max_batch_size, consume)
        return total / self.nr_samples

    def reset(self) -> None:
        """Clear the accumulated state and re-seed the noise generator."""
        super().reset()
        self._generators.reset()


SmoothModelParameterRandomisation = SmoothMPRT
