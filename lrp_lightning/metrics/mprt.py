"""Model parameter randomisation test (Adebayo et al. 2018) as a metric."""
from typing import Any, Optional

import torch
from torch import Tensor

from lrp_lightning._arguments import boolean, integer
from lrp_lightning.metrics._base import CurveMeanMetric
from lrp_lightning.metrics._checks import check_inputs, check_target, optional_batch_size
from lrp_lightning.metrics._docs import fill_doc
from lrp_lightning.metrics._explainer import BatchExplainer, ExplainerArg, check_explainer
from lrp_lightning.metrics._model import Model
from lrp_lightning.metrics._randomisation import (
    check_layer_order,
    check_similarity,
    explain_all,
    model_copy,
    prepared,
    randomised_states,
    similarity_rows,
)


@fill_doc
class MPRT(CurveMeanMetric):
    """Similarity of the explanation to the original one as the layers are randomised (Adebayo et al. 2018).

    Quantus' ``MPRT``; also exported as ``ModelParameterRandomisation``. On a deep copy of the model
    (the user's model is never touched) the layers with parameters are re-initialised (see
    :mod:`lrp_lightning.metrics._randomisation`): ``"top_down"`` cumulatively from the output,
    ``"bottom_up"`` cumulatively from the input, ``"independent"`` one at a time; after each step
    the inputs are explained again for the same targets and compared with the original explanation
    (after ``abs`` and ``normalise``) by ``similarity_func``. The curve has one point per step, the
    first (the original model) 1. A trustworthy explainer falls to low similarity; lower is better.

    Parameters
    ----------
    explainer : str, Composite or callable
        A registry name (LRP composite or attributor), a Composite (built for the copy as
        ``AttributionCallback`` builds them), or ``explain(model, inputs, target) -> attributions``.
    similarity_func : {"spearman", "ssim"}
        Spearman rank correlation of all entries, or SSIM of single-channel 2-D maps (skimage's
        conventions, as Quantus).
    layer_order : {"top_down", "bottom_up", "independent"}
        How the layers are randomised.
    seed : int
        Re-initialisation seed (each layer: torch's RNG seeded with ``seed + 1``, as Quantus).
    skip_layers : bool
        Randomise all layers in one step: the curve is (original, fully random).
    {explained_options}
    """

    higher_is_better = False

    def __init__(
        self,
        explainer: ExplainerArg = "gradient",
        similarity_func: str = "spearman",
        layer_order: str = "top_down",
        seed: int = 42,
        skip_layers: bool = False,
        abs: bool = True,
        normalise: bool = True,
        max_batch_size: Optional[int] = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.explainer = check_explainer(explainer)
        self.similarity_func = check_similarity(similarity_func)
        self.layer_order = check_layer_order(layer_order)
        self.seed = integer("seed", seed)
        self.skip_layers = boolean("skip_layers", skip_layers)
        self.abs = boolean("abs", abs)
        self.normalise = boolean("normalise", normalise)
        self.max_batch_size = optional_batch_size(max_batch_size)
        self.layers: list[str] = []

    def _begin(self, inputs: Tensor) -> None:
        """Called once per update before the first explanation (subclasses draw their noise here)."""

    def _explanations(self, explain: BatchExplainer, inputs: Tensor, target: Tensor) -> Tensor:
        """The explanations compared at every step: those of ``inputs`` for ``target``."""
        return explain_all(explain, inputs, target, self.max_batch_size)

    def update(self, model: Model, inputs: Tensor, target: Tensor) -> None:
        """Explain ``inputs`` with the original and the progressively randomised copy; accumulate the curves.

        Parameters
        ----------
        model : torch.nn.Module
            The model (copied; never modified).
        inputs : Tensor
            Floating inputs (N, C, H, W) or (N, D).
        target : Tensor
            Class indices (N,), explained at every step.
        """
        inputs = check_inputs(inputs)
        self._follow_device(inputs)
        target = check_target(target, inputs.shape[0], inputs.device)
        subject = model_copy(model)
        explain = BatchExplainer(self.explainer, subject, inputs)
        self._begin(inputs)
        original = self._explanations(explain, inputs, target)
        reference = prepared(original, self.abs, self.normalise)
        similarities = [torch.ones(inputs.shape[0], dtype=torch.float64, device=inputs.device)]
        self.layers = []
        for name in randomised_states(subject, self.layer_order, self.seed, self.skip_layers):
            randomised = prepared(self._explanations(explain, inputs, target), self.abs, self.normalise)
            similarities.append(similarity_rows(self.similarity_func, reference, randomised))
            self.layers.append(name)
        self._accumulate(torch.stack(similarities, dim=1), inputs, original)

    def compute(self) -> dict[str, Tensor]:
        """``{"curve": (steps + 1,), "average": mean of the curve, "last": its last point}`` over all samples.

        ``average`` counts the original model's 1 as Quantus' ``return_average_correlation`` does;
        ``last`` is Quantus' ``return_last_correlation``. The layer names of the steps are in :attr:`layers`.
        """
        curve = self._mean_curve()
        return {"curve": curve, "average": curve.mean(), "last": curve[-1]}


ModelParameterRandomisation = MPRT
