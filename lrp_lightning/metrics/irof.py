"""IROF (Rieger & Hansen 2020): area over the curve while superpixels are removed, most relevant first."""
from typing import Any, Callable, Optional, Union

import torch
from torch import Tensor

from lrp_lightning.metrics._base import SampleMeanMetric
from lrp_lightning.metrics._checks import Baseline, check_images
from lrp_lightning.metrics._docs import fill_doc
from lrp_lightning.metrics._model import Model
from lrp_lightning.metrics._perturbation import cumulative_masks, perturbed_scores, resolve_fill
from lrp_lightning.metrics._quantus_steps import QuantusRelevanceMixin

Segmentation = Union[str, Callable[[Tensor], Tensor]]
SEGMENTATION_METHODS = ("slic",)


def slic_segments(inputs: Tensor) -> Tensor:
    """SLIC superpixels (N, H, W) of images (N, C, H, W): scikit-image's ``slic`` with its defaults,
    channels last, labels from 0 (the segmentation Quantus 0.6.0's IROF uses)."""
    try:
        from skimage.segmentation import slic
    except ImportError as error:
        raise ImportError(
            "IROF's 'slic' segmentation needs scikit-image: pip install 'lrp-lightning[segmentation]', "
            "or pass segmentation_method=a callable (inputs) -> integer labels (N, H, W)"
        ) from error
    images = inputs.detach().cpu().double().permute(0, 2, 3, 1).numpy()
    labels = [torch.from_numpy(slic(image, start_label=0)) for image in images]
    return torch.stack(labels).to(device=inputs.device, dtype=torch.long)


@fill_doc
class IROF(QuantusRelevanceMixin, SampleMeanMetric):
    """Mean over samples of the area over the score curve of superpixel removal (Rieger & Hansen 2020).

    Each image is cut into superpixels (``segmentation_method``); they are ranked by their mean
    relevance, highest first, and replaced cumulatively by ``baseline``. With K the sample's number
    of superpixels and :math:`p_k` the target score after k removals divided by the clean score,

    .. math:: \\mathrm{IROF} = K - \\mathrm{trapz}(p_1, \\dots, p_K)

    (unit steps), as Quantus 0.6.0's ``IROF``. Higher is better. Images only: token ids and vectors
    raise ``ValueError``.

    Quantus 0.6.0's IROF takes its ``"mean"``, ``"black"`` and ``"white"`` baselines over the whole
    batch as perturbed so far, so a sample's result depends on the others; ours are each sample's
    own clean mean, minimum and maximum. The two agree for numeric baselines.

    Parameters
    ----------
    segmentation_method : str or callable
        ``"slic"`` (scikit-image, the optional extra ``segmentation``), or a callable mapping the
        images (N, C, H, W) to integer labels (N, H, W) (labels need not be consecutive).
    {relevance_options}
    baseline : float, str or callable
        ``"mean"`` (each sample's mean), ``"black"`` (minimum), ``"white"``, ``"blur"``, a number or
        a callable ``(x) -> fill``.
    {softmax_by_default}
    {images_per_call}
    """

    higher_is_better = True

    def __init__(
        self,
        segmentation_method: Segmentation = "slic",
        abs: bool = False,
        normalise: bool = True,
        baseline: Baseline = "mean",
        softmax: bool = True,
        max_batch_size: Optional[int] = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not callable(segmentation_method) and segmentation_method not in SEGMENTATION_METHODS:
            raise ValueError(
                f"unknown segmentation_method {segmentation_method!r}; expected one of {SEGMENTATION_METHODS} "
                "or a callable (inputs) -> integer labels (N, H, W)"
            )
        self.segmentation_method = segmentation_method
        self._configure_quantus(abs, normalise, baseline, softmax, max_batch_size)

    def update(self, model: Model, inputs: Tensor, attributions: Tensor, target: Tensor) -> None:
        """Remove superpixels most relevant first and accumulate each sample's area over the curve.

        Parameters
        ----------
        {image_update}
        """
        check_images(inputs, "IROF segments images into superpixels")
        inputs, relevance, target, _ = self._prepare_relevance(inputs, attributions, target)
        labels = self._segments(inputs)
        ranks, num_segments = segment_ranks(relevance, labels)
        most = int(num_segments.max())
        counts = torch.arange(most + 1, device=inputs.device)
        scores = perturbed_scores(
            model, inputs, resolve_fill(self.baseline, inputs), target, cumulative_masks(ranks, counts),
            most + 1, self.softmax, self.max_batch_size,
        )
        curve = scores[:, 1:] / scores[:, :1]
        steps = torch.arange(most, device=inputs.device)
        inside = steps[None, :] < num_segments[:, None]
        first, last = steps[None, :] == 0, steps[None, :] == num_segments[:, None] - 1
        weights = inside.double() - 0.5 * first.double() - 0.5 * last.double()
        area = (curve * weights).sum(dim=1)
        self._accumulate(num_segments.double() - area, relevance, scores)

    def _segments(self, inputs: Tensor) -> Tensor:
        if callable(self.segmentation_method):
            labels = self.segmentation_method(inputs)
            expected = (inputs.shape[0],) + tuple(inputs.shape[2:])
            if not isinstance(labels, Tensor) or tuple(labels.shape) != expected or labels.is_floating_point():
                shape = tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__
                raise ValueError(f"segmentation_method must return integer labels of shape {expected}, got {shape}")
            return labels.to(device=inputs.device, dtype=torch.long)
        return slic_segments(inputs)


def segment_ranks(relevance: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Rank of each location's segment by mean relevance, highest first (ties in label order), and
    each sample's number of segments.

    ``labels`` (N, H, W) may skip values; they are renumbered per sample in increasing order.
    """
    num_samples = labels.shape[0]
    flat_labels = labels.reshape(num_samples, -1)
    dense = torch.stack([torch.unique(row, return_inverse=True)[1] for row in flat_labels])
    num_segments = dense.amax(dim=1) + 1
    width = int(num_segments.max())
    flat_relevance = relevance.reshape(num_samples, -1).double()
    sums = flat_relevance.new_zeros(num_samples, width).scatter_add_(1, dense, flat_relevance)
    sizes = flat_relevance.new_zeros(num_samples, width).scatter_add_(1, dense, torch.ones_like(flat_relevance))
    means = torch.where(sizes > 0, sums / sizes.clamp(min=1), torch.full_like(sums, -float("inf")))
    order = means.argsort(dim=1, descending=True, stable=True)
    segment_rank = torch.empty_like(order)
    segment_rank.scatter_(1, order, torch.arange(width, device=labels.device).expand(num_samples, -1))
    return segment_rank.gather(1, dense).reshape(labels.shape), num_segments
