"""Monotonicity follows Arya et al.'s definition; Quantus 0.6.0's returns True regardless.

Quantus cannot serve as the oracle here: on the inputs below its Monotonicity is True for every sample,
also where the definition's scores visibly fall (the first test shows it). The comparisons use a direct
NumPy reference of the definition: start from the baseline, put features back least relevant first,
and check that the target score never falls.
"""
import numpy as np
import pytest
import quantus
import torch

from lrp_lightning.metrics import Monotonicity

pytestmark = pytest.mark.usefixtures("float64_default")


def reference(model, inputs, attributions, target, features_in_step=1, abs=True, baseline="black", softmax=True):
    outcomes = []
    for x, a, t in zip(inputs.numpy(), attributions.numpy(), target.numpy()):
        relevance = (np.abs(a) if abs else a).reshape(-1)  # single-channel: one value per location
        flat = x.reshape(-1)
        fill = {"black": flat.min(), "white": flat.max()}.get(baseline, baseline)
        current = np.full_like(flat, fill)
        scores = []
        order = np.argsort(relevance, kind="stable")
        for start in range(0, len(order), features_in_step):
            current[order[start:start + features_in_step]] = flat[order[start:start + features_in_step]]
            with torch.no_grad():
                out = model(torch.from_numpy(current.reshape(x.shape)[None]))
            out = out.softmax(1) if softmax else out
            scores.append(out[0, t].item())
        outcomes.append(np.all(np.diff(scores) >= 0))
    return np.mean(outcomes)


def test_quantus_monotonicity_is_true_where_the_definition_is_false(image_batch, small_cnn):
    inputs, attributions, target = image_batch((4, 1, 4, 4))
    model = small_cnn(1, 4, 4)
    oracle = quantus.Monotonicity(disable_warnings=True)(model, inputs.numpy(), target.numpy(),
                                                          a_batch=attributions.numpy(), device="cpu")
    assert all(oracle)
    assert reference(model, inputs, attributions, target) < 1


SETTINGS = [{}, {"features_in_step": 3, "abs": False, "baseline": 0.5}, {"normalise": False, "softmax": False,
                                                                         "baseline": "white"}]


@pytest.mark.parametrize("setting", SETTINGS)
@pytest.mark.parametrize("kind", ["cnn", "mlp"])
def test_monotonicity_matches_the_definition(kind, setting, image_batch, small_cnn, small_mlp, vector_batch):
    if kind == "cnn":
        inputs, attributions, target = image_batch((6, 1, 3, 3), seed=7)
        model = small_cnn(1, 3, 3)
    else:
        inputs, attributions, target = vector_batch((6, 4), seed=8)
        model = small_mlp(4)
    metric = Monotonicity(**setting)
    metric.update(model, inputs, attributions, target)
    options = {key: value for key, value in setting.items() if key != "normalise"}
    expected = reference(model, inputs, attributions, target, **options)
    np.testing.assert_allclose(metric.compute().item(), expected, rtol=1e-12)


def test_monotonicity_counts_an_ordering_that_follows_a_linear_model_as_monotonic():
    # for f(x) = w . x from a zero baseline, putting features back in order of increasing w_i x_i
    # (all positive here) raises the score at every step
    model = torch.nn.Linear(5, 2).double()
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0], [0.0] * 5]))
        model.bias.zero_()
    inputs = torch.ones(1, 5, dtype=torch.float64)
    metric = Monotonicity(baseline=0.0, softmax=False)
    metric.update(model, inputs, torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0]]), torch.tensor([0]))
    assert metric.compute().item() == 1.0
    metric.reset()
    metric.update(model, inputs, torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0]]), torch.tensor([1]))
    assert metric.compute().item() == 1.0  # constant scores never fall


def test_monotonicity_rejects_a_bad_step_and_is_nan_for_nan_attributions(image_batch, small_cnn):
    with pytest.raises(ValueError, match="features_in_step"):
        Monotonicity(features_in_step=-2)
    inputs, attributions, target = image_batch((2, 1, 3, 3))
    attributions[1, 0, 0, 0] = float("nan")
    metric = Monotonicity(normalise=False)
    metric.update(small_cnn(1, 3, 3), inputs, attributions, target)
    assert torch.isnan(metric.compute())
