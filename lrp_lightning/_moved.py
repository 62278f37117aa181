"""Old import paths of modules that moved, kept working without files at the old places.

:data:`MOVED` maps each old dotted name to the module's new one. :class:`MovedModuleFinder`, installed
on ``sys.meta_path`` by ``lrp_lightning/__init__.py``, answers an import of an old name by importing
the new module and registering that very module object under the old name as well, so
``import lrp_lightning.gradient_rules`` and ``from lrp_lightning.gradient_rules import X`` give the
same module (and the same classes) as ``lrp_lightning.transformer.gradient_rules``. The new module
is imported only when the old name is first imported. No file is left at an old path, so the moves
stay plain renames in git.

To move a module: ``git mv`` it, fix the imports inside the package, and add ``old: new`` here
(tests/project/test_moved_paths.py imports every entry both ways).
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
from types import ModuleType
from typing import Optional, Sequence

MOVED: dict = {
    "lrp_lightning.gradient_rules": "lrp_lightning.transformer.gradient_rules",
    "lrp_lightning.attention": "lrp_lightning.transformer.attention",
    "lrp_lightning.eager_attention": "lrp_lightning.transformer.eager_attention",
    "lrp_lightning.huggingface": "lrp_lightning.transformer.huggingface",
    "lrp_lightning.timm": "lrp_lightning.transformer.timm",
    "lrp_lightning.tokens": "lrp_lightning.transformer.tokens",
    "lrp_lightning.callbacks.background": "lrp_lightning.callbacks.attribution.background",
    "lrp_lightning.callbacks.baseline": "lrp_lightning.callbacks.attribution.baseline",
    "lrp_lightning.callbacks.dashboard": "lrp_lightning.callbacks.attribution.dashboard",
    "lrp_lightning.callbacks.drift": "lrp_lightning.callbacks.attribution.drift",
    "lrp_lightning.callbacks.randomisation": "lrp_lightning.callbacks.sanity.randomisation",
    "lrp_lightning.callbacks.class_samples": "lrp_lightning.callbacks.clusters.class_samples",
    "lrp_lightning.callbacks.spectral": "lrp_lightning.callbacks.clusters.spectral",
    "lrp_lightning.callbacks.spray": "lrp_lightning.callbacks.clusters.spray",
    # merged into the one registry of ``canonizers="auto"`` (same auto_canonizers, batch_norm_follows_linear)
    "lrp_lightning.callbacks.canonizer_choice": "lrp_lightning.auto_canonizers",
    "lrp_lightning.callbacks.similarity": "lrp_lightning.metrics.similarity",
}


class _MovedModuleLoader(importlib.abc.Loader):
    """Loads an old name as the module at its new name (imported on first use)."""

    def __init__(self, new_name: str) -> None:
        self.new_name = new_name
        self.new_spec = None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        """Import the module under its new name and return it (so the old name gets the same object)."""
        module = importlib.import_module(self.new_name)
        self.new_spec = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        """Nothing to run (the new module ran on import); keep the module's own spec, which the import
        system overwrote with the old name's."""
        module.__spec__ = self.new_spec


class MovedModuleFinder(importlib.abc.MetaPathFinder):
    """A ``sys.meta_path`` finder that resolves the old names in :data:`MOVED`.

    It stands first on ``sys.meta_path``, so an old name resolves to the new module even where
    another finder (an editable install of an older checkout) still has a file at the old path.
    """

    def find_spec(
        self, fullname: str, path: Optional[Sequence[str]] = None, target: Optional[ModuleType] = None
    ) -> Optional[importlib.machinery.ModuleSpec]:
        """A spec loading ``fullname``'s new module if ``fullname`` is an old name, else None."""
        new_name = MOVED.get(fullname)
        if new_name is None:
            return None
        return importlib.machinery.ModuleSpec(fullname, _MovedModuleLoader(new_name))


def install() -> None:
    """Put one :class:`MovedModuleFinder` first on ``sys.meta_path`` (idempotent)."""
    if not any(isinstance(finder, MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, MovedModuleFinder())
