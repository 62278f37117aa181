"""Every script in examples/ runs with tiny settings and produces what it promises."""
import io
import runpy
import sys
from contextlib import redirect_stdout
from pathlib import Path

import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lrp_lightning.composites import COMPOSITES

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
def run_example(restored_global_state):
    """Call ``run_example(name, *args, monkeypatch=monkeypatch)`` to run ``examples/<name>`` as ``__main__``;
    returns what it printed."""

    def run_example(name, *args, monkeypatch):
        """Run ``examples/<name>`` as ``__main__`` with ``args``; return what it printed."""
        monkeypatch.setattr(sys, "argv", [name, *map(str, args)])
        output = io.StringIO()
        with restored_global_state(), redirect_stdout(output):
            runpy.run_path(str(EXAMPLES / name), run_name="__main__")
        return output.getvalue()

    return run_example


def event_tags(log_dir):
    accumulator = EventAccumulator(str(log_dir), size_guidance={"images": 0, "scalars": 0})
    accumulator.Reload()
    return accumulator.Tags()


def test_every_example_has_a_test():
    tested = {"resnet_heatmap.py", "custom_composite.py", "lightning_callback.py", "lightning_cli.py",
              "metrics_standalone.py", "text_shortcut.py", "decoy_digits.py"}
    assert {path.name for path in EXAMPLES.glob("*.py")} == tested


@pytest.mark.parametrize("composite", ["epsilon_plus_flat", "epsilon_gamma_box"])
def test_resnet_heatmap_saves_an_input_heatmap_overlay_png(tmp_path, monkeypatch, composite, run_example):
    target = tmp_path / "heatmap.png"
    run_example("resnet_heatmap.py", "--size", 32, "--composite", composite, "--output", target,
                monkeypatch=monkeypatch)
    with Image.open(target) as picture:
        width, height = picture.size
        assert height == 32 and 3 * 32 <= width < 4 * 32 and picture.mode == "RGB"  # three panels


def test_custom_composite_registers_and_applies_the_name_map(monkeypatch, run_example):
    saved = dict(COMPOSITES)
    try:
        printed = run_example("custom_composite.py", monkeypatch=monkeypatch)
        assert "my_composite" in COMPOSITES
    finally:
        COMPOSITES.clear()
        COMPOSITES.update(saved)
    rules = {line.split()[0]: line.split()[1] for line in printed.splitlines() if line.startswith("  ")}
    assert rules["conv1"].startswith("Flat(") and rules["conv2"].startswith("Gamma(gamma=0.25")
    assert rules["head"].startswith("Epsilon(") and rules["relu1"] == "Pass()"
    assert "relevance (2, 3, 16, 16)" in printed


def test_lightning_callback_script_logs_heatmaps_and_metrics(tmp_path, monkeypatch, run_example):
    run_example("lightning_callback.py", "--epochs", 1, "--n-train", 32, "--log-dir", tmp_path,
                monkeypatch=monkeypatch)
    tags = event_tags(tmp_path / "lightning_callback" / "version_0")
    for name in ("epsilon_gamma_box", "epsilon_plus_flat", "gradient"):
        assert f"attribution/{name}/grid" in tags["images"]
        assert f"attribution/{name}/deletion" in tags["scalars"]


def test_lightning_cli_yaml_adds_the_callback(tmp_path, monkeypatch, run_example):
    run_example(
        "lightning_cli.py", "fit", "--config", EXAMPLES / "lightning_cli.yaml", "--trainer.max_epochs", 1,
        "--data.n_train", 32, "--data.n_val", 8, "--trainer.enable_progress_bar", "false",
        "--trainer.logger.init_args.save_dir", tmp_path, monkeypatch=monkeypatch,
    )
    tags = event_tags(tmp_path / "lightning_cli" / "version_0")
    for name in ("epsilon_gamma_box", "epsilon_plus_flat", "gradient"):
        assert f"attribution/{name}/grid" in tags["images"]
        assert f"attribution/{name}/aopc" in tags["scalars"]


def test_metrics_standalone_prints_every_metric_for_both_explainers(monkeypatch, run_example):
    printed = run_example("metrics_standalone.py", "--train-steps", 1, "--samples", 3, "--steps", 4,
                          monkeypatch=monkeypatch)
    lines = printed.splitlines()
    assert lines[0] == "epsilon_plus_flat" and lines[8] == "gradient"
    values = {line[:28].strip(): float(line[28:]) for line in lines[9:]}
    assert set(values) == {"aopc (MoRF)", "deletion auc", "insertion auc", "faithfulness corr",
                           "relevance mass on object", "sparseness", "complexity"}
    assert 0.0 <= values["sparseness"] <= 1.0 and 0.0 <= values["relevance mass on object"] <= 1.0
    assert -1.0 <= values["faithfulness corr"] <= 1.0
    assert torch.isfinite(torch.tensor(list(values.values()))).all()


def test_text_shortcut_attn_lrp_finds_the_deciding_keyword_in_the_logged_tables(tmp_path, monkeypatch, run_example):
    """The tag is right for 90 % of the training data and random in validation; the model reads the keyword."""
    from lrp_lightning.callbacks.tokens import TOKEN_IMAGE_WIDTH
    from lrp_lightning.demo.text_data import KEYWORDS, SOURCE_TAGS

    printed = run_example("text_shortcut.py", "--epochs", 3, "--n-train", 800, "--composites", "attn_lrp", "gradient",
                          "--log-dir", tmp_path, monkeypatch=monkeypatch)
    log_dir = printed.split("TensorBoard logs: ")[1].splitlines()[0]
    accumulator = EventAccumulator(log_dir, size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    accumulator.Reload()
    assert accumulator.Scalars("val/acc")[-1].value >= 0.95
    table = accumulator.Tensors("attribution/attn_lrp/tokens/text_summary")[-1].tensor_proto.string_val[0].decode()
    top_tokens = [row.split(" | ")[2].replace("\\", "") for row in table.splitlines()[2:]]
    keywords = {word for group in KEYWORDS for word in group}
    assert len(top_tokens) == 32
    assert sum(token in keywords for token in top_tokens) >= 0.9 * len(top_tokens), top_tokens
    assert sum(token in SOURCE_TAGS for token in top_tokens) <= 0.1 * len(top_tokens), top_tokens
    assert accumulator.Scalars("attribution/attn_lrp/keyword_top")[-1].value >= 0.9
    image = accumulator.Images("attribution/attn_lrp/grid")[-1]
    assert image.width == TOKEN_IMAGE_WIDTH and image.height > 32 * 10
    assert f"tensorboard --logdir {tmp_path} --host 127.0.0.1 --port 6006" in printed



@pytest.mark.large
def test_text_shortcut_at_the_readme_settings_gives_the_readme_counts(tmp_path, monkeypatch, run_example):
    """README: in the run with the example's defaults (4 epochs, seed 0, validation accuracy 1.00) AttnLRP
    and CP-LRP put the most relevance on the keyword in 32 of 32 explained validation sequences, the
    plain gradient x input in 1 of 32."""
    printed = run_example("text_shortcut.py", "--log-dir", tmp_path, monkeypatch=monkeypatch)
    log_dir = printed.split("TensorBoard logs: ")[1].splitlines()[0]
    accumulator = EventAccumulator(log_dir, size_guidance={"scalars": 0})
    accumulator.Reload()
    assert accumulator.Scalars("val/acc")[-1].value == 1.0
    top = {name: accumulator.Scalars(f"attribution/{name}/keyword_top")[-1].value * 32
           for name in ("attn_lrp", "cp_lrp", "gradient")}
    assert top == pytest.approx({"attn_lrp": 32, "cp_lrp": 32, "gradient": 1}, abs=1e-4)
