"""The explanation-quality metrics the callback computes, and how each one is fed.

A metric is any ``torchmetrics.Metric`` whose ``update`` takes some of the arguments in
:data:`METRIC_ARGUMENTS` by name (all metrics of :mod:`lrp_lightning.metrics` do). Each explainer
gets its own copies, reset before every evaluation and never synchronized across processes (every
rank explains the same samples, so there is nothing to reduce and no collective call to hang on).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence, Union

import torch
from torchmetrics import Metric

from lrp_lightning.callbacks.naming import check_tag_component, snake_case
from lrp_lightning.metrics import Complexity, Conservation, RegionPerturbation, Sparseness
from lrp_lightning.transformer.tokens import is_token_ids

METRIC_ARGUMENTS = (
    "model",
    "inputs",
    "attributions",
    "target",
    "input_relevance",
    "output_relevance",
    "mask",
    "attention_mask",
)
MetricsArg = Union[None, Mapping[str, Metric], Sequence[Metric]]

# what a metric cannot be given for a model with several inputs
SINGLE_INPUT_ARGUMENTS = ("model", "inputs", "mask", "attention_mask")
CONSERVATION = "conservation"
# default region perturbation: patches of 1/8 of the image side, the 8 most relevant replaced
DEFAULT_PATCHES_PER_SIDE = 8
DEFAULT_PERTURBATION_STEPS = 8


def update_arguments(metric: Metric) -> list[str]:
    """Names of the arguments ``metric.update`` takes.

    Parameters
    ----------
    metric : torchmetrics.Metric
        The metric.

    Returns
    -------
    list of str
        In signature order.

    Raises
    ------
    ValueError
        If ``update`` takes an argument the callback cannot provide.
    """
    names = [
        name
        for name, parameter in inspect.signature(metric.update).parameters.items()
        if parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)
    ]
    unknown = [name for name in names if name not in METRIC_ARGUMENTS]
    if unknown:
        raise ValueError(
            f"{type(metric).__name__}.update takes {unknown}, which the callback cannot provide; "
            f"it provides {list(METRIC_ARGUMENTS)}"
        )
    return names


def parse_metrics(metrics: MetricsArg) -> Optional[dict]:
    """Check the user's ``metrics`` argument and name each metric.

    Parameters
    ----------
    metrics : dict of str to Metric, list of Metric, or None
        None selects the default set (built later by :func:`default_metrics`).

    Returns
    -------
    dict of str to Metric, or None
        None for the default set.

    Raises
    ------
    TypeError
        If an entry is not a ``torchmetrics.Metric``.
    ValueError
        If a name contains ``/`` or repeats, or an ``update`` needs an argument the callback lacks.
    """
    if metrics is None:
        return None
    if not isinstance(metrics, (Mapping, list, tuple)):
        raise TypeError(f"metrics must be a dict or list of torchmetrics.Metric, or None, got {type(metrics).__name__}")
    items = list(metrics.items()) if isinstance(metrics, Mapping) else [
        (snake_case(type(metric).__name__), metric) for metric in metrics
    ]
    named: dict = {}
    for name, metric in items:
        if not isinstance(metric, Metric):
            raise TypeError(f"metric {name!r} must be a torchmetrics.Metric, got {type(metric).__name__}")
        check_tag_component(name, "metric")
        if name in named:
            raise ValueError(f"metric name {name!r} is used twice")
        update_arguments(metric)
        named[name] = metric
    return named


def default_metrics(inputs: Union[torch.Tensor, tuple], baseline_token_id: int = 0) -> dict[str, Metric]:
    """The cheap default set for samples like ``inputs``.

    Sparseness and Complexity always (for several inputs only these, see
    :func:`check_several_inputs`); for images (N, C, H, W) and vectors (N, D) also a short
    region-perturbation curve (MoRF, zero baseline): patches of 1/8 of each side (segments of 1/8
    of the length), the 8 most relevant replaced, logged as ``aopc_morf``. For token ids (N, T) the
    curve replaces single tokens, the (up to) 8 most relevant, by ``baseline_token_id``.

    Parameters
    ----------
    inputs : torch.Tensor or tuple of torch.Tensor
        The samples (a tuple for a model with several inputs).
    baseline_token_id : int
        Replacement token of the perturbation curve for token-id inputs.

    Returns
    -------
    dict of str to Metric
        Fresh metric instances.
    """
    metrics: dict = {"sparseness": Sparseness(), "complexity": Complexity()}
    if isinstance(inputs, tuple):
        return metrics
    if is_token_ids(inputs):
        steps = min(DEFAULT_PERTURBATION_STEPS, inputs.shape[1])
        metrics["aopc_morf"] = RegionPerturbation(patch_size=1, steps=steps, order="morf", baseline=baseline_token_id)
    elif inputs.ndim in (2, 4):
        sides = inputs.shape[2:] if inputs.ndim == 4 else inputs.shape[1:]
        patch_size = max(1, min(sides) // DEFAULT_PATCHES_PER_SIDE)
        num_patches = 1
        for side in sides:
            num_patches *= -(-side // patch_size)
        steps = min(DEFAULT_PERTURBATION_STEPS, num_patches)
        metrics["aopc_morf"] = RegionPerturbation(patch_size=patch_size, steps=steps, order="morf")
    return metrics


def check_several_inputs(metric_sets: Sequence["MetricSet"]) -> None:
    """Check that every metric can judge the explanation of a model with several inputs.

    Such metrics get as ``attributions`` and ``input_relevance`` the relevances of all
    floating-point inputs, flattened and concatenated per sample, (N, D1 + D2 + ...): conservation
    then sums over every input, Sparseness and Complexity judge the explanation as a whole. A metric
    that evaluates the model, reads the inputs or compares with masks
    (:data:`SINGLE_INPUT_ARGUMENTS`) has no single input to work on.

    Parameters
    ----------
    metric_sets : sequence of MetricSet
        The metrics of every explainer.

    Raises
    ------
    ValueError
        Naming the metrics that take one of :data:`SINGLE_INPUT_ARGUMENTS`.
    """
    unusable = sorted({
        name
        for metric_set in metric_sets
        for name, arguments in metric_set.arguments.items()
        if set(arguments) & set(SINGLE_INPUT_ARGUMENTS)
    })
    if unusable:
        raise ValueError(
            f"the metrics {unusable} take the model, the inputs or masks, which a model with several inputs does not "
            "offer them; pass metrics that judge the attributions alone (e.g. Sparseness, Complexity), or metrics={}"
        )


def _local_copy(metric: Metric, device: torch.device) -> Metric:
    copy = metric.clone().to(device)
    copy.sync_on_compute = False
    copy._to_sync = False
    return copy


@dataclass
class MetricResults:
    """What one evaluation produced for one explainer.

    Attributes
    ----------
    scalars : dict of str to float
        Metric name (``<metric>`` or ``<metric>_<key>`` for multi-valued results) to value.
    curves : dict of str to torch.Tensor
        Metric name to its mean perturbation curve (CPU).
    """

    scalars: dict = field(default_factory=dict)
    curves: dict = field(default_factory=dict)


class MetricSet:
    """Per-explainer copies of the metrics, evaluated on one set of attributions.

    Parameters
    ----------
    metrics : dict of str to Metric
        Prototypes; each is cloned onto ``device``.
    device : torch.device
        Where the metrics compute.
    conservation : bool
        Also compute :class:`~lrp_lightning.metrics.Conservation` (for LRP explainers).
    """

    def __init__(self, metrics: Mapping[str, Metric], device: torch.device, conservation: bool) -> None:
        self.metrics = {name: _local_copy(metric, device) for name, metric in metrics.items()}
        if conservation and CONSERVATION not in self.metrics:
            self.metrics[CONSERVATION] = _local_copy(Conservation(), device)
        self.arguments = {name: update_arguments(metric) for name, metric in self.metrics.items()}

    def needed(self) -> set:
        """Every argument name some metric's ``update`` takes.

        Returns
        -------
        set of str
        """
        return {name for names in self.arguments.values() for name in names}

    def evaluate(self, arguments: Mapping[str, Any]) -> MetricResults:
        """Reset, update once and compute every metric.

        Parameters
        ----------
        arguments : mapping
            Values for the names in :data:`METRIC_ARGUMENTS` (``mask`` and ``attention_mask`` may be absent; the metric's default applies).

        Returns
        -------
        MetricResults
            Scalars and curves.
        """
        results = MetricResults()
        with torch.no_grad():
            for name, metric in self.metrics.items():
                metric.reset()
                metric.update(**{argument: arguments[argument] for argument in self.arguments[name] if argument in arguments})
                _collect(name, metric.compute(), results)
                metric.reset()
        return results


def _collect(name: str, value: Any, results: MetricResults) -> None:
    if isinstance(value, Mapping):
        scalars = {key: item for key, item in value.items() if torch.as_tensor(item).numel() == 1}
        for key, item in scalars.items():
            results.scalars[name if len(scalars) == 1 else f"{name}_{key}"] = float(item)
        if "curve" in value:
            results.curves[name] = torch.as_tensor(value["curve"]).detach().float().cpu()
    else:
        results.scalars[name] = float(value)
