"""``python -m lrp_lightning.demo --revise rrr|clarc``: reveal the watermark shortcut, revise it, re-evaluate.

``rrr``: the confounded CNN and a CNN trained with :class:`~lrp_lightning.revise.RightReasonsLoss` (Ross et al.'s
input-gradient penalty, of the label's logit, on the four corner regions where the built-in watermark can sit),
each trained from scratch for 10 epochs (:data:`REVISE_DEFAULTS`); the table gives their validation accuracy (watermarks in
random corners) and the watermark's share of positive relevance.

``clarc`` (no masks): the confounded CNN is trained — on a split where half the images carry their class's
watermark (opacity 0.5) and the rest none, the ClArC papers' setting (:data:`REVISE_DEFAULTS`) — with SpRAy
(:class:`~lrp_lightning.callbacks.RelevanceClusterCallback`) on a validation split where half the images carry the
watermark in their class's corner; the CAV comes from the cluster SpRAy finds;
:class:`~lrp_lightning.callbacks.revise.ClArCCallback` then reports P-ClArC (training-free), and the model is
fine-tuned with RR-ClArC (:class:`~lrp_lightning.revise.RRClArCLoss`) and, separately, with A-ClArC. Rows: clean and attacked accuracy (the watermark of
the artifact's class stamped into every other class's image) and ``R_bias`` (the positive relevance share inside
that stamped watermark), all read back from the event files.
"""
from __future__ import annotations

import argparse

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from lrp_lightning.attribution import Gradient
from lrp_lightning.callbacks import RelevanceClusterCallback
from lrp_lightning.callbacks.revise import ClArCCallback
from lrp_lightning.canonizers import SequentialMergeBatchNorm
from lrp_lightning.composites import EpsilonGammaBox
from lrp_lightning.demo.data import (CLASS_NAMES, IMAGE_SIZE, MEAN, STD, WATERMARK_SIZE, ShapesDataModule, input_bounds,
                                     normalize, stamp_watermarks, watermark_regions)
from lrp_lightning.demo.model import ShapesCNN
from lrp_lightning.demo.summary import read_scalars
from lrp_lightning.revise import RightReasonsLoss, RRClArCLoss

MODES = ("rrr", "clarc")
CLARC_LAYER = "net.14"  # the last block's ReLU (8x8 maps, 64 channels)
SHARE_TAG = "revision/watermark_share"
# the settings each mode changes unless given on the command line: the penalised model learns the shapes more slowly
# than the shortcut model learns the watermark (rrr); ClArC needs a model that learned the shapes on the images
# without the watermark, and SpRAy a watermark visible enough to split each class (clarc; at the fully confounded
# split no correction gets above chance: docs/revise.md)
REVISE_DEFAULTS = {
    "rrr": {"epochs": 10},
    "clarc": {"train_watermarked": 0.5, "watermark_opacity": 0.5},
}


class _PenalisedCNN(ShapesCNN):
    """The demo CNN whose training loss adds a penalty of the batch's inputs and labels, logged as ``train/<tag>``."""

    tag = "penalty"

    def _penalty(self, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def training_step(self, batch: tuple, batch_idx: int) -> torch.Tensor:
        """Cross-entropy plus the penalty; logs ``train/<tag>``."""
        loss = super().training_step(batch, batch_idx)
        penalty = self._penalty(batch[0], batch[1])
        self.log(f"train/{self.tag}", penalty)
        return loss + penalty


class RightReasonsCNN(_PenalisedCNN):
    """The demo CNN whose training loss adds ``RightReasonsLoss`` on the four corner regions where a watermark can
    sit (:func:`~lrp_lightning.demo.data.watermark_regions`, over the channels); logs ``train/rrr``.

    The explained score is the label's logit: Ross et al.'s ``Σ_k log p_k`` has the input gradient
    ``Σ_k (1 − K p_k) ∇z_k``, which vanishes at uniform predictions, so its penalty pulls against the task loss
    (measured in docs/revise.md).

    Parameters
    ----------
    weight : float
        ``λ`` of the penalty (mean over the batch).
    **kwargs
        Of :class:`~lrp_lightning.demo.model.ShapesCNN`.
    """

    tag = "rrr"

    def __init__(self, weight: float = 100.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.penalty = RightReasonsLoss("gradient", target="label", weight=weight, reduction="mean")
        self.register_buffer("regions", watermark_regions(), persistent=False)

    def _penalty(self, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.penalty(self, inputs, self.regions.expand_as(inputs), labels)


class RRClArCCNN(_PenalisedCNN):
    """The demo CNN whose training loss adds an :class:`~lrp_lightning.revise.RRClArCLoss` (RR-ClArC fine-tuning);
    logs ``train/rr_clarc``.

    The loss is set as :attr:`penalty` once the CAV is known (a module attribute, not a hyperparameter).

    Parameters
    ----------
    **kwargs
        Of :class:`~lrp_lightning.demo.model.ShapesCNN`.
    """

    tag = "rr_clarc"

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.penalty: RRClArCLoss | None = None

    def _penalty(self, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.penalty is None:
            raise ValueError("set RRClArCCNN.penalty to an RRClArCLoss before fitting")
        return self.penalty(self, inputs, labels)


def watermark_share(model: torch.nn.Module, datamodule: ShapesDataModule, count: int = 128) -> float:
    """Mean share of positive EpsilonGammaBox relevance (summed over channels) inside the watermark, over the first
    ``count`` validation images explained for their label (eval mode, model restored)."""
    split = datamodule.val_split
    low, high = input_bounds()
    composite = EpsilonGammaBox(low=low, high=high, canonizers=[SequentialMergeBatchNorm()])
    training = model.training
    model.eval()
    try:
        _, relevance = Gradient(model, composite)(normalize(split.images[:count]), split.labels[:count])
    finally:
        model.train(training)
    positive = relevance.sum(dim=1).clamp(min=0)
    inside = (positive * split.watermark_masks[:count]).flatten(1).sum(dim=1)
    return float((inside / positive.flatten(1).sum(dim=1).clamp(min=1e-12)).mean())


def _trainer(args: argparse.Namespace, name: str, epochs: int, callbacks: list = ()) -> pl.Trainer:
    return pl.Trainer(max_epochs=epochs, accelerator=args.accelerator, devices=1, callbacks=list(callbacks),
                      logger=TensorBoardLogger(args.log_dir, name=name, default_hp_metric=False),
                      enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                      log_every_n_steps=10)


def _datamodule(args: argparse.Namespace, val_watermark: str = "random") -> ShapesDataModule:
    datamodule = ShapesDataModule(n_train=args.n_train, n_val=args.n_val, batch_size=args.batch_size, confounder=True,
                                  seed=args.seed, val_watermark=val_watermark, watermark_opacity=args.watermark_opacity,
                                  train_watermarked=args.train_watermarked)
    datamodule.setup()
    return datamodule


def _fit_and_measure(args: argparse.Namespace, name: str, model: ShapesCNN, datamodule: ShapesDataModule) -> dict:
    """Train, log the watermark share after training, read both figures back from the event files."""
    trainer = _trainer(args, name, args.epochs)
    trainer.fit(model, datamodule=datamodule)
    trainer.logger.log_metrics({SHARE_TAG: watermark_share(model, datamodule)}, step=trainer.global_step)
    trainer.logger.save()
    scalars = read_scalars(trainer.logger.log_dir)
    return {"val_acc": scalars["val/acc"][-1], "watermark_share": scalars[SHARE_TAG][-1], "log_dir": trainer.logger.log_dir}


def run_rrr(args: argparse.Namespace) -> dict:
    """The confounded CNN and the RightReasonsLoss CNN, from scratch on the same data; their figures by name."""
    datamodule = _datamodule(args)
    pl.seed_everything(args.seed, verbose=False)
    plain = _fit_and_measure(args, f"revise_rrr/seed{args.seed}/confounded", ShapesCNN(), datamodule)
    pl.seed_everything(args.seed, verbose=False)
    corrected = _fit_and_measure(args, f"revise_rrr/seed{args.seed}/right_reasons", RightReasonsCNN(args.rrr_weight),
                                 datamodule)
    return {"confounded": plain, "RightReasonsLoss (gradient)": corrected}


def watermark_inserter(callback: ClArCCallback, opacity: float):
    """``x -> (x with the watermark in the corner of the callback's artifact class, masks)`` on normalized images
    (the class is known once the callback has fitted its CAV from the SpRAy cluster)."""
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)

    def insert(inputs: torch.Tensor) -> tuple:
        images = (inputs * std + mean).clamp(0.0, 1.0)
        corners = torch.full((images.shape[0],), int(callback.artifact_class), dtype=torch.long)
        masks = stamp_watermarks(images, corners, opacity)
        return normalize(images), masks.unsqueeze(1).expand(-1, 3, -1, -1)

    return insert


def run_clarc(args: argparse.Namespace) -> dict:
    """Confounded training with SpRAy, P-ClArC alone, then RR-ClArC and A-ClArC fine-tuning from the CAV of SpRAy's
    cluster; figures by name."""
    name = f"revise_clarc/seed{args.seed}"
    mixed, random_split = _datamodule(args, "mixed"), _datamodule(args, "random")
    low, high = (bound.flatten().tolist() for bound in input_bounds())
    spray = RelevanceClusterCallback("epsilon_gamma_box", num_samples=args.cluster_samples, class_names=CLASS_NAMES,
                                     low=low, high=high, log_images=False)
    pl.seed_everything(args.seed, verbose=False)
    model = ShapesCNN()
    confounded = _trainer(args, f"{name}/confounded", args.epochs, [spray])
    confounded.fit(model, datamodule=mixed)

    def clarc_callback(mode: str | None) -> ClArCCallback:
        callback = ClArCCallback(CLARC_LAYER, spray, mode=mode, num_samples=args.n_val, composite="epsilon_plus_flat")
        callback.insert_artifact = watermark_inserter(callback, args.watermark_opacity)
        return callback

    projective = clarc_callback("p")
    validator = _trainer(args, f"{name}/p_clarc", 1, [projective])
    validator.validate(model, datamodule=random_split, verbose=False)
    # the uncorrected model (no hook is attached outside validation), logged beside its training curves
    confounded.logger.log_metrics(projective.reevaluate(model), step=confounded.global_step)
    confounded.logger.save()
    rows = {"confounded": read_scalars(confounded.logger.log_dir),
            "P-ClArC (training-free)": read_scalars(validator.logger.log_dir)}
    tuned = RRClArCCNN(lr=args.finetune_lr)
    tuned.load_state_dict(model.state_dict())
    tuned.penalty = RRClArCLoss(projective.cav, CLARC_LAYER, weight=args.rr_clarc_weight)
    rows["RR-ClArC fine-tuned"] = _fine_tune(args, f"{name}/rr_clarc", tuned, clarc_callback(None), random_split)
    model.hparams.lr = args.finetune_lr
    rows["A-ClArC fine-tuned"] = _fine_tune(args, f"{name}/a_clarc", model, clarc_callback("a"), random_split)
    return {row: {tag: values[-1] for tag, values in scalars.items()} for row, scalars in rows.items()}


def _fine_tune(args: argparse.Namespace, name: str, model: ShapesCNN, callback: ClArCCallback,
               datamodule: ShapesDataModule) -> dict:
    """Fine-tune for ``--finetune-epochs`` epochs on the confounded training split; the run's scalars."""
    tuner = _trainer(args, name, args.finetune_epochs, [callback])
    tuner.fit(model, datamodule=datamodule)
    return read_scalars(tuner.logger.log_dir)


def report(mode: str, rows: dict) -> str:
    """The before/after table."""
    area = WATERMARK_SIZE**2 / IMAGE_SIZE**2
    if mode == "rrr":
        lines = ["| model | val acc | watermark relevance share | x its area share |", "|---|---|---|---|"]
        for name, row in rows.items():
            lines.append(f"| {name} | {row['val_acc']:.3f} | {row['watermark_share']:.4f} | "
                         f"{row['watermark_share'] / area:.1f}x |")
    else:
        lines = ["| model | clean acc | attacked acc | R_bias | TCAV | CAV separability |", "|---|---|---|---|---|---|"]
        for name, row in rows.items():
            cells = [row.get(f"revision/{tag}") for tag in ("clean_acc", "attacked_acc", "r_bias", "tcav", "cav_separability")]
            lines.append(f"| {name} | " + " | ".join("-" if cell is None else f"{cell:.3f}" for cell in cells) + " |")
    return "\n".join([f"Revision ({mode}); the watermark covers {area:.2%} of each image:", *lines])


def add_revise_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``--revise`` option and its settings."""
    parser.add_argument("--revise", choices=MODES, default=None,
                        help="instead of the suite: correct the watermark shortcut with RightReasonsLoss (rrr) or, "
                             "without masks, with a CAV from SpRAy and ClArC (clarc); prints a before/after table")
    parser.add_argument("--rrr-weight", type=float, default=100.0, help="lambda of RightReasonsLoss (--revise rrr)")
    parser.add_argument("--rr-clarc-weight", type=float, default=30.0, help="lambda of RRClArCLoss (--revise clarc)")
    parser.add_argument("--finetune-epochs", type=int, default=4,
                        help="RR-ClArC and A-ClArC fine-tuning epochs (--revise clarc)")
    parser.add_argument("--finetune-lr", type=float, default=3e-4,
                        help="RR-ClArC and A-ClArC fine-tuning learning rate (--revise clarc)")


def run_revise(args: argparse.Namespace) -> tuple[dict, str]:
    """Run the chosen revision; return the figures and the printed table."""
    rows = run_rrr(args) if args.revise == "rrr" else run_clarc(args)
    return rows, report(args.revise, rows)
