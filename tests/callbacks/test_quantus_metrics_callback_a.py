"""AttributionCallback takes the faithfulness, complexity and axiomatic metrics of issue 25 (Quantus
names) and logs each for the explainer and the random baseline, read back from TensorBoard."""
import math

from lightning.pytorch import seed_everything
from lightning.pytorch.loggers import TensorBoardLogger

from lrp_lightning.callbacks import AttributionCallback
from lrp_lightning.metrics import (
    IROF,
    Completeness,
    EffectiveComplexity,
    FaithfulnessEstimate,
    Infidelity,
    InputInvariance,
    Monotonicity,
    MonotonicityCorrelation,
    NonSensitivity,
    Selectivity,
    SensitivityN,
    Sufficiency,
)

EXPECTED_TAGS = [
    "faithfulness_estimate", "irof", "infidelity", "monotonicity", "monotonicity_correlation", "selectivity",
    "sensitivity_n", "sufficiency", "effective_complexity", "completeness", "non_sensitivity", "input_invariance",
]


def test_attribution_callback_logs_the_quantus_faithfulness_complexity_and_axiomatic_metrics(
    tmp_path, make_trainer, read_events, tiny_classifier, tiny_data
):
    metrics = [
        FaithfulnessEstimate(features_in_step=4), IROF(), Infidelity(perturb_patch_sizes=[4]), Monotonicity(features_in_step=8),
        MonotonicityCorrelation(nr_samples=2, features_in_step=8), Selectivity(patch_size=4),
        SensitivityN(features_in_step=8), Sufficiency(), EffectiveComplexity(), Completeness(),
        NonSensitivity(features_in_step=1), InputInvariance("gradient"),
    ]
    callback = AttributionCallback(["gradient"], num_samples=4, metrics=metrics)
    seed_everything(0)
    trainer = make_trainer(tmp_path, [callback], logger=TensorBoardLogger(tmp_path, name="tb"), max_epochs=1)
    trainer.fit(tiny_classifier(), datamodule=tiny_data())
    events = read_events(trainer.logger.log_dir)
    for explainer in ("gradient", "random"):
        for name in EXPECTED_TAGS:
            values = events.Scalars(f"attribution/{explainer}/{name}")
            assert len(values) == 1, (explainer, name)
            assert math.isfinite(values[0].value), (explainer, name, values[0].value)
