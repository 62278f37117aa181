"""DDP: the issue-25 faithfulness, complexity and axiomatic metrics synced over two CPU processes (gloo)
equal one process that saw all the data.

Per-sample metrics are compared with one process updated shard by shard (the same per-update batches, so
the batch-wise ``normalise`` and Sufficiency's batch neighbourhoods are the same): their states are sums,
so the synced mean must equal it. SensitivityN keeps per-sample rows (``cat``): its correlation across
the union of the shards must equal that of one process updated with both shards. MonotonicityCorrelation
draws per update from a generator seeded afresh on each rank, so its synced value must equal the
sample-weighted mean of the shards evaluated on their own.
"""

import torch
from torch import nn

from lrp_lightning.attribution import Gradient
from lrp_lightning.metrics import (
    IROF,
    Completeness,
    EffectiveComplexity,
    FaithfulnessEstimate,
    Infidelity,
    InputInvariance,
    Monotonicity,
    MonotonicityCorrelation,
    NonSensitivity,
    Selectivity,
    SensitivityN,
    Sufficiency,
)

JOIN_TIMEOUT_S = 300  # wall time: spawning two interpreters on a loaded 2-core machine
SHARDS = (slice(0, 3), slice(3, 5))


def make_data():
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(5, 1, 6, 6, generator=generator, dtype=torch.float64)
    attributions = torch.randn(5, 1, 6, 6, generator=generator, dtype=torch.float64)
    target = torch.randint(0, 4, (5,), generator=generator)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(144, 4)).double()
    return model, inputs, attributions, target


def build_metrics() -> dict:
    return {
        "faithfulness_estimate": FaithfulnessEstimate(features_in_step=3),
        "irof": IROF(baseline=0.0),
        "infidelity": Infidelity(perturb_patch_sizes=[2, 3]),
        "monotonicity": Monotonicity(features_in_step=6),
        "monotonicity_correlation": MonotonicityCorrelation(nr_samples=3, features_in_step=6),
        "selectivity": Selectivity(patch_size=3),
        "sensitivity_n": SensitivityN(normalise=False),
        "sufficiency": Sufficiency(threshold=0.9),
        "effective_complexity": EffectiveComplexity(eps=0.3, normalise=False),
        "completeness": Completeness(normalise=False, rtol=0.5),
        "non_sensitivity": NonSensitivity(eps=0.05),
        "input_invariance": InputInvariance("gradient", rtol=1e-3),
    }


def evaluate(shards) -> dict:
    """Update every metric with each shard in turn, then compute."""
    model, inputs, attributions, target = make_data()
    results = {}
    for name, metric in build_metrics().items():
        for shard in shards:
            if name == "effective_complexity":
                metric.update(attributions[shard])
            elif name == "input_invariance":  # gradients, made non-invariant for the samples 1 and 4
                with Gradient(model) as attributor:
                    gradients = attributor(inputs, target)[1]
                gradients[torch.tensor([1, 4])] *= 1.01
                metric.update(model, inputs[shard], gradients[shard], target[shard])
            elif name == "sufficiency":
                metric.update(model, inputs[shard], attributions[shard])
            else:
                metric.update(model, inputs[shard], attributions[shard], target[shard])
        value = metric.compute()
        results.update({f"{name}/{key}": v for key, v in value.items()} if isinstance(value, dict) else {name: value})
    return results


def test_two_process_sync_equals_one_process_updated_shard_by_shard(tmp_path, rank_zero_results):
    synced = rank_zero_results(evaluate, [[shard] for shard in SHARDS], tmp_path, JOIN_TIMEOUT_S)
    single = evaluate(SHARDS)
    # each rank's generator starts from the seed; one process continues its stream into the second shard
    weights = [(shard.stop - shard.start) / 5 for shard in SHARDS]
    fresh = [evaluate([shard])["monotonicity_correlation"] for shard in SHARDS]
    single["monotonicity_correlation"] = sum(weight * value for weight, value in zip(weights, fresh))
    assert synced.keys() == single.keys()
    assert len({key.split("/")[0] for key in single}) == 12
    for key, value in single.items():
        torch.testing.assert_close(synced[key], value, msg=key, equal_nan=False)
    first_shard_only = evaluate([SHARDS[0]])
    assert not torch.allclose(first_shard_only["sensitivity_n/curve"], single["sensitivity_n/curve"])
