"""ConceptCallback on the dimensions of a ViT's attention values (a module the composite's canonizer adds), in a real
Trainer run read back from the CSV log."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from lightning.pytorch import LightningModule, seed_everything
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader, TensorDataset

from lrp_lightning import composites
from lrp_lightning.callbacks import ConceptCallback
from lrp_lightning.concepts import CondAttribution, HeadDimensionConcept, class_concept_relevance

VALUES = "vit.encoder.layers.encoder_layer_1.self_attention.canonizer_v_proj"


class ViTClassifier(LightningModule):
    """A classifier around ``vit``, trained in float32."""

    def __init__(self, vit: torch.nn.Module) -> None:
        super().__init__()
        self.vit = vit.float().train()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.vit(x)

    def training_step(self, batch, batch_index):
        x, y = batch
        return torch.nn.functional.cross_entropy(self(x), y)

    def validation_step(self, batch, batch_index):
        x, y = batch
        self.log("val/loss", torch.nn.functional.cross_entropy(self(x), y))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.05)


def loader(seed: int) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    images, labels = torch.randn(12, 3, 16, 16, generator=generator), torch.randint(0, 5, (12,), generator=generator)
    return DataLoader(TensorDataset(images, labels), batch_size=6)


def test_concepts_callback_tracks_value_dimensions_of_attention_heads(tmp_path, make_trainer, load_golden, torchvision_vit):
    seed_everything(0)
    concept = HeadDimensionConcept(heads=2, head_dim=8)
    callback = ConceptCallback("cp_lrp", layers={VALUES: concept}, top_k_concepts=3, reference_size=12,
                               references_per_concept=2, num_samples=2)
    model = ViTClassifier(torchvision_vit(load_golden("vit_cp_lrp")))  # 2 heads of 8 dimensions, 16x16 images, 5 classes
    trainer = make_trainer(tmp_path, [callback], logger=CSVLogger(tmp_path, name="csv"), max_epochs=1)
    trainer.fit(model, train_dataloaders=loader(0), val_dataloaders=loader(1))
    with open(f"{trainer.logger.log_dir}/metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    logged = {column: float(row[column]) for row in rows for column in row
              if column.startswith("concepts/") and f"/{VALUES}/" in column and row[column]}
    assert logged
    # a figure per class (reference patches and conditional heatmaps of the top value dimensions)
    assert list(Path(trainer.logger.log_dir).glob(f"attribution/concepts/*/{VALUES}/*.png"))
    # the shares, recomputed from the trained model: per class the mean relative relevance of each value dimension
    reference = next(iter(DataLoader(loader(1).dataset, batch_size=12)))
    result = CondAttribution(model.eval())(reference[0], [{"y": [int(y)]} for y in reference[1]],
                                           composites.COMPOSITES["cp_lrp"](), record_layer=[VALUES])
    shares = class_concept_relevance(concept.attribute(result.relevances[VALUES]), reference[1], 5)
    for label in sorted(set(reference[1].tolist())):
        top = torch.argsort(-shares[label], stable=True)[:3].tolist()
        mine = {int(tag.rsplit("/", 1)[1]): value for tag, value in logged.items()
                if tag.startswith(f"concepts/{label}/") and tag.rsplit("/", 1)[1].isdigit()}
        assert set(mine) == set(top)
        for index, value in mine.items():
            assert 0 <= index < 16
            assert value == pytest.approx(float(shares[label, index]), rel=1e-3, abs=1e-5)
