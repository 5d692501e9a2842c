"""twosamplers: region-masked diffusion sampling with ComfyUI-exact numbers.

One sampler renders the area outside a mask, a second the area inside it. The engine (schedules, noise,
masks, samplers, KSampler) reproduces ComfyUI 0.30.x for the same seed and settings.

Layers, one folder each (docs/architecture.md): `engine/` (tensors, masks, noise, schedules, the KSampler core,
passes, the regional algorithms, the front door), `samplers/`, `models/`, `nodes/` (ComfyUI node classes), `job/`
(one render as data, its files in and out), and the front ends `cli/`, `ui/`, `batch/`, `workflow/`, `server/`
(+ `web/`, what the two HTTP servers share).
"""

from importlib import import_module

from . import _old_paths

__version__ = "0.1.0"

# the old module paths users import (twosamplers.ksampler, .schedules, ...; see _old_paths.py)  relayout: keep
_old_paths.install()

# The public names load on first use (PEP 562), so that `twosamplers --help` and a Ctrl-C while torch is being
# imported are handled by the CLI (one line, no traceback) rather than by the interpreter.
_LAZY = {
    "SamplerSettings": "engine.front", "regional_sample": "engine.front", "two_samplers_for_mask": "engine.front",
    "compute_sigmas": "engine.ksampler",
    "empty_latent": "engine.latent", "load_latent": "engine.latent", "save_latent": "engine.latent",
    "NetworkModel": "models", "Lora": "models", "EmbeddingLibrary": "models", "ControlNet": "models.control",
    "NODE_CLASS_MAPPINGS": "nodes", "NODE_DISPLAY_NAME_MAPPINGS": "nodes", "KSamplerAdvancedProvider": "nodes",
    "KSamplerAdvancedWrapper": "nodes", "KSamplerProvider": "nodes", "KSamplerWrapper": "nodes",
    "RegionalPrompt": "nodes", "RegionalSampler": "nodes", "TwoAdvancedSamplersForMask": "nodes",
    "TwoSamplersForMask": "nodes",
    "Pass": "engine.passes", "common_ksampler": "engine.passes", "run_pass": "engine.passes",
    "SAMPLER_NAMES": "samplers", "get_sampler": "samplers",
    "SCHEDULER_NAMES": "engine.schedules", "ModelSamplingDiscrete": "engine.schedules",
    "calculate_sigmas": "engine.schedules", "ModelSamplingFlow": "engine.schedules",
    "ModelSamplingFlux": "engine.schedules", "flux_shift": "engine.schedules",
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        if f"{__name__}.{name}" in _old_paths.OLD_PATHS:  # `ts.schedules.X` after `import twosamplers as ts`
            return import_module(f".{name}", __name__)
        raise AttributeError(f"module 'twosamplers' has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "SAMPLER_NAMES",
    "SCHEDULER_NAMES",
    "ModelSamplingDiscrete",
    "ModelSamplingFlow",
    "ModelSamplingFlux",
    "NetworkModel",
    "ControlNet",
    "calculate_sigmas",
    "common_ksampler",
    "compute_sigmas",
    "empty_latent",
    "flux_shift",
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
