"""ConceptCallback in real Trainer runs on the CPU, read back from the logs."""
from __future__ import annotations

import csv

import pytest
import torch
from lightning.pytorch import seed_everything
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from lrp_lightning import canonizers, composites
from lrp_lightning.callbacks import ConceptCallback
from lrp_lightning.concepts import ChannelConcept, CondAttribution, class_concept_relevance

SEED = 3
LAYER = "net.0"


@pytest.fixture
def fit(tiny_classifier, tiny_data, make_trainer):
    """Call ``fit(root, callbacks, model_class, **trainer_options)`` for a seeded fit of ``model_class`` (the tiny
    classifier by default) on the tiny data; returns (trainer, model, data)."""

    def fit(root, callbacks, model_class=None, **kwargs):
        seed_everything(SEED)
        model, data = (model_class or tiny_classifier)(), tiny_data()
        trainer = make_trainer(root, callbacks, **kwargs)
        trainer.fit(model, datamodule=data)
        return trainer, model, data

    return fit


def concept_callback(**kwargs):
    return ConceptCallback("epsilon_plus", layers=[LAYER], top_k_concepts=2, reference_size=16, references_per_concept=2,
                           num_samples=4, **kwargs)


def test_concepts_callback_logs_shares_figures_and_drift_to_tensorboard_and_leaves_training_untouched(
    tmp_path, assert_rng_equal, read_events, rng_states, fit
):
    _, plain, _ = fit(tmp_path / "plain", [])
    plain_rng = rng_states()
    callback = concept_callback()
    trainer, model, data = fit(tmp_path, [callback], logger=TensorBoardLogger(tmp_path, name="tb"))
    # bitwise-neutral: the same weights and global RNG state as the fit without the callback
    assert_rng_equal(plain_rng, rng_states())
    for key, value in plain.state_dict().items():
        assert torch.equal(value, model.state_dict()[key]), key
    events = read_events(trainer.logger.log_dir)
    scalars, images = events.Tags()["scalars"], events.Tags()["images"]
    reference_inputs, reference_labels = data.val_set.tensors[0][:16], data.val_set.tensors[1][:16]
    classes = sorted(set(reference_labels.tolist()))
    for label in classes:
        assert len(events.Images(f"concepts/{label}/{LAYER}")) == 2
        assert len(events.Scalars(f"concepts/{label}/{LAYER}/drift")) == 1
        overlap = events.Scalars(f"concepts/{label}/{LAYER}/top_k_overlap")[0].value
        assert overlap in (0.0, 0.5, 1.0)
    # the last epoch's shares, recomputed from the trained model with the engine
    composite = composites.EpsilonPlus(canonizers=[canonizers.SequentialMergeBatchNorm()])
    result = CondAttribution(model.eval())(reference_inputs, [{"y": [int(y)]} for y in reference_labels], composite,
                                           record_layer=[LAYER])
    shares = class_concept_relevance(ChannelConcept().attribute(result.relevances[LAYER]), reference_labels, 3)
    for label in classes:
        top = torch.argsort(-shares[label], stable=True)[:2].tolist()
        logged = {int(tag.rsplit("/", 1)[1]) for tag in scalars
                  if tag.startswith(f"concepts/{label}/{LAYER}/") and tag.rsplit("/", 1)[1].isdigit()
                  and events.Scalars(tag)[-1].step == events.Scalars(f"concepts/{label}/{LAYER}/drift")[-1].step}
        assert logged == set(top)
        for concept in top:
            value = events.Scalars(f"concepts/{label}/{LAYER}/{concept}")[-1].value
            assert value == pytest.approx(float(shares[label, concept]), rel=1e-4, abs=1e-6)


def test_concepts_callback_drift_is_exactly_zero_when_the_model_does_not_change(
    tmp_path, read_events, fit, frozen_classifier
):
    callback = concept_callback()
    trainer, _, _ = fit(tmp_path, [callback], model_class=frozen_classifier,
                        logger=TensorBoardLogger(tmp_path, name="tb"), max_epochs=3)
    events = read_events(trainer.logger.log_dir)
    drift_tags = [tag for tag in events.Tags()["scalars"] if tag.endswith("/drift")]
    assert drift_tags
    for tag in drift_tags:
        assert [event.value for event in events.Scalars(tag)] == [0.0, 0.0]
        assert [event.value for event in events.Scalars(tag.replace("/drift", "/top_k_overlap"))] == [1.0, 1.0]
    # the drift's reference is in the state dict, so a resumed run continues from it
    state = callback.state_dict()
    restored = concept_callback()
    restored.load_state_dict(state)
    assert restored.previous.keys() == callback.previous.keys() and restored.previous
    assert torch.equal(restored.samples.inputs, callback.samples.inputs)


def test_concepts_callback_csv_and_no_logger_fallbacks(tmp_path, fit):
    trainer, _, _ = fit(tmp_path / "csv", [concept_callback()], logger=CSVLogger(tmp_path / "csv", name="csv"))
    with open(f"{trainer.logger.log_dir}/metrics.csv") as handle:
        columns = next(csv.reader(handle))
    assert any(column.startswith(f"concepts/") and column.endswith(f"{LAYER}/drift") for column in columns)
    assert list((tmp_path / "csv" / "csv").glob(f"version_0/attribution/concepts/*/{LAYER}/*.png"))
    fit(tmp_path / "none", [concept_callback(every_n_epochs=2)])
    pictures = list((tmp_path / "none").glob(f"attribution/concepts/*/{LAYER}/*.png"))
    assert pictures and all("epoch=001" in picture.name for picture in pictures)


def test_concepts_callback_bad_arguments_name_the_fix(tmp_path, fit):
    with pytest.raises(ValueError, match=r"no layer 'net.9'.*'net\.0'"):
        fit(tmp_path / "a", [ConceptCallback("epsilon_plus", layers=["net.9"])])
    with pytest.raises(IndexError, match="layer 'net.0' has 4 concepts"):
        fit(tmp_path / "b", [ConceptCallback("epsilon_plus", layers=["net.0"], concepts={"net.0": [4]})])
    with pytest.raises(ValueError, match="add them to layers"):
        ConceptCallback("epsilon_plus", layers=["net.0"], concepts={"net.5": [0]})
    with pytest.raises(KeyError, match="epsilon_plus"):
        ConceptCallback("epsilon_pluss", layers=["net.0"])
    with pytest.raises(ValueError, match="top_k_concepts"):
        ConceptCallback("epsilon_plus", layers=["net.0"], top_k_concepts=0)
