"""AttributionCallback(metrics=[...]) accepts the localisation, robustness and randomisation metrics and logs
them in a real Trainer run (read back from TensorBoard); Focus through the callback's metric set with mosaic flags."""
import math

import torch
from lightning.pytorch.loggers import TensorBoardLogger

from lrp_lightning.callbacks import AttributionCallback
from lrp_lightning.callbacks.metric_set import MetricSet, parse_metrics
from lrp_lightning.metrics import (
    AUC,
    MPRT,
    AttributionLocalisation,
    AvgSensitivity,
    EfficientMPRT,
    Focus,
    LocalLipschitzEstimate,
    MaxSensitivity,
    PointingGame,
    RandomLogit,
    RelativeInputStability,
    RelativeOutputStability,
    RelativeRepresentationStability,
    SmoothMPRT,
    TopKIntersection,
)

LOCALISATION = {"pointing_game": PointingGame(), "attribution_localisation": AttributionLocalisation(),
                "top_kintersection": TopKIntersection(k=20), "auc": AUC()}


def metrics(num_classes: int):
    return [
        *LOCALISATION.values(),
        AvgSensitivity(nr_samples=2), MaxSensitivity(nr_samples=2), LocalLipschitzEstimate(nr_samples=2),
        RelativeInputStability(nr_samples=2, return_nan_when_prediction_changes=False),
        RelativeOutputStability(nr_samples=2, return_nan_when_prediction_changes=False),
        RelativeRepresentationStability(nr_samples=2, return_nan_when_prediction_changes=False),
        MPRT(), SmoothMPRT(nr_samples=2), EfficientMPRT(), RandomLogit(num_classes=num_classes),
    ]


def test_every_metric_is_logged_each_epoch_with_a_random_baseline_for_localisation(
    tmp_path, image_data, read_events, seeded_fit, num_classes
):
    images, labels = image_data(4, seed=3).tensors
    masks = torch.zeros(4, 1, 8, 8, dtype=torch.bool)
    masks[:, :, 2:6, 1:5] = True
    callback = AttributionCallback("epsilon_plus_flat", samples=(images, labels, masks), metrics=metrics(num_classes))
    trainer, _, _ = seeded_fit(tmp_path, [callback], logger=TensorBoardLogger(tmp_path, name="tb"))
    events = read_events(trainer.logger.log_dir)
    names = [*LOCALISATION, "avg_sensitivity", "max_sensitivity", "local_lipschitz_estimate", "relative_input_stability",
             "relative_output_stability", "relative_representation_stability", "mprt_average", "mprt_last",
             "smooth_mprt_average", "smooth_mprt_last", "efficient_mprt", "random_logit"]
    for name in names:
        values = [event.value for event in events.Scalars(f"attribution/epsilon_plus_flat/{name}")]
        assert len(values) == 2 and all(math.isfinite(value) for value in values), name
    for name in LOCALISATION:  # they score the given attribution, so the random baseline gets them too
        assert len(events.Scalars(f"attribution/random/{name}")) == 2
    assert "attribution/random/avg_sensitivity" not in events.Tags()["scalars"]


def test_focus_through_the_metric_set_with_mosaic_flags():
    metric_set = MetricSet(parse_metrics([Focus()]), torch.device("cpu"), conservation=False)
    attributions = torch.zeros(2, 3, 8, 8)
    attributions[0, :, :4, :4] = 1.0  # all positive relevance in the top-left quadrant
    attributions[1, :, 4:, 4:] = 1.0  # ... in the bottom-right one
    flags = torch.tensor([[1, 0, 0, 0], [1, 1, 0, 0]])
    results = metric_set.evaluate({"attributions": attributions, "mask": flags})
    assert results.scalars == {"focus": 0.5}
