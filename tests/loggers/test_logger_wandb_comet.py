"""Weights & Biases (offline) and Comet (offline): real Trainer runs read back from the W&B offline run
directory (media files, history, summary) and from Comet's offline archive; TensorBoard and W&B at once."""
from __future__ import annotations

import json
import re
import time
from collections import Counter
from pathlib import Path

import pytest
from lightning.pytorch.loggers import TensorBoardLogger


pytestmark = pytest.mark.large
WANDB_EXIT_SECONDS = 120


def wandb_logger(root: Path):
    pytest.importorskip("wandb")
    from lightning.pytorch.loggers import WandbLogger

    return WandbLogger(save_dir=str(root), offline=True, project="lrp-lightning-tests")


@pytest.fixture
def finished_wandb_run(wandb_records):
    """Call ``finished_wandb_run(logger)`` to finish the offline run; returns its directory."""

    def finished_wandb_run(logger) -> Path:
        """Finish the offline run; its directory, once W&B's writer has recorded the run's exit (``finish``
        can return before the service process has written the last records)."""
        run_dir = Path(logger.experiment.dir).parent
        logger.experiment.finish()
        deadline = time.monotonic() + WANDB_EXIT_SECONDS
        while not any(record.WhichOneof("record_type") == "exit" for record in wandb_records(run_dir)):
            assert time.monotonic() < deadline, "the offline run never recorded its exit"
            time.sleep(0.5)
        return run_dir

    return finished_wandb_run


@pytest.fixture
def assert_wandb_run_complete(
    every_epoch_images, once_tables, scalars, assert_everything_once, wandb_history, wandb_logged, wandb_summary
):
    """Call ``assert_wandb_run_complete(run_dir, steps)`` to assert the offline W&B run holds everything once."""

    def assert_wandb_run_complete(run_dir: Path, steps: list[int]) -> None:
        rows = wandb_history(run_dir)
        assert_everything_once(wandb_logged(rows), steps)
        for scalar in scalars:
            assert len([row for row in rows if scalar in row]) == len(steps), scalar
        summary = wandb_summary(run_dir)
        grid = "attribution/gradient/grid"
        (file,) = summary[f"{grid}/filenames"]
        assert (run_dir / "files" / file).stat().st_size > 0
        assert summary[f"{grid}/captions"][0].splitlines()[0].startswith("sample 0: label ")
        media = [path for path in (run_dir / "files" / "media").rglob("*.png")]
        assert len(media) == len(every_epoch_images) * len(steps)
        rule_map = json.loads((run_dir / "files" / summary[f"{once_tables[0]}/path"]).read_text())
        assert rule_map["columns"] == ["layer", "type", "rule"] and "net.0" in [row[0] for row in rule_map["data"]]

    return assert_wandb_run_complete


def test_logger_tensorboard_and_wandb_at_once_both_get_everything(
    tmp_path, plain_weights, read_events, assert_everything_once, assert_same_weights, every_epoch_images,
    logged_fit, validation_steps, finished_wandb_run, assert_wandb_run_complete,
):
    """W&B offline, read back from its run directory, and TensorBoard beside it: each gets everything once."""
    loggers = [TensorBoardLogger(tmp_path, name="tb"), wandb_logger(tmp_path)]
    trainer, model = logged_fit(tmp_path, loggers)
    steps = validation_steps(trainer)
    assert_wandb_run_complete(finished_wandb_run(loggers[1]), steps)
    events = read_events(loggers[0].log_dir)
    logged = Counter((tag, event.step) for tag in every_epoch_images for event in events.Images(tag))
    logged.update((tag[: -len("/text_summary")], event.step) for tag in events.Tags()["tensors"]
                  if tag.endswith("/text_summary") for event in events.Tensors(tag))
    assert_everything_once(logged, steps)
    assert_same_weights(plain_weights, model)


def test_logger_comet_offline_archive_has_every_picture_and_table_once_training_bitwise(
    tmp_path, plain_weights, monkeypatch, assert_everything_once, assert_same_weights, comet_messages,
    comet_uploads, every_epoch_tables, logged_fit, scalars, validation_steps,
):
    pytest.importorskip("comet_ml")
    from lightning.pytorch.loggers import CometLogger

    # Lightning's CometLogger(online=False) starts a *disabled* experiment that writes nothing;
    # comet_ml's own switch makes it an offline experiment archived under offline_directory
    monkeypatch.setenv("COMET_START_ONLINE", "0")
    logger = CometLogger(project="lrp-lightning-tests", offline_directory=str(tmp_path / "comet"), log_code=False,
                         log_git_metadata=False, log_git_patch=False, log_env_details=False,
                         auto_output_logging=False)
    trainer, model = logged_fit(tmp_path, logger)
    logger.experiment.end()
    steps = validation_steps(trainer)
    messages = comet_messages(tmp_path / "comet")
    logged = Counter((upload["figName"], upload["step"]) for upload in comet_uploads(messages, "visualization"))
    logged.update((upload["fileName"].rsplit("/", 1)[0], upload["step"]) for upload in comet_uploads(messages, "asset")
                  if upload["extension"] == "csv")
    assert_everything_once(logged, steps)
    metrics = Counter(message["payload"]["metric"]["metricName"] for message in messages if message["type"] == "metric_msg")
    for scalar in scalars:
        assert metrics[scalar] == len(steps), scalar
    assert set(every_epoch_tables) <= {tag for tag, _ in logged}
    assert_same_weights(plain_weights, model)


def test_logger_token_heatmaps_and_tables_go_to_wandb_and_mlflow_at_once(
    tmp_path, make_trainer, mlflow_artifacts, mlflow_logged, wandb_history, wandb_logged, wandb_summary,
    finished_wandb_run,
):
    mlflow = pytest.importorskip("mlflow")
    from lightning.pytorch import seed_everything
    from lightning.pytorch.loggers import MLFlowLogger

    from lrp_lightning.callbacks import AttributionCallback
    from lrp_lightning.callbacks.tokens import TOKEN_TABLE_COLUMNS
    from lrp_lightning.demo.text_data import SEQUENCE_LENGTH, ShortcutTextDataModule, Vocabulary
    from lrp_lightning.demo.text_model import TinyTextTransformer

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    loggers = [wandb_logger(tmp_path), MLFlowLogger(experiment_name="tokens", tracking_uri=uri,
                                                    artifact_location=str(tmp_path / "artifacts"))]
    seed_everything(7)
    callback = AttributionCallback("gradient", num_samples=3, tokenizer=Vocabulary())
    trainer = make_trainer(tmp_path, [callback], logger=loggers, max_epochs=1)
    trainer.fit(TinyTextTransformer(len(Vocabulary()), SEQUENCE_LENGTH, dim=16, num_layers=1),
                datamodule=ShortcutTextDataModule(n_train=32, n_val=12, batch_size=16, seed=3))
    step = trainer.global_step
    words = [Vocabulary().convert_ids_to_tokens(ids[mask.bool()].tolist())
             for ids, mask in zip(callback.samples.inputs, callback.samples.attention_mask)]

    run_dir = finished_wandb_run(loggers[0])
    logged = wandb_logged(wandb_history(run_dir))
    assert logged[("attribution/gradient/grid", step)] == 1 and logged[("attribution/gradient/tokens", step)] == 1
    tokens = json.loads((run_dir / "files" / wandb_summary(run_dir)["attribution/gradient/tokens/path"]).read_text())
    assert tokens["columns"] == list(TOKEN_TABLE_COLUMNS) and [row[0] for row in tokens["data"]] == [0, 1, 2]
    for row, sample_words in zip(tokens["data"], words):
        assert re.findall(r"(\S+) \([+-]\d\.\d\d\)", row[3]) == sample_words

    client = mlflow.MlflowClient(uri)
    logged = mlflow_logged(client, loggers[1].run_id)
    assert logged[("attribution/gradient/grid", step)] == 1 and logged[("attribution/gradient/tokens", step)] == 1
    table = next(path for path in mlflow_artifacts(client, loggers[1].run_id) if "/tokens/" in path)
    content = json.loads(Path(client.download_artifacts(loggers[1].run_id, table, str(tmp_path))).read_text())
    assert content["columns"] == list(TOKEN_TABLE_COLUMNS) and len(content["data"]) == 3
