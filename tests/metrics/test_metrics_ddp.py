"""DDP: two CPU processes (gloo) each see part of the data; the synced value equals one process on all.

All ten metrics are covered. FaithfulnessCorrelation draws its random subsets per update, so a shard
draws other subsets than the whole batch does; its synced value must equal the sample-weighted mean of
the two shards evaluated on their own.
"""


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

JOIN_TIMEOUT_S = 120
SHARDS = (slice(0, 3), slice(3, 5))  # uneven on purpose: the mean must weight by sample count


def make_data():
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(5, 3, 6, 6, generator=generator, dtype=torch.float64)
    attributions = torch.randn(5, 1, 6, 6, generator=generator, dtype=torch.float64)
    target = torch.randint(0, 4, (5,), generator=generator)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(144, 4)).double()
    return model, inputs, attributions, target


def evaluate(shard: slice) -> dict:
    """Update every metric with the shard of the data and return all computed values."""
    model, inputs, attributions, target = make_data()
    model_metrics = {
        "region": RegionPerturbation(patch_size=2, steps=5),
        "pixel": PixelFlipping(features_in_step=9, order="lerf"),
        "deletion": Deletion(steps=4),
        "insertion": Insertion(steps=4),
        "faithfulness": FaithfulnessCorrelation(nr_runs=6, subset_size=5),
    }
    results = {}
    for name, metric in model_metrics.items():
        metric.update(model, inputs[shard], attributions[shard], target[shard])
        value = metric.compute()
        results.update({f"{name}/{key}": v for key, v in value.items()} if isinstance(value, dict) else {name: value})
    mask = attributions[shard] > -0.5
    updates = {
        "sparseness": (Sparseness(), (attributions[shard],)),
        "complexity": (Complexity(), (attributions[shard],)),
        "mass": (RelevanceMassAccuracy(), (attributions[shard], mask)),
        "rank": (RelevanceRankAccuracy(), (attributions[shard], mask)),
        "conservation": (Conservation(), (attributions[shard], inputs[shard])),
    }
    for name, (metric, arguments) in updates.items():
        metric.update(*arguments)
        results[name] = metric.compute()
    return results


def test_two_process_sync_equals_single_process(tmp_path, rank_zero_results, one_process_expectation):
    synced = rank_zero_results(evaluate, SHARDS, tmp_path, JOIN_TIMEOUT_S)
    single = one_process_expectation(evaluate, SHARDS, ("faithfulness",))
    assert synced.keys() == single.keys()
    assert len({key.split("/")[0] for key in single}) == 10
    for key, value in single.items():
        torch.testing.assert_close(synced[key], value, msg=key)
    only_first_shard = evaluate(SHARDS[0])
    assert not torch.allclose(only_first_shard["region/curve"], single["region/curve"])
