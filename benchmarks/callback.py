"""Cost of the AttributionCallback: fit time of the demo configuration with and without it.

Run ``python -m benchmarks.callback --device cpu`` (or ``--device cuda``). The demo configuration
is the built-in shapes data (``ShapesDataModule`` defaults: 2000 training and 400 validation
images of 64x64, batch 64) and the demo CNN (``ShapesCNN`` defaults), trained for ``--epochs``
epochs with a TensorBoardLogger, no checkpointing and no progress bar. Each configuration is fitted
``--repeats`` times, interleaved, after one untimed warm-up fit (with ``--compiled`` also a
compiled one, so that the compile inside every timed compiled fit finds inductor's caches warm
and costs alike in both compiled rows). The table shows the median fit
seconds, the overhead against the fit without the callback, and — robust against a busy machine,
since it is measured inside the same fit — the seconds spent in the callback's hooks and their
share of the rest of that fit ("in-fit overhead"). The callback rows use its default
settings (8 samples, every epoch, Sparseness, Complexity, 8-step region-perturbation AOPC,
conservation, random baseline, drift, image grid, curve figure, rule map, dashboard); one row turns
the random baseline and drift off to show their share. SanityCheckCallback and
RelevanceClusterCallback run once at the end of training with their defaults; their rows show the
fit-time overhead only.

The seconds in the callback are split per explained epoch into the attribution and metric passes
(the attributors' set-up, calls and tear-down, and the metric updates) and the fixed cost: all the
rest on the training thread (state snapshot and restore, target resolution, image grid, handing the
logs over). The background column is the time the log-writing thread spent (figure rendering, PNG
encoding, writes), which overlaps with training. Two more rows explain the demo CNN with its network
``torch.compile``'d (default inductor backend; explained eagerly) and trained with
``precision="bf16-mixed"`` (``--compiled`` / ``--bf16`` add them).
"""
from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
import warnings
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Optional
from unittest import mock

import torch

from benchmarks.common import format_table, machine_description


def timed_callback_class(timer: "PassTimer") -> type:
    """An AttributionCallback subclass that sums the wall seconds spent in its hooks.

    Parameters
    ----------
    timer : PassTimer
        Times the passes; the subclass reads how much of each epoch-end hook they took.

    Returns
    -------
    type
        The subclass; instances have ``seconds`` (all hooks), ``epoch_seconds`` (validation epoch
        ends) and ``epoch_pass_seconds`` (the passes inside those) attributes.
    """
    from lrp_lightning.callbacks import AttributionCallback

    class TimedAttributionCallback(AttributionCallback):
        seconds = 0.0
        epoch_seconds = 0.0
        epoch_pass_seconds = 0.0

        def _timed(self, hook: Callable, *args: Any) -> float:
            begin = time.perf_counter()
            hook(*args)
            spent = time.perf_counter() - begin
            self.seconds += spent
            return spent

        def on_fit_start(self, *args: Any) -> None:
            self._timed(super().on_fit_start, *args)

        def on_validation_epoch_end(self, *args: Any) -> None:
            passes_before = timer.passes
            self.epoch_seconds += self._timed(super().on_validation_epoch_end, *args)
            self.epoch_pass_seconds += timer.passes - passes_before

    return TimedAttributionCallback


class PassTimer:
    """Sums the seconds of the attribution and metric passes and of the background log writes.

    :meth:`patched` wraps ``Explainer.attributor`` (set-up, calls and tear-down of the attributor),
    ``MetricSet.evaluate`` and the jobs handed to ``BackgroundWriter`` while it is open.
    """

    def __init__(self) -> None:
        self.passes = 0.0
        self.background = 0.0

    def _timed(self, function: Callable, slot: str) -> Callable:
        def run(*args: Any, **kwargs: Any) -> Any:
            begin = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                setattr(self, slot, getattr(self, slot) + time.perf_counter() - begin)
        return run

    @contextmanager
    def patched(self) -> Iterator[None]:
        """Patch the callback's internals to time them while open."""
        from lrp_lightning.callbacks.attribution.background import BackgroundWriter
        from lrp_lightning.callbacks.explainers import Explainer
        from lrp_lightning.callbacks.metric_set import MetricSet

        timer = self
        build, evaluate, submit = Explainer.attributor, MetricSet.evaluate, BackgroundWriter.submit

        class TimedAttributor:
            def __init__(self, attributor: Any) -> None:
                self.attributor = attributor

            def __enter__(self) -> Callable:
                call = timer._timed(self.attributor.__enter__, "passes")()
                return timer._timed(call, "passes")

            def __exit__(self, *exc: Any) -> Any:
                return timer._timed(self.attributor.__exit__, "passes")(*exc)

        def attributor(explainer: Any, model: Any) -> TimedAttributor:
            return TimedAttributor(build(explainer, model))

        def timed_evaluate(metric_set: Any, arguments: Any) -> Any:
            return timer._timed(evaluate, "passes")(metric_set, arguments)

        def timed_submit(writer: Any, job: Callable) -> None:
            submit(writer, timer._timed(job, "background"))

        with mock.patch.object(Explainer, "attributor", attributor), \
                mock.patch.object(MetricSet, "evaluate", timed_evaluate), \
                mock.patch.object(BackgroundWriter, "submit", timed_submit):
            yield


def _configurations(timer: PassTimer, compiled: bool, bf16: bool) -> dict:
    """Configuration name -> (factory of the trainer's callbacks, model options)."""
    from lrp_lightning.callbacks import RelevanceClusterCallback, SanityCheckCallback

    timed = timed_callback_class(timer)
    configurations = {
        "no callback": (lambda: [], {}),
        'AttributionCallback("epsilon_gamma_box") (defaults)': (lambda: [timed("epsilon_gamma_box")], {}),
        'AttributionCallback("epsilon_gamma_box", random_baseline=False, drift=False)': (lambda: [
            timed("epsilon_gamma_box", random_baseline=False, drift=False)
        ], {}),
        'AttributionCallback(["epsilon_gamma_box", "epsilon_plus_flat", "gradient"])': (lambda: [
            timed(["epsilon_gamma_box", "epsilon_plus_flat", "gradient"])
        ], {}),
        'SanityCheckCallback(["epsilon_gamma_box", "epsilon_plus_flat", "gradient"]) (at fit end)': (lambda: [
            SanityCheckCallback(["epsilon_gamma_box", "epsilon_plus_flat", "gradient"])
        ], {}),
        'RelevanceClusterCallback("epsilon_gamma_box") (at fit end)': (lambda: [
            RelevanceClusterCallback("epsilon_gamma_box")
        ], {}),
    }
    if compiled:
        configurations["no callback, torch.compile'd network"] = (lambda: [], {"compiled": True})
        configurations["defaults, torch.compile'd network"] = (lambda: [timed("epsilon_gamma_box")], {"compiled": True})
    if bf16:
        configurations['no callback, precision="bf16-mixed"'] = (lambda: [], {"precision": "bf16-mixed"})
        configurations['defaults, precision="bf16-mixed"'] = (
            lambda: [timed("epsilon_gamma_box")], {"precision": "bf16-mixed"})
    return configurations


def _quiet_lightning() -> None:
    """Raise every Lightning logger to ERROR so that only the table is printed."""
    import lightning.pytorch  # noqa: F401  (creates the loggers)

    for name in list(logging.root.manager.loggerDict):
        if name.startswith("lightning"):
            logging.getLogger(name).setLevel(logging.ERROR)


def fit_seconds(callbacks: list, device: str, epochs: int, seed: int, compiled: bool = False,
                precision: Optional[str] = None) -> float:
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
    compiled : bool
        ``torch.compile`` the CNN's network (compiler caches reset first, so every fit compiles).
    precision : str, optional
        The Trainer's ``precision``.

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
    options = {} if precision is None else {"precision": precision}
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
            **options,
        )
        model, data = ShapesCNN(), ShapesDataModule()
        if compiled:
            torch._dynamo.reset()
            model.net = torch.compile(model.net)
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
    parser.add_argument("--compiled", action="store_true", help="add the torch.compile'd-network rows")
    parser.add_argument("--bf16", action="store_true", help='add the precision="bf16-mixed" rows')
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    timer = PassTimer()
    configurations = _configurations(timer, args.compiled, args.bf16)
    _quiet_lightning()
    fit_seconds([], args.device, 1, seed=0)  # warm-up: imports, allocator, kernels
    if args.compiled:  # and inductor's on-disk caches, so that every timed fit's compile costs alike
        fit_seconds([], args.device, 1, seed=0, compiled=True)
    times: dict = {name: [] for name in configurations}
    inside: dict = {name: [] for name in configurations}
    passes: dict = {name: [] for name in configurations}
    fixed: dict = {name: [] for name in configurations}
    background: dict = {name: [] for name in configurations}
    for repeat in range(args.repeats):
        for name, (make_callbacks, options) in configurations.items():
            callbacks = make_callbacks()
            timer.passes = timer.background = 0.0
            with timer.patched():
                times[name].append(fit_seconds(callbacks, args.device, args.epochs, seed=repeat,
                                               compiled=options.get("compiled", False),
                                               precision=options.get("precision")))
            timed = [callback for callback in callbacks if hasattr(callback, "seconds")]
            inside[name].append(sum(callback.seconds for callback in timed))
            fixed[name].append(sum(callback.epoch_seconds - callback.epoch_pass_seconds for callback in timed))
            passes[name].append(sum(callback.epoch_pass_seconds for callback in timed))
            background[name].append(timer.background)
    rows = []
    for name, measured in times.items():
        median = statistics.median(measured)
        reference = "no callback" + name.split("defaults", 1)[1] if name.startswith("defaults") else "no callback"
        baseline = statistics.median(times[reference])
        if name == "no callback" or name.startswith("no callback,"):
            rows.append([name, f"{median:.2f}", " ".join(f"{t:.2f}" for t in measured)] + ["—"] * 6)
            continue
        if not name.startswith("AttributionCallback") and not name.startswith("defaults"):
            overhead = f"{100 * (median - baseline) / baseline:+.1f}%"
            rows.append([name, f"{median:.2f}", " ".join(f"{t:.2f}" for t in measured), overhead] + ["—"] * 5)
            continue
        shares = [spent / (total - spent) for spent, total in zip(inside[name], measured)]
        explained = args.epochs
        rows.append([
            name,
            f"{median:.2f}",
            " ".join(f"{t:.2f}" for t in measured),
            f"{100 * (median - baseline) / baseline:+.1f}%",
            f"{statistics.median(inside[name]):.2f}",
            f"{100 * statistics.median(shares):.1f}%",
            f"{1000 * statistics.median(passes[name]) / explained:.0f}",
            f"{1000 * statistics.median(fixed[name]) / explained:.0f}",
            f"{1000 * statistics.median(background[name]) / explained:.0f}",
        ])
    device = torch.device("cuda" if args.device == "cuda" else "cpu")
    print(f"# AttributionCallback overhead — demo configuration, {args.epochs} epochs")
    print(machine_description(device))
    print()
    headers = ["configuration", "fit s (median)", "fit s (all)", "overhead vs no callback", "in callback s",
               "in-fit overhead", "passes ms / epoch", "fixed ms / epoch", "background ms / epoch"]
    print(format_table(headers, rows))


if __name__ == "__main__":
    main()
