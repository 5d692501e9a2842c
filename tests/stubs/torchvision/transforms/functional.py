"""Placeholders: calling them means a test reached an architecture the stub cannot serve."""


class InterpolationMode:
    NEAREST = "nearest"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"


def _unavailable(*args, **kwargs):
    raise RuntimeError("torchvision is stubbed in the tests (tests/stubs/torchvision)")


rotate = _unavailable
normalize = _unavailable
