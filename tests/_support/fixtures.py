"""Making session fixtures that hand out what a support module defines (used by the ``conftest.py`` files)."""
from __future__ import annotations

import importlib
from typing import Any, Optional

import pytest


def _fixture(fixture_name: str, module_name: str, attribute: str, requires: Optional[str]):
    """A session fixture named ``fixture_name`` returning ``_support.<module_name>.<attribute>``."""

    def fixture() -> Any:
        if requires is not None:
            pytest.importorskip(requires)
        return getattr(importlib.import_module(f"_support.{module_name}"), attribute)

    skips = f" (skips the test without {requires})" if requires else ""
    fixture.__doc__ = f"``{attribute}`` of ``tests/_support/{module_name}.py``{skips}."
    fixture.__name__ = fixture_name
    return pytest.fixture(scope="session", name=fixture_name)(fixture)


def expose(namespace: dict, module_name: str, names: dict, requires: Optional[str] = None) -> None:
    """Define in ``namespace`` (a conftest's globals) one session fixture per entry of ``names``.

    Parameters
    ----------
    namespace : dict
        The ``globals()`` of the conftest module; pytest finds the fixtures there.
    module_name : str
        The support module (``tests/_support/<module_name>.py``), imported when a test first asks for one
        of its fixtures.
    names : dict
        Fixture name -> the module's attribute it hands out (a function or class: tests call it).
    requires : str, optional
        An optional package the module imports: a test asking for the fixture is skipped where it is missing.
    """
    for fixture_name, attribute in names.items():
        namespace[fixture_name] = _fixture(fixture_name, module_name, attribute, requires)
