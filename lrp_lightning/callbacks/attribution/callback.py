"""``AttributionCallback``: explanations and their quality in the logs at validation epoch end."""
from __future__ import annotations

import warnings
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn
from torchmetrics import Metric

from lrp_lightning.callbacks.attribution.baseline import DEFAULT_RANDOM_SEED, RANDOM_NAME, attribution_metrics, random_explainer
from lrp_lightning.callbacks.common import (
    FixedSamplesCheckpoint,
    SampleArg,
    explained_submodule,
    positive_int,
    user_samples,
)
from lrp_lightning.callbacks.attribution.dashboard import CurveFigure, custom_scalars_layout, metric_tag
from lrp_lightning.callbacks.attribution.drift import DRIFT_METRICS, DriftTracker
from lrp_lightning import _arguments
from lrp_lightning.callbacks.attribution.background import BackgroundWriter
from lrp_lightning.auto_canonizers import CanonizerArg, check_canonizers
from lrp_lightning.callbacks.explainers import (
    Bound,
    CompositeArg,
    Explainer,
    build_explainer,
    parse_explainers,
)
from lrp_lightning.callbacks.explanation import ExplainerReport, explain, model_outputs
from lrp_lightning.callbacks.metric_set import MetricSet, check_several_inputs, default_metrics, parse_metrics
from lrp_lightning.callbacks.nonfinite import NonFiniteWarnings
from lrp_lightning.callbacks.samples import BatchToInput, Samples, collect_samples, first_dataloader
from lrp_lightning.callbacks.logger_guard import guard_loggers
from lrp_lightning.callbacks.sinks import sinks_for
from lrp_lightning.callbacks.targets import TargetSpec, check_target_spec, resolve_targets
from lrp_lightning.callbacks.tokens import TokenDecoder
from lrp_lightning.cmap import get_cmap

# samples in the unlogged trial pass at fit start (enough to surface errors, cheap)
TRIAL_SAMPLES = 2


class AttributionCallback(FixedSamplesCheckpoint, Callback):
    """Explain fixed validation samples at validation epoch end and log heatmaps and metrics.

    At the end of validation every ``every_n_epochs`` epochs (never during the sanity check unless
    asked; also in ``trainer.validate``, and in ``trainer.test`` with ``on_test``) each explainer —
    an LRP composite or an attributor — explains the same samples on the LightningModule's device,
    in eval mode and float32 with autocast off, on the bare LightningModule (or ``module`` inside
    it). Parameters, buffers, ``.grad``, ``requires_grad`` and ``training`` flags, hooks and the
    global RNGs are restored afterwards, also when the attribution raised or was interrupted
    (``KeyboardInterrupt`` and any other ``BaseException`` propagate after the restore); a failure
    becomes a warning and training goes on. A non-finite explanation (NaN/Inf model outputs, e.g.
    diverged weights, or NaN/Inf relevance) logs no image and only its finite scalars, and warns
    once per explainer naming the cause.

    Logged, per explainer ``<name>``: every metric through ``pl_module.log`` as
    ``attribution/<name>/<metric>`` (monitorable by ``ModelCheckpoint``/``EarlyStopping``; LRP
    composites also get ``conservation``); on global rank zero the image grid (input | heatmap |
    overlay per sample) ``attribution/<name>/grid`` — heat strips for (N, D) and (N, T, D) inputs;
    for token ids (N, T) the tokens coloured by relevance, plus a Markdown table of them as text
    ``attribution/<name>/tokens`` —,
    the rule map as text ``attribution/<name>/rule_map`` (once), one figure per perturbation
    metric comparing the explainers' curves ``attribution/curves/<metric>``, and a TensorBoard
    custom-scalars dashboard (one chart per metric, one line per explainer). With ``random_baseline``
    every metric that judges the attributions is also computed for a seeded random attribution of
    the same samples, ``attribution/random/<metric>`` (a "random" line in each chart and curve
    figure). With ``drift``, from the second logged epoch on, ``attribution/<name>/drift_rank``
    (1 − mean Spearman rank correlation with the previous logged epoch's attributions) and
    ``attribution/<name>/drift_topk`` (1 − mean IoU of the top 10 % features by magnitude); both
    are exactly 0 when the model did not change. Pictures and tables go to every logger of the
    Trainer through its sink (:mod:`lrp_lightning.callbacks.sinks`): TensorBoard, Weights & Biases
    (captioned images, ``wandb.Table``), MLflow (stepped images, tables), Comet, or PNG, Markdown
    and CSV files under a ``CSVLogger``'s ``log_dir`` (without such a logger under
    ``trainer.default_root_dir``); grids carry a caption (per sample its index, label, prediction
    and explained class) where the logger shows one. Figures are rendered, images encoded and
    everything written on a background thread (``write_in_background``; on the training thread
    when a sink is not ``thread_safe``, e.g. W&B), so training goes on meanwhile; the callback
    waits for it before the next explained epoch and before the loggers are finalized.

    A LightningModule whose ``forward`` takes several inputs is explained input by input: the
    samples' inputs are a tuple (``batch_to_input`` returning ``((x1, x2), y)``), every
    floating-point input gets its own picture ``attribution/<name>/grid/input_<k>``, and the metrics
    and the drift see the relevances of all float inputs flattened and concatenated per sample (see
    :func:`~lrp_lightning.callbacks.metric_set.check_several_inputs`: metrics that take the model,
    the inputs or masks raise; the default set is Sparseness and Complexity).

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
    samples : tensor, tuple or dict, optional
        ``x``, ``(x, y)`` or ``(x, y, mask)`` — or a dict batch such as ``{"input_ids",
        "attention_mask", "labels"}`` — to explain instead of validation samples; for a model with
        several inputs ``x`` is a tuple of tensors, ``((x1, x2), y)``.
    batch_to_input : callable, optional
        Maps a validation batch to ``x``, ``(x, y)`` or ``(x, y, mask)``, ``x`` a tuple or list of
        tensors for a model with several inputs (``((x1, x2), y)``); by default tuples
        ``(x, y, ...)`` (also ``((x1, x2), y)``), dicts (keys ``x``/``input``/``image``.../``input_ids``,
        ``y``/``label``/``target``..., ``mask``) and bare tensors are understood. Text batches:
        dicts with integer ``input_ids`` (N, T) and optionally ``attention_mask`` (N, T), which is
        passed to the model as ``model(input_ids, attention_mask=...)``; padding (mask 0) is left
        out of the token pictures.
    module : str, optional
        Dotted name of the submodule to explain; by default the LightningModule's ``forward``.
    low, high : float, sequence of float or tensor, optional
        Input bounds of the box rule of composites that take them (``epsilon_gamma_box``); by
        default the per-channel min and max of the samples (several inputs: the min and max over
        all their floating-point values) (token ids: not needed unless the
        model has convolutions).
    canonizers : "auto", None or list of Canonizer
        Canonizers of composites built by name. ``"auto"``: ResNetCanonizer/VGGCanonizer for
        torchvision ResNets/VGGs, SequentialMergeBatchNorm when a BatchNorm follows a linear layer,
        none otherwise; composites whose own default is ``"auto"`` (``attn_lrp``, ``cp_lrp``)
        choose their transformer canonizers themselves.
    cmap : str
        Colour map of the heatmaps (see :func:`lrp_lightning.cmap.get_cmap`); the default ``"bwr"``
        shows negative relevance blue and positive red on white, so both signs stay visible on
        sparse maps.
    log_images : bool
        Log pictures (grids/strips) and curve figures. An image grid shows the first 16 samples
        (input | heatmap | overlay), eight rows at most, so that TensorBoard's image card shows it
        whole.
    conservation : bool
        Log the conservation gap of LRP composites (relevance at the input vs at the output).
    on_sanity_check : bool
        Also explain during the sanity check.
    on_test : bool
        Also explain at test epoch end (samples from the first test dataloader if none are held).
    random_baseline : bool
        Also evaluate the metrics on a random attribution (logged as explainer ``"random"``).
    random_seed : int
        Seed of the random attribution's private generator (the same noise every epoch).
    drift : bool
        Log the drift of each explainer's attributions between logged epochs.
    tokenizer : object, optional
        For token ids: shows tokens as text, through ``convert_ids_to_tokens`` or ``decode`` (e.g.
        a Hugging Face tokenizer); its ``pad_token_id`` is the default ``baseline_token_id``.
    decode : callable, optional
        For token ids: ``token id -> str``, instead of a tokenizer. Without either, ids are shown.
    baseline_token_id : int, optional
        The token that replaces tokens in the default perturbation metric for token ids; by
        default the tokenizer's ``pad_token_id``, else 0.
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
        cmap: str = "bwr",
        log_images: bool = True,
        conservation: bool = True,
        on_sanity_check: bool = False,
        on_test: bool = False,
        random_baseline: bool = True,
        random_seed: int = DEFAULT_RANDOM_SEED,
        drift: bool = True,
        tokenizer: Any = None,
        decode: Optional[Callable[[int], str]] = None,
        baseline_token_id: Optional[int] = None,
        write_in_background: bool = True,
    ) -> None:
        self.specs = parse_explainers(composite)
        if random_baseline and RANDOM_NAME in self.explainer_names:
            raise ValueError(
                f"the explainer name {RANDOM_NAME!r} is taken by the random baseline; rename the explainer "
                "(pass a dict of names) or set random_baseline=False"
            )
        self.num_samples = positive_int("num_samples", num_samples)
        self.every_n_epochs = positive_int("every_n_epochs", every_n_epochs)
        check_target_spec(target)
        self.target = target
        self.metrics = parse_metrics(metrics)
        self.samples = user_samples(samples)
        self.batch_to_input = _arguments.optional_callable("batch_to_input", batch_to_input)
        self.module = None if module is None else _arguments.text("module", module)
        for name, bound in (("low", low), ("high", high)):
            if bound is not None:
                _arguments.tensor_like(name, bound)
        self.low, self.high = low, high
        self.canonizers = check_canonizers(canonizers)
        try:
            get_cmap(_arguments.text("cmap", cmap))
        except KeyError as error:
            raise KeyError(f"cmap={cmap!r}: {error.args[0]}") from None
        self.cmap = cmap
        self.log_images = _arguments.boolean("log_images", log_images)
        self.conservation = _arguments.boolean("conservation", conservation)
        self.on_sanity_check = _arguments.boolean("on_sanity_check", on_sanity_check)
        self.on_test = _arguments.boolean("on_test", on_test)
        self.random_baseline = _arguments.boolean("random_baseline", random_baseline)
        self.random_seed = random_seed
        self.drift = _arguments.boolean("drift", drift)
        self._drift = DriftTracker()
        self.decoder = TokenDecoder(tokenizer, decode)
        self.baseline_token_id = None if baseline_token_id is None else _arguments.integer(
            "baseline_token_id", baseline_token_id, minimum=0
        )
        self._explainers: list[Explainer] = []
        self._metric_sets: list[MetricSet] = []
        self._rule_maps_logged: set = set()
        self._uncovered_warned: set = set()
        self._nonfinite_warnings = NonFiniteWarnings()
        self._layout_written = False
        self._writer = BackgroundWriter(_arguments.boolean("write_in_background", write_in_background))
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
        return explained_submodule(pl_module, self.module)

    def _prepare(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Take the samples, check them against the model, build explainers and metrics, and run
        one unlogged trial pass (on the first samples) so that what cannot work fails now."""
        model = self.explained_module(pl_module)
        if self.samples is None:
            loader = first_dataloader(trainer, pl_module, stage)
            if loader is None:
                raise ValueError(f"AttributionCallback found no {stage} dataloader; pass samples=...")
            self.samples = collect_samples(loader, self.num_samples, self.batch_to_input)
        device = pl_module.device
        outputs = model_outputs(model, self.samples, device)
        labels = None if self.samples.labels is None else self.samples.labels.to(device)
        resolve_targets(self.target, outputs, labels)
        inputs = self.samples.inputs_on(device)
        self._explainers = [
            build_explainer(name, spec, model, inputs, self.low, self.high, self.canonizers) for name, spec in self.specs
        ]
        prototypes = self.metrics if self.metrics is not None else default_metrics(inputs, self._baseline_token())
        self._metric_sets = [
            MetricSet(prototypes, device, self.conservation and explainer.is_lrp) for explainer in self._explainers
        ]
        baseline_metrics = attribution_metrics(prototypes)
        if self.random_baseline and baseline_metrics:
            self._explainers.append(random_explainer(self.random_seed))
            self._metric_sets.append(MetricSet(baseline_metrics, device, False))
        if self.samples.several:
            check_several_inputs(self._metric_sets)
        if self.samples.masks is None and any("mask" in metric_set.needed() for metric_set in self._metric_sets):
            raise ValueError("a metric needs ground-truth masks; give batches with masks or samples=(x, y, mask)")
        for report in self._explain(pl_module, self.samples.head(TRIAL_SAMPLES), with_rule_map=False):
            if report.error is not None:
                raise ValueError(
                    f"AttributionCallback cannot explain the samples with {report.name}: "
                    f"{type(report.error).__name__}: {report.error}"
                ) from report.error

    def _baseline_token(self) -> int:
        """The replacement token of the default perturbation metric (token-id inputs)."""
        if self.baseline_token_id is not None:
            return self.baseline_token_id
        pad = self.decoder.pad_token_id
        return 0 if pad is None else pad

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
            self.decoder,
        )
        self._warn_uncovered(reports)
        return reports

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Guard the loggers for this fit (see :mod:`~lrp_lightning.callbacks.logger_guard`) and take the
        samples and validate everything against the model — now when the samples are held (given,
        restored) or a datamodule/LightningModule ``val_dataloader`` hook provides them, otherwise at
        the start of the first validation (the sanity check by default), once ``trainer.val_dataloaders``
        is loaded."""
        guard_loggers(trainer)
        self._explainers = []
        if trainer.world_size > 1:
            # every rank logs the same values, deliberately without a cross-rank reduction
            warnings.filterwarnings("ignore", message=r"It is recommended to use `self\.log\('attribution/")
        if self.samples is None:
            loader = first_dataloader(trainer, pl_module, "val")
            if loader is None and trainer.limit_val_batches == 0:
                raise ValueError("AttributionCallback found no val dataloader and validation is off; pass samples=...")
            if loader is None:
                return
            self.samples = collect_samples(loader, self.num_samples, self.batch_to_input)
        self._prepare(trainer, pl_module, "val")

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """In ``trainer.validate``: prepare as at fit start; while fitting: prepare if the
        validation data was out of reach at fit start."""
        if trainer.state.fn == TrainerFn.VALIDATING:
            self._prepare(trainer, pl_module, "validate")
        elif trainer.state.fn == TrainerFn.FITTING and not self._explainers:
            self._prepare(trainer, pl_module, "val")

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
        for report in done:
            self._nonfinite_warnings.warn(report.name, trainer.current_epoch, report.nonfinite, report.dropped)
        self._log_scalars(pl_module, done)
        if self.drift:
            self._log_drift(pl_module, done)
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

    def _log_drift(self, pl_module: LightningModule, reports: Sequence[ExplainerReport]) -> None:
        for report in reports:
            if report.name == RANDOM_NAME:
                continue
            drift = self._drift.update(report.name, report.relevance)
            for metric, value in (drift or {}).items():
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
            layout = custom_scalars_layout(self.explainer_names, metrics, RANDOM_NAME if self.random_baseline else None)
            if self.drift:
                layout.update(custom_scalars_layout(self.explainer_names, DRIFT_METRICS))
            self._layout_written = True
        pictured = [report for report in reports if report.has_picture and report.name != RANDOM_NAME]
        mapped = [report for report in reports if report.rule_map is not None]
        # grids are rendered by the background writer (ExplainerReport.picture renders on first read)
        images = [(f"attribution/{report.name}/grid", lambda report=report: report.picture, report.caption)
                  for report in pictured]
        images += [(f"attribution/{report.name}/grid/input_{index}", lambda picture=picture: picture, report.caption)
                   for report in reports if report.name != RANDOM_NAME for index, picture in report.input_pictures.items()]
        tables = [(f"attribution/{report.name}/rule_map", report.rule_map) for report in mapped]
        tables += [(f"attribution/{report.name}/tokens", report.token_table) for report in reports
                   if report.token_table is not None]
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
                for tag, table in tables:
                    sink.table(tag, table, step, epoch)
                for tag, picture, caption in images:
                    sink.image(tag, picture(), step, epoch, caption=caption)
            for metric, by_explainer in curves.items():
                if metric not in self._curve_figures:
                    self._curve_figures[metric] = CurveFigure(metric, RANDOM_NAME)
                figure = self._curve_figures[metric].render(by_explainer)
                for sink in sinks:
                    sink.figure(f"attribution/curves/{metric}", figure, step, epoch)

        self._writer.submit(write, background=all(sink.thread_safe for sink in sinks))

    def state_dict(self) -> dict[str, Any]:
        """The fixed samples and the last attributions, so that a resumed run explains the same
        samples and continues the drift series.

        Returns
        -------
        dict
            ``{"samples": {"inputs", "labels", "masks", "attention_mask"} or None, "drift": {name: attributions}}``.
        """
        return {**super().state_dict(), "drift": self._drift.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the samples and the drift state saved by :meth:`state_dict`.

        Parameters
        ----------
        state_dict : dict
            As returned by :meth:`state_dict`.
        """
        super().load_state_dict(state_dict)
        self._drift.load_state_dict(state_dict.get("drift", {}))
