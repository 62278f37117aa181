"""``AttributionCallback``: explanations and their quality in the logs at validation epoch end."""
from __future__ import annotations

import warnings
from typing import Any, Mapping, Optional, Sequence, Union

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn
from torchmetrics import Metric

from lrp_lightning.callbacks.background import BackgroundWriter
from lrp_lightning.callbacks.dashboard import CurveFigure, custom_scalars_layout, metric_tag
from lrp_lightning.callbacks.explainers import (
    Bound,
    CanonizerArg,
    CompositeArg,
    Explainer,
    build_explainer,
    check_canonizers,
    parse_explainers,
)
from lrp_lightning.callbacks.explanation import ExplainerReport, explain, model_outputs
from lrp_lightning.callbacks.metric_set import MetricSet, default_metrics, parse_metrics
from lrp_lightning.callbacks.samples import BatchToInput, Samples, collect_samples, first_dataloader
from lrp_lightning.callbacks.sinks import sinks_for
from lrp_lightning.callbacks.targets import TargetSpec, check_target_spec, resolve_targets
from lrp_lightning.cmap import get_cmap

SampleArg = Union[None, torch.Tensor, Sequence[Optional[torch.Tensor]]]
# samples in the unlogged trial pass at fit start (enough to surface errors, cheap)
TRIAL_SAMPLES = 2


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def _user_samples(samples: SampleArg) -> Optional[Samples]:
    if samples is None:
        return None
    if isinstance(samples, torch.Tensor):
        return Samples(samples)
    parts = list(samples)
    if not 1 <= len(parts) <= 3:
        raise ValueError("samples must be a tensor x or a tuple (x, y) or (x, y, mask)")
    return Samples(*parts)


class AttributionCallback(Callback):
    """Explain fixed validation samples at validation epoch end and log heatmaps and metrics.

    At the end of validation every ``every_n_epochs`` epochs (never during the sanity check unless
    asked; also in ``trainer.validate``, and in ``trainer.test`` with ``on_test``) each explainer —
    an LRP composite or an attributor — explains the same samples on the LightningModule's device,
    in eval mode and float32 with autocast off, on the bare LightningModule (or ``module`` inside
    it). Parameters, buffers, ``.grad``, ``requires_grad`` and ``training`` flags, hooks and the
    global RNGs are restored afterwards, also when the attribution raised; a failure becomes a
    warning and training goes on.

    Logged, per explainer ``<name>``: every metric through ``pl_module.log`` as
    ``attribution/<name>/<metric>`` (monitorable by ``ModelCheckpoint``/``EarlyStopping``; LRP
    composites also get ``conservation``); on global rank zero the image grid (input | heatmap |
    overlay per sample) ``attribution/<name>/grid`` — heat strips for (N, D) and (N, T, D) inputs —,
    the rule map as text ``attribution/<name>/rule_map`` (once), one figure per perturbation
    metric comparing the explainers' curves ``attribution/curves/<metric>``, and a TensorBoard
    custom-scalars dashboard (one chart per metric, one line per explainer). ``TensorBoardLogger``
    gets all of it, other loggers with a ``log_dir`` (e.g. ``CSVLogger``) PNG and Markdown files
    under ``<log_dir>/attribution/``; without such a logger the files go under
    ``trainer.default_root_dir``. Figures are rendered, images encoded and everything written on
    a background thread (``write_in_background``), so training goes on meanwhile; the callback
    waits for it before the next explained epoch and before the loggers are finalized.

    Parameters
    ----------
    composite : str, Composite, list of them, or dict of display name to them
        A registry name — an LRP composite (``"epsilon_gamma_box"``, ``"epsilon_plus_flat"``, ...) or
        an attributor (``"gradient"``, ``"smoothgrad"``, ``"integrated_gradients"``,
        ``"occlusion"``) — or a Composite instance (used with gradient attribution as given);
        several are logged side by side. The callback warns about uncovered layers once, instead of
        the composite on every call.
    num_samples : int
        How many samples of the first validation dataloader to explain.
    every_n_epochs : int
        Explain at the end of every n-th epoch's validation.
    target : str, int or callable
        ``"label"``, ``"prediction"``, a class index, or ``(outputs, labels) -> indices``.
    metrics : dict of str to Metric, list of Metric, or None
        Explanation-quality metrics (any ``torchmetrics.Metric`` whose ``update`` takes some of
        ``model, inputs, attributions, target, input_relevance, output_relevance, mask``). None: a
        cheap default set — Sparseness, Complexity and a 8-step region-perturbation AOPC (MoRF).
    samples : tensor or tuple, optional
        ``x``, ``(x, y)`` or ``(x, y, mask)`` to explain instead of validation samples.
    batch_to_input : callable, optional
        Maps a validation batch to ``x``, ``(x, y)`` or ``(x, y, mask)``; by default tuples
        ``(x, y, ...)``, dicts (keys ``x``/``input``/``image``..., ``y``/``label``/``target``...,
        ``mask``) and bare tensors are understood.
    module : str, optional
        Dotted name of the submodule to explain; by default the LightningModule's ``forward``.
    low, high : float, sequence of float or tensor, optional
        Input bounds of the box rule of composites that take them (``epsilon_gamma_box``); by
        default the per-channel min and max of the samples.
    canonizers : "auto", None or list of Canonizer
        Canonizers of composites built by name. ``"auto"``: ResNetCanonizer/VGGCanonizer for
        torchvision ResNets/VGGs, SequentialMergeBatchNorm when a BatchNorm follows a linear layer,
        none otherwise.
    cmap : str
        Colour map of the heatmaps (see :func:`lrp_lightning.cmap.get_cmap`).
    log_images : bool
        Log pictures (grids/strips) and curve figures.
    conservation : bool
        Log the conservation gap of LRP composites (relevance at the input vs at the output).
    on_sanity_check : bool
        Also explain during the sanity check.
    on_test : bool
        Also explain at test epoch end (samples from the first test dataloader if none are held).
    write_in_background : bool
        Render figures, encode images and write them on a worker thread; false does it in the
        callback's hooks.

    Raises
    ------
    KeyError
        An unknown composite name (the message lists the known names).
    ValueError, TypeError
        Other invalid arguments. At fit start (one unlogged explanation pass runs there) invalid
        samples, a target out of range, samples that do not fit the model, and any explainer or
        metric that fails on the samples raise ``ValueError``; later failures only warn.
    """

    def __init__(
        self,
        composite: CompositeArg = "epsilon_gamma_box",
        *,
        num_samples: int = 8,
        every_n_epochs: int = 1,
        target: TargetSpec = "label",
        metrics: Union[None, Mapping[str, Metric], Sequence[Metric]] = None,
        samples: SampleArg = None,
        batch_to_input: Optional[BatchToInput] = None,
        module: Optional[str] = None,
        low: Bound = None,
        high: Bound = None,
        canonizers: CanonizerArg = "auto",
        cmap: str = "coldnhot",
        log_images: bool = True,
        conservation: bool = True,
        on_sanity_check: bool = False,
        on_test: bool = False,
        write_in_background: bool = True,
    ) -> None:
        self.specs = parse_explainers(composite)
        self.num_samples = _positive_int("num_samples", num_samples)
        self.every_n_epochs = _positive_int("every_n_epochs", every_n_epochs)
        check_target_spec(target)
        self.target = target
        self.metrics = parse_metrics(metrics)
        self.samples = _user_samples(samples)
        self.batch_to_input = batch_to_input
        self.module = module
        self.low, self.high = low, high
        self.canonizers = check_canonizers(canonizers)
        get_cmap(cmap)
        self.cmap = cmap
        self.log_images = log_images
        self.conservation = conservation
        self.on_sanity_check = on_sanity_check
        self.on_test = on_test
        self._explainers: list[Explainer] = []
        self._metric_sets: list[MetricSet] = []
        self._rule_maps_logged: set = set()
        self._uncovered_warned: set = set()
        self._layout_written = False
        self._writer = BackgroundWriter(write_in_background)
        self._curve_figures: dict[str, CurveFigure] = {}

    @property
    def state_key(self) -> str:
        """Checkpoint key: the class name plus the explainers' names."""
        return self._generate_state_key(explainers=[name for name, _ in self.specs])

    @property
    def explainer_names(self) -> list[str]:
        """Display names of the explainers, in order (the ``<name>`` in the log tags)."""
        return [name for name, _ in self.specs]

    def explained_module(self, pl_module: LightningModule) -> nn.Module:
        """The module being explained: ``pl_module`` or its submodule named by ``module``.

        Parameters
        ----------
        pl_module : LightningModule
            The bare LightningModule.

        Returns
        -------
        torch.nn.Module

        Raises
        ------
        ValueError
            If ``module`` names no submodule.
        """
        if self.module is None:
            return pl_module
        try:
            return pl_module.get_submodule(self.module)
        except AttributeError as error:
            raise ValueError(f"module={self.module!r} names no submodule of {type(pl_module).__name__}") from error

    def _prepare(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Take the samples, check them against the model, build explainers and metrics, and run
        one unlogged trial pass (on the first samples) so that what cannot work fails now."""
        model = self.explained_module(pl_module)
        if self.samples is None:
            loader = first_dataloader(trainer, stage)
            if loader is None:
                raise ValueError(f"AttributionCallback found no {stage} dataloader; pass samples=...")
            self.samples = collect_samples(loader, self.num_samples, self.batch_to_input)
        device = pl_module.device
        try:
            outputs = model_outputs(model, self.samples, device)
        except Exception as error:
            raise ValueError(
                f"the samples (inputs of shape {tuple(self.samples.inputs.shape)}) do not fit "
                f"{type(model).__name__}: {type(error).__name__}: {error}"
            ) from error
        labels = None if self.samples.labels is None else self.samples.labels.to(device)
        resolve_targets(self.target, outputs, labels)
        inputs = self.samples.inputs.to(device)
        self._explainers = [
            build_explainer(name, spec, model, inputs, self.low, self.high, self.canonizers) for name, spec in self.specs
        ]
        prototypes = self.metrics if self.metrics is not None else default_metrics(inputs)
        self._metric_sets = [
            MetricSet(prototypes, device, self.conservation and explainer.is_lrp) for explainer in self._explainers
        ]
        if self.samples.masks is None and any("mask" in metric_set.needed() for metric_set in self._metric_sets):
            raise ValueError("a metric needs ground-truth masks; give batches with masks or samples=(x, y, mask)")
        for report in self._explain(pl_module, self.samples.head(TRIAL_SAMPLES), with_rule_map=False):
            if report.error is not None:
                raise ValueError(
                    f"AttributionCallback cannot explain the samples with {report.name}: "
                    f"{type(report.error).__name__}: {report.error}"
                ) from report.error

    def _explain(self, pl_module: LightningModule, samples: Samples, with_rule_map: bool) -> list[ExplainerReport]:
        """One explanation pass over ``samples`` with every explainer (see :func:`explain`)."""
        reports = explain(
            self.explained_module(pl_module),
            samples,
            self.target,
            self._explainers,
            self._metric_sets,
            pl_module.device,
            self.cmap if self.log_images else None,
            lambda name: with_rule_map and name not in self._rule_maps_logged,
        )
        self._warn_uncovered(reports)
        return reports

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Take the samples (unless held or restored) and validate everything against the model."""
        self._prepare(trainer, pl_module, "val")
        if trainer.world_size > 1:
            # every rank logs the same values, deliberately without a cross-rank reduction
            warnings.filterwarnings("ignore", message=r"It is recommended to use `self\.log\('attribution/")

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """In ``trainer.validate``: prepare as at fit start."""
        if trainer.state.fn == TrainerFn.VALIDATING:
            self._prepare(trainer, pl_module, "validate")

    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """With ``on_test``: prepare as at fit start (samples from the test data if none are held)."""
        if self.on_test:
            self._prepare(trainer, pl_module, "test")

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Explain, every ``every_n_epochs`` epochs (sanity check only with ``on_sanity_check``)."""
        if trainer.sanity_checking and not self.on_sanity_check:
            return
        fitting = trainer.state.fn == TrainerFn.FITTING
        if fitting and (trainer.current_epoch + 1) % self.every_n_epochs != 0:
            return
        self._run(trainer, pl_module)

    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """With ``on_test``: explain at the end of testing."""
        if self.on_test:
            self._run(trainer, pl_module)

    def _run(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self._explainers:
            return
        try:
            reports = self._explain(pl_module, self.samples, with_rule_map=True)
        except Exception as error:  # a failure must not stop training
            warnings.warn(
                f"AttributionCallback skipped epoch {trainer.current_epoch}: {type(error).__name__}: {error}",
                RuntimeWarning,
            )
            return
        for report in reports:
            if report.error is not None:
                warnings.warn(
                    f"AttributionCallback: {report.name} failed at epoch {trainer.current_epoch}: "
                    f"{type(report.error).__name__}: {report.error}",
                    RuntimeWarning,
                )
        done = [report for report in reports if report.error is None]
        self._log_scalars(pl_module, done)
        if trainer.is_global_zero:
            try:
                self._write(trainer, done)
            except Exception as error:  # a logger failure must not stop training
                warnings.warn(f"AttributionCallback could not write its logs: {type(error).__name__}: {error}", RuntimeWarning)

    def _warn_uncovered(self, reports: Sequence[ExplainerReport]) -> None:
        for report in reports:
            if report.uncovered and report.name not in self._uncovered_warned:
                self._uncovered_warned.add(report.name)
                rank_zero_warn(
                    f"AttributionCallback: no rule of {report.name} covers these layers, their plain gradient "
                    f"is used: {', '.join(report.uncovered)}"
                )

    def _log_scalars(self, pl_module: LightningModule, reports: Sequence[ExplainerReport]) -> None:
        for report in reports:
            for metric, value in report.results.scalars.items():
                pl_module.log(metric_tag(report.name, metric), value, on_step=False, on_epoch=True, sync_dist=False)

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Finish the pending log writes (before Lightning finalizes the loggers)."""
        self._writer.close()

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        """Finish the pending log writes (before Lightning finalizes the loggers)."""
        self._writer.close()

    def _write(self, trainer: Trainer, reports: Sequence[ExplainerReport]) -> None:
        """Hand this epoch's pictures, texts and curves (all on the CPU) to the background writer."""
        sinks = sinks_for(trainer)
        layout = None
        if not self._layout_written:
            metrics = list(dict.fromkeys(metric for report in reports for metric in report.results.scalars))
            layout = custom_scalars_layout(self.explainer_names, metrics)
            self._layout_written = True
        pictured = [report for report in reports if report.picture is not None]
        mapped = [report for report in reports if report.rule_map is not None]
        images = [(f"attribution/{report.name}/grid", report.picture) for report in pictured]
        texts = [(f"attribution/{report.name}/rule_map", report.rule_map) for report in mapped]
        self._rule_maps_logged.update(report.name for report in mapped)
        curves: dict = {}
        if self.log_images:
            for report in reports:
                for metric, curve in report.results.curves.items():
                    curves.setdefault(metric, {})[report.name] = curve.detach().cpu()
        step, epoch = trainer.global_step, trainer.current_epoch

        def write() -> None:
            for sink in sinks:
                if layout is not None:
                    sink.layout(layout)
                for tag, text in texts:
                    sink.text(tag, text, step, epoch)
                for tag, picture in images:
                    sink.image(tag, picture, step, epoch)
            for metric, by_explainer in curves.items():
                if metric not in self._curve_figures:
                    self._curve_figures[metric] = CurveFigure(metric)
                figure = self._curve_figures[metric].render(by_explainer)
                for sink in sinks:
                    sink.image(f"attribution/curves/{metric}", figure, step, epoch)

        self._writer.submit(write)

    def state_dict(self) -> dict[str, Any]:
        """The fixed samples, so that a resumed run explains the same ones.

        Returns
        -------
        dict
            ``{"samples": {"inputs", "labels", "masks"} or None}``.
        """
        return {"samples": None if self.samples is None else self.samples.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the samples saved by :meth:`state_dict`.

        Parameters
        ----------
        state_dict : dict
            As returned by :meth:`state_dict`.
        """
        stored = state_dict.get("samples")
        if stored is not None:
            self.samples = Samples(**stored)
