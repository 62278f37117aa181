"""``python -m lrp_lightning.demo --revise rrr`` end to end on tiny settings: both runs train, their figures are read
back from the event files and printed as the before/after table."""
from __future__ import annotations

import io
from contextlib import redirect_stdout

import pytest

from lrp_lightning.demo.__main__ import main
from lrp_lightning.demo.summary import read_scalars

TINY = ["--n-train", "96", "--n-val", "48", "--epochs", "1", "--batch-size", "32", "--accelerator", "cpu"]


@pytest.fixture
def run(restored_global_state):
    """Call ``run(tmp_path, *options)`` to run the tiny demo in-process; returns what it printed."""

    def run(tmp_path, *options):
        output = io.StringIO()
        with restored_global_state(), redirect_stdout(output):
            main([*TINY, "--log-dir", str(tmp_path), *options])
        return output.getvalue()

    return run


def test_revise_rrr_prints_both_models_with_figures_from_the_event_files(tmp_path, run):
    printed = run(tmp_path, "--revise", "rrr")
    runs = sorted({path.parent for path in tmp_path.glob("revise_rrr/seed0/*/version_0/events.out.tfevents.*")})
    assert [run.parent.name for run in runs] == ["confounded", "right_reasons"]
    for run, row in zip(runs, ("| confounded |", "| RightReasonsLoss (gradient) |")):
        scalars = read_scalars(run)
        share = scalars["revision/watermark_share"][-1]
        assert 0.0 <= share <= 1.0
        line = next(line for line in printed.splitlines() if line.startswith(row))
        assert f"{scalars['val/acc'][-1]:.3f}" in line and f"{share:.4f}" in line
    assert "RightReasonsLoss (gradient)" in printed
