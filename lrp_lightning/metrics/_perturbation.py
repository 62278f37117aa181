"""Batched perturbation engine shared by the faithfulness metrics.

All (sample, variant) pairs of an update go through the model in chunks of nearly equal size
(see :func:`chunk_bounds`); each chunk is built from boolean location masks with one ``torch.where``.
"""
import math
from typing import Callable, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from lrp_lightning.metrics._checks import Baseline
from lrp_lightning.metrics._model import Model, check_classes, evaluation_mode, target_scores
from lrp_lightning.transformer.tokens import class_scores, is_token_ids

BLUR_KERNEL_SIZE = 11
BLUR_SIGMA = 5.0

CPU_CHUNK_BYTES = 4 * 2**20
CPU_MAX_CHUNK = 64
CUDA_MEMORY_FRACTION = 0.25
CUDA_BYTES_PER_INPUT_BYTE = 64
ACCELERATOR_MAX_CHUNK = 1024

MaskFn = Callable[[Tensor, Tensor], Tensor]


def gaussian_blur(images: Tensor, kernel_size: int = BLUR_KERNEL_SIZE, sigma: float = BLUR_SIGMA) -> Tensor:
    """Blur images (N, C, H, W) per channel with a separable Gaussian kernel, borders replicated."""
    offsets = torch.arange(kernel_size, device=images.device, dtype=images.dtype) - (kernel_size - 1) / 2
    kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    channels = images.shape[1]
    half = kernel_size // 2
    padded = F.pad(images, (half, half, half, half), mode="replicate")
    rows = F.conv2d(padded, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1).contiguous(), groups=channels)
    return F.conv2d(rows, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1).contiguous(), groups=channels)


def resolve_fill(baseline: Baseline, inputs: Tensor) -> Tensor:
    """The replacement values for ``inputs``, broadcast to the inputs' shape.

    A number fills with that value, ``"mean"`` with each sample's mean over all its values,
    ``"black"`` / ``"white"`` with each sample's minimum / maximum over all its values (Quantus'
    names), ``"blur"`` with a Gaussian-blurred copy of the image, a callable ``(x) -> fill`` with its result.
    Integer token ids (N, T) take an ``int`` token id (e.g. the pad id) or a callable returning ids;
    anything else raises ``ValueError``.
    """
    if is_token_ids(inputs):
        check_token_baseline(baseline)
    if callable(baseline):
        fill = baseline(inputs)
        if not isinstance(fill, Tensor):
            raise ValueError(f"a baseline callable must return a tensor, got {type(fill).__name__}")
        if is_token_ids(inputs) and fill.is_floating_point():
            raise ValueError("a baseline callable for token-id inputs must return integer token ids, got floats")
        try:
            return torch.broadcast_to(fill.to(device=inputs.device, dtype=inputs.dtype), inputs.shape)
        except RuntimeError as error:
            raise ValueError(
                f"the baseline callable returned shape {tuple(fill.shape)}, not broadcastable to "
                f"the inputs {tuple(inputs.shape)}"
            ) from error
    if baseline == "mean":
        fill = inputs.mean(dim=tuple(range(1, inputs.ndim)), keepdim=True)
    elif baseline in ("black", "white"):
        flat = inputs.reshape(inputs.shape[0], -1)
        extreme = flat.amin(dim=1) if baseline == "black" else flat.amax(dim=1)
        fill = extreme.view(-1, *([1] * (inputs.ndim - 1)))
    elif baseline == "blur":
        if inputs.ndim != 4:
            raise ValueError("baseline 'blur' needs images (N, C, H, W); give a number, 'mean' or a callable")
        fill = gaussian_blur(inputs)
    else:
        fill = torch.tensor(baseline, device=inputs.device, dtype=inputs.dtype)
    return torch.broadcast_to(fill, inputs.shape)


def check_token_baseline(baseline: Baseline) -> None:
    """Raise ``ValueError`` unless ``baseline`` can replace token ids: an ``int`` id or a callable."""
    if callable(baseline) or isinstance(baseline, int):
        return
    raise ValueError(
        f"baseline {baseline!r} is a fill value, but the inputs are integer token ids; give the id of the "
        "replacement token instead, e.g. baseline=tokenizer.pad_token_id"
    )


def region_ranks(relevance: Tensor, patch_size: int, order: str, generator: torch.Generator) -> tuple[Tensor, int]:
    """Rank of each location's patch in the removal order, and the number of patches.

    ``relevance`` is (N, *spatial) with one or two spatial dims. Patches are non-overlapping
    ``patch_size`` blocks on a grid centred on the input: when the size does not divide, the patches
    at both borders are cut, the far one by the larger half of the excess (Quantus 0.6.0's grid).
    They are ranked by summed relevance: ``"morf"`` highest first, ``"lerf"`` lowest first (ties
    keep grid order), ``"random"`` a uniform permutation drawn from ``generator``. Returns
    ``(ranks, num_patches)``, ``ranks`` of the shape of ``relevance``.
    """
    num_samples, spatial = relevance.shape[0], tuple(relevance.shape[1:])
    grid = tuple(-(-size // patch_size) for size in spatial)
    cut_before = [(cells * patch_size - size) // 2 for size, cells in zip(spatial, grid)]
    padding = []
    for size, cells, before in zip(reversed(spatial), reversed(grid), reversed(cut_before)):
        padding += [before, cells * patch_size - size - before]
    padded = F.pad(relevance, padding)
    blocks = padded.reshape((num_samples,) + sum(((cells, patch_size) for cells in grid), ()))
    patch_relevance = blocks.sum(dim=tuple(range(2, 2 + 2 * len(grid), 2))).reshape(num_samples, -1)
    num_patches = patch_relevance.shape[1]
    if order == "random":
        keys = torch.rand(patch_relevance.shape, generator=generator, device=generator.device)
        removal = keys.to(relevance.device).argsort(dim=1)
    else:
        removal = patch_relevance.argsort(dim=1, descending=order == "morf", stable=True)
    patch_rank = torch.empty_like(removal)
    positions = torch.arange(num_patches, device=relevance.device).expand(num_samples, -1)
    patch_rank.scatter_(1, removal, positions)
    ranks = patch_rank.reshape((num_samples,) + grid)
    for dim, (size, before) in enumerate(zip(spatial, cut_before), start=1):
        ranks = ranks.repeat_interleave(patch_size, dim=dim).narrow(dim, before, size)
    return ranks, num_patches


def cumulative_masks(ranks: Tensor, counts: Tensor) -> MaskFn:
    """Mask function for cumulative removal: at variant ``k`` the locations with rank < ``counts[k]``."""
    extra_dims = (1,) * (ranks.ndim - 1)

    def masks(samples: Tensor, variants: Tensor) -> Tensor:
        return ranks[samples] < counts[variants].view(-1, *extra_dims)

    return masks


def device_chunk_cap(device: torch.device, image_bytes: int) -> int:
    """The most images of ``image_bytes`` bytes each sent through a model at once on ``device``.

    - CPU: about ``CPU_CHUNK_BYTES`` of input images, at most ``CPU_MAX_CHUNK`` images (a few dozen
      images of 64x64 are fastest per image on a CPU; a few hundred at once leave the caches and
      cost up to 1.8x more per image);
    - CUDA: ``CUDA_MEMORY_FRACTION`` of the device's free memory, counting
      ``CUDA_BYTES_PER_INPUT_BYTE`` bytes of activations per input byte, at most
      ``ACCELERATOR_MAX_CHUNK`` images (large batches keep a GPU busy);
    - other accelerators: ``ACCELERATOR_MAX_CHUNK`` images.

    Never less than one image.
    """
    if device.type == "cpu":
        cap = min(CPU_MAX_CHUNK, CPU_CHUNK_BYTES // image_bytes)
    elif device.type == "cuda":
        free_bytes, _ = torch.cuda.mem_get_info(device)
        budget = CUDA_MEMORY_FRACTION * free_bytes / (CUDA_BYTES_PER_INPUT_BYTE * image_bytes)
        cap = min(ACCELERATOR_MAX_CHUNK, int(budget))
    else:
        cap = ACCELERATOR_MAX_CHUNK
    return max(1, cap)


def chunk_bounds(inputs: Tensor, num_pairs: int, max_batch_size: Optional[int]) -> list[tuple[int, int]]:
    """``(start, stop)`` of each forward pass over ``num_pairs`` perturbed copies of ``inputs``.

    The pairs are split into the fewest chunks of at most ``max_batch_size`` images (``None``:
    :func:`device_chunk_cap` of the inputs' device), their sizes differing by at most one image (no
    small remainder chunk).
    """
    if max_batch_size is None:
        max_batch_size = device_chunk_cap(inputs.device, inputs[0].numel() * inputs.element_size())
    num_chunks = -(-num_pairs // max_batch_size)
    edges = [index * num_pairs // num_chunks for index in range(num_chunks + 1)]
    return list(zip(edges[:-1], edges[1:]))


def perturbed_scores(
    model: Model,
    inputs: Tensor,
    fill: Union[Tensor, MaskFn],
    target: Tensor,
    masks: MaskFn,
    num_variants: int,
    softmax: bool,
    max_batch_size: Optional[int],
    insert: bool = False,
    attention_mask: Optional[Tensor] = None,
) -> Tensor:
    """Target score of every (sample, variant) pair, shape (N, num_variants).

    ``masks(samples, variants)`` returns bool (B, *spatial): the locations (all channels) that take the
    ``fill`` value (with ``insert=True``: that keep the input value while all others take ``fill``);
    ``fill`` is a tensor of the inputs' shape, or a function ``(samples, variants) -> fill`` of the
    chunk's pairs (broadcastable to their inputs) for a fill that differs between variants.
    Pairs are enumerated sample-major and sent through ``model`` in the chunks of
    :func:`chunk_bounds` (at most ``max_batch_size`` images; ``None`` sizes them to the device),
    with ``attention_mask=`` the rows of ``attention_mask`` (N, T) when given (token-id inputs).
    """
    num_pairs = inputs.shape[0] * num_variants
    scores = torch.empty(num_pairs, device=inputs.device, dtype=torch.float64)
    with evaluation_mode(model):
        for start, stop in chunk_bounds(inputs, num_pairs, max_batch_size):
            pairs = torch.arange(start, stop, device=inputs.device)
            samples, variants = pairs // num_variants, pairs % num_variants
            mask = masks(samples, variants)
            if inputs.ndim == 4:
                mask = mask.unsqueeze(1)
            fill_rows = fill(samples, variants) if callable(fill) else fill[samples]
            replaced, kept = (inputs[samples], fill_rows) if insert else (fill_rows, inputs[samples])
            perturbed = torch.where(mask, replaced, kept)
            if attention_mask is None:
                outputs = class_scores(model(perturbed), perturbed)
            else:
                rows = attention_mask[samples]
                outputs = class_scores(model(perturbed, attention_mask=rows), perturbed, rows)
            if start == 0:
                check_classes(outputs, target)
            scores[start : start + pairs.shape[0]] = target_scores(outputs, target[samples], softmax).double()
    return scores.view(inputs.shape[0], num_variants)


def random_subsets(
    num_samples: int, num_subsets: int, num_locations: int, subset_size: int, generator: torch.Generator
) -> Tensor:
    """Random location subsets (num_samples, num_subsets, subset_size), without repetition inside a subset.

    For each sample in turn, ``keys = torch.rand(num_subsets, num_locations, generator=generator)``
    and each subset is the set of the ``subset_size`` locations with the smallest keys in its row.
    """
    subsets = [
        torch.rand(num_subsets, num_locations, generator=generator, device=generator.device)
        .topk(subset_size, dim=1, largest=False)
        .indices
        for _ in range(num_samples)
    ]
    return torch.stack(subsets)


def subset_masks(subsets: Tensor, spatial: tuple[int, ...]) -> MaskFn:
    """Mask function for independent subsets: variant 0 changes nothing, variant j the subset j - 1.

    ``subsets`` is (N, R, S) flat location indices into ``spatial``.
    """
    num_samples, _, subset_size = subsets.shape
    num_locations = math.prod(spatial)
    untouched = subsets.new_full((num_samples, 1, subset_size), num_locations)
    indices = torch.cat([untouched, subsets], dim=1)

    def masks(samples: Tensor, variants: Tensor) -> Tensor:
        flat = torch.zeros(samples.shape[0], num_locations + 1, dtype=torch.bool, device=subsets.device)
        flat.scatter_(1, indices[samples, variants], True)
        return flat[:, :num_locations].reshape((samples.shape[0],) + spatial)

    return masks
