"""twosamplers: region-masked diffusion sampling with ComfyUI-exact numbers.

One sampler renders the area outside a mask, a second the area inside it. The engine (schedules, noise,
masks, samplers, KSampler) reproduces ComfyUI 0.30.x for the same seed and settings.
"""

from .front import SamplerSettings, regional_sample, two_samplers_for_mask
from .ksampler import compute_sigmas
from .latent import empty_latent, load_latent, save_latent
from .models import EmbeddingLibrary, Lora, NetworkModel
from .models.control import ControlNet
from .nodes import (
    NODE_CLASS_MAPPINGS,
    NODE_DISPLAY_NAME_MAPPINGS,
    KSamplerAdvancedProvider,
    KSamplerAdvancedWrapper,
    KSamplerProvider,
    KSamplerWrapper,
    RegionalPrompt,
    RegionalSampler,
    TwoAdvancedSamplersForMask,
    TwoSamplersForMask,
)
from .passes import Pass, common_ksampler, run_pass
from .samplers import SAMPLER_NAMES, get_sampler
from .schedules import SCHEDULER_NAMES, ModelSamplingDiscrete, calculate_sigmas

__version__ = "0.1.0"

__all__ = [
    "SAMPLER_NAMES",
    "SCHEDULER_NAMES",
    "ModelSamplingDiscrete",
    "NetworkModel",
    "ControlNet",
    "calculate_sigmas",
    "common_ksampler",
    "compute_sigmas",
    "empty_latent",
    "get_sampler",
    "load_latent",
    "save_latent",
    "KSamplerWrapper",
    "KSamplerProvider",
    "KSamplerAdvancedWrapper",
    "KSamplerAdvancedProvider",
    "TwoSamplersForMask",
    "TwoAdvancedSamplersForMask",
    "RegionalPrompt",
    "RegionalSampler",
    "NODE_CLASS_MAPPINGS",
    "NODE_DISPLAY_NAME_MAPPINGS",
    "Pass",
    "run_pass",
    "SamplerSettings",
    "Lora",
    "EmbeddingLibrary",
    "two_samplers_for_mask",
    "regional_sample",
]
