"""Explanation-quality metrics as ``torchmetrics.Metric`` objects, batched on the device of their inputs.

Faithfulness (model, inputs, attributions, target): ``RegionPerturbation``, ``PixelFlipping``,
``Deletion``, ``Insertion``, ``FaithfulnessCorrelation``. Localisation (attributions, mask):
``RelevanceMassAccuracy``, ``RelevanceRankAccuracy``. Attributions alone: ``Sparseness``,
``Complexity``. LRP health check (input and output relevance): ``Conservation``.

Quantus 0.6.0's faithfulness, complexity and axiomatic metrics under its class names (issue 25; see
``docs/metrics_quantus.md``): ``FaithfulnessEstimate``, ``IROF``, ``Infidelity``, ``Monotonicity``,
``MonotonicityCorrelation``, ``Selectivity``, ``SensitivityN``, ``Sufficiency`` (model, inputs,
attributions[, target]); ``EffectiveComplexity`` (attributions); ``Completeness``, ``NonSensitivity``
and ``InputInvariance`` (which re-explains with its own explainer).

Non-finite input: a sample whose attributions (input or output relevance for ``Conservation``) or,
for the faithfulness metrics, model scores on the clean or perturbed inputs contain NaN or ±Inf
counts as NaN — its value, or every point of its curve, is NaN — so ``compute()`` returns NaN (NaN
curves) once such a sample was seen, never a number ranked or averaged from non-finite values.
``reset()`` starts afresh.

Quantus' localisation metrics — ``PointingGame``, ``AttributionLocalisation``, ``TopKIntersection``,
``AUC`` (alias ``RelevanceMaskAUC``), ``Focus`` (mosaics) — take ``update(attributions, mask)``. The
robustness metrics ``AvgSensitivity``, ``MaxSensitivity``, ``LocalLipschitzEstimate``,
``RelativeInputStability``, ``RelativeOutputStability``, ``RelativeRepresentationStability`` and the
randomisation metrics ``MPRT`` (alias ``ModelParameterRandomisation``), ``SmoothMPRT``
(``SmoothModelParameterRandomisation``), ``EfficientMPRT`` (``EfficientModelParameterRandomisation``),
``RandomLogit`` re-explain with their ``explainer`` and take ``update(model, inputs, target)``; a
sample whose inputs or explanations are not finite counts as NaN. See ``docs/metrics_quantus_b.md``.

``ROAD`` (noisy linear imputation, ``update(model, inputs, attributions, target)``, images only) and
``Consistency`` (``update(model, inputs, attributions)``, samples grouped by discretised explanation
within each update) and ``Continuity`` (re-explains translated images with its ``explainer``,
``update(model, inputs, target)``) follow Quantus 0.6.0 under its class names.
"""
from lrp_lightning.metrics.completeness import Completeness
from lrp_lightning.metrics.complexity import Complexity
from lrp_lightning.metrics.conservation import Conservation
from lrp_lightning.metrics.deletion import Deletion
from lrp_lightning.metrics.effective_complexity import EffectiveComplexity
from lrp_lightning.metrics.faithfulness_correlation import FaithfulnessCorrelation
from lrp_lightning.metrics.faithfulness_estimate import FaithfulnessEstimate
from lrp_lightning.metrics.infidelity import Infidelity
from lrp_lightning.metrics.input_invariance import InputInvariance
from lrp_lightning.metrics.insertion import Insertion
from lrp_lightning.metrics.irof import IROF
from lrp_lightning.metrics.monotonicity import Monotonicity
from lrp_lightning.metrics.monotonicity_correlation import MonotonicityCorrelation
from lrp_lightning.metrics.non_sensitivity import NonSensitivity
from lrp_lightning.metrics.pixel_flipping import PixelFlipping
from lrp_lightning.metrics.region_perturbation import RegionPerturbation
from lrp_lightning.metrics.relevance_mass_accuracy import RelevanceMassAccuracy
from lrp_lightning.metrics.relevance_rank_accuracy import RelevanceRankAccuracy
from lrp_lightning.metrics.selectivity import Selectivity
from lrp_lightning.metrics.sensitivity_n import SensitivityN
from lrp_lightning.metrics.sparseness import Sparseness
from lrp_lightning.metrics.sufficiency import Sufficiency
from lrp_lightning.metrics.attribution_localisation import AttributionLocalisation
from lrp_lightning.metrics.auc import AUC, RelevanceMaskAUC
from lrp_lightning.metrics.focus import Focus
from lrp_lightning.metrics.pointing_game import PointingGame
from lrp_lightning.metrics.top_k_intersection import TopKIntersection
from lrp_lightning.metrics.avg_sensitivity import AvgSensitivity
from lrp_lightning.metrics.local_lipschitz_estimate import LocalLipschitzEstimate
from lrp_lightning.metrics.max_sensitivity import MaxSensitivity
from lrp_lightning.metrics.relative_input_stability import RelativeInputStability
from lrp_lightning.metrics.relative_output_stability import RelativeOutputStability
from lrp_lightning.metrics.relative_representation_stability import RelativeRepresentationStability
from lrp_lightning.metrics.mprt import MPRT, ModelParameterRandomisation
from lrp_lightning.metrics.random_logit import RandomLogit
from lrp_lightning.metrics.efficient_mprt import EfficientModelParameterRandomisation, EfficientMPRT
from lrp_lightning.metrics.smooth_mprt import SmoothModelParameterRandomisation, SmoothMPRT
from lrp_lightning.metrics.road import ROAD
from lrp_lightning.metrics.consistency import Consistency
from lrp_lightning.metrics.continuity import Continuity

__all__ = [
    "Complexity",
    "Conservation",
    "Deletion",
    "FaithfulnessCorrelation",
    "Insertion",
    "PixelFlipping",
    "RegionPerturbation",
    "RelevanceMassAccuracy",
    "RelevanceRankAccuracy",
    "Sparseness",
    "AttributionLocalisation",
    "AUC",
    "RelevanceMaskAUC",
    "Focus",
    "PointingGame",
    "TopKIntersection",
    "AvgSensitivity",
    "LocalLipschitzEstimate",
    "MaxSensitivity",
    "RelativeInputStability",
    "RelativeOutputStability",
    "RelativeRepresentationStability",
    "MPRT",
    "ModelParameterRandomisation",
    "RandomLogit",
    "EfficientMPRT",
    "EfficientModelParameterRandomisation",
    "SmoothMPRT",
    "SmoothModelParameterRandomisation",
    "FaithfulnessEstimate",
    "Selectivity",
    "SensitivityN",
    "Infidelity",
    "EffectiveComplexity",
    "Completeness",
    "NonSensitivity",
    "Monotonicity",
    "MonotonicityCorrelation",
    "Sufficiency",
    "IROF",
    "InputInvariance",
    "ROAD",
    "Consistency",
    "Continuity",
]
