"""A long run (many short epochs, several explainers) keeps memory steady.

Leaks of the kind that killed long trainings with other explanation tools (hooks or closures keeping
each epoch's activations or relevance alive) show as a growing number of live tensors. After a
warm-up, the number and total size of the tensors Python can reach, and the process's resident
memory, must not grow from epoch to epoch.
"""
from __future__ import annotations

import gc
import os

import torch
from lightning.pytorch import Callback, seed_everything
from lightning.pytorch.loggers import TensorBoardLogger

from lrp_lightning.callbacks import AttributionCallback

EPOCHS = 12
WARM_UP = 3
# the allocator may keep a few freed pages; a leak of a batch of activations per epoch would exceed it
RSS_SLACK_BYTES = 24 * 2**20


def resident_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def live_tensors() -> tuple[int, int]:
    """(count, total bytes) of the tensors the garbage collector can reach."""
    gc.collect()
    tensors = [obj for obj in gc.get_objects() if isinstance(obj, torch.Tensor)]
    return len(tensors), sum(t.untyped_storage().nbytes() for t in tensors if t.device.type != "meta")


class MemoryProbe(Callback):
    """Records live tensors and resident memory at the end of every epoch (after the explanation)."""

    def __init__(self) -> None:
        self.tensors: list = []
        self.resident: list = []

    def on_train_epoch_end(self, trainer, pl_module):
        self.tensors.append(live_tensors())
        self.resident.append(resident_bytes())


def test_many_epochs_with_three_explainers_keep_memory_steady(tmp_path, make_trainer, tiny_classifier, tiny_data):
    seed_everything(0)
    probe = MemoryProbe()
    # written on the training thread: an image still queued for the background writer when the probe counts
    # would make the count depend on the thread's timing, not on what the callback keeps
    callback = AttributionCallback(["epsilon_gamma_box", "epsilon_plus_flat", "gradient"], num_samples=4,
                                   write_in_background=False)
    trainer = make_trainer(tmp_path, [callback, probe], logger=TensorBoardLogger(tmp_path, name="tb"),
                           max_epochs=EPOCHS, limit_train_batches=1, limit_val_batches=1, num_sanity_val_steps=0)
    trainer.fit(tiny_classifier(), datamodule=tiny_data())
    assert len(probe.tensors) == EPOCHS
    assert "attribution/gradient/sparseness" in trainer.callback_metrics
    steady = probe.tensors[WARM_UP:]
    assert max(count for count, _ in steady) == steady[0][0], [count for count, _ in probe.tensors]
    assert max(size for _, size in steady) <= steady[0][1], [size for _, size in probe.tensors]
    assert max(probe.resident[WARM_UP:]) - probe.resident[WARM_UP] < RSS_SLACK_BYTES, probe.resident
