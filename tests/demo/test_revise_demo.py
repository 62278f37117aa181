"""``python -m lrp_lightning.demo --revise rrr|clarc`` end to end: real Trainer runs whose figures are read back from
their event files. The default test runs ``rrr`` on tiny settings; the ``large`` tests run the demo's own settings for
seeds 0-2 and assert the targets of issue #24 (thresholds of the issue, not measured values)."""
from __future__ import annotations

import io
from contextlib import redirect_stdout

import pytest

from lrp_lightning.demo.__main__ import main
from lrp_lightning.demo.data import IMAGE_SIZE, WATERMARK_SIZE
from lrp_lightning.demo.summary import read_scalars

TINY = ["--n-train", "96", "--n-val", "48", "--epochs", "1", "--batch-size", "32", "--accelerator", "cpu"]
SEEDS = (0, 1, 2)
AREA_SHARE = WATERMARK_SIZE**2 / IMAGE_SIZE**2
# issue #24, "Done when": RightReasonsLoss reaches 0.90 validation accuracy with the watermark's relevance share at
# most twice its area share; the SpRAy-CAV fine-tuning reaches 0.80 and at least halves R_bias
RRR_ACCURACY, RRR_SHARE_RATIO = 0.90, 2.0
CLARC_ACCURACY, CLARC_R_BIAS_FACTOR = 0.80, 0.5
# measured on seeds 0-2 (docs/revise.md, "Measured"): the targets are open; strict, so a run that meets them fails
# until the marker is removed
RRR_OPEN = pytest.mark.xfail(strict=True, raises=AssertionError,
                              reason="issue #24 open: RightReasonsLoss reaches 0.73-0.89, not 0.90")
CLARC_OPEN = pytest.mark.xfail(strict=True, raises=AssertionError,
                               reason="issue #24 open: ClArC fine-tuning from the SpRAy CAV stays at chance")


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


@pytest.mark.large
@RRR_OPEN
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
    tuned = root / "a_clarc/version_0"
    assert _last(tuned, "val/acc") >= CLARC_ACCURACY
    assert _last(tuned, "revision/r_bias") <= CLARC_R_BIAS_FACTOR * uncorrected
