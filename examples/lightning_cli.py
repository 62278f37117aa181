"""LightningCLI: add AttributionCallback from a YAML config, no code change.

The callback and its options live in ``lightning_cli.yaml`` under ``trainer.callbacks``. Run::

    python examples/lightning_cli.py fit --config examples/lightning_cli.yaml
    python examples/lightning_cli.py fit --config examples/lightning_cli.yaml --trainer.max_epochs 1
"""
from lightning.pytorch.cli import LightningCLI

from lrp_lightning.demo.data import ShapesDataModule
from lrp_lightning.demo.model import ShapesCNN


def main() -> None:
    # any LightningModule / LightningDataModule pair works; these ship with lrp_lightning
    LightningCLI(ShapesCNN, ShapesDataModule)


if __name__ == "__main__":
    main()
