"""The explainers of the metrics that re-explain (robustness, randomisation): resolution and batched explaining.

An explainer is what :class:`~lrp_lightning.callbacks.AttributionCallback` takes — a registry name
(an LRP composite such as ``"epsilon_plus"`` or an attributor such as ``"smoothgrad"``) or a
:class:`~lrp_lightning.core.Composite` — built for the model and the clean inputs of each update
exactly as the callback builds it (:func:`lrp_lightning.explainers.build_explainer`:
automatic canonizers, box bounds from the inputs), or a callable
``explain(model, inputs, target) -> attributions`` used as it is.
"""
from typing import Any, Callable, Optional, Union

import torch
from torch import Tensor

from lrp_lightning.core import Composite
from lrp_lightning.explainers import build_explainer, known_names
from lrp_lightning.metrics._model import Model, evaluation_mode
from lrp_lightning.metrics._perturbation import chunk_bounds
from lrp_lightning.transformer.tokens import class_scores

ExplainFn = Callable[[Model, Tensor, Tensor], Tensor]
ExplainerArg = Union[str, Composite, ExplainFn]


def check_explainer(explainer: Any) -> ExplainerArg:
    """Return ``explainer`` if it is a registry name, a Composite or a callable, else raise.

    Raises
    ------
    KeyError
        For an unknown registry name (the message lists the known ones).
    TypeError
        For anything else.
    """
    if isinstance(explainer, str):
        if explainer not in known_names():
            known = ", ".join(known_names())
            raise KeyError(f"unknown explainer {explainer!r}; known names: {known}")
        return explainer
    if isinstance(explainer, Composite) or callable(explainer):
        return explainer
    raise TypeError(
        "explainer must be a registry name, a Composite or a callable explain(model, inputs, target) -> "
        f"attributions, got {type(explainer).__name__}"
    )


class BatchExplainer:
    """Explains batches of (perturbed) inputs for given targets with one resolved explainer.

    Parameters
    ----------
    explainer : str, Composite or callable
        See the module docstring.
    model : callable
        The explained model (an ``nn.Module`` for registry names and composites).
    inputs : Tensor
        The clean inputs of the update: the box bounds of composites built by name come from them.
    """

    def __init__(self, explainer: ExplainerArg, model: Model, inputs: Tensor) -> None:
        self.model = model
        if isinstance(explainer, (str, Composite)):
            name = explainer if isinstance(explainer, str) else type(explainer).__name__
            self._explainer: Optional[Any] = build_explainer(name, explainer, model, inputs)
            self._function: Optional[ExplainFn] = None
        else:
            self._explainer, self._function = None, explainer

    def __call__(self, batch: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """``(class scores (B, classes), attributions of batch's shape)`` of ``batch`` for ``target`` (B,)."""
        if self._explainer is not None:
            with evaluation_mode(self.model), self._explainer.attributor(self.model) as attributor:
                outputs, attributions = attributor(batch, target)
            outputs = class_scores(outputs, batch)
        else:
            with evaluation_mode(self.model):
                outputs = class_scores(self.model(batch), batch)
                with torch.enable_grad():
                    attributions = self._function(self.model, batch, target)
        if not isinstance(attributions, Tensor) or attributions.shape != batch.shape:
            shape = tuple(attributions.shape) if isinstance(attributions, Tensor) else type(attributions).__name__
            raise ValueError(f"the explainer returned attributions of shape {shape} for inputs {tuple(batch.shape)}")
        return outputs.detach(), attributions.detach().to(batch.device)


def explain_in_chunks(
    explain: BatchExplainer,
    inputs: Tensor,
    target: Tensor,
    num_variants: int,
    variant: Callable[[int], Tensor],
    max_batch_size: Optional[int],
    consume: Callable[[Tensor, Tensor, Tensor, Tensor, Tensor], None],
) -> None:
    """Explain ``num_variants`` versions of every sample, as few explainer calls as the chunks allow.

    Pairs ``(variant j, sample i)`` are enumerated variant-major; ``variant(j)`` (called once per j,
    in increasing order) gives the N inputs of version j. Each chunk of pairs (see
    :func:`~lrp_lightning.metrics._perturbation.chunk_bounds`) is explained in one call and handed
    to ``consume(variants, samples, batch, outputs, attributions)``.
    """
    num_samples = inputs.shape[0]
    cached: dict[int, Tensor] = {}
    for start, stop in chunk_bounds(inputs, num_samples * num_variants, max_batch_size):
        pairs = torch.arange(start, stop, device=inputs.device)
        variants, samples = pairs // num_samples, pairs % num_samples
        first, last = start // num_samples, (stop - 1) // num_samples
        for step in range(first, last + 1):
            if step not in cached:
                cached[step] = variant(step)
        for step in [step for step in cached if step < first]:
            del cached[step]
        batch = torch.cat([cached[step][samples[variants == step]] for step in range(first, last + 1)])
        outputs, attributions = explain(batch, target[samples])
        consume(variants, samples, batch, outputs, attributions)
