"""Model backends behind one protocol (see `base.py`)."""

from .base import DiffusionModel, LatentFormat, NetworkModel

__all__ = ["DiffusionModel", "LatentFormat", "NetworkModel"]
