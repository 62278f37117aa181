"""The randomisation tests of explanations, on a deep copy of the model (the original is never touched).

Model-parameter randomisation (MPRT, Adebayo et al. 2018): the layers with parameters, from the
output backwards (reverse registration order), are re-initialised — ``"cascade"``: one more at a
time, cumulatively; ``"independent"``: each on its own, the others original — and the same samples
are explained for the same targets after each step. An explanation that reflects the model becomes
dissimilar to the original one; one that does not (e.g. an edge detector) stays similar.
Random-logit test (Sixt et al. 2020): the original model explains a random other class; the
explanation should differ from the one of the target class.

Re-initialisation calls each layer's ``reset_parameters`` (its own initialisation scheme) with
torch's RNG seeded per step inside :func:`~lrp_lightning.attribution.preserved_random_state`, so the
result is reproducible and the global RNG is left as it was; a layer without ``reset_parameters``
gets standard-normal parameters scaled by each tensor's own standard deviation.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch
from torch import nn

from lrp_lightning.model_state import preserved_random_state
from lrp_lightning.parameter_randomisation import parameter_layers, randomise_layer  # noqa: F401 (their old path)
from lrp_lightning.callbacks.explainers import Explainer
from lrp_lightning.callbacks.explanation import explain, model_outputs
from lrp_lightning.callbacks.metric_set import MetricSet
from lrp_lightning.callbacks.samples import Samples
from lrp_lightning.metrics.similarity import SIMILARITIES
from lrp_lightning.callbacks.targets import TargetSpec, resolve_targets

LAYER_MODES = ("cascade", "independent")


@dataclass
class RandomisationResult:
    """The randomisation tests of one explainer.

    Attributes
    ----------
    layers : list of str
        Names of the randomised layers, in the order they were randomised (output first).
    mprt : dict of str to list of float
        Similarity name to its mean similarity to the original explanation: index 0 the original
        model (1.0), index i after randomising ``layers[:i]`` (cascade) or ``layers[i - 1]``.
    random_logit : dict of str to float
        Similarity name to the mean similarity of the explanation of a random other class.
    """

    layers: list = field(default_factory=list)
    mprt: dict = field(default_factory=dict)
    random_logit: dict = field(default_factory=dict)


def random_other_classes(targets: torch.Tensor, num_classes: int, seed: int) -> torch.Tensor:
    """For each target a uniformly drawn different class, from a private generator.

    Parameters
    ----------
    targets : torch.Tensor
        Class indices (N,).
    num_classes : int
        At least 2.
    seed : int
        Seed of the generator.

    Returns
    -------
    torch.Tensor
        Indices (N,) on ``targets``' device, none equal to its target.
    """
    generator = torch.Generator().manual_seed(seed)
    shift = torch.randint(1, num_classes, targets.shape, generator=generator).to(targets.device)
    return (targets + shift) % num_classes


class _Explaining:
    """Explains fixed samples for fixed targets with several explainers, relevance only."""

    def __init__(self, samples: Samples, explainers: Sequence[Explainer], device: torch.device) -> None:
        self.samples = samples
        self.explainers = list(explainers)
        self.metric_sets = [MetricSet({}, device, False) for _ in self.explainers]
        self.device = device

    def __call__(self, model: nn.Module, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        reports = explain(
            model, self.samples, lambda outputs, labels: targets, self.explainers, self.metric_sets, self.device,
            None, lambda name: False,
        )
        for report in reports:
            if report.error is not None:
                raise RuntimeError(f"{report.name} failed: {type(report.error).__name__}: {report.error}") from report.error
        return {report.name: report.relevance for report in reports}


def _similarities(reference: torch.Tensor, other: torch.Tensor) -> dict[str, float]:
    return {name: float(similarity(reference, other).mean()) for name, similarity in SIMILARITIES.items()}


def randomisation_tests(
    model: nn.Module,
    samples: Samples,
    target: TargetSpec,
    explainers: Sequence[Explainer],
    device: torch.device,
    layers: str = "cascade",
    seed: int = 0,
) -> dict[str, RandomisationResult]:
    """Run MPRT and the random-logit test on a deep copy of ``model``.

    Parameters
    ----------
    model : torch.nn.Module
        The explained model; never modified.
    samples : Samples
        Samples to explain.
    target : str, int or callable
        Which class to explain (resolved once, on the original model, and kept for every step).
    explainers : sequence of Explainer
        What to explain with.
    device : torch.device
        Where to compute.
    layers : {"cascade", "independent"}
        Randomisation mode.
    seed : int
        Seed of the re-initialisations and of the random classes.

    Returns
    -------
    dict of str to RandomisationResult
        Per explainer display name.

    Raises
    ------
    ValueError
        For an unknown mode or a model with fewer than two outputs (the random-logit test).
    RuntimeError
        If an explainer fails.
    """
    if layers not in LAYER_MODES:
        raise ValueError(f"layers must be one of {LAYER_MODES}, got {layers!r}")
    with preserved_random_state():
        subject = copy.deepcopy(model)
    outputs = model_outputs(subject, samples, device)
    labels = None if samples.labels is None else samples.labels.to(device)
    targets = resolve_targets(target, outputs, labels)
    if outputs.shape[1] < 2:
        raise ValueError("the random-logit test needs a model with at least two outputs")
    explaining = _Explaining(samples, explainers, device)
    original = explaining(subject, targets)
    others = explaining(subject, random_other_classes(targets, outputs.shape[1], seed))
    order = parameter_layers(subject)
    results = {
        name: RandomisationResult(
            layers=[layer for layer, _ in order],
            mprt={similarity: [1.0] for similarity in SIMILARITIES},
            random_logit=_similarities(original[name], others[name]),
        )
        for name in original
    }
    pristine: Optional[dict] = None
    for step, (_, module) in enumerate(order, start=1):
        if layers == "independent":
            if pristine is not None:
                pristine[0].load_state_dict(pristine[1])
            pristine = (module, copy.deepcopy(module.state_dict()))
        randomise_layer(module, seed + step)
        randomised = explaining(subject, targets)
        for name, relevance in randomised.items():
            for similarity, value in _similarities(original[name], relevance).items():
                results[name].mprt[similarity].append(value)
    return results
