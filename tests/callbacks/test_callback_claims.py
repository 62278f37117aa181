"""README claims about the callback, each in a real Trainer run: EarlyStopping on an attribution scalar,
``log_images=False``, ``conservation=False``, a registered custom composite used by name, and a
``precision="bf16-mixed"`` run."""
from __future__ import annotations

import math

import pytest
import torch
from lightning.pytorch import seed_everything
from lightning.pytorch.callbacks import EarlyStopping
from lightning.pytorch.loggers import TensorBoardLogger

from lrp_lightning.callbacks import AttributionCallback
from lrp_lightning.composites import COMPOSITES, EpsilonPlus, register_composite
from lrp_lightning.rules import Epsilon


@pytest.fixture
def registered_composite():
    """A custom composite registered under a name for the test's duration."""
    name = "test_epsilon_everywhere"

    @register_composite(name)
    class EpsilonEverywhere(EpsilonPlus):
        """EpsilonPlus with Epsilon(0.25) for every convolution too."""

        def __init__(self, canonizers=None):
            super().__init__(layer_map=[(torch.nn.Conv2d, Epsilon(0.25))], canonizers=canonizers)

    yield name
    COMPOSITES.pop(name)


def test_early_stopping_on_an_attribution_scalar_without_images_or_conservation_by_registered_name(
    tmp_path, registered_composite, make_trainer, read_events, tiny_classifier, tiny_data
):
    callback = AttributionCallback(registered_composite, num_samples=2, log_images=False, conservation=False)
    monitor = f"attribution/{registered_composite}/sparseness"
    # sparseness is > 0 at once: with this threshold EarlyStopping stops after the first epoch
    stopping = EarlyStopping(monitor=monitor, mode="max", stopping_threshold=1e-9, check_on_train_epoch_end=False)
    seed_everything(0)
    model = tiny_classifier()
    trainer = make_trainer(tmp_path, [callback, stopping], logger=TensorBoardLogger(tmp_path, name="tb"), max_epochs=5)
    trainer.fit(model, datamodule=tiny_data())
    assert trainer.current_epoch == 1 and model.training_steps == trainer.num_training_batches
    assert stopping.stopped_epoch == 0 and float(trainer.callback_metrics[monitor]) > 0
    events = read_events(trainer.logger.log_dir)
    tags = events.Tags()
    assert tags["images"] == []  # log_images=False: no grids, no curve figures
    assert monitor in tags["scalars"]
    assert f"attribution/{registered_composite}/conservation" not in tags["scalars"]
    rule_map = events.Tensors(f"attribution/{registered_composite}/rule_map/text_summary")
    assert "Epsilon" in rule_map[0].tensor_proto.string_val[0].decode()


def test_bf16_mixed_precision_run_explains_in_float32(tmp_path, make_trainer, tiny_classifier, tiny_data):
    callback = AttributionCallback(["epsilon_gamma_box", "gradient"], num_samples=2)
    seed_everything(0)
    trainer = make_trainer(tmp_path, [callback], precision="bf16-mixed", max_epochs=1)
    trainer.fit(tiny_classifier(), datamodule=tiny_data())
    report = callback._explain(trainer.lightning_module, callback.samples, with_rule_map=False)
    for name in ("epsilon_gamma_box", "gradient"):
        assert math.isfinite(float(trainer.callback_metrics[f"attribution/{name}/sparseness"]))
    assert all(r.error is None and r.relevance.dtype == torch.float32 for r in report)
