"""Consistency equals Quantus 0.6.0's (black-box oracle) on fixed inputs (deterministic: no random draws).

The attributions are built from a few patterns, each copied to several samples with small changes,
so that samples share discretised explanations under every discretisation (with random
attributions every sample would be alone and every value 0, a comparison that cannot fail). One
``update`` gets the batch Quantus gets (its groups are formed within a batch).
"""
import numpy as np
import pytest
import quantus
import torch
from quantus.functions import discretise_func
from torch import nn

from lrp_lightning.metrics import Consistency

pytestmark = pytest.mark.usefixtures("float64_default")
NUM_CLASSES = 3


def model_and_data(kind: str, num_samples: int = 12):
    torch.manual_seed(0)
    if kind == "cnn":
        model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(64, NUM_CLASSES))
        shape = (num_samples, 1, 4, 4)
    else:
        model = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, NUM_CLASSES))
        shape = (num_samples, 16)
    model = model.double().eval()
    generator = torch.Generator().manual_seed(1)
    inputs = torch.randn(shape, generator=generator, dtype=torch.float64)
    patterns = torch.randn(3, 16, generator=generator, dtype=torch.float64).round(decimals=1)
    patterns[0, :3] = 0.0  # zeros and signs tell the patterns apart even under abs
    patterns[1, 1] = -patterns[1, 1].abs() - 0.1
    wiggle = 1 + 1e-4 * torch.rand(num_samples, 1, generator=generator, dtype=torch.float64)
    attributions = patterns[torch.arange(num_samples) % 3] * wiggle
    return model, inputs, attributions.reshape(shape)


CASES = [
    ({}, {}),
    ({"abs": False}, {"discretise_func": discretise_func.sign}),
    ({"discretise_func": "floating_points", "normalise": False}, {"discretise_func": discretise_func.floating_points}),
    ({"discretise_func": "rank", "abs": False}, {"discretise_func": discretise_func.rank}),
]


@pytest.mark.parametrize("kind", ["cnn", "mlp"])
@pytest.mark.parametrize("settings, oracle_functions", CASES)
def test_consistency_matches_quantus(kind, settings, oracle_functions):
    model, inputs, attributions = model_and_data(kind)
    if settings.get("discretise_func") is None and oracle_functions:
        settings = {**settings, "discretise_func": "sign"}
    oracle_settings = {**{key: value for key, value in settings.items() if key != "discretise_func"}, **oracle_functions}
    expected = np.asarray(quantus.Consistency(disable_warnings=True, **oracle_settings)(
        model, inputs.numpy(), np.zeros(len(inputs), dtype=int), a_batch=attributions.numpy(), device="cpu",
        channel_first=True,
    ), dtype=np.float64)
    metric = Consistency(**settings)
    metric.update(model, inputs, attributions)
    assert 0 < expected.mean() < 1
    np.testing.assert_allclose(metric.compute().item(), expected.mean(), rtol=1e-12)


def test_value_by_hand_and_callable_discretisation():
    """Keys [a, a, a, b] with predictions [0, 0, 1, 1]: 1/2, 1/2, 0 (others agree on none), 0 (alone)."""
    model = nn.Linear(2, 2).double()
    with torch.no_grad():
        model.weight.copy_(torch.eye(2))
        model.bias.zero_()
    inputs = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0], [0.0, 3.0]])
    attributions = torch.tensor([[1.0, 5.0], [1.0, 6.0], [1.0, 7.0], [2.0, 1.0]])
    metric = Consistency(discretise_func=lambda values: (values[:, 0] * 100).round())
    metric.update(model, inputs, attributions)
    torch.testing.assert_close(metric.compute(), torch.tensor(2 * (1 / (2 + 1e-9)) / 4, dtype=torch.float64))


def test_token_ids_and_chunks():
    class Embedder(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(10, 3)

        def forward(self, ids, attention_mask=None):
            weights = torch.ones_like(ids, dtype=torch.float64) if attention_mask is None else attention_mask.double()
            return (self.embedding(ids) * weights[..., None]).sum(dim=1)

    torch.manual_seed(0)
    model = Embedder().double()
    ids = torch.randint(0, 10, (6, 5))
    mask = torch.ones(6, 5, dtype=torch.long)
    mask[:, -1] = 0
    attributions = torch.ones(6, 5, dtype=torch.float64)
    attributions[::2, 0] = 0.0
    whole = Consistency()
    whole.update(model, ids, attributions, attention_mask=mask)
    chunked = Consistency(max_batch_size=4)
    chunked.update(model, ids, attributions, attention_mask=mask)
    predictions = model(ids, attention_mask=mask).argmax(dim=1)
    groups = [torch.arange(0, 6, 2), torch.arange(1, 6, 2)]
    expected = sum(((predictions[group][:, None] == predictions[group][None, :]).sum() - 3).item() / (2 + 1e-9)
                   for group in groups) / 6
    torch.testing.assert_close(whole.compute(), torch.tensor(expected, dtype=torch.float64))
    torch.testing.assert_close(chunked.compute(), whole.compute(), rtol=0, atol=0)


@pytest.mark.parametrize("make, error, message", [
    (lambda: Consistency(discretise_func="top_k"), ValueError, "unknown discretise_func"),
    (lambda: Consistency(abs="yes"), TypeError, "abs"),
    (lambda: Consistency(normalise=None), TypeError, "normalise"),
    (lambda: Consistency(max_batch_size=0), ValueError, "max_batch_size"),
])
def test_bad_arguments_raise(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_bad_update_arguments_raise():
    model, inputs, attributions = model_and_data("mlp")
    with pytest.raises(ValueError, match="attributions must be a tensor with 12 samples"):
        Consistency().update(model, inputs, attributions[:3])
    with pytest.raises(ValueError, match="discretise_func must return keys"):
        Consistency(discretise_func=lambda values: values[:2]).update(model, inputs, attributions)
    with pytest.raises(ValueError, match="attention_mask is only taken"):
        Consistency().update(model, inputs, attributions, attention_mask=torch.ones(12, 16))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nonfinite_sample_gives_nan_and_leaves_the_groups(bad):
    model, inputs, attributions = model_and_data("mlp")
    attributions[4, 7] = bad
    per_sample = {}

    def capture(metric, key):
        accumulate = metric._accumulate
        metric._accumulate = lambda values, *data: (per_sample.__setitem__(key, values), accumulate(values, *data))
        return metric

    metric = capture(Consistency(discretise_func="sign", abs=False), "with")
    metric.update(model, inputs, attributions)
    assert torch.isnan(metric.compute())
    keep = [index for index in range(12) if index != 4]
    capture(Consistency(discretise_func="sign", abs=False), "without").update(model, inputs[keep], attributions[keep])
    # the other samples' values are those of the batch without sample 4: it is in no group and not in the max
    torch.testing.assert_close(per_sample["with"][keep], per_sample["without"], rtol=0, atol=0)
    assert (per_sample["without"] > 0).any()
    metric.reset()
    metric.update(model, inputs[keep], attributions[keep])
    assert torch.isfinite(metric.compute())


def test_model_and_global_rng_untouched():
    model, inputs, attributions = model_and_data("cnn")
    model.train()
    state = {key: value.clone() for key, value in model.state_dict().items()}
    rng = torch.get_rng_state()
    Consistency().update(model, inputs, attributions)
    assert torch.equal(torch.get_rng_state(), rng)
    assert model.training and all(module.training for module in model.modules())
    assert all(torch.equal(state[key], value) for key, value in model.state_dict().items())
