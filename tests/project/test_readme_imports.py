"""Every import path the README shows works: each ``from lrp_lightning... import ...`` and
``import lrp_lightning...`` statement in it (code blocks and prose alike), and every dotted
``lrp_lightning.x.y`` module name it mentions, imported in a fresh interpreter."""
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()

STATEMENTS = sorted(set(re.findall(r"^\s*((?:from lrp_lightning[\w.]* import [\w, ]+)|(?:import lrp_lightning[\w.]*))\s*$",
                                   README, flags=re.MULTILINE)))
MODULES = sorted({name for name in re.findall(r"`(lrp_lightning(?:\.[a-z_]+)+)`", README)})


PROGRAM = """
import importlib, sys
{statements}
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except ModuleNotFoundError:
        module, _, attribute = name.rpartition(".")
        getattr(importlib.import_module(module), attribute)
print("ok")
"""


def test_every_import_and_module_in_the_readme_works():
    assert len(STATEMENTS) >= 5 and "lrp_lightning.torchvision" in MODULES
    program = PROGRAM.format(statements="\n".join(STATEMENTS))
    result = subprocess.run([sys.executable, "-c", program, *MODULES], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
