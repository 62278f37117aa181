"""State handling shared by the metrics: per-sample means, mean curves, device following, seeding."""
from typing import Optional

import torch
from torch import Tensor
from torchmetrics import Metric


def nan_unless_finite(values: Tensor, *data: Tensor) -> Tensor:
    """``values`` (one row per sample) with NaN in the rows of samples whose ``data`` is not all finite.

    Parameters
    ----------
    values : Tensor
        Per-sample values (N,) or curves (N, K).
    *data : Tensor
        Tensors (N, ...) the values were computed from (attributions, model scores).

    Returns
    -------
    Tensor
        ``values`` where every ``data`` row is finite, NaN elsewhere.
    """
    finite = torch.ones(values.shape[0], dtype=torch.bool, device=values.device)
    for tensor in data:
        finite = finite & torch.isfinite(tensor.reshape(tensor.shape[0], -1)).all(dim=1).to(values.device)
    return values.masked_fill(~finite.view(-1, *([1] * (values.ndim - 1))), float("nan"))


class DeviceFollowingMetric(Metric):
    """A metric whose states move to the device of the data given to ``update``."""

    full_state_update = False
    is_differentiable = False

    def _follow_device(self, data: Tensor) -> None:
        if self.device != data.device:
            self.to(data.device)


class SampleMeanMetric(DeviceFollowingMetric):
    """Mean of one value per sample over all samples seen (states summed across DDP ranks)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("value_sum", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("num_samples", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def _accumulate(self, values: Tensor, *data: Tensor) -> None:
        """Add per-sample ``values``; a sample with non-finite ``data`` counts as NaN."""
        values = nan_unless_finite(values.double(), *data)
        self.value_sum = self.value_sum + values.sum()
        self.num_samples = self.num_samples + values.numel()

    def compute(self) -> Tensor:
        """Mean of the per-sample values over all samples seen (NaN before any update)."""
        return self.value_sum / self.num_samples


class CurveMeanMetric(DeviceFollowingMetric):
    """Mean of one curve per sample over all samples seen (states summed across DDP ranks).

    The curve length is fixed by the first update; the default state is a scalar zero so that it
    broadcasts against the first batch.
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("curve_sum", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("num_samples", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def _accumulate(self, curves: Tensor, *data: Tensor) -> None:
        """Add per-sample ``curves``; a sample with non-finite ``data`` counts as a NaN curve."""
        curves = nan_unless_finite(curves.double(), *data)
        if self.curve_sum.ndim == 1 and self.curve_sum.shape[0] != curves.shape[1]:
            raise ValueError(
                f"curve length changed from {self.curve_sum.shape[0]} to {curves.shape[1]} points; "
                "call reset() before updating with inputs of another size"
            )
        self.curve_sum = self.curve_sum + curves.double().sum(dim=0)
        self.num_samples = self.num_samples + curves.shape[0]

    def _mean_curve(self) -> Tensor:
        return self.curve_sum / self.num_samples


class SeededGenerators:
    """One ``torch.Generator`` per device, each seeded with ``seed`` when first used after a reset.

    Parameters
    ----------
    seed : int
        Seed of every generator.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._generators: dict[torch.device, torch.Generator] = {}

    def get(self, device: torch.device) -> torch.Generator:
        """The generator for ``device``, created and seeded on first use."""
        generator: Optional[torch.Generator] = self._generators.get(device)
        if generator is None:
            generator = torch.Generator(device=device)
            generator.manual_seed(self.seed)
            self._generators[device] = generator
        return generator

    def reset(self) -> None:
        """Forget all generators so the next ``get`` starts again from ``seed``."""
        self._generators.clear()
