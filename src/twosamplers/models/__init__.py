"""Model backends behind one protocol (see `base.py`)."""

from .base import DiffusionModel, LatentFormat, NetworkModel

__all__ = ["DiffusionModel", "LatentFormat", "NetworkModel"]

from .analytic import IdealModel, TextureModel  # noqa: E402
from .registry import ModelCache, ModelDefaults, defaults_for, load  # noqa: E402

__all__ += ["IdealModel", "ModelCache", "ModelDefaults", "TextureModel", "defaults_for", "load"]

from .embeddings import EmbeddingLibrary  # noqa: E402
from .lora import Lora, LoraError, LoraModel, with_loras  # noqa: E402

__all__ += ["EmbeddingLibrary", "Lora", "LoraError", "LoraModel", "with_loras"]
