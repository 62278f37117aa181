"""Nothing logged twice: SanityCheckCallback and RelevanceClusterCallback with ``at_fit_end=True`` skip the
end-of-training run when the last validation epoch ran them at the same step (same model), and run it
when it did not — read back from TensorBoard's event file."""
from __future__ import annotations

import pytest
from lightning.pytorch import seed_everything
from lightning.pytorch.loggers import TensorBoardLogger

from lrp_lightning.callbacks import RelevanceClusterCallback, SanityCheckCallback

SEED = 1234
SCALAR_TAGS = ["sanity/gradient/mprt_spearman", "clusters/0/count"]


@pytest.mark.parametrize(
    "every_n_epochs, epochs, runs_at_epoch_ends",
    [
        (1, 2, [1, 2]),  # the last epoch ran them at the final step: the fit-end run is skipped
        (2, 3, [2, 3]),  # epoch 2 ran them, the final step (epoch 3) did not: the fit-end run logs it
    ],
)
def test_logger_at_fit_end_logs_the_final_step_once(
    tmp_path, every_n_epochs, epochs, runs_at_epoch_ends, num_classes, tiny_classifier, tiny_data, make_trainer,
    read_events,
):
    image_tags = ["sanity/gradient/mprt"] + [
        f"clusters/{label}/{figure}" for label in range(num_classes) for figure in ("eigenvalues", "prototypes")
    ]
    seed_everything(SEED)
    model, data = tiny_classifier(), tiny_data()
    callbacks = [
        SanityCheckCallback("gradient", num_samples=3, every_n_epochs=every_n_epochs, at_fit_end=True),
        RelevanceClusterCallback("gradient", num_samples=4, knn=2, every_n_epochs=every_n_epochs, at_fit_end=True),
    ]
    logger = TensorBoardLogger(tmp_path, name="tb")
    trainer = make_trainer(tmp_path, callbacks, logger=logger, max_epochs=epochs)
    trainer.fit(model, datamodule=data)
    events = read_events(logger.log_dir)
    expected_steps = [trainer.num_training_batches * epoch for epoch in runs_at_epoch_ends]
    for tag in image_tags:
        assert [event.step for event in events.Images(tag)] == expected_steps, tag
    for tag in SCALAR_TAGS:
        assert len(events.Scalars(tag)) == len(runs_at_epoch_ends), tag
