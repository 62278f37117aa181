"""The API reference (docs/api/*.rst) lists every public module of the package (every module whose
dotted name has no part starting with ``_``), and the "Where things are" page names every package."""
import pkgutil
import re
from pathlib import Path

import lrp_lightning

ROOT = Path(__file__).resolve().parents[2]


def public_module_names() -> set:
    return {"lrp_lightning"} | {
        info.name for info in pkgutil.walk_packages(lrp_lightning.__path__, "lrp_lightning.")
        if not any(part.startswith("_") for part in info.name.split("."))
    }


def test_the_api_reference_lists_every_public_module():
    documented = {
        match for path in sorted((ROOT / "docs" / "api").glob("*.rst"))
        for match in re.findall(r"^\.\. automodule:: (\S+)$", path.read_text(), flags=re.MULTILINE)
    }
    assert "lrp_lightning.transformer.gradient_rules" in documented
    assert sorted(public_module_names() - documented) == []
    assert sorted(documented - public_module_names()) == []


def test_where_things_are_names_every_package():
    page = (ROOT / "docs" / "where_things_are.md").read_text()
    packages = sorted(path.parent for path in (ROOT / "lrp_lightning").rglob("__init__.py"))
    for package in packages:
        relative = package.relative_to(ROOT).as_posix() + "/"
        assert relative.split("/", 1)[1] in page or package.name + "/" in page, relative
