"""``ClArCCallback``: fit the artifact's CAV, apply P-ClArC (evaluation) or A-ClArC (fine-tuning), re-evaluate."""
from __future__ import annotations

import warnings
from typing import Any, Callable, Optional

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from lrp_lightning.attribution import Gradient
from lrp_lightning.callbacks.common import log_scalars, positive_int
from lrp_lightning.callbacks.hygiene import attribution_mode, preserved_state
from lrp_lightning.callbacks.logger_guard import guard_loggers
from lrp_lightning.callbacks.revise.artifact_labels import ClusterChoice, cluster_flags, flags_from_user
from lrp_lightning.callbacks.samples import BatchToInput, Samples, collect_samples, first_dataloader
from lrp_lightning.composites import get_composite
from lrp_lightning.metrics import RelevanceMassAccuracy
from lrp_lightning.revise import ClArC, ConceptActivationVector
from lrp_lightning.revise.layers import captured_output, named_layer
from lrp_lightning.revise.rr_clarc import directional_sensitivity

InsertArtifact = Callable[[torch.Tensor], tuple]


class ClArCCallback(Callback):
    """Class Artifact Compensation inside ``Trainer.fit`` (Anders et al. 2022; Reveal-to-Revise, Pahde et al. 2023).

    At fit start (or at the start of training epoch ``fit_epoch``, and again every ``every_n_epochs`` epochs) the
    callback fits a :class:`~lrp_lightning.revise.ConceptActivationVector` at ``layer`` from the activations of
    the first ``num_samples`` validation samples, labelled by ``artifact``: sample indices, bool flags or masks
    given by the user, or — with no labels at all — a :class:`~lrp_lightning.callbacks.RelevanceClusterCallback`
    that has run: its flagged cluster (``cluster=(class name, index)``, or the cluster whose mean heatmap is most
    concentrated) against the other samples of that class. Rank zero fits; the CAV is broadcast, so every DDP rank
    holds the same one.

    ``mode="p"``: P-ClArC (``a ← a − v vᵀ(a − z̄₀)``) is applied during validation, test and predict — a
    training-free correction. ``mode="a"``: A-ClArC (``a ← a + v vᵀ(z̄₁ − a)``) is applied during training
    epochs, so fine-tuning unlearns the artifact; evaluation runs without it. ``mode=None``: no hook — the
    callback fits the CAV (its ``cav`` attribute) and re-evaluates, while the correction is a loss in the
    user's ``training_step`` (:class:`~lrp_lightning.revise.RRClArCLoss`), or none, to monitor an uncorrected
    model. The hook is removed at the end of each stage and on an exception: the model is then bitwise as
    before.

    Logged every validation epoch end through ``pl_module.log`` (so every logger, or none, works):
    ``revision/clean_acc`` (accuracy on the held samples), ``revision/attacked_acc`` and ``revision/r_bias``
    (with ``insert_artifact``: accuracy on the samples not of ``artifact_class`` with the artifact inserted, and the
    share of positive ``composite`` relevance inside the inserted artifact's masks), ``revision/tcav`` (the share
    of samples whose explained logit grows along ``v``: ``∇_a f_c · v > 0``) and ``revision/cav_separability``
    (accuracy of the CAV fitted on every other sample, on the rest).

    Parameters
    ----------
    layer : str
        The layer's name in the LightningModule (``pl_module.named_modules()``).
    artifact : sequence of int, torch.Tensor or RelevanceClusterCallback
        Which samples carry the artifact (see above).
    mode : {"p", "a", None}
        P-ClArC at evaluation, A-ClArC in training, or no hook (fit and re-evaluate only).
    every_n_epochs : int, optional
        Refit the CAV every n training epochs; None: once.
    fit_epoch : int
        The training epoch at whose start the CAV is first fitted (0: at fit start).
    method : {"signal", "ridge", "svm"}
        The CAV estimator.
    pool : bool
        CAV in channel space (spatially pooled activations) or in the flattened space.
    insert_artifact : callable, optional
        ``x -> (x with the artifact, bool masks of where it is)`` for the attacked accuracy and ``R_bias``.
    artifact_class : int, optional
        The class the artifact stands for: the attacked set holds the other classes' samples, and TCAV explains
        this class's logit (default: the flagged cluster's class; with user labels, every sample is attacked and
        each sample's label is explained).
    composite : str
        The registry composite of ``R_bias``.
    num_samples : int
        Validation samples held for fitting (user labels) and re-evaluation.
    batch_to_input : callable, optional
        Maps a validation batch to ``(x, y)``.
    cluster : tuple of (str, int), optional
        ``(class name, cluster index)`` of a RelevanceClusterCallback's result.

    Raises
    ------
    ValueError
        An unknown layer (listing the known ones) or mode at fit start; labels of one class only.
    """

    def __init__(self, layer: str, artifact: Any, mode: Optional[str] = "p", every_n_epochs: Optional[int] = None, *,
                 fit_epoch: int = 0, method: str = "signal", pool: bool = True,
                 insert_artifact: Optional[InsertArtifact] = None, artifact_class: Optional[int] = None,
                 composite: str = "epsilon_plus_flat", num_samples: int = 128,
                 batch_to_input: Optional[BatchToInput] = None, cluster: ClusterChoice = None) -> None:
        if mode not in ("p", "a", None):
            raise ValueError(f"unknown mode {mode!r}; pass 'p' (P-ClArC), 'a' (A-ClArC) or None (no hook)")
        get_composite(composite)
        self.layer, self.artifact, self.mode = layer, artifact, mode
        self.every_n_epochs = None if every_n_epochs is None else positive_int("every_n_epochs", every_n_epochs)
        self.fit_epoch = int(fit_epoch)
        self.method, self.pool, self.cluster = method, pool, cluster
        self.insert_artifact, self.artifact_class = insert_artifact, artifact_class
        self.composite = composite
        self.num_samples = positive_int("num_samples", num_samples)
        self.batch_to_input = batch_to_input
        self.samples: Optional[Samples] = None
        self.cav: Optional[ConceptActivationVector] = None
        self.separability: Optional[float] = None
        self._clarc: Optional[ClArC] = None
        self._fitted_epoch: Optional[int] = None

    # --- fitting -------------------------------------------------------------------------------------------------
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Check the layer name (an unknown one raises, listing the known names)."""
        named_layer(pl_module, self.layer)

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Collect the validation samples held for fitting and re-evaluation, and fit if ``fit_epoch`` is 0 (when the
        validation loader was passed to ``fit`` directly, Lightning loads it only for the first validation, the
        sanity check by default: both happen then); guard the loggers for this fit
        (:mod:`~lrp_lightning.callbacks.logger_guard`)."""
        guard_loggers(trainer)
        self.samples, self._fitted_epoch = None, None
        self._prepare(trainer, pl_module)

    def _prepare(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # validation hooks run in inference mode; the samples and the CAV are used with autograd later
        with torch.inference_mode(False):
            if self.samples is None:
                loader = first_dataloader(trainer, pl_module, "validate" if trainer.state.fn == "validate" else "val")
                if loader is None:
                    return
                samples = collect_samples(loader, self.num_samples, self.batch_to_input)
                self.samples = Samples(samples.inputs.clone(), None if samples.labels is None else samples.labels.clone())
            if self._fitted_epoch is None and self.fit_epoch == 0:
                self._fit(trainer, pl_module)

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Fit (or refit) the CAV when due, then attach A-ClArC for the epoch."""
        if self.samples is None:
            raise ValueError("ClArCCallback found no validation dataloader; give the Trainer validation data")
        epoch = trainer.current_epoch
        due = self._fitted_epoch is None and epoch >= self.fit_epoch
        if self._fitted_epoch is not None and self.every_n_epochs is not None:
            due = epoch - self._fitted_epoch >= self.every_n_epochs
        if due:
            self._fit(trainer, pl_module)
        if self.mode == "a":
            self._attach(pl_module)

    def _labelled_inputs(self) -> tuple:
        """``(inputs, is_artifact)`` for the CAV: the held samples and user labels, or a SpRAy cluster's class."""
        if hasattr(self.artifact, "results") and hasattr(self.artifact, "samples"):
            results = getattr(self.artifact, "results", None)
            if not results:
                raise ValueError("the RelevanceClusterCallback given as artifact has not run yet; let it run first "
                                 "(every_n_epochs, or a previous fit) or pass the artifact samples")
            result, flags = cluster_flags(results, self.cluster)
            if self.artifact_class is None:
                self.artifact_class = int(result.label)
            return self.artifact.samples.inputs[result.rows], flags
        return self.samples.inputs, flags_from_user(self.artifact, len(self.samples))

    def _fit(self, trainer: Trainer, pl_module: LightningModule) -> None:
        cav, separability = None, None
        if trainer.is_global_zero:
            inputs, flags = self._labelled_inputs()
            activations = self._activations(pl_module, inputs.clone())
            half = torch.arange(flags.shape[0]) % 2 == 0
            if flags[half].any() and (~flags[half]).any():
                held = ConceptActivationVector.fit(activations[half], flags[half], self.method, self.pool)
                separability = held.separability(activations[~half], flags[~half])
            cav = ConceptActivationVector.fit(activations, flags, self.method, self.pool)
        self.cav, self.separability = trainer.strategy.broadcast((cav, separability), src=0)
        self._fitted_epoch = trainer.current_epoch

    def _activations(self, pl_module: LightningModule, inputs: torch.Tensor) -> torch.Tensor:
        """The layer's output for ``inputs`` (eval mode, no grad, model state restored), on the CPU."""
        module = named_layer(pl_module, self.layer)
        parts = []
        with preserved_state(pl_module), torch.no_grad(), captured_output(module) as outputs:
            pl_module.eval()
            for chunk in inputs.split(64):
                pl_module(chunk.to(pl_module.device))
                parts.append(outputs.pop().detach().float().cpu())
        return torch.cat(parts)

    # --- applying ------------------------------------------------------------------------------------------------
    def _attach(self, pl_module: LightningModule) -> None:
        if self.cav is not None and self._clarc is None:
            self._clarc = ClArC(pl_module, self.layer, self.cav.to(pl_module.device), self.mode).register()

    def _detach(self) -> None:
        clarc, self._clarc = self._clarc, None
        if clarc is not None:
            clarc.remove()

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._detach()

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._prepare(trainer, pl_module)
        self._detach()  # validation inside a training epoch: A-ClArC is for training only
        if self.mode == "p":
            self._attach(pl_module)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._detach()
        if self.mode == "a" and trainer.training:
            self._attach(pl_module)

    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.mode == "p":
            self._attach(pl_module)

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._detach()

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.mode == "p":
            self._attach(pl_module)

    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._detach()

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._detach()

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self._detach()

    # --- re-evaluation -------------------------------------------------------------------------------------------
    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Log the re-evaluation (see the class docstring); skipped in the sanity check and before the CAV exists."""
        if trainer.sanity_checking or self.cav is None or self.samples is None:
            return
        try:
            scalars = self.reevaluate(pl_module)
        except Exception as error:  # a failing evaluation must not stop training
            warnings.warn(f"ClArCCallback skipped its re-evaluation: {type(error).__name__}: {error}", RuntimeWarning)
            return
        log_scalars(trainer, pl_module, scalars, in_loop=True)

    def reevaluate(self, pl_module: LightningModule) -> dict:
        """Return the ``revision/...`` scalars for the model as it is now (with whatever hook is attached)."""
        inputs, labels = self.samples.inputs, self.samples.labels
        device = pl_module.device
        scalars = {}
        with preserved_state(pl_module), attribution_mode(device):
            pl_module.eval()
            with torch.no_grad():
                scalars["revision/clean_acc"] = _accuracy(pl_module, inputs, labels, device)
            scalars["revision/tcav"] = self._tcav(pl_module, inputs, labels)
            if self.insert_artifact is not None:
                rows = labels != self.artifact_class if self.artifact_class is not None else torch.ones_like(labels, dtype=torch.bool)
                attacked, masks = self.insert_artifact(inputs[rows].clone())
                with torch.no_grad():
                    scalars["revision/attacked_acc"] = _accuracy(pl_module, attacked, labels[rows], device)
                scalars["revision/r_bias"] = self._r_bias(pl_module, attacked, labels[rows], masks)
        if self.separability is not None:
            scalars["revision/cav_separability"] = self.separability
        return scalars

    def _tcav(self, pl_module: LightningModule, inputs: torch.Tensor, labels: torch.Tensor) -> float:
        """Share of samples with ``∇_a f_c · v > 0`` (``c``: ``artifact_class``, else the label)."""
        module = named_layer(pl_module, self.layer)
        positive = []
        for chunk, chunk_labels in zip(inputs.split(64), labels.split(64)):
            with torch.enable_grad(), captured_output(module) as outputs:
                logits = pl_module(chunk.to(pl_module.device))
            classes = chunk_labels if self.artifact_class is None else torch.full_like(chunk_labels, self.artifact_class)
            score = logits.gather(1, classes.to(logits.device).view(-1, 1)).sum()
            gradient, = torch.autograd.grad(score, outputs[0])
            along, _ = directional_sensitivity(gradient.detach(), self.cav)
            positive.append(along > 0)
        return float(torch.cat(positive).float().mean())

    def _r_bias(self, pl_module: LightningModule, inputs: torch.Tensor, labels: torch.Tensor, masks: torch.Tensor) -> float:
        """Mean share of positive relevance (summed over channels) inside the artifact masks."""
        metric = RelevanceMassAccuracy()
        attributor = Gradient(pl_module, get_composite(self.composite)())
        for chunk, chunk_labels, chunk_masks in zip(inputs.split(64), labels.split(64), masks.split(64)):
            _, relevance = attributor(chunk.to(pl_module.device), chunk_labels.to(pl_module.device))
            relevance, chunk_masks = relevance.detach().cpu(), chunk_masks.bool().cpu()
            if relevance.ndim > 2:
                relevance = relevance.sum(dim=1)
                chunk_masks = chunk_masks.any(dim=1) if chunk_masks.ndim == relevance.ndim + 1 else chunk_masks
            metric.update(relevance.clamp(min=0), chunk_masks)
        return float(metric.compute())

    def state_dict(self) -> dict:
        """The CAV and its separability, so a resumed run corrects with the same direction."""
        return {"cav": self.cav, "separability": self.separability, "fitted_epoch": self._fitted_epoch}

    def load_state_dict(self, state_dict: dict) -> None:
        self.cav, self.separability = state_dict.get("cav"), state_dict.get("separability")
        self._fitted_epoch = state_dict.get("fitted_epoch")


def _accuracy(model: torch.nn.Module, inputs: torch.Tensor, labels: torch.Tensor, device: torch.device) -> float:
    correct = sum(int((model(chunk.to(device)).argmax(1).cpu() == chunk_labels).sum())
                  for chunk, chunk_labels in zip(inputs.split(64), labels.split(64)))
    return correct / max(1, labels.shape[0])
