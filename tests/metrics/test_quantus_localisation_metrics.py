"""The localisation metrics agree with Quantus 0.6.0 (black-box oracle), or with their paper where Quantus is broken.

Quantus takes single-channel attributions and masks (N, 1, ...); images (N, 1, H, W) stand for the
small CNN's inputs and (N, 1, D) for the MLP's vectors (ours gets them as (N, D)). The model is never
evaluated by these metrics.
"""
import warnings

import numpy as np
import pytest
import quantus
import torch

from lrp_lightning.metrics import AUC, AttributionLocalisation, Focus, PointingGame, RelevanceMaskAUC, TopKIntersection

warnings.filterwarnings("ignore", module="quantus")

SHAPES = {"image": (6, 1, 8, 10), "vector": (6, 1, 24)}


def attributions_and_mask(kind: str, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    shape = SHAPES[kind]
    attributions = torch.randn(shape, generator=generator, dtype=torch.float64)
    attributions[1] = attributions[1].abs() ** 3
    mask = torch.zeros(shape, dtype=torch.bool)
    if kind == "image":
        mask[:, :, 2:5, 1:6] = True
    else:
        mask[:, :, 3:11] = True
    mask[3] = torch.rand(shape[1:], generator=generator) > 0.6
    mask[4] = torch.rand(shape[1:], generator=generator) > 0.8
    mask[4].view(-1)[0] = True
    return attributions, mask


def quantus_scores(oracle, attributions: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    n = attributions.shape[0]
    return np.asarray(oracle(
        model=None, x_batch=np.zeros(tuple(attributions.shape)), y_batch=np.zeros(n, dtype=np.int64),
        a_batch=attributions.numpy(), s_batch=mask.numpy().astype(np.float64), channel_first=True,
    ), dtype=np.float64)


def ours(metric, attributions: torch.Tensor, mask: torch.Tensor, kind: str) -> float:
    if kind == "vector":
        attributions, mask = attributions[:, 0], mask[:, 0]
    metric.update(attributions[:2], mask[:2])
    metric.update(attributions[2:], mask[2:])
    return metric.compute().item()


@pytest.mark.parametrize("kind", ["image", "vector"])
@pytest.mark.parametrize("settings", [{}, {"abs": True}, {"abs": False}])
def test_pointing_game_matches_quantus(kind, settings):
    attributions, mask = attributions_and_mask(kind)
    expected = quantus_scores(quantus.PointingGame(disable_warnings=True, **settings), attributions, mask)
    assert ours(PointingGame(**settings), attributions, mask, kind) == pytest.approx(expected.mean(), rel=1e-6)


def test_weighted_pointing_game_follows_its_definition():
    """Quantus 0.6.0's ``weighted=True`` raises a TypeError on any batch with a hit, so the weighting is
    checked against its definition: a hit scores 1 - |mask| / F."""
    attributions, mask = attributions_and_mask("image")
    flat, inside = attributions.flatten(1), mask.flatten(1)
    hits = inside[torch.arange(6), flat.argmax(dim=1)].double()
    expected = (hits * (1 - inside.double().mean(dim=1))).mean()
    assert hits.sum() > 0
    assert ours(PointingGame(weighted=True), attributions, mask, "image") == pytest.approx(expected.item(), rel=1e-12)
    with pytest.raises(TypeError):
        quantus_scores(quantus.PointingGame(weighted=True, disable_warnings=True), attributions, mask)


@pytest.mark.parametrize("kind", ["image", "vector"])
@pytest.mark.parametrize("settings", [{}, {"abs": False}, {"abs": False, "positive_attributions": True}])
def test_attribution_localisation_matches_quantus(kind, settings):
    attributions, mask = attributions_and_mask(kind)
    expected = quantus_scores(quantus.AttributionLocalisation(disable_warnings=True, **settings), attributions, mask)
    if kind == "vector":
        attributions, mask = attributions[:, 0], mask[:, 0]
    per_sample = []
    for sample in range(attributions.shape[0]):
        metric = AttributionLocalisation(**settings)
        metric.update(attributions[sample : sample + 1], mask[sample : sample + 1])
        per_sample.append(metric.compute().item())
    # signed relevance (abs=False) gives R_in > R_tot for some samples: NaN in both
    np.testing.assert_allclose(per_sample, expected, rtol=1e-6)


def test_weighted_attribution_localisation_follows_the_paper():
    """Quantus 0.6.0 weights μ by a factor that depends on the batch size (the same sample scores
    differently in batches of 3 and 4; infinite for batches of 1 and 2), and ignores ``max_size``, so
    both are checked against Kohlbrenner et al. (2020): μ_w = μ · S_tot / S_in, and samples whose mask
    covers more than ``max_size`` of the input are left out."""
    attributions, mask = attributions_and_mask("image")
    relevance, inside = attributions.abs().flatten(1), mask.flatten(1).double()
    mu = (relevance * inside).sum(dim=1) / relevance.sum(dim=1)
    share = inside.mean(dim=1)
    assert ours(AttributionLocalisation(weighted=True), attributions, mask, "image") == pytest.approx(
        (mu / share).mean().item(), rel=1e-12)
    kept = share <= 0.2
    assert 0 < kept.sum() < 6
    assert ours(AttributionLocalisation(max_size=0.2), attributions, mask, "image") == pytest.approx(
        mu[kept].mean().item(), rel=1e-12)
    batch_of_3 = quantus_scores(quantus.AttributionLocalisation(weighted=True, disable_warnings=True),
                                attributions[:3], mask[:3])[0]
    batch_of_4 = quantus_scores(quantus.AttributionLocalisation(weighted=True, disable_warnings=True),
                                attributions[:4], mask[:4])[0]
    assert batch_of_3 != pytest.approx(batch_of_4, rel=1e-3)


@pytest.mark.parametrize("kind", ["image", "vector"])
@pytest.mark.parametrize("settings", [{}, {"k": 7, "concept_influence": True}, {"k": 13, "abs": True}])
def test_top_k_intersection_matches_quantus(kind, settings):
    attributions, mask = attributions_and_mask(kind)
    settings = {"k": 10, **settings}  # Quantus' default k=1000 exceeds these inputs; its default is checked below
    expected = quantus_scores(quantus.TopKIntersection(disable_warnings=True, **settings), attributions, mask)
    assert ours(TopKIntersection(**settings), attributions, mask, kind) == pytest.approx(expected.mean(), rel=1e-6)


def test_top_k_intersection_default_k_matches_quantus():
    generator = torch.Generator().manual_seed(5)
    attributions = torch.randn((3, 1, 40, 40), generator=generator, dtype=torch.float64)
    mask = torch.zeros_like(attributions, dtype=torch.bool)
    mask[:, :, 5:30, 8:33] = True
    expected = quantus_scores(quantus.TopKIntersection(disable_warnings=True), attributions, mask)
    assert ours(TopKIntersection(), attributions, mask, "image") == pytest.approx(expected.mean(), rel=1e-6)


@pytest.mark.parametrize("kind", ["image", "vector"])
@pytest.mark.parametrize("settings", [{}, {"abs": True}, {"ties": True}])
def test_auc_matches_quantus(kind, settings):
    attributions, mask = attributions_and_mask(kind)
    if settings.pop("ties", False):
        attributions = attributions.round()  # many ties: each counts one half
    expected = quantus_scores(quantus.AUC(disable_warnings=True, **settings), attributions, mask)
    assert ours(AUC(**settings), attributions, mask, kind) == pytest.approx(expected.mean(), rel=1e-6)
    assert RelevanceMaskAUC is AUC


def mosaic_data(channels: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    attributions = torch.randn((4, channels, 8, 10), generator=generator, dtype=torch.float64)
    positions = torch.tensor([(1, 1, 0, 0), (0, 0, 1, 1), (1, 0, 1, 0), (0, 1, 0, 1)])
    return attributions, positions


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("settings", [{}, {"abs": True}, {"abs": False}])
def test_focus_matches_quantus(channels, settings):
    attributions, positions = mosaic_data(channels)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(channels * 80, 3)).double()
    oracle = quantus.Focus(disable_warnings=True, **settings)
    expected = np.asarray(oracle(
        model=model, x_batch=np.zeros(tuple(attributions.shape)), y_batch=np.zeros(4, dtype=np.int64),
        a_batch=attributions.numpy(), custom_batch=[tuple(row) for row in positions.tolist()], channel_first=True,
        device="cpu",
    ))
    metric = Focus(**settings)
    metric.update(attributions, positions)
    assert metric.compute().item() == pytest.approx(expected.mean(), rel=1e-6)


@pytest.mark.parametrize("make, arguments, message", [
    (lambda: PointingGame(weighted="yes"), None, "weighted"),
    (lambda: AttributionLocalisation(max_size=1.5), None, "max_size"),
    (lambda: AttributionLocalisation(max_size=0), None, "max_size"),
    (lambda: TopKIntersection(k=0), None, "k must be"),
    (lambda: TopKIntersection(k=100), (torch.randn(2, 1, 4, 4), torch.ones(2, 1, 4, 4, dtype=torch.bool)), "k=100"),
    (lambda: AUC(), (torch.randn(2, 1, 4, 4), torch.ones(2, 1, 4, 4, dtype=torch.bool)), "outside"),
    (lambda: PointingGame(), (torch.randn(2, 1, 4, 4), torch.zeros(2, 1, 4, 4, dtype=torch.bool)), "empty mask"),
    (lambda: AUC(), (torch.randn(2, 1, 4, 4), torch.ones(3, 1, 4, 4, dtype=torch.bool)), "broadcastable"),
    (lambda: Focus(), (torch.randn(2, 12), torch.ones(2, 4)), "image mosaics only"),
    (lambda: Focus(), (torch.randn(2, 1, 5, 4), torch.ones(2, 4)), "even sides"),
    (lambda: Focus(), (torch.randn(2, 1, 4, 4), torch.ones(2, 1, 4, 4)), "quadrant flags"),
    (lambda: Focus(), (torch.randn(2, 1, 4, 4), torch.tensor([[1, 0, 0, 0], [0, 0, 0, 0]])), "no quadrant"),
])
def test_bad_arguments_raise(make, arguments, message):
    with pytest.raises((ValueError, TypeError), match=message):
        metric = make()
        metric.update(*arguments)


@pytest.mark.parametrize("make", [PointingGame, AttributionLocalisation, TopKIntersection, AUC])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nonfinite_attributions_give_nan(make, bad):
    attributions, mask = attributions_and_mask("image")
    metric = make(k=5) if make is TopKIntersection else make()
    metric.update(attributions[:3], mask[:3])
    assert torch.isfinite(metric.compute())
    attributions[4, 0, 0, 0] = bad
    metric.update(attributions[3:], mask[3:])
    assert torch.isnan(metric.compute())
    metric.reset()
    metric.update(attributions[:3], mask[:3])
    assert torch.isfinite(metric.compute())


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nonfinite_mosaic_gives_nan(bad):
    attributions, positions = mosaic_data(3)
    attributions[2, 1, 3, 3] = bad
    metric = Focus()
    metric.update(attributions, positions)
    assert torch.isnan(metric.compute())
