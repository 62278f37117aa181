"""RelMax reference sets equal zennit-crp 0.6.0's FeatureVisualization (a black-box oracle); sharded search
merges to the full search; reference patches are cropped where the conditional heatmap is."""
import numpy as np
import pytest
import torch

from lrp_lightning import canonizers, composites
from lrp_lightning.concepts import (
    ChannelConcept,
    CondAttribution,
    class_concept_relevance,
    crop_box,
    merge_references,
    reference_patches,
    relmax,
)


pytestmark = pytest.mark.usefixtures("float64_default")
LAYERS = ["3", "6"]


def reference_data(samples=26):
    generator = torch.Generator().manual_seed(4)
    return torch.utils.data.TensorDataset(torch.randn(samples, 3, 12, 12, generator=generator),
                                          torch.randint(0, 5, (samples,), generator=generator))


def our_composite():
    return composites.EpsilonPlus(canonizers=[canonizers.SequentialMergeBatchNorm()])


@pytest.mark.large  # zennit-crp's FeatureVisualization takes ~15 s whatever the data size
def test_concepts_relmax_references_match_zennit_crp(tmp_path, cnn_with_batch_norm):
    crp_attribution = pytest.importorskip("crp.attribution")
    crp_concepts = pytest.importorskip("crp.concepts")
    crp_visualization = pytest.importorskip("crp.visualization")
    zennit_composites = pytest.importorskip("zennit.composites")
    zennit_canonizers = pytest.importorskip("zennit.canonizers")
    # a fixed draw: most channels of a random draw must carry relevance somewhere for the comparison to say much
    # (channels without any are ties whose order is zennit-crp's own); a draw with most channels dead fails the last
    # assertion without any difference in the values
    torch.manual_seed(0)
    model, dataset = cnn_with_batch_norm(), reference_data()
    theirs = zennit_composites.EpsilonPlus(canonizers=[zennit_canonizers.SequentialMergeBatchNorm()])
    visualization = crp_visualization.FeatureVisualization(
        crp_attribution.CondAttribution(model), dataset, {name: crp_concepts.ChannelConcept() for name in LAYERS},
        path=str(tmp_path / "crp"))
    visualization.run(theirs, 0, len(dataset), batch_size=7)
    found = relmax(model, our_composite(), dataset, LAYERS, top_k=8, batch_size=5)
    for layer in LAYERS:
        # zennit-crp's on-disk result of RelMax: indices, scores and peak positions, best first, per channel
        stored = tmp_path / "crp" / "RelMax_sum_normed"
        indices = torch.from_numpy(np.load(stored / f"{layer}_data.npy"))[:8]
        scores = torch.from_numpy(np.load(stored / f"{layer}_rel.npy"))[:8]
        positions = torch.from_numpy(np.load(stored / f"{layer}_rf.npy"))[:8]
        torch.testing.assert_close(found[layer].scores, scores.to(found[layer].scores.dtype), rtol=1e-6, atol=1e-12)
        # the order among equal scores (a channel without relevance on several samples) is zennit-crp's own
        tied = (scores[:, None, :] - scores[None, :, :]).abs().le(1e-12).sum(dim=1) > 1
        assert torch.equal(found[layer].indices[~tied], indices.long()[~tied])
        assert torch.equal(found[layer].positions[~tied], positions.long()[~tied])
        assert (~tied).sum() > tied.numel() // 2


def test_concepts_sharded_relmax_merges_to_the_full_search(cnn_with_batch_norm):
    model, dataset = cnn_with_batch_norm(), reference_data(17)
    full = relmax(model, our_composite(), dataset, LAYERS, top_k=6, batch_size=4)
    shards = [relmax(model, our_composite(), dataset, LAYERS, top_k=6, batch_size=3, shard=(rank, 3)) for rank in range(3)]
    merged = merge_references(shards, top_k=6)
    for layer in LAYERS:
        assert torch.equal(merged[layer].indices, full[layer].indices)
        torch.testing.assert_close(merged[layer].scores, full[layer].scores, rtol=1e-12, atol=0)


def test_concepts_relmax_is_the_brute_force_ranking(cnn_with_batch_norm):
    model, dataset = cnn_with_batch_norm(), reference_data(15)
    found = relmax(model, our_composite(), dataset, ["6"], top_k=4, batch_size=4, abs_norm=False)
    inputs, labels = dataset.tensors
    result = CondAttribution(model)(inputs, [{"y": [int(label)]} for label in labels], our_composite(), record_layer=["6"])
    totals = result.relevances["6"].sum(dim=(2, 3))
    expected = torch.stack([torch.tensor(sorted(range(15), key=lambda n: -float(totals[n, c]))[:4]) for c in range(4)], dim=1)
    assert torch.equal(found["6"].indices, expected)


def test_concepts_reference_patches_are_cropped_where_the_conditional_heatmap_is(cnn_with_batch_norm):
    model, dataset = cnn_with_batch_norm(), reference_data(12)
    found = relmax(model, our_composite(), dataset, ["6"], top_k=3)
    patches = reference_patches(model, our_composite(), dataset, found["6"], "6", [0, 2], patch_size=5, batch_size=4)
    inputs, labels = dataset.tensors
    for concept in (0, 2):
        assert [patch.index for patch in patches[concept]] == found["6"].indices[:, concept].tolist()
        for patch in patches[concept]:
            heatmap = CondAttribution(model)(inputs[patch.index:patch.index + 1],
                                             {"y": [int(labels[patch.index])], "6": [concept]}, our_composite()).heatmap[0]
            top, left, height, width = patch.box
            # the 5x5 window holds at least as much positive relevance as any other
            best = max(float(heatmap[r:r + 5, c:c + 5].clamp_min(0).sum()) for r in range(8) for c in range(8))
            assert float(heatmap[top:top + 5, left:left + 5].clamp_min(0).sum()) == pytest.approx(best, rel=1e-12)
            torch.testing.assert_close(patch.heatmap, heatmap[top:top + height, left:left + width])
            torch.testing.assert_close(patch.image, inputs[patch.index, :, top:top + height, left:left + width])


def test_concepts_crop_box_clips_to_the_image():
    heatmap = torch.zeros(4, 6)
    heatmap[3, 5] = 1.0
    assert crop_box(heatmap, 2) == (2, 4, 2, 2)
    assert crop_box(heatmap, 10) == (0, 0, 4, 6)


def test_concepts_class_concept_relevance_averages_per_class():
    relative = torch.tensor([[0.5, -0.5], [1.0, 0.0], [0.2, 0.8]])
    shares = class_concept_relevance(relative, torch.tensor([1, 1, 0]), classes=3)
    torch.testing.assert_close(shares, torch.tensor([[0.2, 0.8], [0.75, -0.25], [0.0, 0.0]]))
    with pytest.raises(ValueError, match=r"targets must lie in \[0, 3\)"):
        class_concept_relevance(relative, torch.tensor([1, 3, 0]), classes=3)
    assert ChannelConcept().attribute(torch.zeros(2, 3, 4)).abs().sum() == 0
