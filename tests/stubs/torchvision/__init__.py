"""Test-only stand-in for torchvision: spandrel imports two names from it at import time (for its LaMa and
another inpainting architecture), but the ESRGAN path the tests use never calls them. CPU torch wheels have no
working torchvision wheel on PyPI, so CI puts this folder on sys.path only when torchvision is absent."""
