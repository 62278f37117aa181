"""Infidelity (Yeh et al. 2019) with Quantus 0.6.0's cumulative square-patch perturbations."""
from typing import Any, Optional, Sequence

import torch
from torch import Tensor

from lrp_lightning.metrics._base import SampleMeanMetric
from lrp_lightning.metrics._checks import Baseline, check_positive_int
from lrp_lightning.metrics._docs import fill_doc
from lrp_lightning.metrics._model import Model
from lrp_lightning.metrics._perturbation import perturbed_scores, region_ranks, resolve_fill
from lrp_lightning.metrics._quantus_steps import QuantusRelevanceMixin, band_sums, quantus_attributions
from lrp_lightning.transformer.tokens import is_token_ids

LOSS_FUNCTIONS = ("mse",)


@fill_doc
class Infidelity(QuantusRelevanceMixin, SampleMeanMetric):
    """Mean over samples of the squared error between attribution-predicted and actual score drops (Yeh et al. 2019).

    For each patch size s, the input is cut into s x s patches (all channels) on the grid of
    :class:`RegionPerturbation`; patch p = 1..P (row-major) is replaced by ``baseline`` on top of the
    patches before it, giving :math:`x_p`. With f the target score and :math:`\\Delta_p = x - x_p`,

    .. math:: \\mathrm{INFD} = \\frac{1}{|S|} \\sum_{s \\in S} \\frac{1}{P_s} \\sum_{p=1}^{P_s}
        \\big(a \\cdot \\Delta_p - (f(x) - f(x_p))\\big)^2

    as Quantus 0.6.0's ``Infidelity`` with a deterministic baseline (its ``n_perturb_samples``
    repeats then give identical terms, so the argument is not needed here). Attributions of shape
    (N, 1, H, W) or (N, H, W) apply to every channel. Lower is better.

    Parameters
    ----------
    loss_func : str
        ``"mse"`` (the only loss Quantus 0.6.0 names).
    perturb_patch_sizes : sequence of int, optional
        Patch sides; default ``[4]``.
    {relevance_options}
    baseline : float, str or callable
        Quantus' ``perturb_baseline``: ``"black"`` (each sample's minimum), ``"white"``, ``"mean"``,
        ``"blur"``, a number or a callable ``(x) -> fill``. Token ids are refused (no input differences).
    softmax : bool
        Score the target softmax probability instead of the logit.
    {images_per_call}
    """

    higher_is_better = False

    def __init__(
        self,
        loss_func: str = "mse",
        perturb_patch_sizes: Optional[Sequence[int]] = None,
        abs: bool = False,
        normalise: bool = False,
        baseline: Baseline = "black",
        softmax: bool = False,
        max_batch_size: Optional[int] = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if loss_func not in LOSS_FUNCTIONS:
            raise ValueError(f"unknown loss_func {loss_func!r}; expected one of {LOSS_FUNCTIONS}")
        self.loss_func = loss_func
        sizes = [4] if perturb_patch_sizes is None else list(perturb_patch_sizes)
        if not sizes:
            raise ValueError("perturb_patch_sizes must name at least one patch size")
        self.perturb_patch_sizes = [check_positive_int("perturb_patch_sizes", size) for size in sizes]
        self._configure_quantus(abs, normalise, baseline, softmax, max_batch_size)

    def update(
        self, model: Model, inputs: Tensor, attributions: Tensor, target: Tensor, attention_mask: Optional[Tensor] = None
    ) -> None:
        """Perturb patch after patch for every patch size and accumulate each sample's infidelity.

        Parameters
        ----------
        model : callable
            Maps a batch of inputs to class scores (B, classes); an ``nn.Module`` runs in eval mode
            under ``torch.no_grad()`` and gets its training flags back.
        inputs : Tensor
            Images (N, C, H, W) or vectors (N, D) (floating point).
        attributions : Tensor
            The inputs' shape, or for images (N, 1, H, W) / (N, H, W).
        target : Tensor
            Class indices (N,).
        attention_mask : Tensor, optional
            Not taken: token ids are refused.
        """
        if is_token_ids(inputs):
            raise ValueError("Infidelity needs floating inputs (a . (x - x_perturbed)); token ids have no differences")
        inputs, _, target, _ = self._prepare_relevance(inputs, attributions, target, attention_mask)
        values = quantus_values(inputs, attributions, self.abs, self.normalise)
        fill = resolve_fill(self.baseline, inputs)
        product = values * (inputs.double() - fill.double())
        predicted = product.sum(dim=1) if inputs.ndim == 4 else product
        generator = self._generators.get(inputs.device)
        grid_ranks, variant_sizes, variant_counts, predicted_drops = [], [], [], []
        for index, size in enumerate(self.perturb_patch_sizes):
            ranks, num_patches = region_ranks(torch.zeros_like(predicted), size, "morf", generator)
            grid_ranks.append(ranks)
            variant_sizes += [index] * num_patches
            variant_counts += range(1, num_patches + 1)
            predicted_drops.append(band_sums(predicted, ranks, 1, num_patches).cumsum(dim=1))
        stacked_ranks = torch.stack(grid_ranks)
        sizes = torch.tensor([0] + variant_sizes, device=inputs.device)
        counts = torch.tensor([0] + variant_counts, device=inputs.device)
        extra_dims = (1,) * (stacked_ranks.ndim - 2)

        def masks(samples: Tensor, variants: Tensor) -> Tensor:
            return stacked_ranks[sizes[variants], samples] < counts[variants].view(-1, *extra_dims)

        scores = perturbed_scores(
            model, inputs, fill, target, masks, counts.shape[0], self.softmax, self.max_batch_size
        )
        drops = scores[:, :1] - scores[:, 1:]
        errors = (torch.cat(predicted_drops, dim=1) - drops).square()
        per_size = [part.mean(dim=1) for part in errors.split([d.shape[1] for d in predicted_drops], dim=1)]
        self._accumulate(torch.stack(per_size, dim=1).mean(dim=1), values, scores)


def quantus_values(inputs: Tensor, attributions: Tensor, abs: bool, normalise: bool) -> Tensor:
    """Attributions after Quantus' options, broadcast to the inputs' shape (one map for every channel)."""
    values = quantus_attributions(attributions.to(inputs.device), abs, normalise)
    if inputs.ndim == 4 and values.ndim == 3:
        values = values.unsqueeze(1)
    return values.expand(inputs.shape)
