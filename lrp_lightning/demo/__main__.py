"""``python -m lrp_lightning.demo``: train the shapes CNN (or ViT) with AttributionCallback and TensorBoard.

The model — a small CNN, or with ``--model vit`` a small torchvision VisionTransformer explained
with AttnLRP and CP-LRP — trains on the built-in shapes data (watermark confounder on by default), and at every
validation epoch end ``AttributionCallback`` explains the model's prediction on a fixed set of
validation images with each chosen composite, logging heatmaps, the relevance mass on the object
and on the watermark, and faithfulness metrics (with a random baseline and the drift between epochs) to TensorBoard; at the
end of training ``SanityCheckCallback`` and ``RelevanceClusterCallback`` run (see
:mod:`lrp_lightning.demo.suite`). At the end the log location, the command that opens it, a
per-epoch table of the metrics and the suite's findings are printed. Each configuration writes to a
run of its own name (:mod:`lrp_lightning.demo.run_name`). Run with ``--help`` for the options.
"""
from __future__ import annotations

import argparse
import shlex
import warnings
from pathlib import Path
from typing import Sequence

import lightning.pytorch as pl

from lrp_lightning.callbacks import AttributionCallback
from lrp_lightning.callbacks.attribution.baseline import RANDOM_NAME
from lrp_lightning.callbacks.attribution.dashboard import metric_tag
from lrp_lightning.callbacks.explainers import known_names
from lrp_lightning.demo.concepts import concept_callbacks
from lrp_lightning.demo.data import (
    IMAGE_SIZE,
    WATERMARK_OPACITY,
    WATERMARK_SIZE,
    ShapesDataModule,
    input_bounds,
    normalize,
)
from lrp_lightning.demo.loggers import add_logger_argument, demo_loggers
from lrp_lightning.demo.metrics import OBJECT, WATERMARK, RegionRelevanceMass, stack_masks
from lrp_lightning.demo.model import ShapesCNN, ShapesViT
from lrp_lightning.demo.revise import REVISE_DEFAULTS, add_revise_arguments, run_revise
from lrp_lightning.demo.progress import EpochProgressBar
from lrp_lightning.demo.run_name import run_name
from lrp_lightning.demo.suite import add_suite_arguments, suite_callbacks, suite_report
from lrp_lightning.demo.summary import epoch_table, read_scalars
from lrp_lightning.metrics import RegionPerturbation, Sparseness

DEFAULT_LOG_DIR = "demo_logs"
DEFAULT_COMPOSITES = ("epsilon_gamma_box", "epsilon_plus_flat", "gradient")
VIT_COMPOSITES = ("attn_lrp", "cp_lrp", "gradient")
# per model: its class, the explainers compared and the settings it is tuned for (the ViT needs a
# visible watermark to pick the shortcut up at all, and learns from fewer images in fewer epochs;
# its perturbation curves vary more from image to image, so its AOPC averages over more images)
MODELS = {
    "cnn": {"model": ShapesCNN, "composites": DEFAULT_COMPOSITES, "epochs": 6, "n_train": 3000,
            "train_watermarked": 1.0, "watermark_opacity": WATERMARK_OPACITY, "cluster_composite": "epsilon_gamma_box", "num_samples": 16},
    "vit": {"model": ShapesViT, "composites": VIT_COMPOSITES, "epochs": 6, "n_train": 1500,
            "train_watermarked": 1.0, "watermark_opacity": 0.5, "cluster_composite": "attn_lrp", "num_samples": 64},
}
TABLE_METRICS = {"object_mass": "object", "watermark_mass": "watermark"}
# the faithfulness figure printed under the table, for every explainer and the random attribution
AOPC_METRIC = "aopc_morf"
# Lightning's advice on dataloader workers (the data is in memory) and a torch/Lightning
# version-mismatch deprecation notice, neither actionable for a demo user
QUIET_WARNINGS = (r".*does not have many workers.*", r".*LeafSpec.*")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends ``(default: ...)`` to an option's help, except where the default is None (per-model
    defaults, which the help text itself names)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the demo's command line.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments without the program name; ``sys.argv[1:]`` when None.

    Returns
    -------
    argparse.Namespace

    Raises
    ------
    SystemExit
        On invalid arguments, e.g. an unknown composite name (the message lists the known ones).
    """
    parser = argparse.ArgumentParser(
        prog="python -m lrp_lightning.demo",
        description="Train a small CNN on built-in shapes data and watch its explanations in TensorBoard.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "--model", choices=sorted(MODELS), default="cnn", help="the classifier: a small CNN or a small ViT"
    )
    parser.add_argument("--epochs", type=int, default=None, help=f"training epochs (default: cnn 6, vit 6; --revise rrr {REVISE_DEFAULTS['rrr']['epochs']})")
    parser.add_argument(
        "--confounder",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="watermark corner encodes the class in the training split (a 'Clever Hans' shortcut)",
    )
    parser.add_argument(
        "--confounder-strength",
        type=float,
        default=1.0,
        help="share of training images whose watermark marks the class",
    )
    parser.add_argument(
        "--train-watermarked",
        type=float,
        default=None,
        help="share of training images that carry a watermark at all (default: 1; --revise clarc "
        f"{REVISE_DEFAULTS['clarc']['train_watermarked']}, the partly confounded split of the ClArC papers)",
    )
    parser.add_argument(
        "--watermark-opacity",
        type=float,
        default=None,
        help=f"opacity of the watermark (default: cnn {WATERMARK_OPACITY}, vit 0.5; --revise clarc "
        f"{REVISE_DEFAULTS['clarc']['watermark_opacity']})",
    )
    parser.add_argument(
        "--composites",
        nargs="+",
        default=None,
        help="composites/attributors to compare (default: cnn "
        f"{' '.join(DEFAULT_COMPOSITES)}; vit {' '.join(VIT_COMPOSITES)})",
    )
    parser.add_argument("--accelerator", default="auto", help="Lightning accelerator: auto, cpu, gpu, ...")
    parser.add_argument("--devices", default="auto", help="Lightning devices: auto, 1, 2, ...")
    parser.add_argument("--log-dir", default=DEFAULT_LOG_DIR, help="TensorBoard log directory")
    parser.add_argument(
        "--name", default=None,
        help="run name under the log dir (default: the model, the confounder and every changed option, "
        "e.g. cnn_confounder)",
    )
    parser.add_argument(
        "--num-samples", type=int, default=None, help="validation images explained each epoch (default: cnn 16, vit 64)"
    )
    parser.add_argument(
        "--target", default="prediction", choices=("prediction", "label"),
        help="class to explain: the model's prediction (what it does) or the label",
    )
    parser.add_argument("--n-train", type=int, default=None, help="training images (default: cnn 3000, vit 1500)")
    parser.add_argument("--n-val", type=int, default=500, help="validation images")
    parser.add_argument("--batch-size", type=int, default=32, help="batch size")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and the model initialisation")
    parser.add_argument("--concepts", action="store_true", help="also track concepts (CNN): ConceptCallback and the watermark concept")
    add_suite_arguments(parser)
    add_logger_argument(parser)
    add_revise_arguments(parser)
    args = parser.parse_args(argv)
    for setting, value in REVISE_DEFAULTS.get(args.revise, {}).items():
        if getattr(args, setting) is None:
            setattr(args, setting, value)
    for setting, value in MODELS[args.model].items():
        if setting != "model" and getattr(args, setting) is None:
            setattr(args, setting, list(value) if setting == "composites" else value)
    unknown = [name for name in args.composites + [args.cluster_composite] if name not in known_names()]
    if unknown:
        parser.error(f"unknown composite(s) {', '.join(unknown)}; known names: {', '.join(known_names())}")
    return args


def build_callback(datamodule: ShapesDataModule, args: argparse.Namespace) -> AttributionCallback:
    """The AttributionCallback of the demo, explaining the first watermarked validation images.

    Warns when the validation split has fewer watermarked images than ``--num-samples`` asks for.

    The box rule of ``epsilon_gamma_box`` gets the exact input range (pixel values 0 and 1,
    normalized); the metrics include the relevance mass on the object and on the watermark, and
    next to the region-perturbation AOPC of each explainer (``aopc_morf``) that of a random patch
    order (``aopc_random``, the same for every explainer: what a random attribution scores).

    Parameters
    ----------
    datamodule : ShapesDataModule
        Set up; its validation split gives the samples and their object/watermark masks.
    args : argparse.Namespace
        Parsed command line.

    Returns
    -------
    AttributionCallback
    """
    split = datamodule.val_split
    # the first validation images that carry a watermark (all of them unless --val-watermark mixed)
    chosen = (split.watermark_corners >= 0).nonzero().flatten()[: args.num_samples]
    if chosen.numel() < args.num_samples:
        warnings.warn(
            f"--num-samples {args.num_samples}: the validation split has only {chosen.numel()} images with a "
            f"watermark; explaining those {chosen.numel()} (raise --n-val for more)",
            UserWarning,
        )
    samples = (
        normalize(split.images[chosen]),
        split.labels[chosen],
        stack_masks(split.object_masks[chosen], split.watermark_masks[chosen]),
    )
    metrics = {
        "object_mass": RegionRelevanceMass(OBJECT),
        "watermark_mass": RegionRelevanceMass(WATERMARK),
        "sparseness": Sparseness(),
        "aopc_morf": RegionPerturbation(patch_size=8, steps=16, order="morf"),
        "aopc_random": RegionPerturbation(patch_size=8, steps=16, order="random"),
    }
    low, high = (bound.flatten().tolist() for bound in input_bounds())  # the box rule's input range
    return AttributionCallback(
        args.composites, samples=samples, target=args.target, metrics=metrics, low=low, high=high
    )


def train(args: argparse.Namespace) -> pl.Trainer:
    """Train with the callback on, logging to TensorBoard.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed command line.

    Returns
    -------
    lightning.pytorch.Trainer
        The trainer after ``fit`` (its logger knows the run's directory).
    """
    for pattern in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    pl.seed_everything(args.seed, verbose=False)
    datamodule = ShapesDataModule(
        n_train=args.n_train,
        n_val=args.n_val,
        batch_size=args.batch_size,
        confounder=args.confounder,
        confounder_strength=args.confounder_strength,
        seed=args.seed,
        val_watermark=args.val_watermark,
        watermark_opacity=args.watermark_opacity,
        train_watermarked=args.train_watermarked,
    )
    datamodule.setup()
    callback = build_callback(datamodule, args)
    name = args.name or run_name(args, parse_args(["--model", args.model]))
    logger = demo_loggers(args, name)
    trainer = pl.Trainer(
        max_epochs=args.epochs,
        accelerator=args.accelerator,
        devices=args.devices,
        logger=logger,
        callbacks=[EpochProgressBar(), callback, *suite_callbacks(datamodule, args), *concept_callbacks(datamodule, args)],
        enable_checkpointing=False,
        log_every_n_steps=10,
    )
    trainer.fit(MODELS[args.model]["model"](), datamodule=datamodule)
    return trainer


def report(log_dir: Path, args: argparse.Namespace) -> str:
    """The closing message: where the logs are, how to open them, the per-epoch table and the last AOPCs.

    Parameters
    ----------
    log_dir : Path
        The run's log directory.
    args : argparse.Namespace
        Parsed command line.

    Returns
    -------
    str
    """
    if Path(args.log_dir).resolve() == Path(DEFAULT_LOG_DIR).resolve():
        board = "make board   (or: tensorboard --logdir demo_logs --host 127.0.0.1 --port 6006)"
    else:
        board = f"tensorboard --logdir {shlex.quote(args.log_dir)} --host 127.0.0.1 --port 6006"
    scalars = read_scalars(log_dir)
    table = epoch_table(scalars, args.composites, TABLE_METRICS)
    watermark_share = WATERMARK_SIZE**2 / IMAGE_SIZE**2
    aopc = [
        f"{name} {scalars[metric_tag(name, AOPC_METRIC)][-1]:.2f}"
        for name in [*args.composites, RANDOM_NAME] if metric_tag(name, AOPC_METRIC) in scalars
    ]
    return "\n".join(
        [
            "",
            f"TensorBoard logs: {log_dir}",
            f"Open them:        {board}  ->  http://127.0.0.1:6006",
            "",
            f"Share of positive relevance on the object and on the watermark, explaining the {args.target} "
            f"(the watermark covers {watermark_share:.1%} of each image; confounder "
            f"{'on' if args.confounder else 'off'}):",
            table,
            *(
                ["", "Region-perturbation AOPC at the last epoch (the score lost when the most relevant patches "
                 "go first; above 'random' = better than chance):", "  " + ", ".join(aopc)]
                if aopc else []
            ),
        ]
    ) + suite_report(scalars, args.composites)


def main(argv: Sequence[str] | None = None) -> Path:
    """Entry point of ``python -m lrp_lightning.demo``.

    Parameters
    ----------
    argv : sequence of str, optional
        Command-line arguments; ``sys.argv[1:]`` when None.

    Returns
    -------
    Path
        The run's log directory.
    """
    args = parse_args(argv)
    if args.revise is not None:  # the revision runs print their own table
        print(run_revise(args)[1])
        return Path(args.log_dir)
    trainer = train(args)
    log_dir = Path(trainer.logger.log_dir)
    if trainer.is_global_zero:  # under DDP every rank runs main; one summary is enough
        print(report(log_dir, args))
    return log_dir


if __name__ == "__main__":
    main()
