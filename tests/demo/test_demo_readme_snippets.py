"""Every Python snippet of README.md runs as written, after `make demo` (base install only).

A snippet that needs an optional extra says so on its first line, ``# needs the <extra> extra
(<module>): ...``, and is skipped when that module is not installed. Each snippet runs on its own,
in a fresh namespace, in an empty working directory.
"""
import random
import re
from pathlib import Path

import numpy as np
import pytest
import torch

README = Path(__file__).resolve().parents[2] / "README.md"
SNIPPET = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)
NEEDS = re.compile(r"^# needs the [\w-]+ extra \((?P<module>[\w.]+)\)")


def readme_snippets() -> list[str]:
    return SNIPPET.findall(README.read_text())


def test_the_readme_has_snippets_and_stays_short():
    assert len(readme_snippets()) >= 5
    assert len(README.read_text().splitlines()) <= 330  # "about 300 lines", the depth lives in docs/


@pytest.mark.parametrize("index", range(len(readme_snippets())))
def test_readme_snippet_runs(index, tmp_path, monkeypatch):
    code = readme_snippets()[index]
    needs = NEEDS.match(code)
    if needs:
        pytest.importorskip(needs.group("module"))
    monkeypatch.chdir(tmp_path)
    rng = (torch.get_rng_state(), np.random.get_state(), random.getstate())
    try:
        exec(compile(code, f"README.md python snippet {index + 1}", "exec"), {"__name__": "__main__"})
    finally:
        torch.set_rng_state(rng[0])
        np.random.set_state(rng[1])
        random.setstate(rng[2])
