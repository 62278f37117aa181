"""Print pip constraints pinning each ``>=`` floor of pyproject.toml's dependencies and ``dev``
extra to that floor (exact ``==`` pins are left alone), for ``make test-floors``."""
import re
import tomllib
from pathlib import Path

project = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())["project"]
for requirement in project["dependencies"] + project["optional-dependencies"]["dev"]:
    match = re.fullmatch(r"([A-Za-z0-9_.-]+)(\[[^\]]*\])?(>=|==)([0-9.]+)", requirement)
    if match is None:
        raise SystemExit(f"pyproject.toml: {requirement!r} is neither a plain >= floor nor an == pin")
    if match.group(3) == ">=":
        print(f"{match.group(1)}=={match.group(4)}")
