"""``python -m lrp_lightning.demo --revise rrr|clarc`` end to end: real Trainer runs whose figures are read back from
their event files. The default test runs ``rrr`` on tiny settings; the ``large`` tests run the demo's own settings for
seeds 0-2 and assert the targets of issue #24 (thresholds of the issue, not measured values)."""
from __future__ import annotations

import io
from contextlib import redirect_stdout

import pytest

from lrp_lightning.demo.__main__ import main, parse_args
from lrp_lightning.demo.data import IMAGE_SIZE, WATERMARK_SIZE, generate_split, watermark_regions
from lrp_lightning.demo.revise import REVISE_DEFAULTS
from lrp_lightning.demo.summary import read_scalars

TINY = ["--n-train", "96", "--n-val", "48", "--epochs", "1", "--batch-size", "32", "--accelerator", "cpu"]
# SpRAy needs a model that has picked the watermark up, and enough images per class, to find two clusters
CLARC_SMALL = ["--n-train", "900", "--n-val", "240", "--epochs", "3", "--finetune-epochs", "1", "--cluster-samples", "64",
               "--accelerator", "cpu"]
SEEDS = (0, 1, 2)
AREA_SHARE = WATERMARK_SIZE**2 / IMAGE_SIZE**2
# issue #24, "Done when": RightReasonsLoss reaches 0.90 validation accuracy with the watermark's relevance share at
# most twice its area share; the SpRAy-CAV fine-tuning reaches 0.80 and at least halves R_bias
RRR_ACCURACY, RRR_SHARE_RATIO = 0.90, 2.0
CLARC_ACCURACY, CLARC_R_BIAS_FACTOR = 0.80, 0.5
# measured on seeds 0-2 (docs/revise.md, "Measured"): the ClArC targets are open; strict, so a run that meets them
# fails until the marker is removed
CLARC_OPEN = pytest.mark.xfail(strict=True, raises=AssertionError,
                               reason="issue #24 open: RR-ClArC from the SpRAy CAV does not halve R_bias")


@pytest.fixture
def run(restored_global_state):
    """Call ``run(tmp_path, *options)`` to run the demo in-process; returns what it printed."""

    def run(tmp_path, *options):
        output = io.StringIO()
        with restored_global_state(), redirect_stdout(output):
            main(["--log-dir", str(tmp_path), *options])
        return output.getvalue()

    return run


def _last(run_dir, tag):
    return read_scalars(run_dir)[tag][-1]


def test_revise_defaults_follow_the_mode_and_yield_to_the_command_line():
    plain, rrr, clarc = parse_args([]), parse_args(["--revise", "rrr"]), parse_args(["--revise", "clarc"])
    for setting in ("epochs", "train_watermarked", "watermark_opacity"):
        assert getattr(rrr, setting) == REVISE_DEFAULTS["rrr"].get(setting, getattr(plain, setting)), setting
        assert getattr(clarc, setting) == REVISE_DEFAULTS["clarc"].get(setting, getattr(plain, setting)), setting
    assert (plain.epochs, plain.train_watermarked) == (6, 1.0)
    chosen = parse_args(["--revise", "clarc", "--epochs", "3", "--train-watermarked", "0.8", "--watermark-opacity", "0.3"])
    assert (chosen.epochs, chosen.train_watermarked, chosen.watermark_opacity) == (3, 0.8, 0.3)
    assert parse_args(["--revise", "rrr", "--epochs", "2"]).epochs == 2


def test_rrr_masks_cover_every_corner_where_a_watermark_can_sit():
    split = generate_split(64, seed=0, confounded=False)
    regions = watermark_regions()
    assert regions.sum() == 4 * WATERMARK_SIZE**2
    assert (split.watermark_masks <= regions).all()  # every watermark lies inside the regions
    assert split.watermark_corners.unique().numel() == 4


def test_revise_rrr_prints_both_models_with_figures_from_the_event_files(tmp_path, run):
    printed = run(tmp_path, *TINY, "--revise", "rrr")
    runs = sorted({path.parent for path in tmp_path.glob("revise_rrr/seed0/*/version_0/events.out.tfevents.*")})
    assert [run.parent.name for run in runs] == ["confounded", "right_reasons"]
    for run, row in zip(runs, ("| confounded |", "| RightReasonsLoss (gradient) |")):
        scalars = read_scalars(run)
        share = scalars["revision/watermark_share"][-1]
        assert 0.0 <= share <= 1.0
        line = next(line for line in printed.splitlines() if line.startswith(row))
        assert f"{scalars['val/acc'][-1]:.3f}" in line and f"{share:.4f}" in line
    assert "RightReasonsLoss (gradient)" in printed


def test_revise_clarc_prints_every_row_with_figures_from_the_event_files(tmp_path, run):
    printed = run(tmp_path, *CLARC_SMALL, "--revise", "clarc")
    root = tmp_path / "revise_clarc/seed0"
    rows = {"confounded": "confounded", "P-ClArC (training-free)": "p_clarc", "RR-ClArC fine-tuned": "rr_clarc",
            "A-ClArC fine-tuned": "a_clarc"}
    for row, directory in rows.items():
        scalars = read_scalars(root / directory / "version_0")
        line = next(line for line in printed.splitlines() if line.startswith(f"| {row} |"))
        for tag in ("clean_acc", "attacked_acc", "r_bias"):
            value = scalars[f"revision/{tag}"][-1]
            assert 0.0 <= value <= 1.0 and f"{value:.3f}" in line, (row, tag)
    assert "train/rr_clarc" in read_scalars(root / "rr_clarc/version_0")


@pytest.mark.large
@pytest.mark.parametrize("seed", SEEDS)
def test_revise_rrr_meets_the_issue_targets(tmp_path, seed, run):
    run(tmp_path, "--revise", "rrr", "--seed", str(seed))
    run = tmp_path / f"revise_rrr/seed{seed}/right_reasons/version_0"
    assert _last(run, "val/acc") >= RRR_ACCURACY
    assert _last(run, "revision/watermark_share") <= RRR_SHARE_RATIO * AREA_SHARE


@pytest.mark.large
@CLARC_OPEN
@pytest.mark.parametrize("seed", SEEDS)
def test_revise_clarc_meets_the_issue_targets(tmp_path, seed, run):
    run(tmp_path, "--revise", "clarc", "--seed", str(seed))
    root = tmp_path / f"revise_clarc/seed{seed}"
    uncorrected = _last(root / "confounded/version_0", "revision/r_bias")
    assert 0.0 <= _last(root / "p_clarc/version_0", "revision/r_bias") <= 1.0  # P-ClArC is reported beside them
    tuned = root / "rr_clarc/version_0"
    assert _last(tuned, "val/acc") >= CLARC_ACCURACY
    assert _last(tuned, "revision/r_bias") <= CLARC_R_BIAS_FACTOR * uncorrected
