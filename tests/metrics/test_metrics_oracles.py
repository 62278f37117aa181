"""Metrics and Occlusion against independent oracles: naive per-sample loops written from the papers'
definitions (one model call per perturbed image, no batching, no shared code with the library), on
multi-channel images with relevance given per channel (summed over channels into locations)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from lrp_lightning.attribution import Occlusion
from lrp_lightning.metrics import (
    Conservation,
    Deletion,
    FaithfulnessCorrelation,
    Insertion,
    PixelFlipping,
    RelevanceMassAccuracy,
    RelevanceRankAccuracy,
)

pytestmark = pytest.mark.usefixtures("float64_default")
N, C, H, W = 3, 3, 5, 5


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(C, 4, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(4 * H * W, 4)).eval()


def data():
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(N, C, H, W, generator=generator)
    relevance = torch.randn(N, C, H, W, generator=generator)  # per channel: locations sum the channels
    return x, relevance, torch.tensor([0, 3, 1])


def score(net, image, target) -> float:
    with torch.no_grad():
        return float(net(image[None])[0, target])


def ranked_locations(relevance: torch.Tensor) -> list:
    """Pixel locations (h, w), most relevant (summed over channels) first."""
    per_pixel = relevance.sum(dim=0).flatten()
    return [divmod(int(i), W) for i in torch.argsort(per_pixel, descending=True)]


def fraction_curve(net, x, relevance, target, steps, insert) -> list:
    image = torch.zeros_like(x) if insert else x.clone()
    order = ranked_locations(relevance)
    curve = [score(net, image, target)]
    done = 0
    for k in range(1, steps + 1):
        for h, w in order[done:(k * H * W) // steps]:
            image[:, h, w] = x[:, h, w] if insert else 0.0
        done = (k * H * W) // steps
        curve.append(score(net, image, target))
    return curve


@pytest.mark.parametrize("metric_class, insert", [(Deletion, False), (Insertion, True)])
def test_deletion_and_insertion_equal_a_naive_loop(metric_class, insert):
    net, (x, relevance, target) = model(), data()
    steps = 7
    curves = torch.tensor([fraction_curve(net, x[i], relevance[i], target[i], steps, insert) for i in range(N)])
    mean_curve = curves.mean(dim=0)
    auc = float(((mean_curve[1:] + mean_curve[:-1]) / 2).sum() / steps)
    metric = metric_class(steps=steps, baseline=0.0)
    metric.update(net, x, relevance, target)
    result = metric.compute()
    torch.testing.assert_close(result["curve"], mean_curve)
    assert float(result["auc"]) == pytest.approx(auc, rel=1e-10)


def test_pixel_flipping_on_multi_channel_images_equals_a_naive_loop():
    net, (x, relevance, target) = model(), data()
    per_step = 4
    drops = []
    for i in range(N):
        image, order = x[i].clone(), ranked_locations(relevance[i])
        clean = score(net, x[i], target[i])
        curve = [0.0]
        for start in range(0, H * W, per_step):
            for h, w in order[start:start + per_step]:
                image[:, h, w] = 0.0
            curve.append(clean - score(net, image, target[i]))
        drops.append(curve)
    expected = torch.tensor(drops).mean(dim=0)
    metric = PixelFlipping(features_in_step=per_step, baseline=0.0)
    metric.update(net, x, relevance, target)
    result = metric.compute()
    torch.testing.assert_close(result["curve"], expected)
    assert float(result["aopc"]) == pytest.approx(float(expected.mean()), rel=1e-10)


def test_faithfulness_correlation_equals_a_naive_loop_over_the_documented_subsets():
    net, (x, relevance, target) = model(), data()
    nr_runs, subset_size, seed = 6, 4, 11
    generator = torch.Generator().manual_seed(seed)
    correlations = []
    for i in range(N):
        per_pixel = relevance[i].sum(dim=0).flatten()
        keys = torch.rand(nr_runs, H * W, generator=generator)  # as documented: smallest keys form a subset
        clean = score(net, x[i], target[i])
        sums, drops = [], []
        for run in range(nr_runs):
            subset = torch.argsort(keys[run])[:subset_size]
            image = x[i].clone()
            for index in subset:
                h, w = divmod(int(index), W)
                image[:, h, w] = 0.0
            sums.append(float(per_pixel[subset].sum()))
            drops.append(clean - score(net, image, target[i]))
        correlations.append(torch.corrcoef(torch.tensor([sums, drops]))[0, 1])
    metric = FaithfulnessCorrelation(nr_runs=nr_runs, subset_size=subset_size, baseline=0.0, seed=seed)
    metric.update(net, x, relevance, target)
    assert float(metric.compute()) == pytest.approx(float(torch.stack(correlations).mean()), rel=1e-8)


def test_occlusion_equals_a_naive_loop_of_window_drops():
    net, (x, _, target) = model(), data()
    window, stride, fill = 2, 2, 0.5
    starts = [0, 2, 3]  # every 2 pixels, plus one window flush with the end (length 5)
    expected = torch.zeros_like(x)
    for i in range(N):
        clean = score(net, x[i], target[i])
        total, count = torch.zeros(H, W), torch.zeros(H, W)
        for top in starts:
            for left in starts:
                image = x[i].clone()
                image[:, top:top + window, left:left + window] = fill
                total[top:top + window, left:left + window] += clean - score(net, image, target[i])
                count[top:top + window, left:left + window] += 1
        expected[i] = (total / count).expand(C, H, W)
    _, attribution = Occlusion(net, window=window, stride=stride, fill=fill)(x, target)
    torch.testing.assert_close(attribution, expected)


def test_localisation_metrics_on_multi_channel_relevance_and_masks_equal_naive_counts():
    _, relevance, _ = data()
    mask = torch.zeros(N, C, H, W, dtype=torch.bool)
    mask[:, :, 1:3, 1:4] = True
    mask[1, 2, 4, 4] = True  # a per-channel mask, not only per pixel
    mass, rank = [], []
    for i in range(N):
        values, inside = relevance[i].flatten(), mask[i].flatten()
        mass.append(float(values[inside].sum() / values.sum()))
        size = int(inside.sum())
        top = torch.argsort(values, descending=True, stable=True)[:size]
        rank.append(float(inside[top].sum()) / size)
    mass_metric, rank_metric = RelevanceMassAccuracy(), RelevanceRankAccuracy()
    mass_metric.update(relevance, mask)
    rank_metric.update(relevance, mask)
    assert float(mass_metric.compute()) == pytest.approx(sum(mass) / N, rel=1e-10)
    assert float(rank_metric.compute()) == pytest.approx(sum(rank) / N, rel=1e-10)


def test_conservation_equals_its_formula_sample_by_sample():
    _, relevance, target = data()
    output_relevance = torch.nn.functional.one_hot(target, 4).double() * torch.tensor([[2.0], [-0.5], [1.5]])
    expected = sum(
        abs(float(relevance[i].sum()) - float(output_relevance[i].sum())) / abs(float(output_relevance[i].sum()))
        for i in range(N)
    ) / N
    metric = Conservation()
    metric.update(relevance, output_relevance)
    assert float(metric.compute()) == pytest.approx(expected, rel=1e-12)
