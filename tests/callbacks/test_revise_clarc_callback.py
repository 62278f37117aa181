"""ClArCCallback in real Trainer runs: logged re-evaluation read back from the event files, CSV and no logger,
bitwise neutrality, hooks only where the mode says, exceptions, bad input, and two DDP ranks."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch import Callback, seed_everything
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from lrp_lightning.callbacks.revise import ClArCCallback
from lrp_lightning.callbacks.revise.artifact_labels import flagged_cluster, flags_from_user
from lrp_lightning.revise import ClArC

TESTS_DIR = Path(__file__).resolve().parents[1]
LAYER = "net.2"
ARTIFACT_ROWS = list(range(0, 24, 3))
TAGS = ("clean_acc", "attacked_acc", "r_bias", "tcav", "cav_separability")


def insert_corner(images):
    """The test's artifact: a bright 2x2 corner."""
    masks = torch.zeros_like(images, dtype=torch.bool)
    masks[..., :2, :2] = True
    return torch.where(masks, torch.full_like(images, 3.0), images), masks


def _callback(**kwargs):
    options = dict(artifact=ARTIFACT_ROWS, insert_artifact=insert_corner, artifact_class=0, num_samples=24)
    options.update(kwargs)
    return ClArCCallback(LAYER, **options)


def _hook_counts(model):
    return [len(module._forward_hooks) for module in model.modules()]


def test_tensorboard_gets_the_reevaluation_every_epoch_and_clean_acc_is_the_corrected_models(
    tmp_path, image_data, make_trainer, read_events, tiny_classifier, tiny_data
):
    seed_everything(0)
    callback = _callback()
    model = tiny_classifier()
    trainer = make_trainer(tmp_path, [callback], logger=TensorBoardLogger(tmp_path, name="tb"), max_epochs=2)
    trainer.fit(model, datamodule=tiny_data())
    events = read_events(trainer.logger.log_dir)
    for tag in TAGS:
        values = [event.value for event in events.Scalars(f"revision/{tag}")]
        assert len(values) == 2 and all(0.0 <= value <= 1.0 for value in values), tag
    assert _hook_counts(model) == [0] * len(_hook_counts(model))
    images, labels = image_data(24, seed=1).tensors
    model.eval()
    with torch.no_grad(), ClArC(model, LAYER, callback.cav, mode="p"):
        expected = float((model(images).argmax(1) == labels).float().mean())
    assert events.Scalars("revision/clean_acc")[-1].value == pytest.approx(expected, abs=1e-6)
    with torch.no_grad():
        attacked, _ = insert_corner(images[labels != 0])
        with ClArC(model, LAYER, callback.cav, mode="p"):
            expected = float((model(attacked).argmax(1) == labels[labels != 0]).float().mean())
    assert events.Scalars("revision/attacked_acc")[-1].value == pytest.approx(expected, abs=1e-6)


def test_without_a_hook_the_reevaluation_is_the_uncorrected_models(
    tmp_path, image_data, make_trainer, read_events, tiny_classifier, tiny_data
):
    seed_everything(0)
    callback = _callback(mode=None)
    model = tiny_classifier()
    trainer = make_trainer(tmp_path, [callback], logger=TensorBoardLogger(tmp_path, name="tb"), max_epochs=1)
    trainer.fit(model, datamodule=tiny_data())
    events = read_events(trainer.logger.log_dir)
    images, labels = image_data(24, seed=1).tensors
    model.eval()
    with torch.no_grad():
        expected = float((model(images).argmax(1) == labels).float().mean())
        attacked, _ = insert_corner(images[labels != 0])
        expected_attacked = float((model(attacked).argmax(1) == labels[labels != 0]).float().mean())
    assert callback.cav is not None
    assert events.Scalars("revision/clean_acc")[-1].value == pytest.approx(expected, abs=1e-6)
    assert events.Scalars("revision/attacked_acc")[-1].value == pytest.approx(expected_attacked, abs=1e-6)


def test_csv_logger_and_no_logger(tmp_path, make_trainer, tiny_classifier, tiny_data):
    seed_everything(0)
    trainer = make_trainer(tmp_path, [_callback()], logger=CSVLogger(tmp_path, name="csv"), max_epochs=1)
    trainer.fit(tiny_classifier(), datamodule=tiny_data())
    with open(Path(trainer.logger.log_dir) / "metrics.csv") as handle:
        rows = [row for row in csv.DictReader(handle) if row.get("revision/clean_acc")]
    assert len(rows) == 1 and all(rows[0][f"revision/{tag}"] != "" for tag in TAGS)
    callback = _callback()
    make_trainer(tmp_path, [callback], logger=False, max_epochs=1).fit(tiny_classifier(), datamodule=tiny_data())
    assert callback.cav is not None and callback.separability is not None


def test_a_logger_whose_files_cannot_be_written_warns_once_and_training_goes_on(
    tmp_path, make_trainer, tiny_classifier, tiny_data
):
    """The CSV logger's metrics.csv is a directory: Lightning's own save() raises IsADirectoryError (an OSError) at
    the first epoch end; with ClArCCallback alone the logger is guarded, warns once, and ends with its own methods."""
    seed_everything(0)
    logger = CSVLogger(tmp_path, name="csv")
    (Path(logger.log_dir) / "metrics.csv").mkdir(parents=True)
    callback = _callback()
    trainer = make_trainer(tmp_path, [callback], logger=logger, max_epochs=2)
    with pytest.warns(RuntimeWarning, match="its calls are dropped for the rest of this fit") as caught:
        trainer.fit(tiny_classifier(), datamodule=tiny_data())
    assert len([w for w in caught if "its calls are dropped" in str(w.message)]) == 1
    assert trainer.current_epoch == 2 and callback.cav is not None
    assert not {"log_metrics", "save", "finalize"} & set(vars(logger))


@pytest.mark.parametrize("mode", ["p", None])
def test_p_clarc_and_no_hook_leave_training_bitwise_unchanged(tmp_path, mode, make_trainer, tiny_classifier, tiny_data):
    weights = []
    for callbacks in ([], [_callback(mode=mode)]):
        seed_everything(0)
        model = tiny_classifier()
        make_trainer(tmp_path, callbacks, max_epochs=2).fit(model, datamodule=tiny_data())
        weights.append({name: value.clone() for name, value in model.state_dict().items()})
    for name, value in weights[0].items():
        assert torch.equal(value, weights[1][name]), name


class HookProbe(Callback):
    """Records how many forward hooks the layer holds in training and in validation batches."""

    def __init__(self):
        self.train, self.val = set(), set()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.train.add(len(pl_module.net[2]._forward_hooks))

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if not trainer.sanity_checking:
            self.val.add(len(pl_module.net[2]._forward_hooks))


@pytest.mark.parametrize("mode, train, val", [("p", {0}, {1}), ("a", {1}, {0}), (None, {0}, {0})])
def test_the_hook_is_attached_where_the_mode_says(tmp_path, mode, train, val, make_trainer, tiny_classifier, tiny_data):
    seed_everything(0)
    probe = HookProbe()
    model = tiny_classifier()
    make_trainer(tmp_path, [_callback(mode=mode), probe], max_epochs=2).fit(model, datamodule=tiny_data())
    assert probe.train == train and probe.val == val
    assert _hook_counts(model) == [0] * len(_hook_counts(model))


class FailInTraining(Callback):
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        raise KeyError("training fails")


def test_an_exception_leaves_no_hook_behind(tmp_path, make_trainer, tiny_classifier, tiny_data):
    seed_everything(0)
    model = tiny_classifier()
    with pytest.raises(KeyError):
        make_trainer(tmp_path, [_callback(mode="a"), FailInTraining()], max_epochs=1).fit(model, datamodule=tiny_data())
    assert _hook_counts(model) == [0] * len(_hook_counts(model))


def test_bad_input_raises_naming_the_fix(tmp_path, make_trainer, tiny_classifier, tiny_data):
    with pytest.raises(ValueError, match=r"no layer 'features'.*'net.2'"):
        make_trainer(tmp_path, [ClArCCallback("features", ARTIFACT_ROWS)], max_epochs=1).fit(
            tiny_classifier(), datamodule=tiny_data())
    with pytest.raises(ValueError, match="at least one artifact and one clean sample"):
        make_trainer(tmp_path, [ClArCCallback(LAYER, [])], max_epochs=1).fit(tiny_classifier(), datamodule=tiny_data())
    with pytest.raises(ValueError, match="one entry per collected validation sample"):
        flags_from_user(torch.zeros(5, dtype=torch.bool), 24)
    with pytest.raises(ValueError, match="'p' \\(P-ClArC\\), 'a' \\(A-ClArC\\) or None"):
        ClArCCallback(LAYER, ARTIFACT_ROWS, mode="x")


def _cluster_result(name, maps):
    count = maps.shape[0]
    return SimpleNamespace(name=name, clustering=SimpleNamespace(count=count, labels=torch.arange(6) % count),
                           mean_maps=maps, rows=torch.arange(6))


def test_the_flagged_cluster_is_the_most_concentrated_mean_heatmap_unless_chosen():
    spread = torch.ones(8, 8)
    spot = torch.zeros(8, 8)
    spot[0, 0] = 1.0
    results = [_cluster_result("circle", torch.stack([spread, spread])),
               _cluster_result("square", torch.stack([spread, spot])),
               _cluster_result("triangle", spot.unsqueeze(0))]  # one cluster only: no strategy to choose between
    result, index = flagged_cluster(results, None)
    assert (result.name, index) == ("square", 1)
    result, index = flagged_cluster(results, ("circle", 0))
    assert (result.name, index) == ("circle", 0)
    with pytest.raises(ValueError, match="classes: circle, square, triangle"):
        flagged_cluster(results, ("star", 0))


DDP_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {tests_dir!r})
    import torch
    from lightning.pytorch import Callback, Trainer, seed_everything
    from lrp_lightning.callbacks.revise import ClArCCallback
    from _support.lightning_runs import TinyClassifier, TinyData


    class SaveCav(Callback):
        def __init__(self, clarc, root):
            self.clarc, self.root = clarc, root

        def on_fit_end(self, trainer, pl_module):
            torch.save(self.clarc.cav.direction, f"{{self.root}}/cav_rank{{trainer.global_rank}}.pt")
            torch.save(trainer.callback_metrics["revision/tcav"], f"{{self.root}}/tcav_rank{{trainer.global_rank}}.pt")
            trainer.strategy.barrier()


    if __name__ == "__main__":
        root = sys.argv[1]
        seed_everything(0)
        clarc = ClArCCallback("net.2", list(range(0, 24, 3)), num_samples=24)
        trainer = Trainer(strategy="ddp", accelerator="cpu", devices=2, max_epochs=1, default_root_dir=root,
                          logger=False, callbacks=[clarc, SaveCav(clarc, root)], enable_progress_bar=False,
                          enable_model_summary=False, enable_checkpointing=False)
        data = TinyData()
        trainer.fit(TinyClassifier(), train_dataloaders=data.train_dataloader(), val_dataloaders=data.val_dataloader())
    """
)


@pytest.mark.large  # two spawned processes: about a minute on the shared 2-core machine
def test_ddp_two_cpu_ranks_hold_one_identical_cav(tmp_path):
    script = tmp_path / "ddp_clarc.py"
    script.write_text(DDP_SCRIPT.format(tests_dir=str(TESTS_DIR)))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("MASTER_PORT", None)
    for attempt in range(3):
        root = tmp_path / f"attempt{attempt}"
        root.mkdir()
        result = subprocess.run([sys.executable, str(script), str(root)], cwd=root, env=env, capture_output=True,
                                text=True, timeout=240)
        if "address already in use" not in result.stderr.lower():
            break
    assert result.returncode == 0, result.stderr[-4000:]
    assert torch.equal(torch.load(root / "cav_rank0.pt"), torch.load(root / "cav_rank1.pt"))
    assert torch.equal(torch.load(root / "tcav_rank0.pt"), torch.load(root / "tcav_rank1.pt"))


def test_validate_alone_fits_in_inference_mode_and_logs_the_reevaluation(
    tmp_path, make_trainer, tiny_classifier, tiny_data
):
    seed_everything(0)
    callback = _callback()
    trainer = make_trainer(tmp_path, [callback], logger=CSVLogger(tmp_path, name="validate"))
    trainer.validate(tiny_classifier(), datamodule=tiny_data(), verbose=False)
    with open(Path(trainer.logger.log_dir) / "metrics.csv") as handle:
        rows = [row for row in csv.DictReader(handle) if row.get("revision/tcav")]
    assert len(rows) == 1 and all(rows[0][f"revision/{tag}"] != "" for tag in TAGS)
