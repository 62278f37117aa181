"""Insertion (Petsiuk et al. 2018): score while the most relevant locations are inserted."""
from typing import Any, Optional

from lrp_lightning.metrics._checks import Baseline
from lrp_lightning.metrics._cumulative import FractionCurveMetric


class Insertion(FractionCurveMetric):
    """Area under the target-score curve while locations are inserted, most relevant first.

    The sequence starts from the ``baseline`` image (default: the input blurred with a Gaussian of
    size 11 and sigma 5). At step k = 0..steps the ``(k * L) // steps`` most relevant of the L
    locations (all channels) take the input's values. ``curve[k]`` is the mean target score after
    step k and ``auc`` the area under it over the inserted fraction [0, 1]; higher is better
    (Petsiuk et al. 2018).

    Parameters
    ----------
    steps : int
        Number of insertion steps, at most the number of locations.
    baseline : float, int, str or callable
        The starting image: ``"blur"``, ``"mean"``, a number or a callable ``(x) -> fill``.
        Token-id inputs (N, T) need an ``int``: the id of the replacement token (e.g. the pad id).
    softmax : bool
        Score the target softmax probability (as in the paper) instead of the target logit.
    max_batch_size : int or None
        Largest number of images sent through the model at once; ``None`` sizes the chunks to the
        inputs' device (on the CPU a few dozen images, on CUDA up to a quarter of the free memory).
    **kwargs
        Passed to ``torchmetrics.Metric``.
    """

    higher_is_better = True
    insert = True

    def __init__(
        self,
        steps: int = 100,
        baseline: Baseline = "blur",
        softmax: bool = False,
        max_batch_size: Optional[int] = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(steps, baseline, softmax, max_batch_size, **kwargs)
