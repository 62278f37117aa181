"""Similarity measures and spectral clustering of the callback suite, against SciPy/scikit-image and
hand-made graphs."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from skimage.metrics import structural_similarity

from lrp_lightning.callbacks.attribution.drift import DriftTracker
from lrp_lightning.metrics.similarity import average_ranks, spearman, ssim, topk_iou
from lrp_lightning.callbacks.clusters.spectral import knn_affinity, spectral_clusters


def test_spearman_matches_scipy_with_and_without_ties():
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(4, 3, 5, 5, generator=generator)
    b = a + 0.8 * torch.randn(4, 3, 5, 5, generator=generator)
    a[1, 0] = 0.0  # a block of ties
    b[2] = b[2].round()  # many ties
    ours = spearman(a, b)
    for row in range(4):
        expected = spearmanr(a[row].flatten().numpy(), b[row].flatten().numpy()).statistic
        assert ours[row].item() == pytest.approx(expected, abs=1e-12)


def test_average_ranks_give_ties_their_mean_rank():
    ranks = average_ranks(torch.tensor([[3.0, 1.0, 3.0, 2.0], [5.0, 5.0, 5.0, 5.0]]))
    assert ranks.tolist() == [[3.5, 1.0, 3.5, 2.0], [2.5, 2.5, 2.5, 2.5]]


def test_identical_explanations_have_similarity_exactly_one_and_zero_drift():
    a = torch.randn(3, 2, 9, 9, generator=torch.Generator().manual_seed(1))
    assert spearman(a, a.clone()).tolist() == [1.0, 1.0, 1.0]
    assert topk_iou(a.abs(), a.abs()).tolist() == [1.0, 1.0, 1.0]
    tracker = DriftTracker()
    assert tracker.update("lrp", a) is None
    assert tracker.update("lrp", a.clone()) == {"drift_rank": 0.0, "drift_topk": 0.0}
    resumed = DriftTracker()
    resumed.load_state_dict(tracker.state_dict())
    assert resumed.update("lrp", -a)["drift_rank"] == pytest.approx(2.0)


def hand_topk_iou(a: np.ndarray, b: np.ndarray, fraction: float) -> float:
    """IoU of the index sets of the round(fraction * D) largest |values| (written here, not the library's)."""
    k = max(1, int(np.floor(fraction * a.size + 0.5)))
    top_a = set(np.argsort(-np.abs(a), kind="stable")[:k].tolist())
    top_b = set(np.argsort(-np.abs(b), kind="stable")[:k].tolist())
    return len(top_a & top_b) / len(top_a | top_b)


@pytest.mark.parametrize("seed", range(6))
def test_drift_of_random_pairs_matches_scipy_spearman_and_a_hand_written_topk_iou(seed):
    generator = torch.Generator().manual_seed(seed)
    before = torch.randn(4, 3, 6, 6, generator=generator)
    scale = [0.05, 0.3, 1.0, 3.0][seed % 4]
    after = before + scale * torch.randn(4, 3, 6, 6, generator=generator)
    tracker = DriftTracker()
    assert tracker.update("lrp", before) is None
    drift = tracker.update("lrp", after)
    rows_before, rows_after = before.flatten(1).double().numpy(), after.flatten(1).double().numpy()
    rho = [spearmanr(x, y).statistic for x, y in zip(rows_before, rows_after)]
    iou = [hand_topk_iou(x, y, 0.1) for x, y in zip(rows_before, rows_after)]
    assert drift["drift_rank"] == pytest.approx(1.0 - np.mean(rho), abs=1e-12)
    assert drift["drift_topk"] == pytest.approx(1.0 - np.mean(iou), abs=1e-12)
    assert 0.0 < drift["drift_rank"] < 2.0 and 0.0 <= drift["drift_topk"] <= 1.0


def test_topk_iou_counts_shared_top_features():
    a = torch.tensor([[9.0, 8.0, 0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]])
    b = torch.tensor([[9.0, 0.0, 8.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]])
    assert topk_iou(a, b, fraction=0.2).item() == pytest.approx(1 / 3)  # {0,1} vs {0,2}
    assert topk_iou(a, b, fraction=0.1).item() == 1.0
    with pytest.raises(ValueError, match="fraction"):
        topk_iou(a, b, fraction=0.0)
    with pytest.raises(ValueError, match="equal shapes"):
        topk_iou(a, b[:, :5])


def test_ssim_matches_scikit_image_on_scaled_heatmaps():
    generator = torch.Generator().manual_seed(2)
    a = torch.randn(3, 3, 20, 24, generator=generator)
    b = a + torch.randn(3, 3, 20, 24, generator=generator)
    ours = ssim(a, b)
    for row in range(3):
        maps = [x[row].sum(0).double().numpy() for x in (a, b)]
        maps = [m / np.abs(m).max() for m in maps]
        expected = structural_similarity(
            maps[0], maps[1], data_range=2.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
        )
        assert ours[row].item() == pytest.approx(expected, abs=1e-7)  # float32 channel sums
    assert ssim(a, a).tolist() == pytest.approx([1.0, 1.0, 1.0], abs=1e-12)


def test_spectral_clustering_finds_the_components_of_a_hand_made_graph():
    sizes = (7, 5, 4)
    affinity = torch.block_diag(*[torch.ones(size, size) - torch.eye(size) for size in sizes])
    permutation = torch.randperm(sum(sizes), generator=torch.Generator().manual_seed(3))
    component = torch.repeat_interleave(torch.arange(3), torch.tensor(sizes))[permutation]
    shuffled = affinity[permutation][:, permutation]
    result = spectral_clusters(shuffled, max_clusters=6)
    assert result.count == 3
    assert result.eigenvalues[:3].abs().max() < 1e-10 and result.eigengap > 0.5
    # clusters numbered by size: the 7-clique is cluster 0, the 5-clique 1, the 4-clique 2
    assert torch.equal(result.labels, component)


def test_knn_graph_of_two_separated_blobs_gives_two_clusters():
    generator = torch.Generator().manual_seed(4)
    points = torch.cat([torch.randn(20, 3, generator=generator), torch.randn(12, 3, generator=generator) + 20.0])
    affinity = knn_affinity(points, k=8)
    assert torch.equal(affinity, affinity.T) and affinity.diagonal().abs().sum() == 0
    assert (affinity.sum(dim=1) >= 8).all()
    result = spectral_clusters(affinity, max_clusters=5)
    assert result.count == 2
    assert result.labels[:20].unique().tolist() == [0] and result.labels[20:].unique().tolist() == [1]


def test_spectral_clustering_rejects_bad_input():
    with pytest.raises(ValueError, match="square"):
        spectral_clusters(torch.ones(2, 3), 2)
    with pytest.raises(ValueError, match="max_clusters"):
        spectral_clusters(torch.ones(2, 2), 0)
    with pytest.raises(ValueError, match="k must"):
        knn_affinity(torch.ones(3, 2), 0)
