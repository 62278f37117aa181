"""Non-finite values: what every metric returns for them, and how the callback reports them.

Metrics: a sample with NaN/Inf attributions or model scores counts as NaN, so ``compute()`` is NaN
(never a number ranked or averaged from non-finite values). Callback: a model whose weights turned
NaN, or a rule that divides by zero, logs no image and only finite scalars, warns once per explainer
naming the cause, and training goes on.
"""
from __future__ import annotations

import math
import warnings

import pytest
import torch
from lightning.pytorch import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn

from lrp_lightning.callbacks import AttributionCallback
from lrp_lightning.callbacks.explainers import build_explainer
from lrp_lightning.callbacks.explanation import explain
from lrp_lightning.callbacks.metric_set import MetricSet
from lrp_lightning.callbacks.samples import Samples
from lrp_lightning.composites import LayerMapComposite
from lrp_lightning.metrics import (
    Complexity,
    Conservation,
    Deletion,
    FaithfulnessCorrelation,
    Insertion,
    PixelFlipping,
    RegionPerturbation,
    RelevanceMassAccuracy,
    RelevanceRankAccuracy,
    Sparseness,
)
from lrp_lightning.rules import Epsilon
from lrp_lightning.types import Linear

NAN, INF = float("nan"), float("inf")


def metric_cases(model):
    """(name, metric, update arguments builder) for all ten metrics."""
    return [
        ("region", RegionPerturbation(patch_size=2, steps=3), lambda x, a: (model, x, a, TARGET)),
        ("pixel", PixelFlipping(features_in_step=9), lambda x, a: (model, x, a, TARGET)),
        ("deletion", Deletion(steps=3), lambda x, a: (model, x, a, TARGET)),
        ("insertion", Insertion(steps=3), lambda x, a: (model, x, a, TARGET)),
        ("faithfulness", FaithfulnessCorrelation(nr_runs=4, subset_size=4), lambda x, a: (model, x, a, TARGET)),
        ("sparseness", Sparseness(), lambda x, a: (a,)),
        ("complexity", Complexity(), lambda x, a: (a,)),
        ("mass", RelevanceMassAccuracy(), lambda x, a: (a, MASK)),
        ("rank", RelevanceRankAccuracy(), lambda x, a: (a, MASK)),
        ("conservation", Conservation(), lambda x, a: (a, torch.ones(3, 4))),
    ]


TARGET = torch.tensor([0, 1, 2])
MASK = torch.zeros(3, 3, 6, 6, dtype=torch.bool)
MASK[:, :, :3] = True


def values_of(result) -> list:
    if isinstance(result, dict):
        return [float(v) for value in result.values() for v in torch.as_tensor(value).flatten()]
    return [float(result)]


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 4)).eval()


@pytest.mark.parametrize("poison", [NAN, INF, -INF])
def test_every_metric_returns_nan_once_a_sample_has_non_finite_attributions(poison):
    generator = torch.Generator().manual_seed(1)
    x, a = torch.randn(3, 3, 6, 6, generator=generator), torch.randn(3, 3, 6, 6, generator=generator)
    poisoned = a.clone()
    poisoned[1, 0, 2, 2] = poison
    model = net()
    for name, metric, arguments in metric_cases(model):
        metric.update(*arguments(x, a))
        assert all(math.isfinite(v) for v in values_of(metric.compute())), name
        metric.reset()
        metric.update(*arguments(x, poisoned))
        assert all(math.isnan(v) for v in values_of(metric.compute())), name
        metric.reset()
        metric.update(*arguments(x, a))
        assert all(math.isfinite(v) for v in values_of(metric.compute())), f"{name} after reset"


@pytest.mark.parametrize("poison", [NAN, INF])
def test_faithfulness_metrics_return_nan_for_non_finite_model_scores(poison):
    generator = torch.Generator().manual_seed(2)
    x, a = torch.randn(3, 3, 6, 6, generator=generator), torch.randn(3, 3, 6, 6, generator=generator)
    model = net()

    def broken(inputs):
        scores = model(inputs)
        return torch.where(torch.arange(4) == 0, torch.full_like(scores, poison), scores)

    for name, metric, arguments in metric_cases(broken)[:5]:
        metric.update(*arguments(x, a))
        assert all(math.isnan(v) for v in values_of(metric.compute())), name


class PoisonWeights(Callback):
    """Sets the classifier's weights to NaN at the end of the first training epoch (after its validation)."""

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch == 0:
            with torch.no_grad():
                pl_module.net[5].weight.fill_(NAN)


def test_nan_weights_warn_once_log_no_nan_image_or_scalar_and_training_goes_on(
    tmp_path, make_trainer, read_events, tiny_classifier, tiny_data
):
    callback = AttributionCallback(["epsilon_plus", "gradient"], num_samples=2)
    model = tiny_classifier()
    trainer = make_trainer(tmp_path, [callback, PoisonWeights()], logger=TensorBoardLogger(tmp_path, name="tb"),
                           max_epochs=3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(model, datamodule=tiny_data())
    messages = [str(w.message) for w in caught if "is not finite" in str(w.message)]
    for name in ("epsilon_plus", "gradient"):
        mine = [m for m in messages if m.startswith(f"AttributionCallback: {name}'s explanation")]
        assert len(mine) == 1, messages
        assert "model's outputs" in mine[0] and "epoch 1" in mine[0] and "sparseness" in mine[0]
    assert model.training_steps == 3 * trainer.num_training_batches  # training went on
    events = read_events(trainer.logger.log_dir)
    for name in ("epsilon_plus", "gradient"):
        assert len(events.Images(f"attribution/{name}/grid")) == 1  # epoch 0 only
        values = [event.value for event in events.Scalars(f"attribution/{name}/sparseness")]
        assert len(values) == 1 and math.isfinite(values[0])
    assert len(events.Images("attribution/curves/aopc_morf")) == 1


def test_nan_relevance_of_a_finite_model_is_blamed_on_the_relevance():
    model = nn.Sequential(nn.Linear(4, 3))
    with torch.no_grad():
        model[0].weight.zero_()
        model[0].bias.zero_()  # z = 0 everywhere: R / (z + 0) divides by zero
    composite = LayerMapComposite(layer_map=[(Linear, Epsilon(epsilon=0.0))])
    samples = Samples(torch.randn(2, 4), torch.tensor([0, 1]))
    explainer = build_explainer("eps0", composite, model, samples.inputs)
    metric_set = MetricSet({"sparseness": Sparseness()}, torch.device("cpu"), conservation=True)
    report, = explain(model, samples, "label", [explainer], [metric_set], torch.device("cpu"), "coldnhot",
                      lambda n: False)
    assert report.error is None and report.nonfinite == "relevance" and report.picture is None
    assert not torch.isfinite(report.relevance).all()
    assert report.dropped == ["conservation", "sparseness"] and report.results.scalars == {}
