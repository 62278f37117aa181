"""AttributionCallback configured from a LightningCLI YAML file (``trainer.callbacks``)."""
from __future__ import annotations

import textwrap

import pytest
from lightning.pytorch.cli import LightningCLI

from lrp_lightning.callbacks import AttributionCallback
from lrp_lightning.metrics import RegionPerturbation, Sparseness

CONFIG = textwrap.dedent(
    """
    seed_everything: 0
    trainer:
      accelerator: cpu
      devices: 1
      max_epochs: 1
      default_root_dir: {root}
      enable_progress_bar: false
      enable_model_summary: false
      enable_checkpointing: false
      logger:
        class_path: lightning.pytorch.loggers.TensorBoardLogger
        init_args:
          save_dir: {root}
          name: tb
      callbacks:
        - class_path: lrp_lightning.callbacks.AttributionCallback
          init_args:
            composite: [epsilon_alpha2_beta1_flat, gradient]
            num_samples: 3
            target: prediction
            every_n_epochs: 1
            cmap: bwr
            metrics:
              sparse:
                class_path: lrp_lightning.metrics.Sparseness
              morf:
                class_path: lrp_lightning.metrics.RegionPerturbation
                init_args:
                  patch_size: 2
                  steps: 4
    """
)


@pytest.fixture(autouse=True)
def plain_argv(monkeypatch):
    """LightningCLI gets its arguments from ``args=``, not from pytest's command line."""
    monkeypatch.setattr("sys.argv", ["cli"])


def test_lightning_cli_yaml_configures_and_runs_the_callback(tmp_path, read_events, tiny_classifier, tiny_data):
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG.format(root=tmp_path))
    cli = LightningCLI(tiny_classifier, tiny_data, args=["fit", "--config", str(config)], save_config_callback=None)
    callbacks = [c for c in cli.trainer.callbacks if isinstance(c, AttributionCallback)]
    assert len(callbacks) == 1
    callback = callbacks[0]
    assert callback.explainer_names == ["epsilon_alpha2_beta1_flat", "gradient"]
    assert callback.target == "prediction" and callback.cmap == "bwr" and len(callback.samples) == 3
    assert isinstance(callback.metrics["sparse"], Sparseness)
    assert isinstance(callback.metrics["morf"], RegionPerturbation) and callback.metrics["morf"].steps == 4
    events = read_events(cli.trainer.logger.log_dir)
    for name in callback.explainer_names:
        assert len(events.Images(f"attribution/{name}/grid")) == 1
        assert len(events.Scalars(f"attribution/{name}/sparse")) == 1
        assert len(events.Scalars(f"attribution/{name}/morf")) == 1
    assert len(events.Images("attribution/curves/morf")) == 1


def test_lightning_cli_reports_an_unknown_composite_name(tmp_path, capsys, tiny_classifier, tiny_data):
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG.format(root=tmp_path).replace("[epsilon_alpha2_beta1_flat, gradient]", "lrp_magic"))
    with pytest.raises((SystemExit, ValueError)) as error:
        LightningCLI(tiny_classifier, tiny_data, args=["fit", "--config", str(config)], save_config_callback=None)
    assert error.type is ValueError or error.value.code != 0
    message = str(error.value) + capsys.readouterr().err
    assert "unknown composite 'lrp_magic'" in message and "epsilon_gamma_box" in message
