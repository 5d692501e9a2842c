"""Impact Pack's iterative upscalers: LatentPixelScale, the UPSCALER providers (PixelKSampleUpscalerProvider[Pipe],
TwoSamplersForMaskUpscalerProvider[Pipe]), IterativeLatentUpscale and IterativeImageUpscale
(docs/iterative-upscalers.md says what each does and which upstream quirks are kept).

One upscale iteration: decode the latent with the VAE (tiled when use_tiled_vae), optionally run an upscale model
until the image is at least as wide as the target, resize to int(target) pixels with ImageScale's method, encode
again, then resample: a KSampler pass (PixelKSampleUpscaler) or a TwoSamplersForMask pass whose mask is resized to
the new latent (TwoSamplersForMaskUpscaler). Every iteration uses the samplers' own seeds; PK_HOOKs move cfg,
denoise and steps across the iterations.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .._checks import MAX_IMAGE_SIDE, check_bool, check_choice, check_float, check_int, check_mask, check_str
from ..engine.latent import check_latent
from . import widgets as W
from .core import VAEDecode, VAEEncode, _image, _vae
from .image import ImageScale
from .providers import KSamplerWrapper, check_basic_pipe, check_ksampler
from .upscale_hooks import check_hook
from .upscale_model import ImageUpscaleWithModel
from .vae_nodes import VAEDecodeTiled, VAEEncodeTiled

CATEGORY = "ImpactPack/Upscale"
SCALE_METHODS = ("nearest-exact", "bilinear", "lanczos", "area")
STEP_MODES = ("simple", "geometric")
FULL_SAMPLE_SCHEDULES = ("none", "interleave1", "interleave2", "interleave3", "last1", "last2",
                         "interleave1+last1", "interleave2+last1", "interleave3+last1")
TILED_VAE = ("BOOLEAN", {"default": False, "label_on": "enabled", "label_off": "disabled"})
TILE_SIZE = ("INT", {"default": 512, "min": 320, "max": 4096, "step": 64})
TILED_VAE_OVERLAP = 64  # what Impact gives ComfyUI's tiled VAE nodes (their default)
LATENT_SCALE = 8  # Impact sizes images as latent * 8


# ------------------------------------------------------------------------------------------------
# one resize in pixel space
# ------------------------------------------------------------------------------------------------
def vae_decode(vae, latent: dict, tiled: bool, tile_size: int) -> torch.Tensor:
    if tiled:
        return VAEDecodeTiled().decode(vae, latent, tile_size, TILED_VAE_OVERLAP)[0]
    return VAEDecode().decode(vae, latent)[0]


def vae_encode(vae, pixels: torch.Tensor, tiled: bool, tile_size: int) -> dict:
    if tiled:
        return VAEEncodeTiled().encode(vae, pixels, tile_size, TILED_VAE_OVERLAP)[0]
    return VAEEncode().encode(vae, pixels)[0]


def model_upscale(upscale_model, pixels: torch.Tensor, width: float) -> torch.Tensor:
    """Run the upscale model until the image is at least `width` wide. A x1 model runs once (upstream); a model
    that does not widen the image stops the loop (upstream would loop for ever on a shrinking one)."""
    start = current = pixels.shape[2]
    while current < width:
        pixels = ImageUpscaleWithModel().upscale(upscale_model, pixels)[0]
        if pixels.shape[2] == start or pixels.shape[2] <= current:
            break
        current = pixels.shape[2]
    return pixels


def check_target(width: float, height: float, what: str) -> tuple[int, int]:
    w, h = int(width), int(height)
    if not (LATENT_SCALE <= w <= MAX_IMAGE_SIDE and LATENT_SCALE <= h <= MAX_IMAGE_SIDE):
        raise ValueError(f"{what} gives a {w}x{h} image; each side must be in [{LATENT_SCALE}, {MAX_IMAGE_SIDE}] "
                         "pixels")
    return w, h


def resize_in_pixel_space(latent: dict, vae, method: str, *, size=None, factor=None, upscale_model=None,
                          tiled: bool = False, tile_size: int = 512, what: str = "the upscale"):
    """-> (latent at int(size) or int(pixels * factor), the resized pixels before encoding). Decode, optional upscale
    model, ImageScale (no crop), encode; the new latent has "samples" only."""
    pixels = vae_decode(vae, latent, tiled, tile_size)
    if size is None:
        size = (pixels.shape[2] * factor, pixels.shape[1] * factor)
    w, h = check_target(size[0], size[1], what)
    if upscale_model is not None:
        pixels = model_upscale(upscale_model, pixels, size[0])
    pixels = ImageScale().upscale(pixels, method, w, h, "disabled")[0]
    return vae_encode(vae, pixels, tiled, tile_size), pixels


def _settings(sampler: KSamplerWrapper) -> dict:
    return {"seed": sampler.seed, "steps": sampler.steps, "cfg": sampler.cfg, "sampler_name": sampler.sampler_name,
            "scheduler": sampler.scheduler, "denoise": sampler.denoise}


def hooked(sampler, hook, step: int, total: int, name: str):
    """The sampler with the hook's settings for iteration `step` of `total` (the sampler itself without a hook)."""
    if hook is None:
        return sampler
    if not isinstance(sampler, KSamplerWrapper):
        raise TypeError(f"{name}: a PK_HOOK changes the settings of a KSAMPLER from KSamplerProvider; got "
                        f"{type(sampler).__name__}")
    s = hook.adjust(_settings(sampler), step, total)
    return KSamplerWrapper(sampler.model, s["seed"], s["steps"], s["cfg"], s["sampler_name"], s["scheduler"],
                           sampler.positive, sampler.negative, s["denoise"], comfyui_version=sampler.comfyui_version)


def _sample_kw(callback, disable_pbar) -> dict:
    kw = {}
    if callback is not None:
        kw["callback"] = callback
    if disable_pbar is not None:
        kw["disable_pbar"] = disable_pbar
    return kw


# ------------------------------------------------------------------------------------------------
# UPSCALER objects
# ------------------------------------------------------------------------------------------------
class PixelKSampleUpscaler:
    """An UPSCALER: resize in pixel space, then one KSampler pass (the input's noise_mask, if any, is kept)."""

    is_tiled = False  # IterativeImageUpscale encodes and decodes without tiles (only Impact's tiled upscaler tiles)

    def __init__(self, scale_method, vae, sampler: KSamplerWrapper, use_tiled_vae=False, tile_size=512,
                 upscale_model=None, hook=None):
        self.scale_method = check_choice("scale_method", scale_method, SCALE_METHODS)
        self.vae = _vae(vae)
        self.sampler = sampler
        self.use_tiled_vae = check_bool("use_tiled_vae", use_tiled_vae)
        self.tile_size = check_int("tile_size", tile_size, 320, 4096)
        self.upscale_model = upscale_model
        self.hook = check_hook(hook, "pk_hook_opt")

    def upscale_shape(self, step: int, total: int, latent: dict, width: float, height: float, *, callback=None,
                      disable_pbar=None) -> dict:
        up, _pixels = resize_in_pixel_space(latent, self.vae, self.scale_method, size=(width, height),
                                            upscale_model=self.upscale_model, tiled=self.use_tiled_vae,
                                            tile_size=self.tile_size, what="upscale_factor")
        if "noise_mask" in latent:
            up["noise_mask"] = latent["noise_mask"]
        sampler = hooked(self.sampler, self.hook, step, total, "pk_hook_opt")
        return sampler.sample(up, **_sample_kw(callback, disable_pbar))


def is_full_sample_time(step: int, total: int, schedule: str) -> bool:
    """Whether iteration `step` (0-based) of `total` samples the whole image instead of base + mask. Upstream's
    counting, kept: "last1" never fires (it waits for iteration total + 1), "last2" is the last iteration only, and
    the three "interleaveN+last1" all interleave every 2nd iteration."""
    n, last = step + 1, total + 1
    if schedule == "none":
        return False
    if schedule.endswith("+last1"):
        return n % 2 == 0 or n >= last - 1
    if schedule.startswith("interleave"):
        return n % (int(schedule[-1]) + 1) == 0
    if schedule == "last1":
        return n == last
    return n >= last - 1  # last2


def latent_mask(mask: torch.Tensor, height: int, width: int, batch: int, fix_resize: bool = False) -> torch.Tensor:
    """The mask at latent size, as TwoSamplersForMaskUpscaler resizes it (bilinear, align_corners=True).

    Upstream resizes a single mask [H, W] as if it were a [1, H, W, 1] image: H channels whose planes are W x 1,
    each stretched to height x width; the sampler then keeps the first plane(s) (one per latent in the batch), so
    the mask used is the mask's TOP ROW (its W values laid down the rows, constant across). Reproduced by default;
    fix_resize=True resizes the mask itself. A batch of masks is resized correctly either way."""
    m = mask.reshape(-1, mask.shape[-2], mask.shape[-1]).float()
    if m.shape[0] == 1 and not fix_resize:
        planes = F.interpolate(m[0][None, :, :, None], size=(height, width), mode="bilinear", align_corners=True)[0]
        return planes.repeat(math.ceil(batch / planes.shape[0]), 1, 1)[:batch]
    return F.interpolate(m[:, None], size=(height, width), mode="bilinear", align_corners=True)[:, 0]


class TwoSamplersForMaskUpscaler:
    """An UPSCALER: resize in pixel space, then TwoSamplersForMask with the mask resized to the new latent (or, on
    the schedule's full-sample iterations, the base sampler and then the full sampler over the whole image)."""

    is_tiled = False

    def __init__(self, scale_method, full_sample_schedule, use_tiled_vae, base_sampler, mask_sampler, mask, vae,
                 full_sampler=None, upscale_model=None, hook_base=None, hook_mask=None, hook_full=None,
                 tile_size=512, fix_mask_resize=False):
        self.scale_method = check_choice("scale_method", scale_method, SCALE_METHODS)
        self.schedule = check_choice("full_sample_schedule", full_sample_schedule, FULL_SAMPLE_SCHEDULES)
        self.use_tiled_vae = check_bool("use_tiled_vae", use_tiled_vae)
        self.base_sampler = check_ksampler(base_sampler, "base_sampler")
        self.mask_sampler = check_ksampler(mask_sampler, "mask_sampler")
        self.full_sampler = None if full_sampler is None else check_ksampler(full_sampler, "full_sampler_opt")
        self.mask = check_mask(mask, "mask")
        self.vae = _vae(vae)
        self.upscale_model = upscale_model
        self.hook_base = check_hook(hook_base, "pk_hook_base_opt")
        self.hook_mask = check_hook(hook_mask, "pk_hook_mask_opt")
        self.hook_full = check_hook(hook_full, "pk_hook_full_opt")
        self.tile_size = check_int("tile_size", tile_size, 320, 4096)
        self.fix_mask_resize = check_bool("fix_mask_resize", fix_mask_resize)

    def upscale_shape(self, step: int, total: int, latent: dict, width: float, height: float, *, callback=None,
                      disable_pbar=None) -> dict:
        kw = _sample_kw(callback, disable_pbar)
        up, _pixels = resize_in_pixel_space(latent, self.vae, self.scale_method, size=(width, height),
                                            upscale_model=self.upscale_model, tiled=self.use_tiled_vae,
                                            tile_size=self.tile_size, what="upscale_factor")
        base = hooked(self.base_sampler, self.hook_base, step, total, "pk_hook_base_opt")
        if is_full_sample_time(step, total, self.schedule):
            first = base.sample(up, **kw)
            full = hooked(self.full_sampler or self.base_sampler, self.hook_full, step, total, "pk_hook_full_opt")
            return full.sample(first, **kw)
        b, _c, h, w = up["samples"].shape
        mask = latent_mask(self.mask, h, w, b, self.fix_mask_resize)
        first = base.sample({**up, "noise_mask": torch.where(mask != 1.0, 1.0, 0.0)}, **kw)
        second = hooked(self.mask_sampler, self.hook_mask, step, total, "pk_hook_mask_opt")
        out = dict(second.sample({**first, "noise_mask": mask}, **kw))
        out.pop("noise_mask", None)
        return out


def check_upscaler(obj, name: str = "upscaler"):
    if not callable(getattr(obj, "upscale_shape", None)) or not hasattr(obj, "vae"):
        raise TypeError(f"{name} must be an UPSCALER (from PixelKSampleUpscalerProvider or "
                        f"TwoSamplersForMaskUpscalerProvider); got {type(obj).__name__}")
    return obj


def _no_scheduler_func(scheduler_func_opt):
    if scheduler_func_opt is not None:
        raise ValueError("scheduler_func_opt: a SCHEDULER_FUNC (Impact's scheduler adapters) is not supported; "
                         "pick the scheduler with the scheduler input")


# ------------------------------------------------------------------------------------------------
# nodes
# ------------------------------------------------------------------------------------------------
class LatentPixelScale:
    """Scale a latent by scale_factor in pixel space: decode, optional upscale model, ImageScale, encode."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
                    "samples": ("LATENT",),
                    "scale_method": (list(SCALE_METHODS),),
                    "scale_factor": ("FLOAT", {"default": 1.5, "min": 0.1, "max": 10000, "step": 0.1}),
                    "vae": ("VAE",),
                    "use_tiled_vae": TILED_VAE},
                "optional": {"upscale_model_opt": ("UPSCALE_MODEL",)}}

    RETURN_TYPES = ("LATENT", "IMAGE")
    FUNCTION = "doit"
    CATEGORY = CATEGORY

    def doit(self, samples, scale_method, scale_factor, vae, use_tiled_vae, upscale_model_opt=None):
        check_latent(samples, "samples")
        check_choice("scale_method", scale_method, SCALE_METHODS)
        factor = check_float("scale_factor", scale_factor, 0.1, 10000)
        latent, pixels = resize_in_pixel_space(samples, _vae(vae), scale_method, factor=factor,
                                               upscale_model=upscale_model_opt,
                                               tiled=check_bool("use_tiled_vae", use_tiled_vae), what="scale_factor")
        return latent, pixels


_SAMPLER_INPUTS = {"seed": W.SEED, "steps": W.STEPS, "cfg": W.CFG, "sampler_name": W.SAMPLER,
                   "scheduler": W.SCHEDULER}


class PixelKSampleUpscalerProvider:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
                    "scale_method": (list(SCALE_METHODS),),
                    "model": ("MODEL",),
                    "vae": ("VAE",),
                    **_SAMPLER_INPUTS,
                    "positive": ("CONDITIONING",),
                    "negative": ("CONDITIONING",),
                    "denoise": W.DENOISE,
                    "use_tiled_vae": TILED_VAE,
                    "tile_size": TILE_SIZE},
                "optional": {"upscale_model_opt": ("UPSCALE_MODEL",), "pk_hook_opt": ("PK_HOOK",),
                             "scheduler_func_opt": ("SCHEDULER_FUNC",)}}

    RETURN_TYPES = ("UPSCALER",)
    FUNCTION = "doit"
    CATEGORY = CATEGORY

    def doit(self, scale_method, model, vae, seed, steps, cfg, sampler_name, scheduler, positive, negative, denoise,
             use_tiled_vae, upscale_model_opt=None, pk_hook_opt=None, tile_size=512, scheduler_func_opt=None):
        _no_scheduler_func(scheduler_func_opt)
        sampler = KSamplerWrapper(model, seed, steps, cfg, sampler_name, scheduler, positive, negative, denoise)
        return (PixelKSampleUpscaler(scale_method, vae, sampler, use_tiled_vae, tile_size, upscale_model_opt,
                                     pk_hook_opt),)


class PixelKSampleUpscalerProviderPipe:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
                    "scale_method": (list(SCALE_METHODS),),
                    **_SAMPLER_INPUTS,
                    "denoise": W.DENOISE,
                    "use_tiled_vae": TILED_VAE,
                    "basic_pipe": ("BASIC_PIPE",),
                    "tile_size": TILE_SIZE},
                "optional": {"upscale_model_opt": ("UPSCALE_MODEL",), "pk_hook_opt": ("PK_HOOK",),
                             "scheduler_func_opt": ("SCHEDULER_FUNC",), "tile_cnet_opt": ("CONTROL_NET",),
                             "tile_cnet_strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01})}}

    RETURN_TYPES = ("UPSCALER",)
    FUNCTION = "doit_pipe"
    CATEGORY = CATEGORY

    def doit_pipe(self, scale_method, seed, steps, cfg, sampler_name, scheduler, denoise, use_tiled_vae, basic_pipe,
                  upscale_model_opt=None, pk_hook_opt=None, tile_size=512, scheduler_func_opt=None,
                  tile_cnet_opt=None, tile_cnet_strength=1.0):
        if tile_cnet_opt is not None:
            raise ValueError("tile_cnet_opt: the tile ControlNet needs comfyui_controlnet_aux's TilePreprocessor, "
                             "which this project does not run (out of scope: preprocessors); leave it unconnected")
        check_float("tile_cnet_strength", tile_cnet_strength, 0.0, 1.0)
        model, _clip, vae, positive, negative = check_basic_pipe(basic_pipe)
        return PixelKSampleUpscalerProvider().doit(scale_method, model, vae, seed, steps, cfg, sampler_name,
                                                   scheduler, positive, negative, denoise, use_tiled_vae,
                                                   upscale_model_opt, pk_hook_opt, tile_size, scheduler_func_opt)


def _two_samplers_inputs(vae_or_pipe: dict) -> dict:
    return {"required": {
                "scale_method": (list(SCALE_METHODS),),
                "full_sample_schedule": (list(FULL_SAMPLE_SCHEDULES),),
                "use_tiled_vae": TILED_VAE,
                "base_sampler": ("KSAMPLER",),
                "mask_sampler": ("KSAMPLER",),
                "mask": ("MASK",),
                **vae_or_pipe,
                "tile_size": TILE_SIZE},
            "optional": {"full_sampler_opt": ("KSAMPLER",), "upscale_model_opt": ("UPSCALE_MODEL",),
                         "pk_hook_base_opt": ("PK_HOOK",), "pk_hook_mask_opt": ("PK_HOOK",),
                         "pk_hook_full_opt": ("PK_HOOK",),
                         # ours, off by default: resize the mask itself, not its top row (see latent_mask)
                         "fix_mask_resize": W.OFF}}


class TwoSamplersForMaskUpscalerProvider:
    @classmethod
    def INPUT_TYPES(cls):
        return _two_samplers_inputs({"vae": ("VAE",)})

    RETURN_TYPES = ("UPSCALER",)
    FUNCTION = "doit"
    CATEGORY = CATEGORY

    def doit(self, scale_method, full_sample_schedule, use_tiled_vae, base_sampler, mask_sampler, mask, vae,
             full_sampler_opt=None, upscale_model_opt=None, pk_hook_base_opt=None, pk_hook_mask_opt=None,
             pk_hook_full_opt=None, tile_size=512, fix_mask_resize=False):
        return (TwoSamplersForMaskUpscaler(scale_method, full_sample_schedule, use_tiled_vae, base_sampler,
                                           mask_sampler, mask, vae, full_sampler_opt, upscale_model_opt,
                                           pk_hook_base_opt, pk_hook_mask_opt, pk_hook_full_opt, tile_size,
                                           fix_mask_resize),)


class TwoSamplersForMaskUpscalerProviderPipe:
    @classmethod
    def INPUT_TYPES(cls):
        return _two_samplers_inputs({"basic_pipe": ("BASIC_PIPE",)})

    RETURN_TYPES = ("UPSCALER",)
    FUNCTION = "doit"
    CATEGORY = CATEGORY

    def doit(self, scale_method, full_sample_schedule, use_tiled_vae, base_sampler, mask_sampler, mask, basic_pipe,
             full_sampler_opt=None, upscale_model_opt=None, pk_hook_base_opt=None, pk_hook_mask_opt=None,
             pk_hook_full_opt=None, tile_size=512, fix_mask_resize=False):
        _model, _clip, vae, _positive, _negative = check_basic_pipe(basic_pipe)
        return TwoSamplersForMaskUpscalerProvider().doit(
            scale_method, full_sample_schedule, use_tiled_vae, base_sampler, mask_sampler, mask, vae,
            full_sampler_opt, upscale_model_opt, pk_hook_base_opt, pk_hook_mask_opt, pk_hook_full_opt, tile_size,
            fix_mask_resize)


def iteration_sizes(width: int, height: int, factor: float, steps: int, step_mode: str) -> list[tuple]:
    """[(iteration index, width, height), ...] in float pixels, as IterativeLatentUpscale visits them: steps - 1
    iterations at scale 1 + k * (factor - 1) / steps ("simple") or factor ** (k / steps) ("geometric"), then a last
    one at `factor` unless the scale already reached it (factor 1: steps - 1 resamples at the same size)."""
    unit = factor ** (1.0 / steps) if step_mode == "geometric" else max(0, (factor - 1.0) / steps)
    scale, out = 1, []
    for i in range(steps - 1):
        scale = scale * unit if step_mode == "geometric" else scale + unit
        out.append((i, width * scale, height * scale))
    if scale < factor:
        out.append((steps - 1, width * factor, height * factor))
    return out


_ITERATIVE_INPUTS = {"upscale_factor": ("FLOAT", {"default": 1.5, "min": 1, "max": 10000, "step": 0.1}),
                     "steps": ("INT", {"default": 3, "min": 1, "max": 10000, "step": 1}),
                     "temp_prefix": ("STRING", {"default": ""})}


class IterativeLatentUpscale:
    """Upscale a latent to upscale_factor in `steps` iterations of the UPSCALER (see iteration_sizes). The input's
    noise_mask is put back on the latent after every iteration but the last. temp_prefix (upstream: save each
    iteration's decoded image as a temporary preview) is accepted and ignored: a headless run has no previews."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples": ("LATENT",), **_ITERATIVE_INPUTS, "upscaler": ("UPSCALER",),
                             "step_mode": (list(STEP_MODES), {"default": "simple"})},
                "hidden": {"unique_id": "UNIQUE_ID"}}

    RETURN_TYPES = ("LATENT", "VAE")
    RETURN_NAMES = ("latent", "vae")
    FUNCTION = "doit"
    CATEGORY = CATEGORY

    def doit(self, samples, upscale_factor, steps, temp_prefix, upscaler, step_mode="simple", unique_id=None, *,
             callback=None, disable_pbar=None):
        check_latent(samples, "samples")
        factor = check_float("upscale_factor", upscale_factor, 1.0, 10000)
        steps = check_int("steps", steps, 1, 10000)
        check_str("temp_prefix", temp_prefix)
        check_upscaler(upscaler)
        check_choice("step_mode", step_mode, STEP_MODES)
        h, w = (s * LATENT_SCALE for s in samples["samples"].shape[-2:])
        plan = iteration_sizes(w, h, factor, steps, step_mode)
        for _i, pw, ph in plan:
            check_target(pw, ph, f"upscale_factor {factor} of a {w}x{h} image")
        noise_mask = samples.get("noise_mask")
        current = samples
        for i, pw, ph in plan:
            current = upscaler.upscale_shape(i, steps, current, pw, ph, callback=callback, disable_pbar=disable_pbar)
            if noise_mask is not None and i < steps - 1:
                current = {**current, "noise_mask": noise_mask}
        return current, upscaler.vae


class IterativeImageUpscale:
    """IterativeLatentUpscale on pixels: encode with `vae`, iterate, decode with `vae`."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"pixels": ("IMAGE",), **_ITERATIVE_INPUTS, "upscaler": ("UPSCALER",), "vae": ("VAE",),
                             "step_mode": (list(STEP_MODES), {"default": "simple"})},
                "hidden": {"unique_id": "UNIQUE_ID"}}

    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("image",)
    FUNCTION = "doit"
    CATEGORY = CATEGORY

    def doit(self, pixels, upscale_factor, steps, temp_prefix, upscaler, vae, step_mode="simple", unique_id=None, *,
             callback=None, disable_pbar=None):
        _image(pixels, "pixels")
        vae = _vae(vae)
        check_upscaler(upscaler)
        tiled = bool(getattr(upscaler, "is_tiled", False))
        tile = getattr(upscaler, "tile_size", 512)
        latent = vae_encode(vae, pixels, tiled, tile)
        out, _vae_out = IterativeLatentUpscale().doit(latent, upscale_factor, steps, temp_prefix, upscaler, step_mode,
                                                      unique_id, callback=callback, disable_pbar=disable_pbar)
        return (vae_decode(vae, out, tiled, tile),)


NODE_CLASSES = {
    "LatentPixelScale": LatentPixelScale,
    "PixelKSampleUpscalerProvider": PixelKSampleUpscalerProvider,
    "PixelKSampleUpscalerProviderPipe": PixelKSampleUpscalerProviderPipe,
    "TwoSamplersForMaskUpscalerProvider": TwoSamplersForMaskUpscalerProvider,
    "TwoSamplersForMaskUpscalerProviderPipe": TwoSamplersForMaskUpscalerProviderPipe,
    "IterativeLatentUpscale": IterativeLatentUpscale,
    "IterativeImageUpscale": IterativeImageUpscale,
}

__all__ = ["FULL_SAMPLE_SCHEDULES", "NODE_CLASSES", "SCALE_METHODS", "PixelKSampleUpscaler",
           "TwoSamplersForMaskUpscaler", "is_full_sample_time", "iteration_sizes", "latent_mask",
           "resize_in_pixel_space", *NODE_CLASSES]
