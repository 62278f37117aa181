"""Conditional attribution (Concept Relevance Propagation, Achtibat et al., Nature Machine Intelligence 2023).

``CondAttribution(model)(data, conditions, composite, record_layer)`` runs the composite's backward pass with
the relevance masked, at each conditioned layer's output, to the chosen concepts, and returns the input
heatmap with the relevances and activations of the recorded layers. Names and call shapes follow
zennit-crp 0.6.0, so that a CRP user can switch; the backward pass is the engine's own.
"""
from __future__ import annotations

import contextlib
import warnings
from typing import Any, Dict, Iterator, NamedTuple, Optional, Sequence, Union

import torch

from lrp_lightning.model_state import frozen_parameters, preserved_buffers, preserved_random_state
from lrp_lightning.concepts.concept import ChannelConcept
from lrp_lightning.concepts.conditions import OUTPUT_NAME, module_name, pairing, parse
from lrp_lightning.concepts.start import InitRel, check_init_rel, initial_relevance, start_gradient
from lrp_lightning.concepts.taps import Tap
from lrp_lightning.transformer.tokens import logits_of


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
        start_layer: Optional[str] = None,
        init_rel: InitRel = None,
        on_device: Optional[Union[str, torch.device]] = None,
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
            ``{"y": [classes], "<layer>": [concept ids], ...}``; ``"y"`` is required unless ``start_layer``
            or ``init_rel`` is given. ``"<layer>"`` is a module name (its output) or ``"<module>:input"`` (its
            first input, e.g. the heads entering an attention's output projection). Modules a canonizer of
            the composite adds while it is registered (e.g. the value projection ``canonizer_v_proj`` of a
            ``torch.nn.MultiheadAttention``) can be named too.
        composite : Composite, optional
            The LRP composite (None: plain gradients). A gradient-view composite (AttnLRP, CP-LRP)
            gives relevance ``activation * gradient`` at layers and inputs.
        record_layer : sequence of str
            Layers (module names, or ``"<module>:input"``) whose activations and relevances are returned.
        mask_map : concept or dict of str to concept, optional
            The concept of each conditioned layer (an object with ``mask(output, ids)``, e.g.
            :class:`ChannelConcept`); one for all layers, or a dict by layer name. Default: channels.
        start_layer : str, optional
            As zennit-crp: begin the backward pass at this layer's output instead of the model output
            (``"y"`` then has no effect, with a warning); a condition on the layer masks its initial
            relevance, conditions on layers below it apply as usual. ``prediction`` is then the layer's
            output.
        init_rel : callable, torch.Tensor or number, optional
            As zennit-crp: the initial relevance where the pass begins (the model output or
            ``start_layer``): a callable of the values there, a tensor (one row per explained row, or one
            that broadcasts to a row), or a number filling their shape; at the model output it is then kept
            on the classes ``"y"`` (all classes without ``"y"``). Default: the values themselves (the
            logits, or the start layer's output). See :mod:`lrp_lightning.concepts.start`.
        on_device : str or torch.device, optional
            As zennit-crp: the device of the returned tensors (default: where they were computed).
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
            For a condition without ``"y"`` (and neither ``start_layer`` nor ``init_rel``), an unknown
            layer name, or (with ``exclude_parallel``) conditioned layers that do not lie on one path or
            lie above ``start_layer``.
        IndexError
            For a class or concept index out of range.
        """
        if not isinstance(data, torch.Tensor):
            raise TypeError(f"data must be a tensor (N, ...), got {type(data).__name__}")
        check_init_rel(init_rel)
        device = None if on_device is None else torch.device(on_device)
        with self._explaining(composite, data.device):
            names = dict(self.model.named_modules())
            parsed = parse(conditions, names, output_required=start_layer is None and init_rel is None)
            record = list(record_layer)
            for name in record + ([] if start_layer is None else [start_layer]):
                if module_name(name) not in names:
                    parse([{OUTPUT_NAME: [0], name: [0]}], names)
            if start_layer is not None and any(OUTPUT_NAME in condition for condition in parsed):
                warnings.warn(
                    f"the conditions' {OUTPUT_NAME!r} has no effect: the backward pass begins at start_layer "
                    f"{start_layer!r} (as in zennit-crp); leave {OUTPUT_NAME!r} out, or start_layer to explain classes",
                    UserWarning, stacklevel=2,
                )
            sample_index, condition_index = pairing(len(data), len(parsed))
            rows = [parsed[index] for index in condition_index]
            groups: dict = {}
            for row, condition in enumerate(rows):
                layers = tuple(sorted(key for key in condition if key != OUTPUT_NAME)) if exclude_parallel else None
                groups.setdefault(layers, []).append(row)
            begin = _Begin(start_layer, init_rel, len(rows))
            parts = []
            for layers, members in groups.items():
                index = torch.tensor(members, dtype=torch.long)
                inputs = data.detach()[sample_index[index].to(data.device)]
                parts.append((index, self._pass(inputs, [rows[i] for i in members], index, composite, record, mask_map,
                                                begin, bool(exclude_parallel) and bool(layers))))
        merged = _merged(parts, len(rows))
        return merged if device is None else _moved(merged, device)

    @contextlib.contextmanager
    def _explaining(self, composite: Any, device: torch.device) -> Iterator[None]:
        """The model under ``composite`` (unless already registered), its state and the random state restored on exit."""
        with contextlib.ExitStack() as stack:
            stack.enter_context(preserved_random_state(device))
            stack.enter_context(preserved_buffers(self.model))
            stack.enter_context(frozen_parameters(self.model))
            if composite is not None and not getattr(composite, "handles", None):
                stack.enter_context(composite.context(self.model))
            yield

    def _concept(self, mask_map: Any, name: str) -> Any:
        if isinstance(mask_map, dict):
            return mask_map.get(name, ChannelConcept())
        return ChannelConcept() if mask_map is None else mask_map

    def _pass(self, data: torch.Tensor, rows: list, index: torch.Tensor, composite: Any, record: list, mask_map: Any,
              begin: "_Begin", chained: bool) -> AttributionResults:
        """One forward and (chained) backward pass of ``data`` under the conditions ``rows`` (rows ``index`` of the call)."""
        gradient_view = bool(getattr(composite, "gradient_view", False))
        conditioned = list(dict.fromkeys(key for row in rows for key in row if key != OUTPUT_NAME))
        extra = [] if begin.layer is None else [begin.layer]
        taps = {name: Tap(name, name in record, gradient_view) for name in dict.fromkeys(record + conditioned + extra)}
        modules = dict(self.model.named_modules())
        counter = [0]
        handles = []
        inputs = data.clone().requires_grad_(True)
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
                top, values, classes = output, output.detach(), [row.get(OUTPUT_NAME) for row in rows]
                if begin.layer is not None:
                    start_tap = taps[begin.layer]
                    top, values, classes = start_tap.gate_output, start_tap.gate_input.detach(), None
                relevance = initial_relevance(values, begin.init_rel, index, begin.rows, classes)
                chain = _chain([taps[name] for name in conditioned], None if begin.layer is None else taps[begin.layer]) \
                    if chained else []
                gradient = self._backward(top, start_gradient(relevance, values, gradient_view), inputs, chain)
        finally:
            for handle in handles:
                handle.remove()
        relevance = inputs.detach() * gradient if gradient_view else gradient
        return AttributionResults(
            heatmap=relevance.sum(dim=1),
            activations={name: taps[name].activation for name in record},
            relevances={name: _recorded(taps[name]) for name in record},
            prediction=values,
        )

    @staticmethod
    def _backward(output: torch.Tensor, start: torch.Tensor, inputs: torch.Tensor, chain: list) -> torch.Tensor:
        """The gradient at ``inputs``: through the conditioned layers ``chain`` one after the other
        (last layer first), each segment ending at a layer's output, or in one pass when ``chain`` is empty."""
        current, gradient = output, start
        for tap in chain:
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


class _Begin(NamedTuple):
    """Where a call's passes begin (``layer``, None: the model output), with what (``init_rel``), for how many rows."""

    layer: Optional[str]
    init_rel: InitRel
    rows: int


def _chain(conditioned: list, start: Optional[Tap]) -> list:
    """The taps a chained pass runs through, last layer first: the start layer's (its gate masks and records
    the initial relevance), then the conditioned layers below it."""
    ordered = sorted(conditioned, key=lambda tap: tap.order, reverse=True)
    if start is None:
        return ordered
    above = [tap.name for tap in ordered if tap.order > start.order]
    if above:
        raise ValueError(
            f"conditioned layer(s) {above} lie above start_layer {start.name!r}, where no relevance reaches them; "
            "condition on layers below the start layer, or begin the pass higher"
        )
    return [start] + [tap for tap in ordered if tap is not start]


def _recorded(tap: Tap) -> torch.Tensor:
    """The relevance a tap recorded (zeros where none reached its layer)."""
    return torch.zeros_like(tap.activation) if tap.relevance is None else tap.relevance.detach()


def _moved(result: AttributionResults, device: torch.device) -> AttributionResults:
    """``result`` with every tensor on ``device``."""
    return AttributionResults(
        heatmap=result.heatmap.to(device),
        activations={name: value.to(device) for name, value in result.activations.items()},
        relevances={name: value.to(device) for name, value in result.relevances.items()},
        prediction=result.prediction.to(device),
    )


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
