"""Keep transformers from importing torchao on its own.

transformers 4.57 imports torchao whenever it is installed as soon as a model class loads
(``quantizers/quantizer_torchao.py``): seconds in every job process, and a screen of warnings in
each job's log. compbench drives torchao itself (``models/formats/torchao.py``), never through
transformers' ``TorchAoConfig``, so transformers is told torchao is absent: its availability flag
is cleared the moment ``transformers.utils.import_utils`` has run, without importing transformers
(or torch) here. ``install()`` runs when the ``compbench`` package is imported.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from types import ModuleType

FLAGGED_MODULE = "transformers.utils.import_utils"


def _clear_flag(module: ModuleType) -> None:
    module._torchao_available = False


class _ClearingLoader(importlib.abc.Loader):
    """The module's own loader, then the flag cleared."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self.loader = loader

    def __getattr__(self, name: str):           # get_source, get_filename, ... for tracebacks and tools
        return getattr(self.loader, name)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self.loader.exec_module(module)
        _clear_flag(module)


class _Finder(importlib.abc.MetaPathFinder):
    """Wraps the loader of ``transformers.utils.import_utils`` the one time it is imported."""

    def find_spec(self, name: str, path, target=None) -> importlib.machinery.ModuleSpec | None:
        if name != FLAGGED_MODULE:
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _ClearingLoader(spec.loader)
        return spec


def install() -> None:
    if FLAGGED_MODULE in sys.modules:          # transformers came first: clear the flag now
        _clear_flag(sys.modules[FLAGGED_MODULE])
    elif not any(isinstance(finder, _Finder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
