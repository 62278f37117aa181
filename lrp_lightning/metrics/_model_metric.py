"""Settings and input preparation shared by the metrics that run a model on perturbed inputs."""
from typing import Optional

from torch import Tensor

from lrp_lightning._arguments import boolean, integer
from lrp_lightning.metrics._base import SeededGenerators
from lrp_lightning.metrics._checks import (
    Baseline,
    check_attention_mask,
    check_baseline,
    check_inputs,
    check_target,
    location_relevance,
    optional_batch_size,
)


class ModelPerturbationMixin:
    """Mixin for a ``DeviceFollowingMetric`` whose ``update(model, inputs, attributions, target)``
    replaces input locations by a baseline: holds the shared settings and the seeded generators."""

    def _configure(self, baseline: Baseline, softmax: bool, max_batch_size: Optional[int], seed: int) -> None:
        self.baseline = check_baseline(baseline)
        self.softmax = boolean("softmax", softmax)
        self.max_batch_size = optional_batch_size(max_batch_size)
        self._generators = SeededGenerators(integer("seed", seed))

    def _prepare(
        self, inputs: Tensor, attributions: Tensor, target: Tensor, attention_mask: Optional[Tensor] = None
    ) -> tuple[Tensor, Tensor, Tensor, Optional[Tensor]]:
        """Validated ``(inputs, relevance per location, target, attention_mask)``, the metric moved to the
        inputs' device."""
        inputs = check_inputs(inputs)
        self._follow_device(inputs)
        relevance = location_relevance(inputs, attributions)
        target = check_target(target, inputs.shape[0], inputs.device)
        return inputs, relevance, target, check_attention_mask(attention_mask, inputs)

    def reset(self) -> None:
        """Clear the accumulated state and re-seed the metric's random generator."""
        super().reset()
        self._generators.reset()
