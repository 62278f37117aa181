"""Conditional attribution (Concept Relevance Propagation, Achtibat et al., Nature Machine Intelligence 2023).

``CondAttribution(model)(data, conditions, composite, record_layer)`` runs the composite's backward pass with
the relevance masked, at each conditioned layer's output, to the chosen concepts, and returns the input
heatmap with the relevances and activations of the recorded layers. Names and call shapes follow
zennit-crp 0.6.0, so that a CRP user can switch; the backward pass is the engine's own.
"""
from __future__ import annotations

import contextlib
from typing import Any, Dict, NamedTuple, Optional, Sequence, Union

import torch

from lrp_lightning.model_state import frozen_parameters, preserved_buffers, preserved_random_state
from lrp_lightning.concepts.concept import ChannelConcept
from lrp_lightning.concepts.conditions import OUTPUT_NAME, module_name, pairing, parse
from lrp_lightning.concepts.taps import Tap
from lrp_lightning.tokens import logits_of


class AttributionResults(NamedTuple):
    """What a conditional attribution returns (one row per explained sample and condition).

    Attributes
    ----------
    heatmap : torch.Tensor
        The input relevance summed over dim 1 (the colour channels of an image), ``(rows, ...)``.
    activations : dict of str to torch.Tensor
        The recorded layers' outputs.
    relevances : dict of str to torch.Tensor
        The recorded layers' relevances (at their outputs, after their own condition's mask).
    prediction : torch.Tensor
        The model output ``(rows, K)``.
    """

    heatmap: torch.Tensor
    activations: Dict[str, torch.Tensor]
    relevances: Dict[str, torch.Tensor]
    prediction: torch.Tensor


def _output_relevance(output: torch.Tensor, classes: Sequence[Sequence[int]]) -> torch.Tensor:
    """The relevance at the model output: each row's logits of its classes, 0 elsewhere."""
    if output.dim() != 2:
        raise ValueError(f"the model output must be (N, classes) for conditions on {OUTPUT_NAME!r}, got {tuple(output.shape)}")
    keep = torch.zeros_like(output)
    for row, ids in enumerate(classes):
        if max(ids) >= output.shape[1] or min(ids) < -output.shape[1]:
            raise IndexError(f"class {ids} out of range for a model with {output.shape[1]} outputs")
        keep[row, ids] = 1
    return output.detach() * keep


class CondAttribution:
    """Conditional relevance of a model's inputs and layers, as zennit-crp's ``CondAttribution``.

    For a condition ``{"y": [c], "l1": [i, j], "l2": [k]}`` the relevance starts at the logit of class
    ``c`` and, at the output of layer ``l``, is multiplied by the mask of the chosen concepts,
    ``R_l <- R_l * M_l`` (conditions on several layers multiply their masks along the way). A layer's
    concept relevance is ``R_{l,c} = sum_{other dims} R_{l, c}``; the concept relevances of a layer sum
    to its relevance, and a condition on all its concepts is the unconditioned attribution.

    Parameters
    ----------
    model : torch.nn.Module
        The explained model; it is left exactly as it was (parameters, buffers, flags, hooks, ``.grad``
        and the global random state).
    """

    MODEL_OUTPUT_NAME = OUTPUT_NAME

    def __init__(self, model: torch.nn.Module) -> None:
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model

    def __repr__(self) -> str:
        return f"{type(self).__name__}({type(self.model).__name__})"

    def __call__(
        self,
        data: torch.Tensor,
        conditions: Union[dict, Sequence[dict]],
        composite: Optional[Any] = None,
        record_layer: Sequence[str] = (),
        mask_map: Union[Any, Dict[str, Any]] = None,
        exclude_parallel: bool = True,
    ) -> AttributionResults:
        """Explain ``data`` under each condition, in one batched backward pass per group of conditions.

        Parameters
        ----------
        data : torch.Tensor
            Samples ``(N, ...)``. With ``C`` conditions, ``N == C`` pairs sample ``i`` with condition
            ``i``; otherwise every sample meets every condition, sample-major (``N * C`` rows, row
            ``i * C + j`` is sample ``i`` under condition ``j``).
        conditions : dict or list of dict
            ``{"y": [classes], "<layer>": [concept ids], ...}``; ``"y"`` is required. ``"<layer>"`` is a
            module name (its output) or ``"<module>:input"`` (its first input, e.g. the heads entering an
            attention's output projection).
        composite : Composite, optional
            The LRP composite (None: plain gradients). A gradient-view composite (AttnLRP, CP-LRP)
            gives relevance ``activation * gradient`` at layers and inputs.
        record_layer : sequence of str
            Layers (module names, or ``"<module>:input"``) whose activations and relevances are returned.
        mask_map : concept or dict of str to concept, optional
            The concept of each conditioned layer (an object with ``mask(output, ids)``, e.g.
            :class:`ChannelConcept`); one for all layers, or a dict by layer name. Default: channels.
        exclude_parallel : bool
            As zennit-crp: the relevance reaching a conditioned layer's input flows only through that
            layer (it does not enter layers parallel to it, such as a residual shortcut around it): the
            backward pass runs from the output to the last conditioned layer, masks, from there to the
            next one, and so on. The layers of one condition must then lie on one path. False: one
            backward pass, relevance around the conditioned layers flows on unmasked.

        Returns
        -------
        AttributionResults

        Raises
        ------
        ValueError
            For a condition without ``"y"``, an unknown layer name, or (with ``exclude_parallel``)
            conditioned layers that do not lie on one path.
        IndexError
            For a class or concept index out of range.
        """
        names = dict(self.model.named_modules())
        parsed = parse(conditions, names)
        record = list(record_layer)
        for name in record:
            if module_name(name) not in names:
                parse([{OUTPUT_NAME: [0], name: [0]}], names)
        if not isinstance(data, torch.Tensor):
            raise TypeError(f"data must be a tensor (N, ...), got {type(data).__name__}")
        sample_index, condition_index = pairing(len(data), len(parsed))
        rows = [parsed[index] for index in condition_index]
        if exclude_parallel:
            groups: dict = {}
            for row, condition in enumerate(rows):
                groups.setdefault(tuple(sorted(key for key in condition if key != OUTPUT_NAME)), []).append(row)
        else:
            groups = {None: list(range(len(rows)))}
        parts = []
        for layers, members in groups.items():
            index = torch.tensor(members, dtype=torch.long)
            inputs = data.detach()[sample_index[index].to(data.device)]
            parts.append((index, self._pass(inputs, [rows[i] for i in members], composite, record, mask_map,
                                            bool(exclude_parallel) and bool(layers))))
        return _merged(parts, len(rows))

    def _concept(self, mask_map: Any, name: str) -> Any:
        if isinstance(mask_map, dict):
            return mask_map.get(name, ChannelConcept())
        return ChannelConcept() if mask_map is None else mask_map

    def _pass(self, data: torch.Tensor, rows: list, composite: Any, record: list, mask_map: Any,
              chained: bool) -> AttributionResults:
        """One forward and (chained) backward pass of ``data`` under the conditions ``rows``."""
        gradient_view = bool(getattr(composite, "gradient_view", False))
        conditioned = list(dict.fromkeys(key for row in rows for key in row if key != OUTPUT_NAME))
        taps = {name: Tap(name, name in record, gradient_view) for name in dict.fromkeys(record + conditioned)}
        modules = dict(self.model.named_modules())
        counter = [0]
        handles = []
        inputs = data.clone().requires_grad_(True)
        with contextlib.ExitStack() as stack:
            stack.enter_context(preserved_random_state(inputs.device))
            stack.enter_context(preserved_buffers(self.model))
            stack.enter_context(frozen_parameters(self.model))
            if composite is not None and not getattr(composite, "handles", None):
                stack.enter_context(composite.context(self.model))
            try:
                for name, tap in taps.items():
                    handles.append(tap.register(modules[module_name(name)], counter))
                with torch.enable_grad():
                    output = logits_of(self.model(inputs))
                    for name, tap in taps.items():
                        if tap.order is None:
                            raise ValueError(f"layer {name!r} was not called in the forward pass; condition on or record a layer the model runs")
                    for name in conditioned:
                        concept = self._concept(mask_map, name)
                        tap = taps[name]
                        tap.mask = torch.stack([
                            concept.mask(tap.gate_input, row[name]) if name in row
                            else torch.ones_like(tap.gate_input[0]) for row in rows
                        ])
                    start = _output_relevance(output, [row[OUTPUT_NAME] for row in rows])
                    gradient = self._backward(output, start, inputs, [taps[name] for name in conditioned] if chained else [])
            finally:
                for handle in handles:
                    handle.remove()
        relevance = inputs.detach() * gradient if gradient_view else gradient
        return AttributionResults(
            heatmap=relevance.sum(dim=1),
            activations={name: taps[name].activation for name in record},
            relevances={name: _recorded(taps[name]) for name in record},
            prediction=output.detach(),
        )

    @staticmethod
    def _backward(output: torch.Tensor, start: torch.Tensor, inputs: torch.Tensor, chain: list) -> torch.Tensor:
        """The gradient at ``inputs``: through the conditioned layers ``chain`` one after the other
        (last layer first), each segment ending at a layer's output, or in one pass when ``chain`` is empty."""
        current, gradient = output, start
        for tap in sorted(chain, key=lambda tap: tap.order, reverse=True):
            reached, = torch.autograd.grad(current, tap.gate_input, gradient, retain_graph=True, allow_unused=True)
            if reached is None:
                raise ValueError(
                    f"layer {tap.name!r} is parallel to a later conditioned layer of the same condition (no relevance "
                    "reaches it through that layer); with exclude_parallel=True the layers of one condition must lie on "
                    "one path: condition on them separately, or pass exclude_parallel=False"
                )
            current, gradient = tap.gate_input, reached
        reached, = torch.autograd.grad(current, inputs, gradient, allow_unused=True)
        return torch.zeros_like(inputs) if reached is None else reached


def _recorded(tap: Tap) -> torch.Tensor:
    """The relevance a tap recorded (zeros where none reached its layer)."""
    return torch.zeros_like(tap.activation) if tap.relevance is None else tap.relevance.detach()


def _merged(parts: list, rows: int) -> AttributionResults:
    """The results of the groups of rows, put back in row order."""
    if len(parts) == 1:
        return parts[0][1]

    def gather(tensors: list) -> torch.Tensor:
        first = tensors[0]
        merged = first.new_zeros((rows, *first.shape[1:]))
        for (index, _), tensor in zip(parts, tensors):
            merged[index.to(merged.device)] = tensor
        return merged

    results = [result for _, result in parts]
    return AttributionResults(
        heatmap=gather([result.heatmap for result in results]),
        activations={name: gather([result.activations[name] for result in results]) for name in results[0].activations},
        relevances={name: gather([result.relevances[name] for result in results]) for name in results[0].relevances},
        prediction=gather([result.prediction for result in results]),
    )
