"""Interrupts: a ``KeyboardInterrupt`` (or any ``BaseException``) inside an explanation propagates and
leaves the model (parameters, buffers, flags, ``.grad``, hooks) and the global RNGs exactly as before —
in the engine (composite contexts, attributors) and in the callback."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from lightning.pytorch import seed_everything
from torch import nn

from lrp_lightning.attribution import ATTRIBUTORS, get_attributor
from lrp_lightning.callbacks import AttributionCallback
from lrp_lightning.callbacks.explainers import build_explainer
from lrp_lightning.callbacks.explanation import explain
from lrp_lightning.callbacks.metric_set import MetricSet
from lrp_lightning.callbacks.samples import Samples
from lrp_lightning.canonizers import SequentialMergeBatchNorm
from lrp_lightning.composites import COMPOSITES
from lrp_lightning.core import Composite
from lrp_lightning.metrics import Sparseness


class Interrupt(nn.Module):
    """Identity that, once armed, draws from every global RNG and then raises ``error`` in the
    forward or (through a tensor hook) in the backward pass."""

    def __init__(self, phase: str, error: type = KeyboardInterrupt) -> None:
        super().__init__()
        self.phase, self.error, self.armed = phase, error, False

    def _fire(self) -> None:
        torch.rand(3), np.random.rand(), random.random()
        raise self.error("interrupted")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.armed and self.phase == "forward":
            self._fire()
        if self.armed and self.phase == "backward" and x.requires_grad:
            x = x * 1.0
            x.register_hook(lambda grad: self._fire())
        return x


def interrupted_model(phase: str, error: type = KeyboardInterrupt) -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), Interrupt(phase, error), nn.Dropout(0.5),
        nn.Flatten(), nn.Linear(4 * 8 * 8, 5),
    )
    model[1].running_mean.normal_()
    model[1].running_var.uniform_(0.5, 2.0)
    model[6].weight.grad = torch.randn_like(model[6].weight)
    model[0].bias.requires_grad_(False)
    return model.train()


def composite(name: str) -> Composite:
    bounds = {"low": -3.0, "high": 3.0} if name == "epsilon_gamma_box" else {}
    return COMPOSITES[name](canonizers=[SequentialMergeBatchNorm()], **bounds)


@pytest.fixture
def everything(module_state, random_state):
    """Call ``everything(model)`` for the model's state and the global RNG states."""

    def everything(model: nn.Module) -> tuple:
        return module_state(model), random_state()

    return everything


@pytest.fixture
def assert_everything_equal(assert_same_module_state, assert_rng_equal):
    """Call ``assert_everything_equal(before, after)`` to compare two ``everything`` snapshots."""

    def assert_everything_equal(before: tuple, after: tuple) -> None:
        assert_same_module_state(before[0], after[0])
        assert_rng_equal(before[1], after[1])

    return assert_everything_equal


X = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("phase", ["forward", "backward"])
@pytest.mark.parametrize("name", sorted(ATTRIBUTORS))
@pytest.mark.parametrize("error", [KeyboardInterrupt, SystemExit])
def test_attributors_restore_everything_and_propagate_an_interrupt(
    name, phase, error, everything, assert_everything_equal
):
    if name == "occlusion" and phase == "backward":
        pytest.skip("occlusion runs no backward pass")
    model = interrupted_model(phase, error)
    before = everything(model)
    options = {"occlusion": {"window": 4, "stride": 4}, "smoothgrad": {"n_iter": 2}, "integrated_gradients": {"n_iter": 2}}
    with pytest.raises(error, match="interrupted"):
        with get_attributor(name)(model, composite("epsilon_gamma_box"), **options.get(name, {})) as attributor:
            model[3].armed = True
            attributor(X, 1)
    model[3].armed = False
    assert_everything_equal(before, everything(model))


@pytest.mark.parametrize("name", sorted(COMPOSITES))
@pytest.mark.parametrize("phase", ["forward", "backward"])
def test_composite_context_removes_hooks_and_canonizers_on_an_interrupt(
    name, phase, assert_same_module_state, module_state
):
    model = interrupted_model(phase)
    before = module_state(model)
    x = X.clone().requires_grad_(True)
    with pytest.raises(KeyboardInterrupt):
        with composite(name).context(model) as modified:
            model[3].armed = True
            torch.autograd.grad(modified(x)[:, 0].sum(), x)
    model[3].armed = False
    assert_same_module_state(before, module_state(model))


def test_callback_explanation_propagates_an_interrupt_and_restores_everything(
    assert_rng_equal, rng_states, assert_same_preserved_state, preserved_model_state
):
    model = interrupted_model("backward")
    samples = Samples(X, torch.tensor([0, 1]))
    explainer = build_explainer("ep", "epsilon_plus", model, samples.inputs)
    metric_set = MetricSet({"sparseness": Sparseness()}, torch.device("cpu"), conservation=True)
    model[3].armed = True
    before, rng = preserved_model_state(model), rng_states()
    with pytest.raises(KeyboardInterrupt):
        explain(model, samples, "label", [explainer], [metric_set], torch.device("cpu"), "coldnhot", lambda n: True)
    assert_same_preserved_state(before, preserved_model_state(model))
    assert_rng_equal(rng, rng_states())


@pytest.fixture(scope="session")
def interrupting_composite(exploding_composite):
    """A composite fine at fit start that, at the first epoch's explanation, sabotages the model, then Ctrl-C."""

    class InterruptingComposite(exploding_composite):
        error = KeyboardInterrupt

    return InterruptingComposite


def test_ctrl_c_during_the_callback_stops_training_with_the_model_as_before(
    tmp_path, interrupting_composite, make_trainer, tiny_classifier, tiny_data
):
    seed_everything(3)
    reference = tiny_classifier()
    make_trainer(tmp_path / "ref", [], max_epochs=1).fit(reference, datamodule=tiny_data())
    seed_everything(3)
    model = tiny_classifier()
    trainer = make_trainer(tmp_path, [AttributionCallback({"stop": interrupting_composite()}, num_samples=2)])
    with pytest.raises(SystemExit):  # Lightning turns the KeyboardInterrupt into a graceful exit
        trainer.fit(model, datamodule=tiny_data())
    assert trainer.interrupted and model.training_steps == trainer.num_training_batches
    for key, value in reference.state_dict().items():
        assert torch.equal(value, model.state_dict()[key]), key
    assert not model.net[0]._forward_hooks and model.net[5].weight.requires_grad
