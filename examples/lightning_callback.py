"""The Lightning callback in a training script: your own LightningModule, one extra line.

``AttributionCallback`` explains a few fixed validation images at every validation epoch end with
each listed composite/attributor and logs heatmaps and metrics to TensorBoard. Here a small
classifier trains on the shapes data that ships with the package. Run::

    python examples/lightning_callback.py --epochs 5
    tensorboard --logdir example_logs --host 127.0.0.1
"""
import argparse

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn

from lrp_lightning.callbacks import AttributionCallback
from lrp_lightning.demo.data import ShapesDataModule
from lrp_lightning.metrics import Deletion, RegionPerturbation, Sparseness


class LitClassifier(pl.LightningModule):
    """Any LightningModule works; the callback explains its ``forward``."""

    def __init__(self, lr: float = 3e-3):
        super().__init__()
        self.lr = lr
        layers = []
        for c_in, c_out in [(3, 8), (8, 16), (16, 32), (32, 64)]:
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(), nn.MaxPool2d(2)]
        self.net = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 3))

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val/acc", (self(x).argmax(dim=1) == y).float().mean(), prog_bar=True)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--n-train", type=int, default=3000)
    parser.add_argument("--log-dir", default="example_logs")
    args = parser.parse_args()

    callback = AttributionCallback(
        ["epsilon_gamma_box", "epsilon_plus_flat", "gradient"],  # compared side by side
        num_samples=4,  # taken once from the first validation batch, kept in checkpoints
        target="prediction",  # explain what the model predicts ("label" explains the true class)
        metrics={  # logged as attribution/<explainer>/<name>; monitorable by ModelCheckpoint
            "sparseness": Sparseness(),
            "aopc": RegionPerturbation(patch_size=8, steps=16),
            "deletion": Deletion(steps=16),
        },
        # canonizers="auto" (default) merges each BatchNorm into the preceding convolution;
        # epsilon_gamma_box's box bounds default to the samples' per-channel min and max
    )
    trainer = pl.Trainer(
        max_epochs=args.epochs,
        callbacks=[callback],
        logger=TensorBoardLogger(args.log_dir, name="lightning_callback"),
        enable_checkpointing=False,
    )
    pl.seed_everything(0)
    # confounder=True would add a class-revealing watermark to the training images (see the demo)
    data = ShapesDataModule(n_train=args.n_train, n_val=200, confounder=False, seed=0)
    trainer.fit(LitClassifier(), datamodule=data)
    print("logs in", trainer.logger.log_dir)


if __name__ == "__main__":
    main()
