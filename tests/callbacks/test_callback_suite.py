"""The rest of the callback suite in real ``lightning.Trainer`` runs on the CPU, read back from the logs:
random baseline and drift (AttributionCallback), SanityCheckCallback, RelevanceClusterCallback."""
from __future__ import annotations

import csv

import pytest
import torch
from lightning.pytorch import seed_everything
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from lrp_lightning.attribution import ATTRIBUTORS, Attributor, register_attributor
from lrp_lightning.callbacks import AttributionCallback, RelevanceClusterCallback, SanityCheckCallback

SEED = 1234
SIMILARITY_NAMES = ("spearman", "ssim", "topk_iou")


@pytest.fixture
def input_attributor():
    """An "explainer" that ignores the model: the input itself, registered as ``input_itself``."""

    @register_attributor("input_itself")
    class InputItself(Attributor):
        def forward(self, inputs, target):
            with torch.no_grad():
                return self.model(inputs), inputs.clone()

    yield "input_itself"
    del ATTRIBUTORS["input_itself"]


def test_random_baseline_and_drift_are_logged_every_epoch(tmp_path, read_events, gini, seeded_fit):
    callback = AttributionCallback(["epsilon_plus_flat", "gradient"], num_samples=4)
    trainer, _, _ = seeded_fit(tmp_path, [callback], logger=TensorBoardLogger(tmp_path, name="tb"), max_epochs=3)
    events = read_events(trainer.logger.log_dir)
    tags = events.Tags()
    for metric in ("sparseness", "complexity", "aopc_morf"):
        assert len(events.Scalars(f"attribution/random/{metric}")) == 3
    assert "attribution/random/conservation" not in tags["scalars"]
    assert "attribution/random/grid" not in tags["images"]
    # the random attribution is standard normal noise from a generator seeded with 0, every epoch
    noise = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    for event in events.Scalars("attribution/random/sparseness"):
        assert event.value == pytest.approx(float(gini(noise).mean()), rel=1e-5)
    for name in ("epsilon_plus_flat", "gradient"):
        for metric in ("drift_rank", "drift_topk"):
            values = [event.value for event in events.Scalars(f"attribution/{name}/{metric}")]
            assert len(values) == 2 and all(0 < value <= 2 for value in values), (name, metric, values)
    assert "attribution/random/drift_rank" not in tags["scalars"]


def test_drift_is_exactly_zero_for_an_unchanging_model_and_continues_after_resume(
    tmp_path, make_trainer, read_events, tiny_data, frozen_classifier
):
    seed_everything(SEED)
    callback = AttributionCallback("epsilon_gamma_box", num_samples=4)
    trainer = make_trainer(tmp_path, [callback], logger=TensorBoardLogger(tmp_path, name="tb"), max_epochs=2)
    model = frozen_classifier()
    trainer.fit(model, datamodule=tiny_data())
    checkpoint = tmp_path / "frozen.ckpt"
    trainer.save_checkpoint(checkpoint)
    events = read_events(trainer.logger.log_dir)
    assert [event.value for event in events.Scalars("attribution/epsilon_gamma_box/drift_rank")] == [0.0]
    assert [event.value for event in events.Scalars("attribution/epsilon_gamma_box/drift_topk")] == [0.0]

    resumed = AttributionCallback("epsilon_gamma_box", num_samples=4)
    trainer = make_trainer(tmp_path, [resumed], logger=TensorBoardLogger(tmp_path, name="resumed"), max_epochs=3)
    trainer.fit(frozen_classifier(), datamodule=tiny_data(), ckpt_path=checkpoint)
    events = read_events(trainer.logger.log_dir)
    # the first epoch after resuming already has a predecessor: the attributions came with the checkpoint
    assert [event.value for event in events.Scalars("attribution/epsilon_gamma_box/drift_rank")] == [0.0]


def test_sanity_checks_separate_model_explanations_from_a_model_ignoring_one(
    tmp_path, input_attributor, read_events, seeded_fit
):
    callback = SanityCheckCallback(["gradient", "epsilon_plus_flat", input_attributor], every_n_epochs=1, num_samples=6)
    trainer, _, _ = seeded_fit(tmp_path, [callback], logger=TensorBoardLogger(tmp_path, name="tb"))
    events = read_events(trainer.logger.log_dir)
    # 2 epochs; the end of training is at the second one's step, so it is not logged again
    for name in ("gradient", "epsilon_plus_flat", input_attributor):
        for test in ("mprt", "random_logit"):
            for similarity in SIMILARITY_NAMES:
                assert len(events.Scalars(f"sanity/{name}/{test}_{similarity}")) == 2
        assert len(events.Images(f"sanity/{name}/mprt")) == 2
    for test in ("mprt", "random_logit"):
        for similarity in SIMILARITY_NAMES:
            assert events.Scalars(f"sanity/input_itself/{test}_{similarity}")[-1].value == pytest.approx(1.0)
    for name in ("gradient", "epsilon_plus_flat"):
        assert events.Scalars(f"sanity/{name}/mprt_spearman")[-1].value < 0.5
        assert events.Scalars(f"sanity/{name}/mprt_topk_iou")[-1].value < 0.5
    result = callback.results["gradient"]
    assert result.layers == ["net.5", "net.1", "net.0"]  # layers with parameters, output first
    assert [len(curve) for curve in result.mprt.values()] == [4, 4, 4] and result.mprt["ssim"][0] == 1.0


def test_suite_callbacks_leave_training_bitwise_untouched(
    tmp_path, input_attributor, assert_rng_equal, assert_same_weights, seeded_fit
):
    _, reference, rng = seeded_fit(tmp_path / "reference", [])
    weights = {key: value.clone() for key, value in reference.state_dict().items()}
    callbacks = [
        AttributionCallback("epsilon_plus_flat", num_samples=3),
        SanityCheckCallback(["epsilon_gamma_box", input_attributor], every_n_epochs=1, layers="independent",
                            num_samples=3, target="prediction"),
        RelevanceClusterCallback("gradient", num_samples=6, knn=3, every_n_epochs=1),
    ]
    _, model, rng_after = seeded_fit(tmp_path / "suite", callbacks, logger=TensorBoardLogger(tmp_path, name="tb"))
    assert_same_weights(weights, model)
    assert_rng_equal(rng, rng_after)


def test_relevance_clusters_logged_per_class_with_labels_and_tables(tmp_path, image_data, read_events, seeded_fit):
    callback = RelevanceClusterCallback("epsilon_plus_flat", num_samples=6, knn=3, class_names=["a", "b", "c"])
    trainer, _, _ = seeded_fit(tmp_path, [callback], logger=TensorBoardLogger(tmp_path, name="tb"))
    events = read_events(trainer.logger.log_dir)
    labels = image_data(24, seed=1).tensors[1]
    expected_positions = {name: (labels == index).nonzero().flatten()[:6].tolist() for index, name in enumerate("abc")}
    for name in "abc":
        count = events.Scalars(f"clusters/{name}/count")
        assert len(count) == 1 and count[0].value == callback.results["abc".index(name)].clustering.count
        assert len(events.Scalars(f"clusters/{name}/eigengap")) == 1
        assert len(events.Images(f"clusters/{name}/eigenvalues")) == 1
        assert len(events.Images(f"clusters/{name}/prototypes")) == 1
        assert callback.labels[name].shape == (len(expected_positions[name]),)
    tables = sorted((tmp_path / "tb" / "version_0" / "clusters").iterdir())
    assert [path.suffix for path in tables] == [".csv", ".md"]
    with open(tables[0], newline="") as handle:
        rows = list(csv.DictReader(handle))
    for name in "abc":
        mine = [row for row in rows if row["class"] == name]
        assert [int(row["position"]) for row in mine] == expected_positions[name]
        assert [int(row["cluster"]) for row in mine] == callback.labels[name].tolist()
    assert "| cluster | size |" in tables[1].read_text()


def test_csv_logger_and_no_logger_get_files(tmp_path, seeded_fit):
    callbacks = [SanityCheckCallback("gradient", num_samples=3), RelevanceClusterCallback("gradient", num_samples=4, knn=2)]
    trainer, _, _ = seeded_fit(
        tmp_path / "csv", callbacks, logger=CSVLogger(tmp_path / "csv", name="csv"), max_epochs=1
    )
    log_dir = trainer.logger.log_dir
    with open(f"{log_dir}/metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert any(row.get("sanity/gradient/mprt_spearman") for row in rows)
    assert any(row.get("clusters/0/count") for row in rows)
    assert len(list((tmp_path / "csv" / "csv" / "version_0" / "attribution" / "sanity" / "gradient" / "mprt").glob("*.png"))) == 1
    assert len(list((tmp_path / "csv" / "csv" / "version_0" / "attribution" / "clusters").rglob("*.png"))) == 6
    assert len(list((tmp_path / "csv" / "csv" / "version_0" / "clusters").glob("*.csv"))) == 1

    callbacks = [SanityCheckCallback("gradient", num_samples=3), RelevanceClusterCallback("gradient", num_samples=4, knn=2)]
    seeded_fit(tmp_path / "none", callbacks, max_epochs=1)
    assert len(list((tmp_path / "none" / "attribution" / "sanity").rglob("*.png"))) == 1
    assert len(list((tmp_path / "none" / "clusters").glob("*.md"))) == 1


def test_bad_arguments_raise_clear_errors(tmp_path, seeded_fit):
    with pytest.raises(KeyError, match="known names"):
        SanityCheckCallback("nonsense")
    with pytest.raises(ValueError, match="never runs"):
        SanityCheckCallback("gradient", at_fit_end=False)
    with pytest.raises(ValueError, match="layers must be one of"):
        SanityCheckCallback("gradient", layers="all")
    with pytest.raises(ValueError, match="one composite"):
        RelevanceClusterCallback(["gradient", "epsilon_plus_flat"])
    with pytest.raises(ValueError, match="knn must be a positive int"):
        RelevanceClusterCallback("gradient", knn=0)
    with pytest.raises(ValueError, match="classes must be"):
        RelevanceClusterCallback("gradient", classes=[-1])
    with pytest.raises(ValueError, match="taken by the random baseline"):
        AttributionCallback({"random": "gradient"})
    callback = SanityCheckCallback("gradient", samples=torch.randn(2, 5, 8, 8))
    with pytest.raises(ValueError, match="do not fit"):
        seeded_fit(tmp_path, [callback], max_epochs=1)
