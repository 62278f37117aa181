"""Cost of concept relevance: conditional attribution of C concepts against C plain attributions, and the
ConceptCallback's share of a fit.

Run ``python -m benchmarks.concepts --device cpu`` (or ``--device cuda``). Part 1 explains ``--batch`` demo images
(64x64, the demo CNN ``ShapesCNN``, EpsilonPlus with its BatchNorms merged) under ``C`` conditions on channels of
the third convolution (``net.8``): in one batched ``CondAttribution`` call (``N * C`` rows), in ``C`` calls of one
condition each, and as ``C`` plain attributions of the batch (``Gradient`` with the composite): what one CRP
heatmap per concept costs against what the same number of ordinary heatmaps costs. Medians of interleaved runs.
Part 2 fits the demo CNN on a small shapes data set for ``--epochs`` epochs with and without
``ConceptCallback`` (its defaults but 4 top concepts, 64 reference images, every epoch) and reports the fit
seconds and the seconds spent in the callback's hooks, whose share of the fit is robust against a busy machine.
"""
from __future__ import annotations

import argparse
import logging
import tempfile
import time
import warnings
from contextlib import contextmanager
from typing import Iterator

import torch

from benchmarks.common import format_table, machine_description, time_interleaved_ms


def conditional_rows(device: torch.device, batch: int, concept_counts: list, repeats: int) -> list:
    """Part 1: one row per number of concepts."""
    from lrp_lightning import canonizers, composites
    from lrp_lightning.attribution import Gradient
    from lrp_lightning.concepts import CondAttribution
    from lrp_lightning.demo.model import ShapesCNN

    torch.manual_seed(0)
    model = ShapesCNN().eval().to(device)
    inputs = torch.randn(batch, 3, 64, 64, generator=torch.Generator().manual_seed(1)).to(device)
    labels = torch.arange(batch) % 3
    composite = composites.EpsilonPlus(canonizers=[canonizers.SequentialMergeBatchNorm()])
    attribution = CondAttribution(model)
    rows = []
    for count in concept_counts:
        conditions = [{"y": [0], "net.8": [c]} for c in range(count)]

        @contextmanager
        def batched() -> Iterator:
            yield lambda: attribution(inputs, conditions, composite)

        @contextmanager
        def one_by_one() -> Iterator:
            def run() -> None:
                for condition in conditions:
                    attribution(inputs, [{**condition, "y": [int(y)]} for y in labels], composite)
            yield run

        @contextmanager
        def plain() -> Iterator:
            with Gradient(model, composite) as attributor:
                def run() -> None:
                    for _ in range(count):
                        attributor(inputs, labels.to(device))
                yield run

        times = time_interleaved_ms({"batched": batched, "one_by_one": one_by_one, "plain": plain}, device,
                                    repeats=repeats, rounds=min(repeats, 3))
        rows.append([count, f"{times['plain']:.0f}", f"{times['batched']:.0f}",
                     f"{times['batched'] / times['plain']:.2f}x", f"{times['one_by_one']:.0f}",
                     f"{times['one_by_one'] / times['plain']:.2f}x"])
    return rows


def fit_rows(device: torch.device, epochs: int) -> list:
    """Part 2: the fit with and without the callback."""
    import lightning.pytorch as pl
    from lightning.pytorch.loggers import TensorBoardLogger

    from lrp_lightning.callbacks import ConceptCallback
    from lrp_lightning.demo.data import ShapesDataModule
    from lrp_lightning.demo.model import ShapesCNN

    class TimedConceptCallback(ConceptCallback):
        seconds = 0.0

        def on_validation_epoch_end(self, trainer, pl_module):
            begin = time.perf_counter()
            super().on_validation_epoch_end(trainer, pl_module)
            self.seconds += time.perf_counter() - begin

    rows = []
    for with_callback in (False, True):
        pl.seed_everything(0, verbose=False)
        data = ShapesDataModule(n_train=1000, n_val=200, batch_size=64)
        callbacks = [TimedConceptCallback("epsilon_plus", layers=["net.8"], top_k_concepts=4, reference_size=64)] \
            if with_callback else []
        with tempfile.TemporaryDirectory() as root:
            trainer = pl.Trainer(max_epochs=epochs, accelerator=device.type, devices=1, default_root_dir=root,
                                 logger=TensorBoardLogger(root), callbacks=callbacks, enable_checkpointing=False,
                                 enable_progress_bar=False, enable_model_summary=False)
            begin = time.perf_counter()
            trainer.fit(ShapesCNN(), datamodule=data)
            seconds = time.perf_counter() - begin
        inside = callbacks[0].seconds if callbacks else 0.0
        rows.append(["with ConceptCallback" if with_callback else "without", f"{seconds:.1f}",
                     f"{inside:.1f}" if callbacks else "-", f"{inside / seconds:.0%}" if callbacks else "-"])
    return rows


def main() -> None:
    """Print both tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--concepts", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    device = torch.device(args.device)
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    print(machine_description(device))
    print(f"\nConditional attribution, demo CNN, batch {args.batch}, 64x64, EpsilonPlus, concepts of net.8 (ms)\n")
    print(format_table(["concepts C", "C plain attributions", "CRP batched (1 call)", "x plain", "CRP C calls", "x plain"],
                       conditional_rows(device, args.batch, args.concepts, args.repeats)))
    print(f"\nConceptCallback in a fit: demo CNN, 1000 training / 200 validation images, {args.epochs} epochs (s)\n")
    print(format_table(["fit", "fit s", "in the callback s", "share of the fit"], fit_rows(device, args.epochs)))


if __name__ == "__main__":
    main()
