"""ComfyUI widget specs shared by the node classes' INPUT_TYPES (ComfyUI's own defaults and limits)."""

from .._checks import MAX_CFG, MAX_OVERLAP, MAX_SIGMA_FACTOR, MAX_STEPS, SEED_MAX
from ..engine.noise import DEFAULT_COMFYUI_VERSION
from ..engine.schedules import SCHEDULER_NAMES
from ..samplers import SAMPLER_NAMES

SEED = ("INT", {"default": 0, "min": 0, "max": SEED_MAX})
STEPS = ("INT", {"default": 20, "min": 1, "max": MAX_STEPS})
CFG = ("FLOAT", {"default": 8.0, "min": 0.0, "max": MAX_CFG})
SAMPLER = (list(SAMPLER_NAMES),)
SCHEDULER = (list(SCHEDULER_NAMES),)
DENOISE = ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01})
SIGMA_FACTOR = ("FLOAT", {"default": 1.0, "min": 0.0, "max": MAX_SIGMA_FACTOR, "step": 0.01})
OVERLAP = ("INT", {"default": 10, "min": 0, "max": MAX_OVERLAP})
# the ComfyUI whose default-noise-sampler seeding to reproduce: below 0.30 (e.g. "0.3.64") `seed`, else `seed + 1`
COMFYUI_VERSION = ("STRING", {"default": DEFAULT_COMFYUI_VERSION})
OFF = ("BOOLEAN", {"default": False})  # our opt-in fixes: off keeps upstream's behaviour

__all__ = ["CFG", "COMFYUI_VERSION", "DENOISE", "OFF", "OVERLAP", "SAMPLER", "SCHEDULER", "SEED", "SIGMA_FACTOR",
           "STEPS"]
