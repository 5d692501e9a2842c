"""ComfyUI-style node classes of the TwoSamplersForMask family (Impact Pack names, inputs and defaults) and
ComfyUI's own conditioning nodes (masked / area / timestep-range conditioning).

`NODE_CLASS_MAPPINGS` / `NODE_DISPLAY_NAME_MAPPINGS` follow ComfyUI's custom-node convention.
"""

from . import conditioning as _conditioning
from .conditioning import (
    ConditioningAverage,
    ConditioningCombine,
    ConditioningConcat,
    ConditioningSetArea,
    ConditioningSetAreaPercentage,
    ConditioningSetAreaStrength,
    ConditioningSetMask,
    ConditioningSetTimestepRange,
)
from .loras import LoraLoader, LoraLoaderModelOnly
from .providers import KSamplerAdvancedProvider, KSamplerAdvancedWrapper, KSamplerProvider, KSamplerWrapper
from .regional import CombineRegionalPrompts, RegionalPrompt, RegionalPromptItem, RegionalSampler
from .two_samplers import TwoAdvancedSamplersForMask, TwoSamplersForMask

NODE_CLASS_MAPPINGS = {
    "KSamplerProvider": KSamplerProvider,
    "KSamplerAdvancedProvider": KSamplerAdvancedProvider,
    "TwoSamplersForMask": TwoSamplersForMask,
    "TwoAdvancedSamplersForMask": TwoAdvancedSamplersForMask,
    "RegionalPrompt": RegionalPrompt,
    "CombineRegionalPrompts": CombineRegionalPrompts,
    "RegionalSampler": RegionalSampler,
    "LoraLoader": LoraLoader,
    "LoraLoaderModelOnly": LoraLoaderModelOnly,
    **_conditioning.NODE_CLASS_MAPPINGS,
}

# ComfyUI shows each node under its own name, LoraLoader as "Load LoRA", its conditioning nodes as it names them
NODE_DISPLAY_NAME_MAPPINGS = {name: name for name in NODE_CLASS_MAPPINGS} | _conditioning.NODE_DISPLAY_NAME_MAPPINGS
NODE_DISPLAY_NAME_MAPPINGS["LoraLoader"] = "Load LoRA"

__all__ = [
    "NODE_CLASS_MAPPINGS",
    "NODE_DISPLAY_NAME_MAPPINGS",
    "CombineRegionalPrompts",
    "ConditioningAverage",
    "ConditioningCombine",
    "ConditioningConcat",
    "ConditioningSetArea",
    "ConditioningSetAreaPercentage",
    "ConditioningSetAreaStrength",
    "ConditioningSetMask",
    "ConditioningSetTimestepRange",
    "KSamplerAdvancedProvider",
    "KSamplerAdvancedWrapper",
    "KSamplerProvider",
    "KSamplerWrapper",
    "LoraLoader",
    "LoraLoaderModelOnly",
    "RegionalPrompt",
    "RegionalPromptItem",
    "RegionalSampler",
    "TwoAdvancedSamplersForMask",
    "TwoSamplersForMask",
]
