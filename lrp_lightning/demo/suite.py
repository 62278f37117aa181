"""The rest of the callback suite in the demo: sanity checks and SpRAy clusters, and their summary.

``make demo`` runs :class:`~lrp_lightning.callbacks.SanityCheckCallback` (cascading model-parameter
randomisation and the random-logit test of every compared explainer, at the end of training) and
:class:`~lrp_lightning.callbacks.RelevanceClusterCallback` (SpRAy on the validation images of every
class, at the end of training) next to ``AttributionCallback``. ``--val-watermark mixed`` gives half
of the validation images the class-marking watermark and half none, so that a model with the
shortcut shows two strategies per class.
"""
from __future__ import annotations

import argparse
from typing import Mapping, Sequence

from lightning.pytorch import Callback

from lrp_lightning.callbacks import RelevanceClusterCallback, SanityCheckCallback
from lrp_lightning.metrics.similarity import SIMILARITIES
from lrp_lightning.demo.data import CLASS_NAMES, VAL_WATERMARKS, ShapesDataModule, input_bounds, normalize


def add_suite_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the suite's options to the demo's command line.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The demo's parser.
    """
    parser.add_argument(
        "--suite", action=argparse.BooleanOptionalAction, default=True,
        help="also run SanityCheckCallback and RelevanceClusterCallback at the end of training",
    )
    parser.add_argument("--sanity-samples", type=int, default=8, help="validation images of the sanity checks")
    parser.add_argument("--cluster-samples", type=int, default=96, help="validation images per class for SpRAy")
    parser.add_argument(
        "--cluster-composite", default=None, help="explainer of SpRAy (default: cnn epsilon_gamma_box, vit attn_lrp)"
    )
    parser.add_argument(
        "--val-watermark", choices=VAL_WATERMARKS, default="random",
        help="validation watermark: in a random corner, or 'mixed' (half in the class's corner, half none)",
    )


def suite_callbacks(datamodule: ShapesDataModule, args: argparse.Namespace) -> list[Callback]:
    """The sanity-check and cluster callbacks of the demo (none with ``--no-suite``).

    Parameters
    ----------
    datamodule : ShapesDataModule
        Set up; its validation split gives the sanity check's samples.
    args : argparse.Namespace
        Parsed command line.

    Returns
    -------
    list of Callback
    """
    if not args.suite:
        return []
    split = datamodule.val_split
    count = args.sanity_samples
    low, high = (bound.flatten().tolist() for bound in input_bounds())
    return [
        SanityCheckCallback(
            args.composites, samples=(normalize(split.images[:count]), split.labels[:count]), target=args.target,
            low=low, high=high,
        ),
        RelevanceClusterCallback(
            args.cluster_composite, num_samples=args.cluster_samples, class_names=CLASS_NAMES, low=low, high=high,
        ),
    ]


def suite_report(scalars: Mapping[str, Sequence[float]], explainers: Sequence[str]) -> str:
    """Closing lines: similarities after full randomisation and the clusters found per class.

    Parameters
    ----------
    scalars : mapping of str to list of float
        The run's scalars (see :func:`lrp_lightning.demo.summary.read_scalars`).
    explainers : sequence of str
        The compared explainers.

    Returns
    -------
    str
        Empty when the suite did not run.
    """
    lines = []
    header = " ".join(f"{name:>9}" for name in SIMILARITIES)
    sanity = [
        f"{name:>20} | "
        + " ".join(f"{scalars[f'sanity/{name}/{test}_{similarity}'][-1]:>9.3f}" for similarity in SIMILARITIES)
        for test in ("mprt", "random_logit") for name in explainers
        if f"sanity/{name}/{test}_spearman" in scalars
    ]
    if sanity:
        half = len(sanity) // 2
        lines += ["", "Similarity to the original explanation after randomising every layer (low is good):",
                  f"{'':>20} | {header}", *sanity[:half],
                  "... and of a random other class's explanation (random-logit test):", *sanity[half:]]
    revisited = [
        f"{name:>20} | sMPRT {scalars[f'sanity/{name}/smprt_last'][-1]:>6.3f} (low is good)"
        f" | eMPRT {scalars[f'sanity/{name}/emprt'][-1]:>6.3f} (high is good)"
        for name in explainers if f"sanity/{name}/smprt_last" in scalars and f"sanity/{name}/emprt" in scalars
    ]
    if revisited:
        lines += ["", "Sanity checks revisited (Hedström et al. 2023): noise-averaged MPRT, complexity rise:", *revisited]
    clusters = [
        f"  {name}: {int(scalars[f'clusters/{name}/count'][-1])} cluster(s), "
        f"eigengap {scalars[f'clusters/{name}/eigengap'][-1]:.3f}"
        for name in CLASS_NAMES if f"clusters/{name}/count" in scalars
    ]
    if clusters:
        lines += ["", "SpRAy clusters per class (prototypes in TensorBoard, tables under the log dir's clusters/):",
                  *clusters]
    return "\n".join(lines)
