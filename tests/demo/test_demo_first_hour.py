"""The demo's command line as a new user meets it: help text, run names, progress bar, sample count."""
import argparse

import pytest

from lrp_lightning.demo.__main__ import build_callback, parse_args
from lrp_lightning.demo.data import ShapesDataModule
from lrp_lightning.demo.run_name import run_name


def _name(argv):
    args = parse_args(argv)
    return run_name(args, parse_args(["--model", args.model]))


def test_help_names_each_default_once(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: None)" not in text
    assert "training epochs (default: cnn 6, vit 6; --revise rrr 10)" in text
    assert "(default: demo_logs)" in text  # options with a plain default still show it


def test_every_demo_configuration_gets_a_run_name_of_its_own():
    names = {
        "make demo": _name([]),
        "vit": _name(["--model", "vit"]),
        "no confounder": _name(["--no-confounder"]),
        "vit no confounder": _name(["--model", "vit", "--no-confounder"]),
        "mixed": _name(["--val-watermark", "mixed"]),
        "label": _name(["--target", "label"]),
        "seed": _name(["--seed", "1"]),
        "composites": _name(["--composites", "gradient", "epsilon_plus"]),
    }
    assert len(set(names.values())) == len(names), names
    assert names["make demo"] == "cnn_confounder" and names["vit"] == "vit_confounder"
    assert names["mixed"] == "cnn_confounder,val-watermark=mixed"
    assert names["composites"] == "cnn_confounder,composites=gradient+epsilon_plus"
    # where and on what the run happens is not part of its name; the per-model defaults are not options
    assert _name(["--accelerator", "cpu", "--devices", "1", "--log-dir", "elsewhere"]) == "cnn_confounder"
    assert _name(["--model", "vit", "--num-samples", "64"]) == "vit_confounder"
    unsafe = argparse.Namespace(model="cnn", confounder=True, name=None, log_dir="x", tag="a/b c")
    assert run_name(unsafe, argparse.Namespace()) == "cnn_confounder,tag=a-b-c"


def test_an_option_added_later_is_part_of_the_name_without_further_code():
    args = parse_args(["--epochs", "2"])
    defaults = parse_args([])
    args.some_new_option, defaults.some_new_option = 0.5, None
    assert run_name(args, defaults) == "cnn_confounder,epochs=2,some-new-option=0.5"


def test_asking_for_more_samples_than_watermarked_validation_images_warns():
    datamodule = ShapesDataModule(n_train=8, n_val=6, batch_size=4)
    datamodule.setup()
    args = parse_args(["--num-samples", "10", "--n-val", "6"])
    with pytest.warns(UserWarning, match=r"--num-samples 10: the validation split has only 6 images"):
        callback = build_callback(datamodule, args)
    assert callback.samples.inputs.shape[0] == 6


def test_progress_bar_counts_epochs_from_one_like_the_table():
    import lightning.pytorch as pl

    from lrp_lightning.demo.progress import EpochProgressBar

    descriptions = []

    class Recording(EpochProgressBar):
        def on_train_epoch_start(self, trainer, *args):
            super().on_train_epoch_start(trainer, *args)
            descriptions.append(self.train_progress_bar.desc.rstrip(": "))

    from lrp_lightning.demo.model import ShapesCNN

    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_model_summary=False, callbacks=[Recording()], limit_train_batches=1, limit_val_batches=0)
    trainer.fit(ShapesCNN(width=4), datamodule=ShapesDataModule(n_train=8, n_val=4, batch_size=4))
    assert descriptions == ["Epoch 1/2", "Epoch 2/2"]
