"""User state left alone, bad input rejected with a ValueError naming the problem, closed-form values."""
import math

import pytest
import torch
from torch import nn

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


def training_model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5), nn.Flatten(),
        nn.Linear(4 * 6 * 6, 4),
    )
    model.train()
    model[1].eval()  # mixed flags must come back as they were
    model[0].weight.requires_grad_(False)
    model(torch.randn(2, 3, 6, 6)).sum().backward()
    return model


def snapshot(model: nn.Module) -> dict:
    return {
        "training": [module.training for module in model.modules()],
        "tensors": {name: value.clone() for name, value in [*model.named_parameters(), *model.named_buffers()]},
        "requires_grad": [parameter.requires_grad for parameter in model.parameters()],
        "grads": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "hooks": [(len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks)) for m in model.modules()],
    }


def assert_same_snapshot(before: dict, after: dict) -> None:
    assert before["training"] == after["training"]
    assert before["requires_grad"] == after["requires_grad"]
    assert before["hooks"] == after["hooks"]
    for name, value in before["tensors"].items():
        assert torch.equal(value, after["tensors"][name]), name
    for old, new in zip(before["grads"], after["grads"]):
        assert (old is None and new is None) or torch.equal(old, new)


MODEL_METRICS = [
    lambda: RegionPerturbation(patch_size=2, steps=4),
    lambda: PixelFlipping(features_in_step=6, order="random"),
    lambda: Deletion(steps=4),
    lambda: Insertion(steps=4),
    lambda: FaithfulnessCorrelation(nr_runs=4, subset_size=3),
]


def image_batch(n: int = 3):
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(n, 3, 6, 6, generator=generator)
    attributions = torch.randn(n, 1, 6, 6, generator=generator)
    return inputs, attributions, torch.arange(n) % 4


@pytest.mark.parametrize("make_metric", MODEL_METRICS)
def test_model_state_is_restored_and_outputs_are_deterministic(make_metric):
    model = training_model()
    before = snapshot(model)
    inputs, attributions, target = image_batch()
    rng = torch.get_rng_state()
    metric = make_metric()
    metric.update(model, inputs, attributions, target)
    assert_same_snapshot(before, snapshot(model))
    assert torch.equal(torch.get_rng_state(), rng)
    first = metric.compute()
    # a second instance, and the same one after reset(), give bitwise the same values
    other = make_metric()
    other.update(model, inputs, attributions, target)
    metric.reset()
    metric.update(model, inputs, attributions, target)
    for run in (other.compute(), metric.compute()):
        for key in (first if isinstance(first, dict) else {None: None}):
            assert torch.equal(run[key] if key else run, first[key] if key else first), key
    with pytest.raises(ValueError, match="target out of range"):
        metric.update(model, inputs, attributions, torch.tensor([0, 1, 9]))
    assert_same_snapshot(before, snapshot(model))


@pytest.mark.parametrize("make_metric", MODEL_METRICS)
def test_model_may_be_a_plain_callable(make_metric):
    model = training_model().eval()
    inputs, attributions, target = image_batch()
    with_module, with_function = make_metric(), make_metric()
    with_module.update(model, inputs, attributions, target)
    with_function.update(lambda batch: model(batch), inputs, attributions, target)
    expected = with_module.compute()
    result = with_function.compute()
    for key in (expected if isinstance(expected, dict) else {None: None}):
        torch.testing.assert_close(result[key] if key else result, expected[key] if key else expected)


@pytest.mark.parametrize("make_metric", MODEL_METRICS)
@pytest.mark.parametrize("bad_attributions", [(3, 2, 6, 6), (3, 3, 6, 5), (3, 6), (2, 1, 6, 6), (3, 1, 1, 6, 6)])
def test_attributions_of_a_foreign_shape_are_rejected(make_metric, bad_attributions):
    inputs, _, target = image_batch()
    with pytest.raises(ValueError, match="attributions of shape"):
        make_metric().update(training_model(), inputs, torch.zeros(bad_attributions), target)


@pytest.mark.parametrize("make_metric", MODEL_METRICS)
@pytest.mark.parametrize("bad_target, message", [
    (torch.tensor([0, 1]), "target must have shape"),
    (torch.tensor([[0, 1, 2]]), "target must have shape"),
    (torch.tensor([0.0, 1.0, 2.0]), "integer tensor"),
    (torch.tensor([0, -1, 2]), "negative"),
    (torch.tensor([0, 1, 4]), "target out of range"),
])
def test_bad_targets_are_rejected(make_metric, bad_target, message):
    inputs, attributions, _ = image_batch()
    with pytest.raises(ValueError, match=message):
        make_metric().update(training_model(), inputs, attributions, bad_target)


def test_steps_beyond_what_the_input_allows_are_rejected():
    inputs, attributions, target = image_batch()
    model = training_model()
    cases = [
        (RegionPerturbation(patch_size=2, steps=10), "number of 2-patches"),
        (PixelFlipping(features_in_step=4, steps=10), "steps=10 is larger"),
        (Deletion(steps=37), "number of locations"),
        (FaithfulnessCorrelation(subset_size=37), "subset_size=37"),
    ]
    for metric, message in cases:
        with pytest.raises(ValueError, match=message):
            metric.update(model, inputs, attributions, target)


@pytest.mark.parametrize("build, message", [
    (lambda: RegionPerturbation(order="most"), "unknown order"),
    (lambda: PixelFlipping(order=None), "unknown order"),
    (lambda: RegionPerturbation(baseline="charcoal"), "unknown baseline"),
    (lambda: Deletion(baseline=True), "unknown baseline"),
    (lambda: FaithfulnessCorrelation(baseline=[0.0]), "unknown baseline"),
    (lambda: RegionPerturbation(patch_size=0), "patch_size"),
    (lambda: RegionPerturbation(steps=2.5), "steps"),
    (lambda: Insertion(max_batch_size=0), "max_batch_size"),
    (lambda: FaithfulnessCorrelation(nr_runs=1), "nr_runs"),
])
def test_bad_settings_are_rejected(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_bad_inputs_and_baselines_are_rejected():
    inputs, attributions, target = image_batch()
    model = training_model()
    with pytest.raises(ValueError, match="inputs must be"):
        RegionPerturbation(patch_size=2, steps=2).update(model, inputs[0], attributions[0], target)
    with pytest.raises(ValueError, match="not broadcastable"):
        metric = RegionPerturbation(patch_size=2, steps=2, baseline=lambda x: x[:, :2])
        metric.update(model, inputs, attributions, target)
    with pytest.raises(ValueError, match="needs images"):
        Insertion(steps=2).update(nn.Linear(5, 2), torch.randn(2, 5), torch.randn(2, 5), torch.tensor([0, 1]))


def test_mask_problems_are_rejected():
    attributions = torch.rand(2, 1, 4, 4)
    mask = torch.zeros(2, 1, 4, 4, dtype=torch.bool)
    mask[0, 0, 0, 0] = True
    for metric in (RelevanceMassAccuracy(), RelevanceRankAccuracy()):
        with pytest.raises(ValueError, match=r"empty mask .*\[1\]"):
            metric.update(attributions, mask)
        with pytest.raises(ValueError, match="not broadcastable"):
            metric.update(attributions, torch.ones(3, 4, 4, dtype=torch.bool))


def test_localisation_metrics_take_a_broadcast_mask():
    attributions = torch.zeros(2, 3, 4, 4)
    attributions[:, :, :2] = 1.0  # all relevance in the top half, in all channels
    top_half = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    top_half[..., :2, :] = True
    for metric in (RelevanceMassAccuracy(), RelevanceRankAccuracy()):
        metric.update(attributions, top_half)
        torch.testing.assert_close(metric.compute(), torch.tensor(1.0, dtype=torch.float64))
        metric.reset()
        metric.update(attributions, ~top_half)
        torch.testing.assert_close(metric.compute(), torch.tensor(0.0, dtype=torch.float64))


def test_sparseness_and_complexity_at_their_extremes():
    n = 12
    uniform = torch.full((1, n), -2.0)
    spike = torch.zeros(1, n)
    spike[0, 5] = 3.0
    sparseness, complexity = Sparseness(), Complexity()
    for attributions, gini, entropy in [(uniform, 0.0, math.log(n)), (spike, (n - 1) / n, 0.0)]:
        sparseness.update(attributions)
        complexity.update(attributions)
        torch.testing.assert_close(sparseness.compute().item(), gini)
        torch.testing.assert_close(complexity.compute().item(), entropy)
        sparseness.reset()
        complexity.reset()


def test_conservation_is_the_mean_relative_gap():
    input_relevance = torch.tensor([[1.0, 2.0], [0.5, 0.5]])  # sums 3 and 1
    output_relevance = torch.tensor([[0.0, 2.0, 0.0], [0.0, 0.0, -1.0]])  # sums 2 and -1
    metric = Conservation()
    metric.update(input_relevance, output_relevance)
    torch.testing.assert_close(metric.compute().item(), (0.5 + 2.0) / 2)
    with pytest.raises(ValueError, match="output_relevance must be"):
        metric.update(input_relevance, torch.ones(3, 3))


def test_compute_before_any_update_is_nan():
    for metric in (Sparseness(), RegionPerturbation(patch_size=2, steps=2)):
        with pytest.warns(UserWarning):
            value = metric.compute()
        value = value["aopc"] if isinstance(value, dict) else value
        assert torch.isnan(value)


class RecordingModel(nn.Module):
    """Records, at every forward, whether it was in training mode and whether autograd was on."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3 * 6 * 6, 4)
        self.seen: list[tuple[bool, bool]] = []

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        self.seen.append((self.training or self.linear.training, torch.is_grad_enabled()))
        return self.linear(batch.flatten(1))


@pytest.mark.parametrize("make_metric", MODEL_METRICS)
def test_model_runs_in_eval_mode_without_autograd(make_metric):
    model = RecordingModel().train()
    inputs, attributions, target = image_batch()
    with torch.enable_grad():
        make_metric().update(model, inputs.requires_grad_(), attributions, target)
    assert model.seen and set(model.seen) == {(False, False)}
    assert model.training and model.linear.training
