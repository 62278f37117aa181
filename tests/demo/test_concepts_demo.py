"""The demo's concept analysis: the watermark concept is found in the confounded model, its reference patches are
watermarks; with the confounder off they are not."""
import argparse

import lightning.pytorch as pl
import pytest
import torch
from PIL import Image

from lrp_lightning.callbacks import ConceptCallback
from lrp_lightning.demo.__main__ import parse_args
from lrp_lightning.demo.concepts import FIGURE_FILE, WatermarkConceptReport, concept_callbacks, find_watermark_concept
from lrp_lightning.demo.data import ShapesDataModule
from lrp_lightning.demo.model import ShapesCNN


def trained_cnn(confounder: bool):
    """The demo CNN trained on 2000 shapes images for 5 epochs (the shortcut is learnt by then)."""
    pl.seed_everything(0, verbose=False)
    data = ShapesDataModule(n_train=2000, n_val=200, batch_size=32, confounder=confounder, seed=0)
    data.setup()
    model = ShapesCNN()
    trainer = pl.Trainer(max_epochs=5, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, datamodule=data)
    return model.eval(), data.train_split


@pytest.mark.large  # two trainings of the demo CNN (2000 images, 5 epochs each): minutes (19 min at load 20)
def test_concepts_demo_finds_the_watermark_concept_only_with_the_confounder():
    overlap = {}
    for confounder in (True, False):
        model, split = trained_cnn(confounder)
        before = {key: value.clone() for key, value in model.state_dict().items()}
        found = find_watermark_concept(model, split)
        assert len(found.overlaps) == 8, found
        overlap[confounder] = found.reference_overlap
        for key, value in model.state_dict().items():
            assert torch.equal(value, before[key]), key
    assert overlap[True] >= 0.8, overlap
    assert overlap[False] < 0.8, overlap


def test_concepts_demo_option_adds_the_concept_callbacks():
    data = ShapesDataModule(n_train=8, n_val=8)
    data.setup()
    assert parse_args([]).concepts is False
    assert concept_callbacks(data, parse_args([])) == []
    assert concept_callbacks(data, parse_args(["--concepts", "--model", "vit"])) == []
    callbacks = concept_callbacks(data, parse_args(["--concepts"]))
    assert [type(callback) for callback in callbacks] == [ConceptCallback, WatermarkConceptReport]
    assert callbacks[1].split is data.train_split
    assert isinstance(parse_args(["--concepts"]), argparse.Namespace)


def test_concepts_demo_report_writes_the_watermark_figure(tmp_path):
    pl.seed_everything(0, verbose=False)
    data = ShapesDataModule(n_train=32, n_val=8, batch_size=16, seed=0)
    data.setup()
    report = WatermarkConceptReport(data.train_split)
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                         callbacks=[report])
    trainer.fit(ShapesCNN(), datamodule=data)
    path = tmp_path / FIGURE_FILE
    assert path.is_file()
    with Image.open(path) as figure:
        width, height = figure.size
    found = report.result
    # one row per drawn concept (the watermark concept first), references then heatmaps in each row
    assert list(found.patches)[0] == found.concept and len(found.patches) == 3
    assert width > height > 0
    assert path.stat().st_size < 300_000
