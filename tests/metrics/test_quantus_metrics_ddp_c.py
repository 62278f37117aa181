"""DDP: two CPU processes (gloo) each see part of the data; the synced value equals one process on all.

Covers ROAD, Consistency and Continuity. ROAD without noise and Continuity without normalisation
treat every sample on its own, so they must equal one process on the whole batch. ROAD with noise
draws per update, Consistency groups the samples of an update and Continuity's normalisation spans
an update, so for those the synced value must equal the sample-weighted mean of the two shards
evaluated on their own.
"""

import pytest
import torch
from torch import nn

from lrp_lightning.metrics import ROAD, Consistency, Continuity

JOIN_TIMEOUT_S = 180
SHARDS = (slice(0, 3), slice(3, 5))
PER_UPDATE = ("road_noisy", "consistency", "continuity")


def make_data():
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(5, 1, 8, 8, generator=generator, dtype=torch.float64)
    attributions = torch.randn(5, 1, 8, 8, generator=generator, dtype=torch.float64)
    attributions[::2, 0, 0, 0] = 0.0  # two groups for Consistency's default discretisation
    target = torch.randint(0, 4, (5,), generator=generator)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(128, 4)).double()
    return model, inputs, attributions, target


def evaluate(shard: slice) -> dict:
    model, inputs, attributions, target = make_data()
    with torch.no_grad():
        predicted = model(inputs).argmax(dim=1)
    updates = {
        "road": (ROAD(percentages=[10, 40, 70], noise=0.0), (model, inputs[shard], attributions[shard], predicted[shard])),
        "road_noisy": (ROAD(percentages=[10, 40, 70], noise=1.0), (model, inputs[shard], attributions[shard], predicted[shard])),
        "consistency": (Consistency(), (model, inputs[shard], attributions[shard])),
        "continuity": (Continuity(nr_steps=4), (model, inputs[shard], target[shard])),
        "continuity_raw": (Continuity(nr_steps=4, normalise=False), (model, inputs[shard], target[shard])),
    }
    results = {}
    for name, (metric, arguments) in updates.items():
        metric.update(*arguments)
        value = metric.compute()
        results.update({f"{name}/{key}": v for key, v in value.items()} if isinstance(value, dict) else {name: value})
    return results


@pytest.mark.large  # two spawned interpreters: a minute on a loaded 2-core machine
def test_two_process_sync_equals_single_process(
    tmp_path, rank_zero_results, one_process_expectation, assert_same_results
):
    synced = rank_zero_results(evaluate, SHARDS, tmp_path, JOIN_TIMEOUT_S)
    single = one_process_expectation(evaluate, SHARDS, PER_UPDATE)
    assert_same_results(synced, single, 5)
    only_first_shard = evaluate(SHARDS[0])
    assert not torch.allclose(only_first_shard["continuity_raw"], single["continuity_raw"])
    assert not torch.allclose(only_first_shard["road/curve"], single["road/curve"])
