"""DDP: two CPU processes (gloo) each see part of the data; the synced value equals one process on all.

Covers the localisation, robustness and randomisation metrics. The deterministic ones must equal one
process on the whole batch. Those that draw per update (noise of the robustness metrics and of
SmoothMPRT, RandomLogit's other classes) draw for each shard's own samples, so their synced value must
equal the sample-weighted mean of the two shards evaluated on their own.
"""

import pytest
import torch
from torch import nn

from lrp_lightning.metrics import (
    AUC,
    MPRT,
    AttributionLocalisation,
    AvgSensitivity,
    EfficientMPRT,
    Focus,
    LocalLipschitzEstimate,
    MaxSensitivity,
    PointingGame,
    RandomLogit,
    RelativeInputStability,
    RelativeOutputStability,
    RelativeRepresentationStability,
    SmoothMPRT,
    TopKIntersection,
)

JOIN_TIMEOUT_S = 180
SHARDS = (slice(0, 3), slice(3, 5))
DRAWING = ("avg_sensitivity", "max_sensitivity", "lipschitz", "ris", "ros", "rrs", "smooth_mprt", "random_logit")


def make_data():
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(5, 1, 8, 8, generator=generator, dtype=torch.float64)
    attributions = torch.randn(5, 1, 8, 8, generator=generator, dtype=torch.float64)
    target = torch.randint(0, 4, (5,), generator=generator)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(128, 4)).double()
    return model, inputs, attributions, target


def evaluate(shard: slice) -> dict:
    model, inputs, attributions, target = make_data()
    mask = attributions[shard] > -0.5
    flags = torch.tensor([[1, 0, 0, 1], [0, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 1, 1, 1]])[shard]
    updates = {
        "pointing_game": (PointingGame(), (attributions[shard], mask)),
        "localisation": (AttributionLocalisation(), (attributions[shard], mask)),
        "top_k": (TopKIntersection(k=9), (attributions[shard], mask)),
        "auc": (AUC(), (attributions[shard], mask)),
        "focus": (Focus(), (attributions[shard], flags)),
    }
    no_nan = {"return_nan_when_prediction_changes": False}
    model_metrics = {
        "avg_sensitivity": AvgSensitivity(nr_samples=3),
        "max_sensitivity": MaxSensitivity(nr_samples=3),
        "lipschitz": LocalLipschitzEstimate(nr_samples=3),
        "ris": RelativeInputStability(nr_samples=3, **no_nan),
        "ros": RelativeOutputStability(nr_samples=3, **no_nan),
        "rrs": RelativeRepresentationStability(nr_samples=3, **no_nan),
        "mprt": MPRT(),
        "smooth_mprt": SmoothMPRT(nr_samples=2),
        "efficient_mprt": EfficientMPRT(),
        "random_logit": RandomLogit(num_classes=4),
    }
    for name, metric in model_metrics.items():
        updates[name] = (metric, (model, inputs[shard], target[shard]))
    results = {}
    for name, (metric, arguments) in updates.items():
        metric.update(*arguments)
        value = metric.compute()
        results.update({f"{name}/{key}": v for key, v in value.items()} if isinstance(value, dict) else {name: value})
    return results


@pytest.mark.large  # two spawned interpreters plus four evaluations: minutes on a loaded 2-core machine
def test_two_process_sync_equals_single_process(
    tmp_path, rank_zero_results, one_process_expectation, assert_same_results
):
    synced = rank_zero_results(evaluate, SHARDS, tmp_path, JOIN_TIMEOUT_S)
    single = one_process_expectation(evaluate, SHARDS, DRAWING)
    assert_same_results(synced, single, 15)
    only_first_shard = evaluate(SHARDS[0])
    assert not torch.allclose(only_first_shard["mprt/curve"], single["mprt/curve"])
