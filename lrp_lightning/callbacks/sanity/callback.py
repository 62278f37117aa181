"""``SanityCheckCallback``: is the explanation method trustworthy for this model at all?"""
from __future__ import annotations

import warnings
from typing import Optional

import torch
from lightning.pytorch import LightningModule, Trainer

from lrp_lightning._arguments import boolean
from lrp_lightning.callbacks.common import (
    FixedSamplesCheckpoint,
    SampleArg,
    explained_submodule,
    log_scalars,
    positive_int,
    user_samples,
    validation_samples,
)
from lrp_lightning.auto_canonizers import CanonizerArg, check_canonizers
from lrp_lightning.callbacks.explainers import Bound, CompositeArg, build_explainer, parse_explainers
from lrp_lightning.callbacks.explanation import model_outputs
from lrp_lightning.callbacks.figures import line_figure
from lrp_lightning.callbacks.sanity.randomisation import LAYER_MODES, RandomisationResult, randomisation_tests
from lrp_lightning.callbacks.samples import BatchToInput
from lrp_lightning.metrics.similarity import SIMILARITIES
from lrp_lightning.callbacks.schedule import ScheduledCallback
from lrp_lightning.callbacks.sinks import sinks_for
from lrp_lightning.callbacks.targets import TargetSpec, check_target_spec, resolve_targets
from lrp_lightning.metrics import EfficientMPRT, SmoothMPRT


class SanityCheckCallback(FixedSamplesCheckpoint, ScheduledCallback):
    """Model-parameter randomisation and random-logit tests of the explainers, during training.

    On a deep copy of the explained module (the training model is never touched), on its device:
    the layers with parameters are re-initialised from the output backwards, one more at a time
    (``layers="cascade"``, Adebayo et al. 2018) or one at a time (``"independent"``), and the same
    samples are explained for the same targets after each step; the similarity of each explanation
    to the original one — Spearman rank correlation of ``|R|``, SSIM of the heatmaps, IoU of the top
    10 % features by ``|R|`` (:mod:`lrp_lightning.metrics.similarity`) — is averaged over the
    samples. The random-logit test (Sixt et al. 2020) compares the explanation of a random other
    class with the target's. A trustworthy explainer ends at low similarity after full
    randomisation and differs between classes; one that ignores the model stays near 1.

    Logged per explainer ``<name>``: ``sanity/<name>/mprt_<similarity>`` (after the last
    randomisation step), ``sanity/<name>/random_logit_<similarity>``,
    ``sanity/<name>/smprt_last`` and ``sanity/<name>/smprt_average`` (Spearman similarity of the
    noise-averaged explanations after full randomisation, and its mean over the steps; Hedström et
    al. 2023) and ``sanity/<name>/emprt`` (relative complexity rise, higher is better) — through
    ``pl_module.log`` at validation epoch end, straight to the loggers at the end of training — and
    on global rank zero the figure ``sanity/<name>/mprt`` (similarity against randomised layers).
    Images go to TensorBoard or, for other loggers, PNG files as with ``AttributionCallback``. The
    results of the last run are kept in :attr:`results`. Parameters, buffers, flags, hooks and the
    global RNGs of the user's model are left exactly as they were.

    Parameters
    ----------
    composite : str, Composite, list of them, or dict of display name to them
        The explainers, as for :class:`~lrp_lightning.callbacks.AttributionCallback`.
    every_n_epochs : int, optional
        Also run at the end of every n-th epoch's validation; None: only at the end of training.
    at_fit_end : bool
        Run once when training ends.
    layers : {"cascade", "independent"}
        How the layers are randomised.
    num_samples : int
        Validation samples explained (the first ones of the first validation dataloader).
    target : str, int or callable
        ``"label"``, ``"prediction"`` (of the original model), a class index, or a callable.
    samples : tensor or tuple, optional
        ``x``, ``(x, y)`` or ``(x, y, mask)`` instead of validation samples.
    batch_to_input : callable, optional
        Maps a validation batch to ``x``, ``(x, y)`` or ``(x, y, mask)``.
    module : str, optional
        Dotted name of the submodule to explain.
    low, high : float, sequence of float or tensor, optional
        Box-rule bounds (default: per-channel min and max of the samples).
    canonizers : "auto", None or list of Canonizer
        Canonizers of composites built by name.
    seed : int
        Seed of the re-initialisations and the random classes.
    log_images : bool
        Log the similarity-curve figures.
    smprt_samples : int
        Noisy copies per explanation of the smooth MPRT (:class:`~lrp_lightning.metrics.SmoothMPRT`,
        noise 0.1 of each sample's range, layers in this callback's order); 0 skips it.
    emprt : bool
        Also run the efficient MPRT (:class:`~lrp_lightning.metrics.EfficientMPRT`: relative rise of
        the explanation's histogram entropy after randomising every layer).

    Raises
    ------
    KeyError
        An unknown composite name (the message lists the known names).
    ValueError, TypeError
        Invalid arguments; at fit start, samples that do not fit the model or a model with fewer
        than two outputs.
    """

    def __init__(
        self,
        composite: CompositeArg = "epsilon_gamma_box",
        *,
        every_n_epochs: Optional[int] = None,
        at_fit_end: bool = True,
        layers: str = "cascade",
        num_samples: int = 8,
        target: TargetSpec = "label",
        samples: SampleArg = None,
        batch_to_input: Optional[BatchToInput] = None,
        module: Optional[str] = None,
        low: Bound = None,
        high: Bound = None,
        canonizers: CanonizerArg = "auto",
        seed: int = 0,
        log_images: bool = True,
        smprt_samples: int = 8,
        emprt: bool = True,
    ) -> None:
        self.specs = parse_explainers(composite)
        super().__init__(every_n_epochs, at_fit_end)
        if layers not in LAYER_MODES:
            raise ValueError(f"layers must be one of {LAYER_MODES}, got {layers!r}")
        self.layers = layers
        self.num_samples = positive_int("num_samples", num_samples)
        check_target_spec(target)
        self.target = target
        self.samples = user_samples(samples)
        self.batch_to_input = batch_to_input
        self.module = module
        self.low, self.high = low, high
        self.canonizers = check_canonizers(canonizers)
        self.seed = seed
        self.log_images = log_images
        self.smprt_samples = 0 if smprt_samples == 0 else positive_int("smprt_samples", smprt_samples)
        self.emprt = boolean("emprt", emprt)
        self.results: dict[str, RandomisationResult] = {}
        self._explainers: list = []

    @property
    def state_key(self) -> str:
        """Checkpoint key: the class name plus the explainers' names."""
        return self._generate_state_key(explainers=[name for name, _ in self.specs])

    def prepare(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Take the samples and check them and the explainers against the model."""
        model = explained_submodule(pl_module, self.module)
        if self.samples is None:
            self.samples = validation_samples(trainer, pl_module, self.num_samples, self.batch_to_input, type(self).__name__)
        self.samples.require_single_input(type(self).__name__)
        outputs = model_outputs(model, self.samples, pl_module.device)
        labels = None if self.samples.labels is None else self.samples.labels.to(pl_module.device)
        resolve_targets(self.target, outputs, labels)
        if outputs.shape[1] < 2:
            raise ValueError("SanityCheckCallback's random-logit test needs a model with at least two outputs")
        inputs = self.samples.inputs.to(pl_module.device)
        self._explainers = [
            build_explainer(name, spec, model, inputs, self.low, self.high, self.canonizers) for name, spec in self.specs
        ]

    def run(self, trainer: Trainer, pl_module: LightningModule, in_loop: bool) -> None:
        """Run the analysis now and log it (see the class docstring)."""
        if not self._explainers:
            return
        try:
            self.results = randomisation_tests(
                explained_submodule(pl_module, self.module), self.samples, self.target, self._explainers,
                pl_module.device, self.layers, self.seed,
            )
        except Exception as error:  # a failure must not stop training
            warnings.warn(f"SanityCheckCallback skipped epoch {trainer.current_epoch}: {type(error).__name__}: {error}",
                          RuntimeWarning)
            return
        scalars = {}
        for name, result in self.results.items():
            for similarity in SIMILARITIES:
                scalars[f"sanity/{name}/mprt_{similarity}"] = result.mprt[similarity][-1]
                scalars[f"sanity/{name}/random_logit_{similarity}"] = result.random_logit[similarity]
        try:
            scalars.update(self._revisited(explained_submodule(pl_module, self.module), pl_module))
        except Exception as error:  # a failure must not stop training
            warnings.warn(f"SanityCheckCallback skipped sMPRT/eMPRT: {type(error).__name__}: {error}", RuntimeWarning)
        log_scalars(trainer, pl_module, scalars, in_loop)
        if trainer.is_global_zero and self.log_images:
            try:
                self._write(trainer)
            except Exception as error:  # a logger failure must not stop training
                warnings.warn(f"SanityCheckCallback could not write its figures: {type(error).__name__}: {error}",
                              RuntimeWarning)

    def _revisited(self, model: torch.nn.Module, pl_module: LightningModule) -> dict[str, float]:
        """sMPRT and eMPRT (Hedström et al. 2023) of every explainer, as scalars to log."""
        inputs = self.samples.inputs.to(pl_module.device)
        labels = None if self.samples.labels is None else self.samples.labels.to(pl_module.device)
        targets = resolve_targets(self.target, model_outputs(model, self.samples, pl_module.device), labels)
        scalars = {}
        for explainer in self._explainers:
            def explain(subject, batch, target, explainer=explainer):
                return explainer.attributor(subject)(batch, target)[1]

            if self.smprt_samples:
                smooth = SmoothMPRT(explainer=explain, nr_samples=self.smprt_samples, seed=self.seed, noise_seed=self.seed,
                                    layer_order="top_down" if self.layers == "cascade" else "independent")
                smooth.update(model, inputs, targets)
                result = smooth.compute()
                scalars[f"sanity/{explainer.name}/smprt_last"] = float(result["last"])
                scalars[f"sanity/{explainer.name}/smprt_average"] = float(result["average"])
            if self.emprt:
                efficient = EfficientMPRT(explainer=explain, seed=self.seed)
                efficient.update(model, inputs, targets)
                scalars[f"sanity/{explainer.name}/emprt"] = float(efficient.compute())
        return scalars

    def _write(self, trainer: Trainer) -> None:
        sinks = sinks_for(trainer)
        for name, result in self.results.items():
            mode = "cascading" if self.layers == "cascade" else "independent"
            figure = line_figure(
                f"{name}: {mode}\nmodel-parameter randomisation",
                result.mprt,
                "randomised layers (output first)",
                "similarity to the original explanation",
                ["original"] + [f"+ {layer}" if self.layers == "cascade" else layer for layer in result.layers],
                ylim=(-0.2, 1.05),
            )
            for sink in sinks:
                sink.figure(f"sanity/{name}/mprt", figure, trainer.global_step, trainer.current_epoch)
