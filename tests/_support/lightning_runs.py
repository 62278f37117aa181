"""Shared pieces of the Trainer tests: tiny models, data modules, trainers, seeded fits and event readers.

``tests/conftest.py`` hands them to the tests as fixtures; the scripts the DDP tests run in subprocesses
(where fixtures do not reach) import this module.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch import LightningDataModule, LightningModule, Trainer, seed_everything
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from lrp_lightning.core import Composite

IMAGE_SIZE = 8
NUM_CLASSES = 3
SEED = 1234


class TinyClassifier(LightningModule):
    """Conv -> BatchNorm -> ReLU -> Dropout -> Linear on (N, C, 8, 8) images (or Linear nets on vectors).

    Parameters
    ----------
    in_channels : int
        Input channels (images) or features (``tabular=True``).
    num_classes : int
        Output classes.
    dropout : float
        Dropout probability (randomness in training).
    tabular : bool
        Build a two-layer MLP on (N, in_channels) vectors instead, with a LayerNorm (a layer no
        built-in rule covers) as ``net.1``.
    """

    def __init__(self, in_channels: int = 3, num_classes: int = NUM_CLASSES, dropout: float = 0.25,
                 tabular: bool = False) -> None:
        super().__init__()
        if tabular:
            self.net = nn.Sequential(
                nn.Linear(in_channels, 8), nn.LayerNorm(8), nn.ReLU(), nn.Dropout(dropout), nn.Linear(8, num_classes)
            )
        else:
            self.net = nn.Sequential(
                nn.Conv2d(in_channels, 4, 3, padding=1),
                nn.BatchNorm2d(4),
                nn.ReLU(),
                nn.Dropout(dropout),
                nn.Flatten(),
                nn.Linear(4 * IMAGE_SIZE * IMAGE_SIZE, num_classes),
            )
        self.training_steps = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits."""
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        """Cross-entropy of one batch."""
        self.training_steps += 1
        inputs, labels = batch[0], batch[1]
        return F.cross_entropy(self(inputs), labels)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        """Logs ``val_loss``."""
        inputs, labels = batch[0], batch[1]
        self.log("val_loss", F.cross_entropy(self(inputs), labels))

    def test_step(self, batch: Any, batch_idx: int) -> None:
        """Logs ``test_loss``."""
        inputs, labels = batch[0], batch[1]
        self.log("test_loss", F.cross_entropy(self(inputs), labels))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """SGD with momentum."""
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)


class FrozenClassifier(TinyClassifier):
    """Learning rate 0 and BatchNorm statistics frozen (momentum 0): the model never changes."""

    def __init__(self) -> None:
        super().__init__()
        self.net[1].momentum = 0.0

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """SGD with learning rate 0."""
        return torch.optim.SGD(self.parameters(), lr=0.0)


def image_data(n: int = 24, seed: int = 0, channels: int = 3) -> TensorDataset:
    """Random images (N, C, 8, 8) and labels from a private generator."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(n, channels, IMAGE_SIZE, IMAGE_SIZE, generator=generator)
    labels = torch.randint(NUM_CLASSES, (n,), generator=generator)
    return TensorDataset(images, labels)


def vector_data(n: int = 24, seed: int = 0, features: int = 6) -> TensorDataset:
    """Random vectors (N, D) and labels from a private generator."""
    generator = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randn(n, features, generator=generator), torch.randint(NUM_CLASSES, (n,), generator=generator))


class TinyData(LightningDataModule):
    """Shuffled training data (global RNG) and ordered validation data.

    Parameters
    ----------
    n : int
        Samples per split.
    batch_size : int
        Batch size.
    seed : int
        Data seed (validation uses ``seed + 1``).
    tabular : bool
        Vectors instead of images.
    """

    def __init__(self, n: int = 24, batch_size: int = 8, seed: int = 0, tabular: bool = False) -> None:
        super().__init__()
        make = vector_data if tabular else image_data
        self.train_set = make(n, seed)
        self.val_set = make(n, seed + 1)
        self.batch_size = batch_size

    def train_dataloader(self) -> DataLoader:
        """Shuffled by the global RNG."""
        return DataLoader(self.train_set, self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        """Fixed order."""
        return DataLoader(self.val_set, self.batch_size)


class DictDataset(Dataset):
    """Wraps a TensorDataset into dict items ``{"image", "label"}``."""

    def __init__(self, data: TensorDataset) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> dict:
        image, label = self.data[index]
        return {"image": image, "label": label}


def make_trainer(root: Path, callbacks: list, logger: Any = False, max_epochs: int = 2, **kwargs: Any) -> Trainer:
    """A quiet CPU trainer writing under ``root``."""
    options = dict(
        default_root_dir=str(root),
        max_epochs=max_epochs,
        accelerator="cpu",
        devices=1,
        logger=logger,
        callbacks=callbacks,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        log_every_n_steps=1,
    )
    options.update(kwargs)
    return Trainer(**options)


def read_events(log_dir: Any) -> EventAccumulator:
    """All events (no down-sampling) of a TensorBoard log directory."""
    accumulator = EventAccumulator(str(log_dir), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    accumulator.Reload()
    return accumulator


def rng_states() -> tuple:
    """Global RNG states: torch CPU, NumPy, random."""
    return torch.get_rng_state(), np.random.get_state(), random.getstate()


def assert_rng_equal(before: tuple, after: tuple) -> None:
    """Assert two :func:`rng_states` results are identical."""
    assert torch.equal(before[0], after[0])
    assert before[1][0] == after[1][0] and np.array_equal(before[1][1], after[1][1]) and before[1][2:] == after[1][2:]
    assert before[2] == after[2]


def seeded_fit(root: Path, callbacks: list, seed: int = SEED, **kwargs: Any) -> tuple:
    """Seeded fit of the tiny classifier (``make_trainer`` options in ``kwargs``); returns (trainer, model,
    global RNG states after the fit)."""
    seed_everything(seed)
    model, data = TinyClassifier(), TinyData()
    trainer = make_trainer(root, callbacks, **kwargs)
    trainer.fit(model, datamodule=data)
    return trainer, model, rng_states()


def assert_same_weights(expected: dict, model: torch.nn.Module) -> None:
    """Bitwise equality of every parameter and buffer."""
    actual = model.state_dict()
    assert expected.keys() == actual.keys()
    for key, value in expected.items():
        assert torch.equal(value, actual[key]), key


def gini(values: torch.Tensor) -> torch.Tensor:
    """Gini index of each row of |values| (Chalasani et al. 2020), written out independently."""
    a = values.abs().flatten(1).double().sort(dim=1).values
    n = a.shape[1]
    i = torch.arange(1, n + 1, dtype=torch.float64)
    return ((2 * i - n - 1) * a).sum(dim=1) / (n * a.sum(dim=1))


class ExplodingComposite(Composite):
    """Works at fit start; from then on changes the model, hooks a layer and raises while registering."""

    registrations = 0
    error: type = RuntimeError

    def register(self, module: torch.nn.Module) -> None:
        """Sabotage the model and fail (after the first registration)."""
        self.registrations += 1
        if self.registrations == 1:
            return super().register(module)
        with torch.no_grad():
            module.net[0].weight.mul_(2)
        module.net[0].register_forward_hook(lambda *args: None)
        module.net[5].weight.requires_grad_(False)
        module.train()
        torch.rand(5)
        raise self.error("composite exploded")
