"""Module paths from before the layered layout (issue 24), kept because users import them.  relayout: keep-file

The code lives in the layer folders (`engine/`, `job/`); these old paths are the ones people outside this
repository use: the parity checker the README runs (/work/shared/parity/parity_check.py and cond_check.py:
`twosamplers.schedules`, `.ksampler`, `.noise`, `.masks`), the README's API list and examples (`.schedules`,
`.ksampler`, `.passes`, `.latent`, `.imageio`) and docs/two-samplers.md's front door (`.front`). No other old
path is kept; nothing inside the package imports one (tests/test_layers.py checks both).

`import twosamplers.ksampler` gives the module itself (`twosamplers.ksampler is twosamplers.engine.ksampler`), so
attributes, `mock.patch` and pickling behave as with the real path. A finder at the end of `sys.meta_path`
(installed by `twosamplers/__init__.py`) does it on first import, lazily: importing `twosamplers` loads none of
them. New code imports the new paths; docs/architecture.md lists these.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

OLD_PATHS = {
    "twosamplers.schedules": "twosamplers.engine.schedules",
    "twosamplers.ksampler": "twosamplers.engine.ksampler",
    "twosamplers.noise": "twosamplers.engine.noise",
    "twosamplers.masks": "twosamplers.engine.noise_mask",
    "twosamplers.passes": "twosamplers.engine.passes",
    "twosamplers.latent": "twosamplers.engine.latent",
    "twosamplers.imageio": "twosamplers.job.imageio",
    "twosamplers.front": "twosamplers.engine.front",
}


class OldPathFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old path and loads it as the module at its new path (the same module object)."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in OLD_PATHS:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        return None  # a placeholder; exec_module puts the real module in its place

    def exec_module(self, module) -> None:
        # the import system returns what sys.modules holds under the name once this returns
        sys.modules[module.__name__] = importlib.import_module(OLD_PATHS[module.__name__])


def install() -> None:
    """Add the finder once, last, so a real file at an old path would still win."""
    if not any(isinstance(f, OldPathFinder) for f in sys.meta_path):
        sys.meta_path.append(OldPathFinder())
