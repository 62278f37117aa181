"""examples/decoy_digits.py: the plain model falls for the decoy swatch, RightReasonsLoss recovers the reference."""
import runpy
from pathlib import Path

import pytest

pytest.importorskip("sklearn")

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "decoy_digits.py"
RECOVERY = 0.03  # the tolerance: corrected within 0.03 of the reference


def test_right_reasons_loss_recovers_the_reference_accuracy_on_decoy_digits():
    results = runpy.run_path(str(EXAMPLE), run_name="decoy_digits")["run"](seed=0)
    reference = results["reference (random swatch shades)"]
    assert results["plain (decoy shades)"] < reference - RECOVERY  # the decoy costs more than the tolerance
    assert results["RightReasonsLoss gradient"] >= reference - RECOVERY
