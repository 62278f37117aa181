"""Relative representation stability (Agarwal et al. 2022)."""
from typing import Any, Optional

import torch
from torch import Tensor, nn

from lrp_lightning._arguments import names
from lrp_lightning.metrics._docs import fill_doc
from lrp_lightning.metrics._explainer import ExplainerArg
from lrp_lightning.metrics._model import Model, evaluation_mode
from lrp_lightning.metrics._relative_stability import RelativeStabilityMetric


@fill_doc
class RelativeRepresentationStability(RelativeStabilityMetric):
    """Mean over samples of ``max_j ||(Φ(x) - Φ(x_j)) / Φ(x)||₂ / max(||(L(x) - L(x_j)) / L(x)||₂, eps_min)``.

    ``L`` the outputs of the named submodules (``layer_names``, default every leaf module), flattened
    and concatenated in registration order, read with forward hooks that are removed afterwards.
    Quantus' ``RelativeRepresentationStability`` (Agarwal et al. 2022); element-wise divisions with exact
    zeros of the divisor replaced by ``eps_min``; noise and draws as in
    :class:`~lrp_lightning.metrics._relative_stability.RelativeStabilityMetric`. Lower is better.

    Parameters
    ----------
    {relative_stability}
    layer_names : list of str, optional
        Names (as in ``model.named_modules()``) of the modules whose outputs form ``L``.
    {explained_per_call}
    """

    def __init__(
        self,
        explainer: ExplainerArg = "gradient",
        nr_samples: int = 200,
        lower_bound: float = 0.02,
        upper_bound: Optional[float] = 0.2,
        abs: bool = False,
        normalise: bool = False,
        eps_min: float = 1e-6,
        return_nan_when_prediction_changes: bool = True,
        layer_names: Optional[list[str]] = None,
        seed: int = 0,
        max_batch_size: Optional[int] = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(explainer, nr_samples, lower_bound, upper_bound, abs, normalise, eps_min,
                         return_nan_when_prediction_changes, seed, max_batch_size, **kwargs)
        self.layer_names = None if layer_names is None else names("layer_names", layer_names)

    def _layers(self, model: Model) -> list[nn.Module]:
        if not isinstance(model, nn.Module):
            raise ValueError("RelativeRepresentationStability reads internal layers; the model must be an nn.Module")
        modules = dict(model.named_modules())
        if self.layer_names is None:
            return [module for module in modules.values() if not list(module.children())]
        unknown = [name for name in self.layer_names if name not in modules]
        if unknown:
            raise ValueError(f"layer_names {unknown} are not modules of the model; known: {sorted(modules)[:20]} ...")
        return [modules[name] for name in self.layer_names]

    def _representation(self, model: Model, batch: Tensor, outputs: Tensor) -> Tensor:
        captured: list[Tensor] = []
        handles = [layer.register_forward_hook(lambda module, args, output: captured.append(output.reshape(output.shape[0], -1)))
                   for layer in self._layers(model)]
        try:
            with evaluation_mode(model):
                model(batch)
        finally:
            for handle in handles:
                handle.remove()
        return torch.cat(captured, dim=1)

    def _denominator(self, clean: dict, perturbed: dict) -> Tensor:
        return self._relative_change(clean["outputs"], perturbed["outputs"])
