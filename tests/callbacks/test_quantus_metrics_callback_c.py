"""AttributionCallback takes ROAD, Consistency and Continuity (issue 25, Quantus names) and logs them in a real
Trainer run, read back from TensorBoard: the two that score the given attributions for the random baseline too."""
import math

from lightning.pytorch import seed_everything
from lightning.pytorch.loggers import TensorBoardLogger

from lrp_lightning.callbacks import AttributionCallback
from lrp_lightning.metrics import ROAD, Consistency, Continuity


def test_attribution_callback_logs_road_consistency_and_continuity(
    tmp_path, tiny_classifier, tiny_data, make_trainer, read_events
):
    metrics = [ROAD(percentages=[20, 60]), Consistency(), Continuity(nr_steps=2)]
    callback = AttributionCallback(["gradient"], num_samples=4, metrics=metrics)
    seed_everything(0)
    trainer = make_trainer(tmp_path, [callback], logger=TensorBoardLogger(tmp_path, name="tb"), max_epochs=1)
    trainer.fit(tiny_classifier(), datamodule=tiny_data())
    events = read_events(trainer.logger.log_dir)
    for explainer, names in (("gradient", ["road", "consistency", "continuity"]), ("random", ["road", "consistency"])):
        for name in names:
            values = events.Scalars(f"attribution/{explainer}/{name}")
            assert len(values) == 1, (explainer, name)
            assert math.isfinite(values[0].value), (explainer, name, values[0].value)
    assert "attribution/random/continuity" not in events.Tags()["scalars"]
