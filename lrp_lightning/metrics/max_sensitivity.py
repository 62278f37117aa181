"""Max-Sensitivity (Yeh et al. 2019): the largest move of the explanation under small uniform noise."""
from lrp_lightning.metrics.avg_sensitivity import AvgSensitivity


class MaxSensitivity(AvgSensitivity):
    """Mean over samples of ``max_j ||Φ(x) - Φ(x + δ_j)|| / ||Φ(x)||`` (Yeh et al. 2019), Quantus' ``MaxSensitivity``.

    As :class:`~lrp_lightning.metrics.AvgSensitivity` (same arguments, defaults and noise draws),
    with the maximum over the draws instead of the mean.
    """

    reduction = "max"
