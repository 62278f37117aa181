"""One explanation pass: attributions, metrics and images for fixed samples, model left untouched.

:func:`explain` runs every explainer on the samples inside
:func:`~lrp_lightning.callbacks.hygiene.preserved_state` (everything the user owns is restored,
also on error) and :func:`~lrp_lightning.callbacks.hygiene.attribution_mode` (autograd on, out of
inference mode, autocast off), on the model in eval mode and float32.

For a model with several inputs (the samples' ``inputs`` a tuple) every explainer returns one
relevance per input; each floating-point input that is an image batch or (N, D)/(N, T, D) gets its
own picture, and the metrics and the drift see the relevances of all floating-point inputs
flattened and concatenated per sample (see
:func:`~lrp_lightning.callbacks.metric_set.check_several_inputs`).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from lrp_lightning import image
from lrp_lightning.callbacks.explainers import Explainer
from lrp_lightning.callbacks.hygiene import attribution_mode, preserved_state
from lrp_lightning.callbacks.metric_set import MetricResults, MetricSet
from lrp_lightning.callbacks.nonfinite import finite_results, nonfinite_cause
from lrp_lightning.callbacks.rule_map_text import rule_map_table
from lrp_lightning.callbacks.tables import Table
from lrp_lightning.callbacks.samples import Samples, input_shapes
from lrp_lightning.callbacks.targets import TargetSpec, resolve_targets
from lrp_lightning.callbacks.tokens import TokenDecoder, run_model, token_pictures
from lrp_lightning.transformer.tokens import class_scores, is_token_ids

# the logged image grid fits a TensorBoard image card (about 350 px wide): at most 16 samples, 8 rows
GRID_MAX_SAMPLES = 16
GRID_MAX_ROWS = 8


@dataclass
class ExplainerReport:
    """What one explainer produced for the samples.

    Attributes
    ----------
    name : str
        The explainer's display name.
    results : MetricResults
        Metric scalars and perturbation curves.
    relevance : torch.Tensor
        The attributions (CPU), shaped like the inputs; for several inputs those of all
        floating-point inputs, flattened and concatenated per sample (N, D1 + D2 + ...).
    picture : torch.Tensor or None
        uint8 (3, H, W): the input | heatmap | overlay grid for images, the tokens coloured by
        relevance for token ids, heat strips for (N, D)/(N, T, D) inputs, None otherwise or when
        images are off (and for several inputs). Grids and strips are rendered when first read
        (the callback's background writer reads them, off the training thread); ``has_picture``
        says whether there is one without rendering it.
    input_pictures : dict of int to torch.Tensor
        For several inputs: the picture of each input that has one (as ``picture``), by its index.
    token_table : Table or None
        For token ids (when images are on): the tokens and their relevance, per sample.
    rule_map : Table or None
        The rule map, layer by layer (LRP composites, when asked for).
    caption : str or None
        One line per sample: its index, label, the model's prediction and the explained class.
    uncovered : list of str
        Layers no rule covers.
    nonfinite : str or None
        Why the explanation is not finite (``"model output"`` or ``"relevance"``, see
        :func:`~lrp_lightning.callbacks.nonfinite.nonfinite_cause`), None when it is; no picture then.
    dropped : list of str
        Metric scalars left out of ``results`` because they were not finite.
    error : Exception or None
        Set when this explainer failed (the other fields are then empty).
    """

    name: str
    results: MetricResults = field(default_factory=MetricResults)
    relevance: Optional[torch.Tensor] = None
    picture_source: Union[None, torch.Tensor, Callable[[], torch.Tensor]] = field(default=None, repr=False)
    input_pictures: dict = field(default_factory=dict)
    token_table: Optional[Table] = None
    rule_map: Optional[Table] = None
    caption: Optional[str] = None
    uncovered: list = field(default_factory=list)
    nonfinite: Optional[str] = None
    dropped: list = field(default_factory=list)
    error: Optional[Exception] = None

    @property
    def has_picture(self) -> bool:
        """Whether there is a picture (without rendering it)."""
        return self.picture_source is not None

    @property
    def picture(self) -> Optional[torch.Tensor]:
        """The picture (see the class docstring), rendered on the first read."""
        if callable(self.picture_source):
            self.picture_source = self.picture_source()
        return self.picture_source


def _float32(model: nn.Module) -> None:
    """Cast floating parameters and buffers to float32 (undone by ``preserved_state``)."""
    if any(t.is_floating_point() and t.dtype != torch.float32 for t in list(model.parameters()) + list(model.buffers())):
        model.float()


def model_outputs(model: nn.Module, samples: Samples, device: torch.device) -> torch.Tensor:
    """The model's outputs for the samples, computed like :func:`explain` computes them.

    Parameters
    ----------
    model : torch.nn.Module
        The explained model.
    samples : Samples
        The samples.
    device : torch.device
        Where to compute.

    Returns
    -------
    torch.Tensor
        Detached outputs.

    Raises
    ------
    ValueError
        If the model cannot take the samples (the message names their shape and the model).
    """
    attention_mask = None if samples.attention_mask is None else samples.attention_mask.to(device)
    with preserved_state(model), attribution_mode(device), torch.no_grad():
        model.eval()
        _float32(model)
        try:
            return run_model(model, samples.inputs_on(device), attention_mask).detach()
        except Exception as error:
            raise ValueError(
                f"the samples (inputs of shape {input_shapes(samples.inputs)}) do not fit "
                f"{type(model).__name__}: {type(error).__name__}: {error}"
            ) from error


def _picture_renderer(inputs: torch.Tensor, relevance: torch.Tensor, cmap: str) -> Optional[Callable[[], torch.Tensor]]:
    """What renders the picture of ``relevance`` (a grid for images, strips for (N, D)/(N, T, D)), or None."""
    if image.is_image_batch(inputs):
        return functools.partial(_grid, inputs, relevance.detach(), cmap)
    if relevance.ndim in (2, 3):
        return functools.partial(_strips, relevance.detach(), cmap)
    return None


def _grid(inputs: torch.Tensor, relevance: torch.Tensor, cmap: str) -> torch.Tensor:
    """The first :data:`GRID_MAX_SAMPLES` samples, at most :data:`GRID_MAX_ROWS` rows (then side by side)."""
    shown = min(inputs.shape[0], GRID_MAX_SAMPLES)
    columns = -(-shown // GRID_MAX_ROWS)
    return image.attribution_grid(inputs[:shown], relevance[:shown], cmap=cmap, columns=columns).cpu()


def _strips(relevance: torch.Tensor, cmap: str) -> torch.Tensor:
    return torch.cat(list(image.strip(relevance, cmap=cmap).cpu()), dim=1)


def _joined_relevance(relevance: Union[torch.Tensor, tuple]) -> torch.Tensor:
    """The relevance, or for several inputs that of every explained input, flattened and concatenated per sample."""
    if isinstance(relevance, torch.Tensor):
        return relevance
    return torch.cat([part.flatten(1) for part in relevance if part is not None], dim=1)


def _explain_one(
    explainer: Explainer,
    metric_set: MetricSet,
    model: nn.Module,
    inputs: Union[torch.Tensor, tuple],
    outputs: torch.Tensor,
    targets: torch.Tensor,
    masks: Optional[torch.Tensor],
    attention_mask: Optional[torch.Tensor],
    cmap: Optional[str],
    decoder: TokenDecoder,
    with_rule_map: bool,
) -> ExplainerReport:
    report = ExplainerReport(explainer.name)
    with explainer.attributor(model) as attributor:
        if attention_mask is None:
            output, relevance = attributor(inputs, targets)
        else:
            output, relevance = attributor(inputs, targets, attention_mask=attention_mask)
        if isinstance(inputs, torch.Tensor):
            output = class_scores(output, inputs, attention_mask)
        composite = explainer.composite
        if composite is not None:
            report.uncovered = list(getattr(composite, "uncovered", []))
            if with_rule_map:
                report.rule_map = rule_map_table(
                    explainer.name, model, getattr(composite, "rule_map", {}), report.uncovered, composite.canonizers
                )
    per_input = relevance
    relevance = _joined_relevance(relevance)
    output_relevance = F.one_hot(targets, output.shape[1]).to(relevance.dtype)
    arguments = {
        "model": model,
        "inputs": inputs,
        "attributions": relevance,
        "target": targets,
        "input_relevance": relevance,
        "output_relevance": output_relevance,
        "mask": masks,
        "attention_mask": attention_mask,
    }
    report.nonfinite = nonfinite_cause(outputs, relevance)
    report.results, report.dropped = finite_results(metric_set.evaluate(arguments))
    report.relevance = relevance.detach().cpu()
    if cmap is None or report.nonfinite is not None:
        report.picture_source = None
    elif isinstance(inputs, tuple):
        renderers = {index: _picture_renderer(part, part_relevance, cmap)
                     for index, (part, part_relevance) in enumerate(zip(inputs, per_input)) if part_relevance is not None}
        report.input_pictures = {index: render() for index, render in renderers.items() if render is not None}
    elif is_token_ids(inputs):
        report.picture_source, report.token_table = token_pictures(decoder, inputs, relevance, attention_mask, targets, cmap)
    else:
        report.picture_source = _picture_renderer(inputs, relevance, cmap)
    return report


def explain(
    model: nn.Module,
    samples: Samples,
    target: TargetSpec,
    explainers: Sequence[Explainer],
    metric_sets: Sequence[MetricSet],
    device: torch.device,
    cmap: Optional[str],
    with_rule_map: Callable[[str], bool],
    decoder: Optional[TokenDecoder] = None,
) -> list[ExplainerReport]:
    """Explain the samples with every explainer and evaluate its metrics.

    A failing explainer yields a report with ``error`` set; the others still run. A non-finite
    explanation yields a report with ``nonfinite`` set, no picture and only its finite scalars. Errors outside
    the explainers (e.g. the model rejecting the samples) propagate. Either way the model and the
    global RNGs are restored.

    Parameters
    ----------
    model : torch.nn.Module
        The explained model (the bare LightningModule or one of its submodules).
    samples : Samples
        The fixed samples.
    target : str, int or callable
        See :mod:`lrp_lightning.callbacks.targets`.
    explainers : sequence of Explainer
        What to explain with.
    metric_sets : sequence of MetricSet
        One per explainer.
    device : torch.device
        Where to compute.
    cmap : str or None
        Colour map of the pictures; None skips them.
    with_rule_map : callable
        ``explainer name -> bool``: whether to render that explainer's rule map.
    decoder : TokenDecoder, optional
        Token id to text in the pictures of token-id inputs; by default the ids themselves.

    Returns
    -------
    list of ExplainerReport
        One per explainer, in order.
    """
    reports = []
    with preserved_state(model), attribution_mode(device):
        model.eval()
        _float32(model)
        inputs = samples.inputs_on(device)
        masks = None if samples.masks is None else samples.masks.to(device)
        attention_mask = None if samples.attention_mask is None else samples.attention_mask.to(device)
        with torch.no_grad():
            outputs = run_model(model, inputs, attention_mask)
        labels = None if samples.labels is None else samples.labels.to(device)
        targets = resolve_targets(target, outputs, labels)
        caption = _caption(outputs, inputs, attention_mask, labels, targets)
        for explainer, metric_set in zip(explainers, metric_sets):
            try:
                reports.append(
                    _explain_one(
                        explainer, metric_set, model, inputs, outputs, targets, masks, attention_mask, cmap,
                        decoder or TokenDecoder(),
                        with_rule_map(explainer.name),
                    )
                )
            except Exception as error:  # reported as a warning by the callback; training goes on
                reports.append(ExplainerReport(explainer.name, error=error))
            reports[-1].caption = caption
    return reports


def _caption(
    outputs: torch.Tensor,
    inputs: Union[torch.Tensor, tuple],
    attention_mask: Optional[torch.Tensor],
    labels: Optional[torch.Tensor],
    targets: torch.Tensor,
) -> str:
    """One line per sample: ``sample i: label l, prediction p, explained class t`` (what is known)."""
    scores = class_scores(outputs, inputs, attention_mask) if isinstance(inputs, torch.Tensor) else outputs
    predictions = scores.argmax(dim=1).tolist() if scores.ndim == 2 else None
    lines = []
    for index, target in enumerate(targets.tolist()):
        parts = [] if labels is None else [f"label {int(labels[index])}"]
        parts += [] if predictions is None else [f"prediction {predictions[index]}"]
        lines.append(f"sample {index}: " + ", ".join(parts + [f"explained class {target}"]))
    return "\n".join(lines)
