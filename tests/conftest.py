"""Fixtures shared across test modules.

The tests live in capability folders (``engine/``, ``transformer/``, ``metrics/``, ``callbacks/``,
``demo/``, ...; no ``__init__.py``, file names unique across ``tests/``). The shared helpers stay here
at the root (``engine_models``, ``transformer_models``, ``test_callback_helpers``), importable by bare
name because this folder is on ``sys.path``; every capability folder is put there too, so a test may
import another folder's test module by bare name whichever file pytest is asked to run.
"""
import sys
from pathlib import Path

import pytest
import torch

TESTS_DIR = Path(__file__).resolve().parent
for _folder in sorted(TESTS_DIR.iterdir()):
    if _folder.is_dir() and any(_folder.glob("test_*.py")) and str(_folder) not in sys.path:
        sys.path.append(str(_folder))


@pytest.fixture
def float64_default():
    """Make float64 the default dtype for the test (oracle comparisons need its precision)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


@pytest.fixture(autouse=True)
def default_dtype_unchanged(request):
    """Fail a test that leaves torch's default dtype changed (later tests would build their inputs in it)."""
    before = torch.get_default_dtype()
    yield
    after = torch.get_default_dtype()
    if after != before:
        torch.set_default_dtype(before)
        pytest.fail(f"{request.node.nodeid} left the default dtype {after} (was {before})")

