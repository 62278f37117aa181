"""AttributionCallback in real ``lightning.Trainer`` runs on the CPU, read back from the real logs."""
from __future__ import annotations

import copy
import csv
import math

import pytest
import torch
from lightning.pytorch import seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from tensorboard.plugins.custom_scalar import layout_pb2
from torch.utils.data import DataLoader

from lrp_lightning.callbacks import AttributionCallback
from lrp_lightning.metrics import RegionPerturbation, RelevanceMassAccuracy

SEED = 1234


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, seeded_fit):
    """Final weights and RNG states of a seeded fit without the callback."""
    _, model, rng = seeded_fit(tmp_path_factory.mktemp("baseline"), [])
    return {k: v.clone() for k, v in model.state_dict().items()}, rng


def test_tensorboard_gets_images_scalars_text_and_dashboard_every_epoch(
    tmp_path, image_data, read_events, seeded_fit, gini
):
    callback = AttributionCallback(["epsilon_gamma_box", "gradient"], num_samples=4)
    trainer, model, _ = seeded_fit(tmp_path, [callback], logger=TensorBoardLogger(tmp_path, name="tb"))
    events = read_events(trainer.logger.log_dir)
    steps = [trainer.num_training_batches * (epoch + 1) for epoch in range(2)]
    tags = events.Tags()
    for name in ("epsilon_gamma_box", "gradient"):
        grid = events.Images(f"attribution/{name}/grid")
        assert [event.step for event in grid] == steps
        assert (grid[0].height, grid[0].width) == (4 * 8 + 3 * 2, 3 * 8 + 2 * 2)
        for metric in ("sparseness", "complexity", "aopc_morf"):
            assert len(events.Scalars(f"attribution/{name}/{metric}")) == 2  # one per epoch
    assert len(events.Scalars("attribution/epsilon_gamma_box/conservation")) == 2
    assert "attribution/gradient/conservation" not in tags["scalars"]
    assert [event.step for event in events.Images("attribution/curves/aopc_morf")] == steps

    rule_map = events.Tensors("attribution/epsilon_gamma_box/rule_map/text_summary")
    assert len(rule_map) == 1
    text = rule_map[0].tensor_proto.string_val[0].decode()
    for layer, rule in (("net.0", "ZBox"), ("net.5", "Epsilon"), ("net.2", "Pass")):
        assert any(layer in line and rule in line for line in text.splitlines()), (layer, rule, text)
    assert "SequentialMergeBatchNorm" in text

    layout = layout_pb2.Layout()
    layout.ParseFromString(events.Tensors("custom_scalars__config__")[0].tensor_proto.string_val[0])
    charts = {(category.title, chart.title): list(chart.multiline.tag)
              for category in layout.category for chart in category.chart}
    metrics = ("sparseness", "complexity", "aopc_morf", "conservation", "drift_rank", "drift_topk")
    assert {category for category, _ in charts} == {f"attribution/{metric}" for metric in metrics}
    assert charts[("attribution/sparseness", "gradient vs random (baseline)")] == [
        "^attribution/gradient/sparseness$", "^attribution/random/sparseness$"
    ]
    assert charts[("attribution/drift_rank", "epsilon_gamma_box")] == ["^attribution/epsilon_gamma_box/drift_rank$"]
    assert len(charts) == 2 * len(metrics)  # one chart per explainer and metric

    # the last epoch explained the final weights: recompute its sparseness with zennit as the oracle
    zennit_composites = pytest.importorskip("zennit.composites")
    zennit_canonizers = pytest.importorskip("zennit.canonizers")
    samples = image_data(24, seed=1).tensors
    x, y = samples[0][:4], samples[1][:4]
    low = x.amin(dim=(0, 2, 3), keepdim=True)
    high = x.amax(dim=(0, 2, 3), keepdim=True)
    oracle = zennit_composites.EpsilonGammaBox(low=low, high=high, canonizers=[zennit_canonizers.SequentialMergeBatchNorm()])
    net = copy.deepcopy(model.net).eval()
    x = x.clone().requires_grad_(True)
    with oracle.context(net) as modified:
        relevance, = torch.autograd.grad(modified(x), x, torch.eye(3)[y])
    logged = events.Scalars("attribution/epsilon_gamma_box/sparseness")[-1].value
    assert logged == pytest.approx(float(gini(relevance).mean()), rel=1e-4)
    assert float(trainer.callback_metrics["attribution/epsilon_gamma_box/sparseness"]) == pytest.approx(logged)


def test_training_is_bitwise_untouched_and_the_global_rng_unchanged(
    tmp_path, baseline, assert_rng_equal, read_events, seeded_fit, assert_same_weights
):
    weights, rng = baseline
    callback = AttributionCallback(
        ["epsilon_gamma_box", "epsilon_plus_flat", "smoothgrad", "occlusion"], num_samples=3, on_sanity_check=True,
        target="prediction",
    )
    trainer, model, rng_after = seeded_fit(tmp_path, [callback], logger=TensorBoardLogger(tmp_path, name="tb"))
    events = read_events(trainer.logger.log_dir)
    for name in callback.explainer_names:  # every explainer ran (a failure would only have warned)
        assert math.isfinite(float(trainer.callback_metrics[f"attribution/{name}/sparseness"])), name
        assert len(events.Scalars(f"attribution/{name}/sparseness")) == 2, name
        assert len(events.Images(f"attribution/{name}/grid")) == 3, name  # sanity check + 2 epochs
    assert_same_weights(weights, model)
    assert_rng_equal(rng, rng_after)


def test_a_failing_composite_warns_and_leaves_training_untouched(
    tmp_path, baseline, assert_rng_equal, exploding_composite, seeded_fit, assert_same_weights
):
    weights, rng = baseline
    callback = AttributionCallback({"exploding": exploding_composite(), "fine": "epsilon_plus"}, num_samples=2)
    with pytest.warns(RuntimeWarning, match="exploding failed.*composite exploded"):
        trainer, model, rng_after = seeded_fit(tmp_path, [callback])
    assert "attribution/fine/sparseness" in trainer.callback_metrics
    assert "attribution/exploding/sparseness" not in trainer.callback_metrics
    assert_same_weights(weights, model)
    assert_rng_equal(rng, rng_after)
    assert not model.net[0]._forward_hooks


def test_csv_and_tensorboard_loggers_each_get_what_they_support(tmp_path, read_events, seeded_fit):
    callback = AttributionCallback("epsilon_plus_flat", num_samples=2)
    monitor = "attribution/epsilon_plus_flat/sparseness"
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor=monitor, mode="max")
    loggers = [TensorBoardLogger(tmp_path, name="tb"), CSVLogger(tmp_path, name="csv")]
    trainer, _, _ = seeded_fit(tmp_path, [callback, checkpoint], logger=loggers, enable_checkpointing=True)
    csv_dir = loggers[1].log_dir
    with open(f"{csv_dir}/metrics.csv") as handle:
        rows = [row for row in csv.DictReader(handle) if row.get(monitor)]
    assert len(rows) == 2
    assert float(checkpoint.best_model_score) == pytest.approx(max(float(row[monitor]) for row in rows))
    files = sorted(p.name for p in (tmp_path / "csv" / "version_0" / "attribution" / "epsilon_plus_flat" / "grid").iterdir())
    # each grid with its caption beside it
    assert files == [f"epoch={e:03d}-step={trainer.num_training_batches * (e + 1):06d}{suffix}"
                     for e in range(2) for suffix in (".png", ".txt")]
    assert len(list((tmp_path / "csv/version_0/attribution/curves/aopc_morf").glob("*.png"))) == 2
    assert len(list((tmp_path / "csv/version_0/attribution/epsilon_plus_flat/rule_map").glob("*.md"))) == 1
    events = read_events(loggers[0].log_dir)
    assert len(events.Images("attribution/epsilon_plus_flat/grid")) == 2


def test_without_logger_pngs_go_under_default_root_dir_and_every_n_epochs_is_honoured(tmp_path, seeded_fit):
    callback = AttributionCallback("epsilon_plus", num_samples=2, every_n_epochs=2)
    trainer, _, _ = seeded_fit(tmp_path, [callback], logger=False, max_epochs=3)
    files = sorted(p.name for p in (tmp_path / "attribution" / "epsilon_plus" / "grid").iterdir())
    assert files == [f"epoch=001-step={trainer.num_training_batches * 2:06d}{suffix}" for suffix in (".png", ".txt")]


def test_resume_from_checkpoint_explains_the_same_samples(
    tmp_path, make_trainer, tiny_classifier, tiny_data, seeded_fit
):
    first = AttributionCallback("gradient", num_samples=3)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    seeded_fit(tmp_path, [first, checkpoint], max_epochs=1, enable_checkpointing=True)
    resumed = AttributionCallback("gradient", num_samples=3)
    seed_everything(SEED)
    other_data = tiny_data(seed=10)
    trainer = make_trainer(tmp_path, [resumed], max_epochs=2)
    trainer.fit(tiny_classifier(), datamodule=other_data, ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    assert torch.equal(resumed.samples.inputs, first.samples.inputs)
    assert torch.equal(resumed.samples.labels, first.samples.labels)
    assert not torch.equal(resumed.samples.inputs, other_data.val_set.tensors[0][:3])
    assert "attribution/gradient/sparseness" in trainer.callback_metrics


@pytest.fixture(scope="session")
def dict_batches(tiny_classifier, tiny_data, dict_dataset):
    """``(DictBatchClassifier, DictData)``: the tiny classifier and data module on dict batches
    ``{"image": x, "label": y}``."""

    class DictBatchClassifier(tiny_classifier):
        """TinyClassifier fed dict batches ``{"image": x, "label": y}``."""

        def training_step(self, batch, batch_idx):
            """Unpack the dict."""
            return super().training_step((batch["image"], batch["label"]), batch_idx)

        def validation_step(self, batch, batch_idx):
            """Unpack the dict."""
            return super().validation_step((batch["image"], batch["label"]), batch_idx)


    class DictData(tiny_data):
        """TinyData yielding dict batches."""

        def train_dataloader(self):
            """Shuffled dict batches."""
            return DataLoader(dict_dataset(self.train_set), self.batch_size, shuffle=True)

        def val_dataloader(self):
            """Ordered dict batches."""
            return DataLoader(dict_dataset(self.val_set), self.batch_size)

    return DictBatchClassifier, DictData


def test_dict_batches_and_non_image_inputs(tmp_path, dict_batches, make_trainer, read_events):
    DictBatchClassifier, DictData = dict_batches
    callback = AttributionCallback(["epsilon_plus", "integrated_gradients"], num_samples=4)
    seed_everything(SEED)
    trainer = make_trainer(tmp_path, [callback], logger=TensorBoardLogger(tmp_path, name="tb"), max_epochs=1)
    data = DictData(tabular=True)
    with pytest.warns(UserWarning, match=r"no rule of epsilon_plus covers these layers.*: net\.1$"):
        trainer.fit(DictBatchClassifier(in_channels=6, tabular=True), datamodule=data)
    # the default key rules found the inputs ("image") and labels ("label") in the dict batches
    assert torch.equal(callback.samples.inputs, data.val_set.tensors[0][:4])
    assert torch.equal(callback.samples.labels, data.val_set.tensors[1][:4])
    for name in ("epsilon_plus", "integrated_gradients"):
        for metric in ("sparseness", "complexity", "aopc_morf"):
            assert f"attribution/{name}/{metric}" in trainer.callback_metrics
    strip = read_events(trainer.logger.log_dir).Images("attribution/epsilon_plus/grid")
    assert len(strip) == 1 and strip[0].height % 4 == 0


def test_batch_to_input_maps_a_custom_batch(tmp_path, tiny_data, seeded_fit):
    callback = AttributionCallback("gradient", num_samples=3, batch_to_input=lambda batch: (batch[0] * 2, batch[1]))
    data = tiny_data()
    seeded_fit(tmp_path, [callback], max_epochs=1)
    assert torch.equal(callback.samples.inputs, 2 * data.val_set.tensors[0][:3])


def test_on_test_explains_a_submodule_with_samples_from_the_test_data(
    tmp_path, image_data, make_trainer, read_events, tiny_classifier
):
    callback = AttributionCallback("epsilon_plus_flat", num_samples=2, module="net", on_test=True)
    trainer = make_trainer(tmp_path, [callback], logger=TensorBoardLogger(tmp_path, name="tb"))
    test_data = image_data(6, seed=7)
    trainer.test(tiny_classifier(), dataloaders=DataLoader(test_data, batch_size=4))
    assert torch.equal(callback.samples.inputs, test_data.tensors[0][:2])
    assert "attribution/epsilon_plus_flat/sparseness" in trainer.callback_metrics
    text = read_events(trainer.logger.log_dir).Tensors("attribution/epsilon_plus_flat/rule_map/text_summary")
    assert "| 0 | Conv2d |" in text[0].tensor_proto.string_val[0].decode()


def test_trainer_validate_explains_too(tmp_path, image_data, make_trainer, tiny_classifier):
    callback = AttributionCallback("gradient", num_samples=2, every_n_epochs=3)
    trainer = make_trainer(tmp_path, [callback])
    val_data = image_data(6, seed=8)
    trainer.validate(tiny_classifier(), dataloaders=DataLoader(val_data, batch_size=4))
    assert torch.equal(callback.samples.inputs, val_data.tensors[0][:2])
    assert "attribution/gradient/sparseness" in trainer.callback_metrics


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"samples": (torch.zeros(2, 5, 8, 8), torch.zeros(2, dtype=torch.long))}, "do not fit"),
        ({"target": 7}, r"\[0, 3\)"),
        ({"samples": (torch.zeros(2, 3, 8, 8), torch.tensor([0, 3]))}, r"\[0, 3\)"),
        ({"module": "backbone"}, "names no submodule"),
        ({"metrics": {"mass": RelevanceMassAccuracy()}}, "masks"),
        ({"metrics": [RegionPerturbation(patch_size=4, steps=10)]}, "cannot explain the samples with epsilon_plus"),
    ],
)
def test_bad_input_raises_at_fit_start(tmp_path, kwargs, message, make_trainer, tiny_classifier, tiny_data):
    model = tiny_classifier()
    trainer = make_trainer(tmp_path, [AttributionCallback("epsilon_plus", **kwargs)])
    with pytest.raises(ValueError, match=message):
        trainer.fit(model, datamodule=tiny_data())
    assert model.training_steps == 0


def test_no_validation_data_and_no_samples_raises_at_fit_start(tmp_path, image_data, make_trainer, tiny_classifier):
    model = tiny_classifier()
    trainer = make_trainer(tmp_path, [AttributionCallback("gradient")], limit_val_batches=0)
    with pytest.raises(ValueError, match="samples="):
        trainer.fit(model, train_dataloaders=DataLoader(image_data(8), batch_size=4))
    assert model.training_steps == 0
