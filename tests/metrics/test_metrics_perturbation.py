"""Perturbation metrics against naive per-sample, per-step loops written here, plus their invariants."""
import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lrp_lightning.metrics import (
    Deletion,
    FaithfulnessCorrelation,
    Insertion,
    PixelFlipping,
    RegionPerturbation,
)


def image_model(channels: int = 3, size: int = 6, classes: int = 4) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(channels, 5, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(5 * size * size, classes)
    ).double()


def vector_model(features: int = 10, classes: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(features, 8), nn.Tanh(), nn.Linear(8, classes)).double()


def data(shape, attribution_shape, classes, seed=5):
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(shape, generator=generator, dtype=torch.float64)
    attributions = torch.randn(attribution_shape, generator=generator, dtype=torch.float64)
    target = torch.randint(0, classes, (shape[0],), generator=generator)
    return inputs, attributions, target


def score(model, image, target, softmax=False):
    with torch.no_grad():
        output = model(image[None])[0]
    return (output.softmax(0) if softmax else output)[target].item()


def locations_by_relevance(relevance_map):
    """Location index tuples sorted by relevance, highest first, ties by position."""
    positions = list(np.ndindex(*relevance_map.shape))
    return sorted(positions, key=lambda position: -relevance_map[position].item())


def set_location(image, position, values):
    """Write ``values`` (same shape as image) into ``image`` at a spatial position (all channels)."""
    index = (slice(None),) + position if image.ndim == 3 else position
    image[index] = values[index]


def naive_fraction_curve(model, inputs, attributions, target, steps, fill_images, insert, softmax):
    curves = []
    for i in range(inputs.shape[0]):
        relevance = attributions[i].sum(0) if attributions.ndim == 4 else attributions[i]
        order = locations_by_relevance(relevance)
        start, source = (fill_images[i], inputs[i]) if insert else (inputs[i], fill_images[i])
        curve = []
        for k in range(steps + 1):
            image = start.clone()
            for position in order[: k * len(order) // steps]:
                set_location(image, position, source)
            curve.append(score(model, image, target[i].item(), softmax))
        curves.append(curve)
    return torch.tensor(curves, dtype=torch.float64).mean(0)


def reference_blur(images):
    """Gaussian blur, size 11, sigma 5, replicated borders, as one 2-D convolution."""
    offsets = torch.arange(11, dtype=images.dtype) - 5
    gauss = torch.exp(-offsets**2 / 50)
    kernel = torch.outer(gauss, gauss) / torch.outer(gauss, gauss).sum()
    channels = images.shape[1]
    padded = F.pad(images, (5, 5, 5, 5), mode="replicate")
    return F.conv2d(padded, kernel.expand(channels, 1, 11, 11), groups=channels)


def test_deletion_matches_naive_loop():
    inputs, attributions, target = data((3, 3, 6, 6), (3, 1, 6, 6), 4)
    model = image_model()
    metric = Deletion(steps=5, baseline=0.3, softmax=True)
    metric.update(model, inputs, attributions, target)
    expected = naive_fraction_curve(model, inputs, attributions, target, 5, torch.full_like(inputs, 0.3), False, True)
    result = metric.compute()
    torch.testing.assert_close(result["curve"], expected)
    trapezoid = (expected[:-1] + expected[1:]).sum() / 2 / 5
    torch.testing.assert_close(result["auc"], trapezoid)


def test_insertion_from_blurred_image_matches_naive_loop():
    inputs, attributions, target = data((2, 3, 6, 6), (2, 3, 6, 6), 4, seed=6)
    model = image_model()
    metric = Insertion(steps=7)
    metric.update(model, inputs, attributions, target)
    expected = naive_fraction_curve(model, inputs, attributions, target, 7, reference_blur(inputs), True, False)
    torch.testing.assert_close(metric.compute()["curve"], expected)


def test_insertion_with_callable_baseline_on_vectors_matches_naive_loop():
    inputs, attributions, target = data((3, 10), (3, 10), 3, seed=7)
    model = vector_model()
    metric = Insertion(steps=4, baseline=lambda x: -x)
    metric.update(model, inputs, attributions, target)
    expected = naive_fraction_curve(model, inputs, attributions, target, 4, -inputs, True, False)
    torch.testing.assert_close(metric.compute()["curve"], expected)


def test_blur_baseline_agrees_with_torchvision_away_from_borders():
    torchvision_functional = pytest.importorskip("torchvision.transforms.functional")
    images = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    expected = torchvision_functional.gaussian_blur(images, kernel_size=[11, 11], sigma=[5.0, 5.0])
    ours = reference_blur(images)
    torch.testing.assert_close(ours[..., 5:11, 5:11], expected[..., 5:11, 5:11])


def centred_segments(size, patch_size):
    """[start, stop) of the patches along one axis; the excess is cut half before, half (rounded up) after."""
    cells = math.ceil(size / patch_size)
    offset = (cells * patch_size - size) // 2
    return [(max(c * patch_size - offset, 0), min((c + 1) * patch_size - offset, size)) for c in range(cells)]


def naive_region_curve(model, inputs, relevance, target, patch_size, steps, order, fill_value):
    curves = []
    for i in range(inputs.shape[0]):
        axes = [centred_segments(size, patch_size) for size in relevance.shape[1:]]
        patches = [tuple(slice(*axes[d][index]) for d, index in enumerate(combination))
                   for combination in np.ndindex(*[len(axis) for axis in axes])]
        sums = [relevance[i][patch].sum().item() for patch in patches]
        ranked = sorted(range(len(patches)), key=lambda p: -sums[p] if order == "morf" else sums[p])
        image, reference, curve = inputs[i].clone(), score(model, inputs[i], target[i].item()), [0.0]
        for p in ranked[:steps]:
            index = (slice(None),) + patches[p] if image.ndim == 3 else patches[p]
            image[index] = fill_value
            curve.append(reference - score(model, image, target[i].item()))
        curves.append(curve)
    return torch.tensor(curves, dtype=torch.float64).mean(0)


@pytest.mark.parametrize("order", ["morf", "lerf"])
def test_region_perturbation_on_vectors_matches_naive_loop(order):
    inputs, attributions, target = data((4, 10), (4, 10), 3, seed=8)
    model = vector_model()
    metric = RegionPerturbation(patch_size=3, steps=4, order=order, baseline=0.25)
    metric.update(model, inputs, attributions, target)
    expected = naive_region_curve(model, inputs, attributions, target, 3, 4, order, 0.25)
    torch.testing.assert_close(metric.compute()["curve"], expected)
    torch.testing.assert_close(metric.compute()["aopc"], expected.mean())


def test_region_perturbation_mean_baseline_and_reduced_attributions_match_naive_loop():
    inputs, attributions, target = data((2, 3, 7, 7), (2, 7, 7), 4, seed=9)
    model = image_model(size=7)
    metric = RegionPerturbation(patch_size=3, steps=5, baseline="mean")
    metric.update(model, inputs, attributions, target)
    curves = [naive_region_curve(model, inputs[i:i + 1], attributions[i:i + 1], target[i:i + 1], 3, 5, "morf",
                                 inputs[i].mean().item()) for i in range(2)]
    torch.testing.assert_close(metric.compute()["curve"], torch.stack(curves).mean(0))


def test_pixel_flipping_with_uneven_last_step_matches_naive_loop():
    inputs, attributions, target = data((2, 3, 5, 5), (2, 3, 5, 5), 4, seed=10)
    model = image_model(size=5)
    metric = PixelFlipping(features_in_step=7, baseline=-0.2)
    metric.update(model, inputs, attributions, target)
    curves = []
    for i in range(2):
        order = locations_by_relevance(attributions[i].sum(0))
        reference, curve = score(model, inputs[i], target[i].item()), []
        for k in range(5):  # 25 locations, 7 per step: 7, 14, 21, 25
            image = inputs[i].clone()
            for position in order[: min(7 * k, 25)]:
                image[(slice(None),) + position] = -0.2
            curve.append(reference - score(model, image, target[i].item()))
        curves.append(curve)
    torch.testing.assert_close(metric.compute()["curve"], torch.tensor(curves, dtype=torch.float64).mean(0))


def replicated_subsets(num_samples, nr_runs, num_locations, subset_size, seed):
    """The subsets FaithfulnessCorrelation documents: per sample, the smallest keys of rand(nr_runs, L)."""
    generator = torch.Generator().manual_seed(seed)
    subsets = []
    for _ in range(num_samples):
        keys = torch.rand(nr_runs, num_locations, generator=generator)
        subsets.append([set(row.argsort()[:subset_size].tolist()) for row in keys])
    return subsets


def test_faithfulness_correlation_matches_naive_loop():
    inputs, attributions, target = data((3, 3, 6, 6), (3, 1, 6, 6), 4, seed=11)
    model = image_model()
    metric = FaithfulnessCorrelation(nr_runs=6, subset_size=5, baseline=0.1, seed=3)
    metric.update(model, inputs, attributions, target)
    subsets = replicated_subsets(3, 6, 36, 5, seed=3)
    correlations = []
    for i in range(3):
        relevance = attributions[i, 0].flatten()
        reference = score(model, inputs[i], target[i].item())
        relevance_sums, drops = [], []
        for subset in subsets[i]:
            image = inputs[i].clone().reshape(3, -1)
            image[:, sorted(subset)] = 0.1
            drops.append(reference - score(model, image.reshape(3, 6, 6), target[i].item()))
            relevance_sums.append(relevance[sorted(subset)].sum().item())
        correlations.append(np.corrcoef(relevance_sums, drops)[0, 1])
    np.testing.assert_allclose(metric.compute().item(), np.mean(correlations), rtol=1e-10)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_faithfulness_correlation_of_exact_linear_attributions_is_plus_minus_one(sign):
    torch.manual_seed(0)
    model = nn.Linear(20, 3).double()
    inputs, _, target = data((4, 20), (4, 20), 3, seed=12)
    attributions = sign * model.weight.detach()[target] * inputs  # drop of a zeroed subset = its summed w*x
    metric = FaithfulnessCorrelation(nr_runs=10, subset_size=6)
    metric.update(model, inputs, attributions, target)
    torch.testing.assert_close(metric.compute(), torch.tensor(sign, dtype=torch.float64))


def perturbation_metrics():
    return [
        lambda **kw: RegionPerturbation(patch_size=2, steps=6, **kw),
        lambda **kw: RegionPerturbation(patch_size=2, steps=6, order="random", **kw),
        lambda **kw: PixelFlipping(features_in_step=5, order="lerf", **kw),
        lambda **kw: Deletion(steps=6, **kw),
        lambda **kw: Insertion(steps=6, **kw),
        lambda **kw: FaithfulnessCorrelation(nr_runs=5, subset_size=4, **kw),
    ]


def as_tensors(result):
    return result if isinstance(result, dict) else {"value": result}


@pytest.mark.parametrize("make_metric", perturbation_metrics())
def test_result_does_not_depend_on_max_batch_size(make_metric):
    inputs, attributions, target = data((3, 3, 6, 6), (3, 1, 6, 6), 4, seed=13)
    model = image_model()
    results = []
    for max_batch_size in (1, 7, 1000):
        metric = make_metric(max_batch_size=max_batch_size)
        metric.update(model, inputs, attributions, target)
        results.append(as_tensors(metric.compute()))
    for result in results[1:]:
        for key in result:
            torch.testing.assert_close(result[key], results[0][key])


class BatchSizeRecorder(nn.Module):
    """Wraps a model and records the batch size of every forward pass."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.batch_sizes: list[int] = []

    def forward(self, inputs):
        self.batch_sizes.append(inputs.shape[0])
        return self.model(inputs)


@pytest.mark.parametrize("max_batch_size, cap", [(None, 64), (100, 100), (1000, 1000)])
def test_cpu_chunks_are_sized_to_the_device_and_even(max_batch_size, cap):
    inputs, attributions, target = data((16, 3, 8, 8), (16, 1, 8, 8), 4, seed=15)
    model = BatchSizeRecorder(image_model(size=8))
    metric = RegionPerturbation(patch_size=1, steps=64, max_batch_size=max_batch_size)
    metric.update(model, inputs, attributions, target)
    sizes = model.batch_sizes
    assert sum(sizes) == 16 * 65 and len(sizes) == math.ceil(16 * 65 / cap)
    assert max(sizes) <= cap and max(sizes) - min(sizes) <= 1
    reference = RegionPerturbation(patch_size=1, steps=64, max_batch_size=7)
    reference.update(model.model, inputs, attributions, target)
    torch.testing.assert_close(metric.compute()["curve"], reference.compute()["curve"])


def test_cpu_chunks_hold_fewer_large_images():
    inputs, attributions, target = data((4, 3, 256, 256), (4, 1, 256, 256), 4, seed=16)
    model = BatchSizeRecorder(nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(12, 4)).double())
    metric = RegionPerturbation(patch_size=64, steps=3)
    metric.update(model, inputs, attributions, target)
    assert model.batch_sizes == [2] * 8


def test_cuda_chunks_follow_the_free_memory_and_other_accelerators_get_large_ones(monkeypatch):
    from lrp_lightning.metrics import _perturbation

    image_bytes = 3 * 224 * 224 * 4
    free = {"bytes": 80 * 2**30}
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (free["bytes"], 96 * 2**30))
    cuda = torch.device("cuda", 0)
    assert _perturbation.device_chunk_cap(cuda, image_bytes) == int(0.25 * 80 * 2**30 / (64 * image_bytes))
    free["bytes"] = 2**30
    assert _perturbation.device_chunk_cap(cuda, image_bytes) == 6
    free["bytes"] = 2**20
    assert _perturbation.device_chunk_cap(cuda, image_bytes) == 1
    free["bytes"] = 2**40
    assert _perturbation.device_chunk_cap(cuda, 3 * 32 * 32 * 4) == 1024
    assert _perturbation.device_chunk_cap(torch.device("mps"), image_bytes) == 1024
    assert _perturbation.device_chunk_cap(torch.device("cpu"), image_bytes) == 6


@pytest.mark.parametrize("make_metric", perturbation_metrics()[:1] + perturbation_metrics()[2:4])
def test_several_updates_average_over_all_samples_and_reset_starts_over(make_metric):
    inputs, attributions, target = data((5, 3, 6, 6), (5, 3, 6, 6), 4, seed=14)
    model = image_model()
    whole = make_metric()
    whole.update(model, inputs, attributions, target)
    parts = make_metric()
    parts.update(model, inputs[:2], attributions[:2], target[:2])
    parts.update(model, inputs[2:], attributions[2:], target[2:])
    for key, value in as_tensors(whole.compute()).items():
        torch.testing.assert_close(as_tensors(parts.compute())[key], value)
    parts.reset()
    parts.update(model, inputs[:2], attributions[:2], target[:2])
    fresh = make_metric()
    fresh.update(model, inputs[:2], attributions[:2], target[:2])
    for key, value in as_tensors(fresh.compute()).items():
        torch.testing.assert_close(as_tensors(parts.compute())[key], value)


@pytest.mark.parametrize("make_metric", [perturbation_metrics()[1], perturbation_metrics()[5]])
def test_randomness_is_seeded_private_and_reseeded_by_reset(make_metric):
    inputs, attributions, target = data((3, 3, 6, 6), (3, 1, 6, 6), 4, seed=15)
    model = image_model()
    torch.manual_seed(123)
    np.random.seed(123)
    random.seed(123)
    states = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    first = make_metric(seed=1)
    first.update(model, inputs, attributions, target)
    first_value = as_tensors(first.compute())
    assert torch.equal(torch.get_rng_state(), states[0])
    assert np.array_equal(np.random.get_state()[1], states[1])
    assert random.getstate() == states[2]
    again = make_metric(seed=1)
    again.update(model, inputs, attributions, target)
    first.reset()
    first.update(model, inputs, attributions, target)
    other_seed = make_metric(seed=2)
    other_seed.update(model, inputs, attributions, target)
    for key, value in first_value.items():
        torch.testing.assert_close(as_tensors(again.compute())[key], value)
        torch.testing.assert_close(as_tensors(first.compute())[key], value)
    assert not all(torch.equal(as_tensors(other_seed.compute())[key], value) for key, value in first_value.items())


def test_random_order_is_a_permutation_of_all_patches():
    inputs, attributions, target = data((2, 3, 6, 6), (2, 1, 6, 6), 4, seed=16)
    model = image_model()
    random_order = RegionPerturbation(patch_size=2, steps=9, order="random")
    morf = RegionPerturbation(patch_size=2, steps=9, order="morf")
    for metric in (random_order, morf):
        metric.update(model, inputs, attributions, target)
    # after all 9 patches every order has replaced the whole image
    torch.testing.assert_close(random_order.compute()["curve"][-1], morf.compute()["curve"][-1])
    assert not torch.allclose(random_order.compute()["curve"], morf.compute()["curve"])
