"""Cost of the callbacks: fit time of the demo configuration with and without each of them.

Run ``python -m benchmarks.callback --device cpu`` (or ``--device cuda``). The demo configuration
is the built-in shapes data (``ShapesDataModule`` defaults: 2000 training and 400 validation
images of 64x64, batch 64) and the demo CNN (``ShapesCNN`` defaults), trained for ``--epochs``
epochs with a TensorBoardLogger, no checkpointing and no progress bar. Each configuration is fitted
``--repeats`` times, interleaved, after one untimed warm-up fit. The table shows the median fit
seconds, the overhead against the fit without the callback, and — robust against a busy machine,
since it is measured inside the same fit — the seconds spent in the callback's hooks and their
share of the rest of that fit ("in-fit overhead"). The AttributionCallback rows use its default
settings (8 samples, every epoch, Sparseness, Complexity, 8-step region-perturbation AOPC,
conservation, random baseline, drift, image grid, curve figure, rule map, dashboard); one row turns
the random baseline and drift off to show their share. SanityCheckCallback and
RelevanceClusterCallback run once at the end of training with their defaults (8 samples, cascading
randomisation of all 9 parameter layers; up to 256 samples per class — here all 400 validation
images).
"""
from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
import warnings
from typing import Any, Callable, Optional

import torch

from benchmarks.common import format_table, machine_description


def timed_callback_class(base: type) -> type:
    """A subclass of the callback class ``base`` that sums the wall seconds spent in its hooks.

    Parameters
    ----------
    base : type
        A callback class of :mod:`lrp_lightning.callbacks`.

    Returns
    -------
    type
        The subclass; instances have a ``seconds`` attribute.
    """

    class Timed(base):
        seconds = 0.0

        def _timed(self, hook: Callable, *args: Any) -> None:
            begin = time.perf_counter()
            hook(*args)
            self.seconds += time.perf_counter() - begin

        def on_fit_start(self, *args: Any) -> None:
            self._timed(super().on_fit_start, *args)

        def on_validation_epoch_end(self, *args: Any) -> None:
            self._timed(super().on_validation_epoch_end, *args)

        def on_train_end(self, *args: Any) -> None:
            self._timed(super().on_train_end, *args)

    Timed.__name__ = f"Timed{base.__name__}"
    return Timed


def _configurations() -> dict:
    """Configuration name -> factory of the trainer's callbacks."""
    from lrp_lightning.callbacks import AttributionCallback, RelevanceClusterCallback, SanityCheckCallback

    attribution = timed_callback_class(AttributionCallback)
    sanity = timed_callback_class(SanityCheckCallback)
    clusters = timed_callback_class(RelevanceClusterCallback)
    three = ["epsilon_gamma_box", "epsilon_plus_flat", "gradient"]
    return {
        "no callback": lambda: [],
        'AttributionCallback("epsilon_gamma_box") (defaults)': lambda: [attribution("epsilon_gamma_box")],
        'AttributionCallback("epsilon_gamma_box", random_baseline=False, drift=False)': lambda: [
            attribution("epsilon_gamma_box", random_baseline=False, drift=False)
        ],
        'AttributionCallback(["epsilon_gamma_box", "epsilon_plus_flat", "gradient"])': lambda: [attribution(three)],
        'SanityCheckCallback(["epsilon_gamma_box", "epsilon_plus_flat", "gradient"]) (at fit end)': lambda: [
            sanity(three)
        ],
        'RelevanceClusterCallback("epsilon_gamma_box") (at fit end)': lambda: [clusters("epsilon_gamma_box")],
    }


def _quiet_lightning() -> None:
    """Raise every Lightning logger to ERROR so that only the table is printed."""
    import lightning.pytorch  # noqa: F401  (creates the loggers)

    for name in list(logging.root.manager.loggerDict):
        if name.startswith("lightning"):
            logging.getLogger(name).setLevel(logging.ERROR)


def fit_seconds(callbacks: list, device: str, epochs: int, seed: int) -> float:
    """Wall seconds of one ``Trainer.fit`` of the demo configuration.

    Parameters
    ----------
    callbacks : list
        Callbacks of the trainer.
    device : str
        ``"cpu"`` or ``"cuda"``.
    epochs : int
        Training epochs.
    seed : int
        Seed for ``seed_everything``.

    Returns
    -------
    float
        Seconds spent in ``fit`` (data generation in ``setup`` included, identical for all rows).
    """
    from lightning.pytorch import Trainer, seed_everything
    from lightning.pytorch.loggers import TensorBoardLogger

    from lrp_lightning.demo.data import ShapesDataModule
    from lrp_lightning.demo.model import ShapesCNN

    seed_everything(seed, verbose=False)
    with tempfile.TemporaryDirectory() as root:
        trainer = Trainer(
            accelerator="gpu" if device == "cuda" else "cpu",
            devices=1,
            max_epochs=epochs,
            logger=TensorBoardLogger(root, name="bench"),
            callbacks=callbacks,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            default_root_dir=root,
        )
        model, data = ShapesCNN(), ShapesDataModule()
        if device == "cuda":
            torch.cuda.synchronize()
        begin = time.perf_counter()
        trainer.fit(model, datamodule=data)
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - begin


def main(argv: Optional[list] = None) -> None:
    """Parse arguments, run the fits and print the table.

    Parameters
    ----------
    argv : list of str, optional
        Command-line arguments (default ``sys.argv[1:]``).
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    configurations = _configurations()
    _quiet_lightning()
    fit_seconds([], args.device, 1, seed=0)  # warm-up: imports, allocator, kernels
    times: dict = {name: [] for name in configurations}
    inside: dict = {name: [] for name in configurations}
    for repeat in range(args.repeats):
        for name, make_callbacks in configurations.items():
            callbacks = make_callbacks()
            times[name].append(fit_seconds(callbacks, args.device, args.epochs, seed=repeat))
            inside[name].append(sum(callback.seconds for callback in callbacks))
    baseline = statistics.median(times["no callback"])
    rows = []
    for name, measured in times.items():
        median = statistics.median(measured)
        if name == "no callback":
            rows.append([name, f"{median:.2f}", " ".join(f"{t:.2f}" for t in measured), "—", "—", "—"])
            continue
        shares = [spent / (total - spent) for spent, total in zip(inside[name], measured)]
        rows.append([
            name,
            f"{median:.2f}",
            " ".join(f"{t:.2f}" for t in measured),
            f"{100 * (median - baseline) / baseline:+.1f}%",
            f"{statistics.median(inside[name]):.2f}",
            f"{100 * statistics.median(shares):.1f}%",
        ])
    device = torch.device("cuda" if args.device == "cuda" else "cpu")
    print(f"# Callback overhead — demo configuration, {args.epochs} epochs")
    print(machine_description(device))
    print()
    headers = ["configuration", "fit s (median)", "fit s (all)", "overhead vs no callback", "in callback s",
               "in-fit overhead"]
    print(format_table(headers, rows))


if __name__ == "__main__":
    main()
