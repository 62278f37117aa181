"""The demo's closing report shows the sMPRT and eMPRT that SanityCheckCallback logs."""
from lrp_lightning.demo.suite import suite_report


def test_report_lists_smprt_and_emprt_per_explainer():
    scalars = {
        "sanity/epsilon_plus_flat/smprt_last": [0.7, 0.25],
        "sanity/epsilon_plus_flat/emprt": [0.1, 0.5],
        "sanity/gradient/smprt_last": [0.125],
    }
    report = suite_report(scalars, ["epsilon_plus_flat", "gradient"])
    assert "Sanity checks revisited" in report
    assert "epsilon_plus_flat | sMPRT  0.250 (low is good) | eMPRT  0.500 (high is good)" in report
    assert "gradient | sMPRT" not in report  # no eMPRT logged for it: no line
    assert "Sanity checks revisited" not in suite_report({}, ["gradient"])
