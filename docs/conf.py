"""Sphinx configuration of the lrp-lightning API reference (``make docs``)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import lrp_lightning  # noqa: E402

project = "lrp-lightning"
author = "lrp-lightning contributors"
copyright = "2026, lrp-lightning contributors"
release = lrp_lightning.__version__
extensions = ["sphinx.ext.autodoc", "sphinx.ext.mathjax", "numpydoc"]
exclude_patterns = ["_build"]
autodoc_default_options = {"members": True, "member-order": "bysource", "show-inheritance": True}
autodoc_typehints = "none"
numpydoc_show_class_members = False
numpydoc_xref_param_type = False
html_theme = "alabaster"
