"""Importing spandrel (upscale models) where torchvision is missing, for the tests and benchmarks only.

spandrel imports two names from torchvision at import time (for its LaMa and one other inpainting architecture);
the ESRGAN path the tests use never calls them. The CPU-only torch of this project's CI has no working
torchvision wheel on PyPI, so `import_spandrel()` puts placeholder `torchvision` modules into sys.modules just
while spandrel imports, then takes them out again, so that other libraries (transformers checks whether
torchvision is installed) still see no torchvision."""

from __future__ import annotations

import importlib.util
import sys
import types


def _placeholder(*args, **kwargs):
    raise RuntimeError("torchvision is not installed (spandrel_shim placeholder called)")


def import_spandrel():
    """spandrel, imported (with placeholder torchvision modules only while it imports when torchvision is absent);
    None when spandrel itself is not installed."""
    if importlib.util.find_spec("spandrel") is None:
        return None
    if "spandrel" in sys.modules or importlib.util.find_spec("torchvision") is not None:
        import spandrel

        return spandrel
    names = ("torchvision", "torchvision.transforms", "torchvision.transforms.functional")
    fake = {n: types.ModuleType(n) for n in names}
    fn = fake["torchvision.transforms.functional"]
    fn.InterpolationMode = type("InterpolationMode", (), {"NEAREST": "nearest", "BILINEAR": "bilinear",
                                                          "BICUBIC": "bicubic"})
    fn.rotate = fn.normalize = _placeholder
    fake["torchvision"].transforms = fake["torchvision.transforms"]
    fake["torchvision.transforms"].functional = fn
    sys.modules.update(fake)
    try:
        import spandrel
    finally:
        for n in names:
            if sys.modules.get(n) is fake[n]:
                del sys.modules[n]
    return spandrel
