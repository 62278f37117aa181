"""Fixtures of the transformer tests: the cases of the LXT golden files (``tests/golden/*.pt``), a tiny ViT and the
gradient-view rules written out by hand (``tests/_support/rules_by_hand.py``)."""
import pytest

from _support.fixtures import expose

expose(globals(), "rules_by_hand", {name: name for name in (
    "tiny_vit", "attention_by_hand", "layer_norm_by_hand", "identity_rule", "vit_by_hand",
)})


def _golden_support():
    pytest.importorskip("transformers")
    from _support import transformer_models

    return transformer_models


@pytest.fixture(scope="session")
def golden_cases() -> list:
    """The names of the golden files (``tests/golden/<name>.pt``), sorted."""
    return _golden_support().GOLDEN_CASES


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run a test asking for ``golden_language_case`` once per ``(golden file, attention implementation)`` of
    the language models (ids ``<name>-<implementation>``)."""
    if "golden_language_case" in metafunc.fixturenames:
        support = _golden_support()
        cases = [
            (name, implementation)
            for name in support.GOLDEN_CASES
            if not name.startswith("vit")
            for implementation in support.load_golden(name)["results"]
        ]
        metafunc.parametrize("golden_language_case", cases, ids=[f"{name}-{implementation}" for name, implementation in cases])
