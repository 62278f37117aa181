"""Random logit test (Sixt et al. 2020) as a metric."""
from typing import Any, Optional

import torch
from torch import Tensor

from lrp_lightning._arguments import boolean, integer
from lrp_lightning.metrics._base import SampleMeanMetric, SeededGenerators
from lrp_lightning.metrics._checks import check_inputs, check_positive_int, check_target, optional_batch_size
from lrp_lightning.metrics._docs import fill_doc
from lrp_lightning.metrics._explainer import BatchExplainer, ExplainerArg, check_explainer
from lrp_lightning.metrics._model import Model
from lrp_lightning.metrics._randomisation import check_similarity, explain_all, prepared, similarity_rows


@fill_doc
class RandomLogit(SampleMeanMetric):
    """Mean over samples of the similarity between the explanations of the target and of a random other class.

    Quantus' ``RandomLogit`` (Sixt et al. 2020). For each sample a class other than its target is
    drawn uniformly from ``num_classes`` classes with the metric's generator (``(t + k) mod C``,
    ``k = torch.randint(1, C, (N,), generator=g)`` on the inputs' device; seeded with ``seed`` at
    first use and after ``reset()``); both classes are explained and compared, after ``abs`` and
    ``normalise``, by ``similarity_func``. An explainer that reflects the class gives low similarity;
    lower is better.

    Parameters
    ----------
    explainer : str, Composite or callable
        A registry name (LRP composite or attributor), a Composite (built for the model as
        ``AttributionCallback`` builds them), or ``explain(model, inputs, target) -> attributions``.
    similarity_func : {"ssim", "spearman"}
        SSIM of single-channel 2-D maps (skimage's conventions, as Quantus' default), or Spearman
        rank correlation of all entries.
    num_classes : int
        Number of classes to draw from (at least 2; at most the model's outputs).
    seed : int
        Seed of the class generator.
    {explained_options}
    """

    higher_is_better = False

    def __init__(
        self,
        explainer: ExplainerArg = "gradient",
        similarity_func: str = "ssim",
        num_classes: int = 1000,
        seed: int = 42,
        abs: bool = False,
        normalise: bool = True,
        max_batch_size: Optional[int] = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.explainer = check_explainer(explainer)
        self.similarity_func = check_similarity(similarity_func)
        if check_positive_int("num_classes", num_classes) < 2:
            raise ValueError(f"num_classes must be at least 2 to draw another class, got {num_classes}")
        self.num_classes = num_classes
        self.abs = boolean("abs", abs)
        self.normalise = boolean("normalise", normalise)
        self.max_batch_size = optional_batch_size(max_batch_size)
        self._generators = SeededGenerators(integer("seed", seed))

    def _other_classes(self, target: Tensor) -> Tensor:
        """A uniformly drawn class other than each target (see the class docstring)."""
        generator = self._generators.get(target.device)
        shift = torch.randint(1, self.num_classes, target.shape, generator=generator, device=generator.device)
        return (target + shift.to(target.device)) % self.num_classes

    def update(self, model: Model, inputs: Tensor, target: Tensor) -> None:
        """Explain the target and a random other class of each sample; accumulate their similarity.

        Parameters
        ----------
        model : callable
            The model (left as it was).
        inputs : Tensor
            Floating inputs (N, C, H, W) or (N, D).
        target : Tensor
            Class indices (N,) below ``num_classes``.
        """
        inputs = check_inputs(inputs)
        self._follow_device(inputs)
        target = check_target(target, inputs.shape[0], inputs.device)
        if bool((target >= self.num_classes).any()):
            raise ValueError(f"target holds classes >= num_classes={self.num_classes}: {target.tolist()}")
        explain = BatchExplainer(self.explainer, model, inputs)
        original = explain_all(explain, inputs, target, self.max_batch_size)
        other = explain_all(explain, inputs, self._other_classes(target), self.max_batch_size)
        similarity = similarity_rows(
            self.similarity_func, prepared(original, self.abs, self.normalise), prepared(other, self.abs, self.normalise)
        )
        self._accumulate(similarity, inputs, original, other)

    def reset(self) -> None:
        """Clear the accumulated state and re-seed the class generator."""
        super().reset()
        self._generators.reset()
