"""Packaging a user can trust: docstrings on every public name, typing marker, licence, changelog,
and dependency floors that ``make test-floors`` installs."""
from __future__ import annotations

import importlib
import inspect
import pkgutil
import subprocess
import sys
import tomllib
from pathlib import Path

import lrp_lightning

ROOT = Path(__file__).resolve().parents[2]


def public_modules() -> list:
    """Every module of the package whose dotted name has no part starting with ``_``."""
    names = ["lrp_lightning"] + [
        info.name for info in pkgutil.walk_packages(lrp_lightning.__path__, "lrp_lightning.")
        if not any(part.startswith("_") for part in info.name.split("."))
    ]
    return [importlib.import_module(name) for name in names]


def public_names(module) -> list:
    """(qualified name, object) of the module's own public classes and functions, and of the public
    methods and properties those classes define."""
    found = []
    for name, value in vars(module).items():
        if name.startswith("_") or getattr(value, "__module__", None) != module.__name__:
            continue
        if not (inspect.isclass(value) or inspect.isfunction(value)):
            continue
        found.append((f"{module.__name__}.{name}", value))
        if inspect.isclass(value):
            for attribute, member in vars(value).items():
                if attribute.startswith("_"):
                    continue
                if isinstance(member, (staticmethod, classmethod)):
                    member = member.__func__
                if isinstance(member, property) or inspect.isfunction(member):
                    documented = member if isinstance(member, property) else getattr(value, attribute)
                    found.append((f"{module.__name__}.{name}.{attribute}", documented))
    return found


def test_every_public_module_class_function_and_method_has_a_docstring():
    modules = public_modules()
    assert {"lrp_lightning.core", "lrp_lightning.metrics", "lrp_lightning.callbacks.attribution"} <= {
        m.__name__ for m in modules
    }
    missing = [m.__name__ for m in modules if not inspect.getdoc(m)]
    names = [entry for module in modules for entry in public_names(module)]
    assert len(names) > 200
    missing += [name for name, value in names if not inspect.getdoc(value)]
    assert not missing, f"public names without a docstring: {missing}"


def test_typed_licensed_and_changelogged():
    assert (ROOT / "lrp_lightning" / "py.typed").is_file()
    license_text = (ROOT / "LICENSE").read_text()
    assert "BSD 3-Clause License" in license_text and "Neither the name of the copyright holder" in license_text
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    # an SPDX expression (setuptools >= 77; a table or a license classifier beside it is deprecated)
    assert project["project"]["license"] == "BSD-3-Clause" and project["project"]["license-files"] == ["LICENSE"]
    assert not [c for c in project["project"]["classifiers"] if c.startswith("License ::")]
    assert "setuptools>=77" in project["build-system"]["requires"]
    assert project["tool"]["setuptools"]["package-data"]["lrp_lightning"] == ["py.typed"]
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert f"## {lrp_lightning.__version__}" in changelog
    assert project["project"]["version"] == lrp_lightning.__version__


def test_floor_constraints_pin_every_lower_bound_and_the_supported_versions_page_states_them():
    constraints = subprocess.run(
        [sys.executable, str(ROOT / ".ci" / "floors.py")], capture_output=True, text=True, check=True
    ).stdout.split()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    floors = [r for r in project["dependencies"] + project["optional-dependencies"]["dev"] if ">=" in r]
    assert len(constraints) == len(floors)
    # the README links the supported-versions page (docs/supported_versions.md), which holds the table
    assert "docs/supported_versions.md" in (ROOT / "README.md").read_text()
    table = (ROOT / "docs" / "supported_versions.md").read_text()
    for constraint in constraints:
        name, version = constraint.split("==")
        assert any(r.startswith(name) and r.endswith(f">={version}") for r in floors), constraint
        if name not in ("pytest", "hypothesis"):
            assert f"| `{name}` | {version} |" in table, f"docs/supported_versions.md lacks {name} {version}"
