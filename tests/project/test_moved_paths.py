"""Modules that moved keep their old import paths: every entry of ``lrp_lightning._moved.MOVED``,
imported by its old name in a fresh interpreter (both ``import old`` and ``from old import name``),
is the very module object at its new name, keeps its own name and spec, and no file is left at the
old path."""
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from lrp_lightning._moved import MOVED

ROOT = Path(__file__).resolve().parents[2]

CHECK = """
import importlib, sys

def check(old, new):
    imported_old = importlib.import_module(old)
    assert old in sys.modules and sys.modules[old] is imported_old
    imported_new = importlib.import_module(new)
    assert imported_old is imported_new, (imported_old, imported_new)
    assert imported_new.__name__ == new and imported_new.__spec__.name == new
    parent, _, child = old.rpartition(".")
    assert getattr(importlib.import_module(parent), child) is imported_new
    public = [name for name in vars(imported_new) if not name.startswith("_")]
    namespace = {}
    exec(f"from {old} import {public[0]} as first", namespace)
    assert namespace["first"] is getattr(imported_new, public[0])

for old, new in zip(sys.argv[1::2], sys.argv[2::2]):
    check(old, new)
print("ok")
"""


def test_every_old_import_path_gives_the_new_module_in_a_fresh_interpreter():
    pairs = [name for pair in sorted(MOVED.items()) for name in pair]
    result = subprocess.run([sys.executable, "-c", CHECK] + pairs, capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


@pytest.mark.parametrize("old, new", sorted(MOVED.items()))
def test_no_file_is_left_at_an_old_path(old, new):
    old_file = ROOT.joinpath(*old.split(".")).with_suffix(".py")
    assert not old_file.exists() and not old_file.with_suffix("").is_dir()
    assert ROOT.joinpath(*new.split(".")).with_suffix(".py").is_file()


def test_old_names_resolve_to_the_new_module_in_this_process():
    for old, new in MOVED.items():
        assert importlib.import_module(old) is importlib.import_module(new)


def test_a_name_outside_the_table_is_still_not_found():
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("lrp_lightning.no_such_module")
