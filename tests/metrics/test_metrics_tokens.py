"""Perturbation metrics on integer token ids (N, T) against naive per-sample loops written here."""
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from lrp_lightning.metrics import Deletion, FaithfulnessCorrelation, Insertion, PixelFlipping, RegionPerturbation

VOCAB, TOKENS, CLASSES, PAD = 20, 12, 3, 0


@dataclass
class Output:
    """A stand-in for a Hugging Face ``ModelOutput``: scores under ``logits``."""

    logits: torch.Tensor


class MaskedBagOfTokens(nn.Module):
    """Embedding, a per-token non-linearity, masked mean over the tokens, linear head; output under ``logits``."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embedding = nn.Embedding(VOCAB, 6)
        self.position = nn.Parameter(torch.randn(TOKENS, 6))
        self.head = nn.Linear(6, CLASSES)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Output:
        hidden = torch.tanh(self.embedding(input_ids) + self.position)
        weights = attention_mask[..., None].to(hidden.dtype)
        pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1)
        return Output(self.head(pooled))


def token_data(seed: int = 3):
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(1, VOCAB, (5, TOKENS), generator=generator)
    attention_mask = torch.ones(5, TOKENS, dtype=torch.long)
    attention_mask[1, 9:] = 0
    attention_mask[3, 7:] = 0
    input_ids[attention_mask == 0] = PAD
    relevance = torch.randn(5, TOKENS, generator=generator)
    target = torch.randint(0, CLASSES, (5,), generator=generator)
    return input_ids, attention_mask, relevance, target


def score(model, ids, mask, target, softmax=False):
    with torch.no_grad():
        logits = model(ids[None], attention_mask=mask[None]).logits[0]
    return (logits.softmax(0) if softmax else logits)[target].item()


def naive_score_drops(model, ids, masks, relevance, target, segment, steps):
    """Mean over samples of f(x) - f(x with its k most relevant segments set to PAD), k = 0..steps."""
    curves = []
    for i in range(ids.shape[0]):
        segment_relevance = relevance[i].view(-1, segment).sum(dim=1)
        order = sorted(range(segment_relevance.shape[0]), key=lambda s: -segment_relevance[s].item())
        perturbed = ids[i].clone()
        base = score(model, perturbed, masks[i], target[i])
        curve = [0.0]
        for k in range(steps):
            start = order[k] * segment
            perturbed[start : start + segment] = PAD
            curve.append(base - score(model, perturbed, masks[i], target[i]))
        curves.append(curve)
    return torch.tensor(curves, dtype=torch.float64).mean(dim=0)


@pytest.mark.parametrize("segment", [1, 3])
def test_region_perturbation_replaces_token_segments_by_the_baseline_id(segment):
    model = MaskedBagOfTokens()
    ids, masks, relevance, target = token_data()
    steps = TOKENS // segment - 1
    metric = RegionPerturbation(patch_size=segment, steps=steps, baseline=PAD)
    metric.update(model, ids, relevance, target, attention_mask=masks)
    expected = naive_score_drops(model, ids, masks, relevance, target, segment, steps)
    result = metric.compute()
    torch.testing.assert_close(result["curve"], expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(result["aopc"], expected.mean(), rtol=1e-5, atol=1e-6)


def test_pixel_flipping_on_tokens_matches_single_token_regions():
    model = MaskedBagOfTokens()
    ids, masks, relevance, target = token_data(seed=4)
    metric = PixelFlipping(features_in_step=1, steps=6, baseline=PAD)
    metric.update(model, ids, relevance, target, attention_mask=masks)
    expected = naive_score_drops(model, ids, masks, relevance, target, 1, 6)
    torch.testing.assert_close(metric.compute()["curve"], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("metric_class", [Deletion, Insertion])
def test_deletion_and_insertion_on_tokens(metric_class):
    model = MaskedBagOfTokens()
    ids, masks, relevance, target = token_data(seed=5)
    steps = 4
    metric = metric_class(steps=steps, baseline=PAD, softmax=True)
    metric.update(model, ids, relevance, target, attention_mask=masks)
    insert = metric_class is Insertion
    curves = []
    for i in range(ids.shape[0]):
        order = relevance[i].argsort(descending=True, stable=True)
        curve = []
        for k in range(steps + 1):
            chosen = order[: k * TOKENS // steps]
            perturbed = torch.full_like(ids[i], PAD) if insert else ids[i].clone()
            perturbed[chosen] = ids[i][chosen] if insert else PAD
            curve.append(score(model, perturbed, masks[i], target[i], softmax=True))
        curves.append(curve)
    expected = torch.tensor(curves, dtype=torch.float64).mean(dim=0)
    result = metric.compute()
    torch.testing.assert_close(result["curve"], expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(result["auc"], torch.trapezoid(expected, dx=1 / steps), rtol=1e-5, atol=1e-6)


def test_faithfulness_correlation_on_tokens():
    model = MaskedBagOfTokens()
    ids, masks, relevance, target = token_data(seed=6)
    runs, size, seed = 6, 3, 11
    metric = FaithfulnessCorrelation(nr_runs=runs, subset_size=size, baseline=PAD, seed=seed)
    metric.update(model, ids, relevance, target, attention_mask=masks)
    generator = torch.Generator().manual_seed(seed)
    correlations = []
    for i in range(ids.shape[0]):
        subsets = torch.rand(runs, TOKENS, generator=generator).topk(size, dim=1, largest=False).indices
        base = score(model, ids[i], masks[i], target[i])
        drops, sums = [], []
        for subset in subsets:
            perturbed = ids[i].clone()
            perturbed[subset] = PAD
            drops.append(base - score(model, perturbed, masks[i], target[i]))
            sums.append(relevance[i][subset].sum().item())
        correlations.append(torch.corrcoef(torch.tensor([sums, drops], dtype=torch.float64))[0, 1])
    torch.testing.assert_close(metric.compute(), torch.stack(correlations).mean(), rtol=1e-5, atol=1e-6)


def test_the_attention_mask_reaches_the_model_with_every_perturbed_copy():
    seen = []

    def model(input_ids, attention_mask):
        seen.append((input_ids.clone(), attention_mask.clone()))
        return torch.zeros(input_ids.shape[0], CLASSES)

    ids, masks, relevance, target = token_data()
    RegionPerturbation(patch_size=1, steps=3, baseline=PAD, max_batch_size=7).update(
        model, ids, relevance, target, attention_mask=masks
    )
    batch_ids = torch.cat([ids for ids, _ in seen])
    batch_masks = torch.cat([mask for _, mask in seen])
    assert batch_ids.shape[0] == 4 * ids.shape[0]
    assert torch.equal(batch_masks, masks.repeat_interleave(4, dim=0))
    assert batch_ids.dtype == ids.dtype


def test_language_model_logits_are_scored_at_the_last_position():
    def token_counts_so_far(input_ids):
        """Per-position logits (B, T, V): how often each token occurred up to that position."""
        return Output(nn.functional.one_hot(input_ids, VOCAB).double().cumsum(dim=1))

    ids = torch.tensor([[5, 1, 5, 2, 5, 3]])
    relevance = torch.tensor([[0.0, 0.0, 3.0, 2.0, 1.0, 0.5]])
    metric = RegionPerturbation(patch_size=1, steps=4, baseline=PAD)
    metric.update(token_counts_so_far, ids, relevance, torch.tensor([5]))
    # removed in order: positions 2 (a 5), 3, 4 (a 5), 5; the last position counts the 5s left
    expected = torch.tensor([0.0, 1.0, 1.0, 2.0, 2.0], dtype=torch.float64)
    assert torch.equal(metric.compute()["curve"], expected)
    # with padding, the last attended token counts (position 4 here: positions 0..4 are attended)
    padded = torch.tensor([[5, 1, 5, 2, 5, 5]])
    attention_mask = torch.tensor([[1, 1, 1, 1, 1, 0]])
    metric = RegionPerturbation(patch_size=1, steps=1, baseline=PAD)
    metric.update(
        lambda ids, attention_mask: token_counts_so_far(ids), padded, relevance, torch.tensor([5]), attention_mask
    )
    assert torch.equal(metric.compute()["curve"], torch.tensor([0.0, 1.0], dtype=torch.float64))


@pytest.mark.parametrize("baseline", [0.0, "mean", "blur"])
def test_a_fill_value_for_token_ids_raises_naming_the_token_id_fix(baseline):
    model = MaskedBagOfTokens()
    ids, masks, relevance, target = token_data()
    metric = RegionPerturbation(patch_size=1, steps=2, baseline=baseline)
    with pytest.raises(ValueError, match="token ids.*pad_token_id"):
        metric.update(model, ids, relevance, target, attention_mask=masks)


def test_a_callable_baseline_returning_floats_for_token_ids_raises():
    model = MaskedBagOfTokens()
    ids, masks, relevance, target = token_data()
    metric = Deletion(steps=2, baseline=lambda x: torch.zeros_like(x, dtype=torch.float32))
    with pytest.raises(ValueError, match="integer token ids"):
        metric.update(model, ids, relevance, target, attention_mask=masks)


def test_attention_mask_of_the_wrong_shape_or_with_float_inputs_raises():
    model = MaskedBagOfTokens()
    ids, masks, relevance, target = token_data()
    metric = RegionPerturbation(patch_size=1, steps=2, baseline=PAD)
    with pytest.raises(ValueError, match="attention_mask must have the token ids' shape"):
        metric.update(model, ids, relevance, target, attention_mask=masks[:, :5])
    with pytest.raises(ValueError, match="only taken with integer token-id inputs"):
        metric.update(model, ids.float(), relevance, target, attention_mask=masks)
