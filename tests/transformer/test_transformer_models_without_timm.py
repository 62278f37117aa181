"""The shared transformer test models need timm only for the timm models: with timm missing, the language
models still load (their oracle tests run) and only the timm helper skips its caller."""
import importlib.util
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")

HELPERS = Path(__file__).resolve().parents[1] / "_support" / "transformer_models.py"


def test_language_models_load_without_timm_and_only_the_timm_helper_skips(monkeypatch):
    for name in [name for name in sys.modules if name == "timm" or name.startswith("timm.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm now fails as if it were not installed
    spec = importlib.util.spec_from_file_location("transformer_models_without_timm", HELPERS)
    helpers = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(helpers)
    except pytest.skip.Exception as skipped:
        pytest.fail(f"importing the shared transformer models skips every test without timm: {skipped}")
    model = helpers.tiny_language_model("gpt2")
    assert type(model).__name__ == "GPT2LMHeadModel"
    with pytest.raises(pytest.skip.Exception, match="timm"):
        helpers.timm_vit_from_torchvision(helpers.load_golden(helpers.GOLDEN_CASES[0]))
