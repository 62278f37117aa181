"""``ConceptCallback``: which concepts each class relies on, epoch by epoch (Concept Relevance Propagation)."""
from __future__ import annotations

import warnings
from typing import Any, Dict, Mapping, Optional, Sequence

import torch
from lightning.pytorch import LightningModule, Trainer
from torch.utils.data import TensorDataset

from lrp_lightning.callbacks.common import (
    class_indices,
    class_name_map,
    FixedSamplesCheckpoint,
    SampleArg,
    explained_submodule,
    log_scalars,
    positive_int,
    user_samples,
    validation_samples,
)
from lrp_lightning.callbacks.concepts.drift import cosine_drift, top_concepts, top_overlap
from lrp_lightning.callbacks.concepts.figure import concept_figure
from lrp_lightning.callbacks.concepts.search import ConceptSummary, search_concepts
from lrp_lightning.callbacks.explainers import Bound, CanonizerArg, ExplainerSpec, build_explainer, check_canonizers, parse_explainers
from lrp_lightning.callbacks.hygiene import attribution_mode, preserved_state
from lrp_lightning.callbacks.samples import BatchToInput, collect_samples, first_dataloader
from lrp_lightning.callbacks.schedule import ScheduledCallback
from lrp_lightning.callbacks.sinks import sinks_for
from lrp_lightning.cmap import get_cmap
from lrp_lightning.concepts.attribution import CondAttribution
from lrp_lightning.concepts.conditions import OUTPUT_NAME
from lrp_lightning.concepts.patches import reference_patches
from lrp_lightning.concepts.relmax import concept_map
from lrp_lightning import image


class ConceptCallback(FixedSamplesCheckpoint, ScheduledCallback):
    """Log per class the concepts (channels, heads) its decisions rely on, their reference samples and their drift.

    At the end of every ``every_n_epochs``-th validation epoch, each reference sample is explained for its label
    under ``composite`` (batched, on the LightningModule's device, eval mode and float32, the model and every RNG
    restored afterwards, so training with and without the callback ends in bitwise the same weights). For layer
    ``l`` and class ``k`` the concept share is the mean relative concept relevance over the class's reference
    samples, ``S_k[c] = mean_n R_{l,c}(n) / (sum_j |R_{l,j}(n)| + 1e-10)``; the top ``top_k_concepts`` concepts
    (and the pinned ``concepts``) are logged as scalars ``concepts/<class>/<layer>/<concept>`` through
    ``pl_module.log``. From the second logged epoch on, the drift of the class's shares since the previous one
    is logged as ``concepts/<class>/<layer>/drift`` (``1 - cos(S_prev, S_now)``, exactly 0 when nothing
    changed) and ``concepts/<class>/<layer>/top_k_overlap`` (the share of this epoch's top concepts that were
    top concepts before). On global rank zero a figure ``concepts/<class>/<layer>`` goes to every logger's
    sink: one row per top concept with its RelMax reference patches (the reference samples where the concept
    carries the most relevance, cropped where its conditional heatmap is) and its conditional heatmaps on the
    fixed samples of the class.

    Under DDP each rank searches every ``world_size``-th reference sample and the parts are gathered (the same
    collective calls on every rank); figures are drawn once.

    Parameters
    ----------
    composite : str or Composite
        An LRP composite (registry name or instance).
    layers : sequence of str or dict of str to concept
        Module names (``"<module>:input"`` for a module's first input) whose concepts are tracked, with their
        concepts (default: channels, :class:`~lrp_lightning.concepts.ChannelConcept`).
    classes : sequence of int, optional
        The classes logged; None: every class in the reference data.
    class_names : sequence or mapping of str, optional
        Display names of the classes in the tags (index -> name); default the index.
    top_k_concepts : int
        Concepts logged (and drawn) per class and layer.
    reference : dataset of (input, label), optional
        The reference data (a map-style dataset); None: the first ``reference_size`` validation samples.
    reference_size : int
        Validation samples taken as reference data when ``reference`` is None.
    references_per_concept : int
        Reference patches drawn per concept.
    concepts : dict of str to sequence of int, optional
        Concepts always logged, per layer, besides the top ones.
    num_samples : int
        Fixed validation samples for the conditional heatmaps (per class, those with its label are shown).
    samples : tensor or tuple, optional
        Fixed samples ``(x, y)`` instead of validation ones.
    every_n_epochs : int, optional
        Period in validation epochs; None: only at the end of training (``at_fit_end``).
    at_fit_end : bool
        Also run once when training ends (scalars straight to the loggers).
    batch_size : int
        Samples per backward pass.
    batch_to_input : callable, optional
        Maps a validation batch to ``(x, y)``.
    module : str, optional
        Dotted name of the submodule to explain.
    low, high : float, sequence or tensor, optional
        Box-rule bounds (default: per-channel min and max of the reference data).
    canonizers : "auto", None or list of Canonizer
        Canonizers of composites built by name.
    patch_size : int, optional
        Side of the reference patches (default: half the input's shorter side).
    log_images : bool
        Draw the figures.
    cmap : str
        Colour map of the heatmaps.

    Raises
    ------
    KeyError
        An unknown composite name (the message lists the known ones).
    ValueError, TypeError, IndexError
        Invalid arguments; at fit start, a layer the model does not have (the message lists close names), a
        pinned concept index out of a layer's range, or data without labels.
    """

    def __init__(
        self,
        composite: ExplainerSpec = "epsilon_plus",
        *,
        layers: Any,
        classes: Optional[Sequence[int]] = None,
        class_names: Optional[Sequence[str] | Mapping[int, str]] = None,
        top_k_concepts: int = 8,
        reference: Any = None,
        reference_size: int = 64,
        references_per_concept: int = 4,
        concepts: Optional[Mapping[str, Sequence[int]]] = None,
        num_samples: int = 4,
        samples: SampleArg = None,
        every_n_epochs: Optional[int] = 1,
        at_fit_end: bool = False,
        batch_size: int = 32,
        batch_to_input: Optional[BatchToInput] = None,
        module: Optional[str] = None,
        low: Bound = None,
        high: Bound = None,
        canonizers: CanonizerArg = "auto",
        patch_size: Optional[int] = None,
        log_images: bool = True,
        cmap: str = "coldnhot",
    ) -> None:
        specs = parse_explainers(composite)
        if len(specs) != 1:
            raise ValueError("ConceptCallback takes one composite; add one callback per composite")
        self.name, self.spec = specs[0]
        super().__init__(every_n_epochs, at_fit_end)
        self.layers = concept_map(layers)
        if not self.layers:
            raise ValueError("layers must name at least one layer, e.g. layers=['features.3']")
        self.classes = class_indices(classes)
        self.class_names = class_name_map(class_names)
        self.top_k_concepts = positive_int("top_k_concepts", top_k_concepts)
        self.reference = reference
        self.reference_size = positive_int("reference_size", reference_size)
        self.references_per_concept = positive_int("references_per_concept", references_per_concept)
        self.pinned = {str(layer): [int(c) for c in ids] for layer, ids in (concepts or {}).items()}
        unknown = sorted(set(self.pinned) - set(self.layers))
        if unknown:
            raise ValueError(f"concepts names layers {unknown} that are not in layers={sorted(self.layers)}; add them to layers")
        self.num_samples = positive_int("num_samples", num_samples)
        self.samples = user_samples(samples)
        self.batch_size = positive_int("batch_size", batch_size)
        self.batch_to_input = batch_to_input
        self.module = module
        self.low, self.high = low, high
        self.canonizers = check_canonizers(canonizers)
        self.patch_size = None if patch_size is None else positive_int("patch_size", patch_size)
        self.log_images = log_images
        get_cmap(cmap)
        self.cmap = cmap
        self.summary: Optional[ConceptSummary] = None
        self.previous: Dict[str, torch.Tensor] = {}
        self._composite = None
        self._reference_data = None
        self._concepts: Dict[str, int] = {}
        self._classes = 0

    @property
    def state_key(self) -> str:
        """Checkpoint key: the class name plus the composite's name."""
        return self._generate_state_key(composite=self.name)

    def _class_name(self, label: int) -> str:
        return self.class_names.get(label, str(label))

    def prepare(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Check the layers and concepts against the model, take the samples and the reference data, build the composite."""
        model = explained_submodule(pl_module, self.module)
        if self.samples is None:
            self.samples = validation_samples(trainer, pl_module, self.num_samples, self.batch_to_input, "ConceptCallback")
        self.samples.require_single_input("ConceptCallback")
        if self.samples.labels is None:
            raise ValueError("ConceptCallback needs labelled samples (x, y); pass samples=(x, y) or batch_to_input")
        if self.reference is None:
            loader = first_dataloader(trainer, pl_module, "val")
            if loader is None:
                raise ValueError("ConceptCallback found no validation dataloader for its reference data; pass reference=")
            taken = collect_samples(loader, self.reference_size, self.batch_to_input)
            if taken.labels is None:
                raise ValueError("ConceptCallback needs labelled reference data; pass reference= or batch_to_input")
            self._reference_data = TensorDataset(taken.inputs, taken.labels)
        else:
            self._reference_data = self.reference
        first, _ = self._reference_data[0]
        inputs = torch.stack([torch.as_tensor(self._reference_data[i][0]) for i in range(min(len(self._reference_data), 64))])
        explainer = build_explainer(self.name, self.spec, model, inputs.to(pl_module.device), self.low, self.high, self.canonizers)
        if explainer.composite is None:
            raise ValueError(f"ConceptCallback needs an LRP composite; {self.name!r} is an attributor without layer relevance")
        self._composite = explainer.composite
        with preserved_state(model), attribution_mode(pl_module.device):
            probe = CondAttribution(model)(torch.as_tensor(first)[None].to(pl_module.device), {OUTPUT_NAME: [0]},
                                           self._composite, record_layer=list(self.layers))
        self._classes = probe.prediction.shape[1]
        self._concepts = {name: concept.count(probe.relevances[name]) for name, concept in self.layers.items()}
        for layer, ids in self.pinned.items():
            bad = [c for c in ids if not 0 <= c < self._concepts[layer]]
            if bad:
                raise IndexError(f"concepts[{layer!r}] holds {bad}, out of range: layer {layer!r} has "
                                 f"{self._concepts[layer]} concepts (0 .. {self._concepts[layer] - 1})")
        bad_classes = [c for c in self.classes or [] if c >= self._classes]
        if bad_classes:
            raise IndexError(f"classes {bad_classes} out of range: the model has {self._classes} outputs")

    def run(self, trainer: Trainer, pl_module: LightningModule, in_loop: bool) -> None:
        """Search the reference data, log the concept shares and drift, and draw the figures (see the class docstring)."""
        if self._composite is None:
            return
        model = explained_submodule(pl_module, self.module)
        with preserved_state(model), attribution_mode(pl_module.device):
            summary = search_concepts(trainer, pl_module, model, self._composite, self._reference_data, self.layers,
                                      self._concepts, self._classes, self.references_per_concept, self.batch_size)
        self.summary = summary
        classes = self.classes if self.classes is not None else [k for k in range(self._classes) if summary.counts[k] > 0]
        scalars, tops = {}, {}
        for label in classes:
            for layer in self.layers:
                shares = summary.shares[layer][label]
                top = top_concepts(shares, self.top_k_concepts)
                tops[(label, layer)] = top
                prefix = f"concepts/{self._class_name(label)}/{layer}"
                for concept in dict.fromkeys(top.tolist() + self.pinned.get(layer, [])):
                    scalars[f"{prefix}/{concept}"] = float(shares[concept])
                key = f"{label}/{layer}"
                if key in self.previous:
                    previous = self.previous[key]
                    scalars[f"{prefix}/drift"] = cosine_drift(previous, shares)
                    scalars[f"{prefix}/top_k_overlap"] = top_overlap(top_concepts(previous, self.top_k_concepts), top)
                self.previous[key] = shares.clone()
        log_scalars(trainer, pl_module, scalars, in_loop)
        if trainer.is_global_zero and self.log_images:
            try:
                with preserved_state(model), attribution_mode(pl_module.device):
                    self._draw(trainer, pl_module, model, summary, tops)
            except Exception as error:  # a figure must not stop training
                warnings.warn(f"ConceptCallback could not draw its figures: {type(error).__name__}: {error}", RuntimeWarning)

    def _draw(self, trainer: Trainer, pl_module: LightningModule, model: torch.nn.Module, summary: ConceptSummary,
              tops: dict) -> None:
        """The figure of each class and layer, to every sink."""
        if not image.is_image_batch(self.samples.inputs[:1]):
            return
        patches = {}
        for layer in self.layers:
            wanted = sorted({int(c) for (_, name), top in tops.items() if name == layer for c in top})
            if wanted and summary.references[layer].indices.shape[0]:
                patches[layer] = reference_patches(model, self._composite, self._reference_data, summary.references[layer],
                                                   layer, wanted, mask_map=self.layers[layer], patch_size=self.patch_size,
                                                   batch_size=self.batch_size, device=pl_module.device)
        attribution = CondAttribution(model)
        sinks = sinks_for(trainer)
        step, epoch = trainer.global_step, trainer.current_epoch
        for (label, layer), top in tops.items():
            rows = self.samples.labels == label
            inputs = self.samples.inputs[rows] if rows.any() else self.samples.inputs
            concepts = top.tolist()
            # every sample under every concept, paired row by row (sample-major)
            result = attribution(inputs.repeat_interleave(len(concepts), dim=0).to(pl_module.device),
                                 [{OUTPUT_NAME: [label], layer: [c]} for _ in range(inputs.shape[0]) for c in concepts],
                                 self._composite, mask_map=self.layers[layer])
            heatmaps = result.heatmap.reshape(inputs.shape[0], len(concepts), *result.heatmap.shape[1:]).transpose(0, 1)
            shares = [float(summary.shares[layer][label][c]) for c in concepts]
            figure = concept_figure(
                f"class {self._class_name(label)}, {layer} ({self.name}): reference patches | conditional heatmaps",
                concepts, shares, [[patch.image for patch in patches.get(layer, {}).get(c, [])] for c in concepts],
                heatmaps.detach().cpu(), self.cmap,
            )
            for sink in sinks:
                sink.figure(f"concepts/{self._class_name(label)}/{layer}", figure, step, epoch)

    def state_dict(self) -> dict[str, Any]:
        """The fixed samples and the concept shares of the last logged epoch (the drift's reference).

        Returns
        -------
        dict
            ``{"samples", "previous"}``.
        """
        state = super().state_dict()
        state["previous"] = {key: value.clone() for key, value in self.previous.items()}
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved.

        Parameters
        ----------
        state_dict : dict
            As returned by :meth:`state_dict`.
        """
        super().load_state_dict(state_dict)
        self.previous = {key: value.clone() for key, value in state_dict.get("previous", {}).items()}

