"""ComfyUI's MODEL patch nodes that change how a model samples, not its weights: ModelSamplingDiscrete (LCM,
v-prediction, x0, zero terminal SNR), ModelSamplingContinuousEDM, RescaleCFG and DifferentialDiffusion, on
`models.model_sampling`. Inputs, defaults and ranges are ComfyUI 0.30's."""

from __future__ import annotations

from .._checks import check_bool, check_choice, check_float
from ..engine.mask_ops import differential_denoise_mask
from ..models.model_sampling import (
    DISCRETE_SAMPLING,
    OptionsModel,
    hoist,
    rescale_cfg_function,
    with_discrete_sampling,
    with_edm_sampling,
)
from .core import _check_model

CATEGORY = "model/patch"
# ComfyUI also lists these; they need model families or latent formats this project does not run
UNSUPPORTED_DISCRETE = ("img_to_img", "img_to_img_flow")
UNSUPPORTED_EDM = ("edm_playground_v2.5", "cosmos_rflow")


class ModelSamplingDiscrete:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",),
                             "sampling": (list(DISCRETE_SAMPLING) + list(UNSUPPORTED_DISCRETE),),
                             "zsnr": ("BOOLEAN", {"default": False})}}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "patch"
    CATEGORY = CATEGORY

    def patch(self, model, sampling, zsnr=False):
        _check_model(model)
        if sampling in UNSUPPORTED_DISCRETE:
            raise ValueError(f"ModelSamplingDiscrete: sampling {sampling!r} is for image-to-image model families "
                             f"this project does not run; use one of {', '.join(DISCRETE_SAMPLING)}")
        return (with_discrete_sampling(model, check_choice("sampling", sampling, DISCRETE_SAMPLING),
                                       check_bool("zsnr", zsnr)),)


class ModelSamplingContinuousEDM:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL",),
            "sampling": (["v_prediction", "edm", "edm_playground_v2.5", "eps", "cosmos_rflow"],),
            "sigma_max": ("FLOAT", {"default": 120.0, "min": 0.0, "max": 1000.0, "step": 0.001, "round": False}),
            "sigma_min": ("FLOAT", {"default": 0.002, "min": 0.0, "max": 1000.0, "step": 0.001, "round": False}),
        }}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "patch"
    CATEGORY = CATEGORY

    def patch(self, model, sampling, sigma_max=120.0, sigma_min=0.002):
        _check_model(model)
        if sampling in UNSUPPORTED_EDM:
            raise ValueError(f"ModelSamplingContinuousEDM: sampling {sampling!r} needs another model family "
                             "(Playground v2.5's latent format, Cosmos); use v_prediction, edm or eps")
        return (with_edm_sampling(model, sampling, check_float("sigma_max", sigma_max, 0.0, 1000.0),
                                  check_float("sigma_min", sigma_min, 0.0, 1000.0)),)


class RescaleCFG:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",),
                             "multiplier": ("FLOAT", {"default": 0.7, "min": 0.0, "max": 1.0, "step": 0.01})}}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "patch"
    CATEGORY = CATEGORY

    def patch(self, model, multiplier=0.7):
        _check_model(model)
        fn = rescale_cfg_function(multiplier)
        return (hoist(model, lambda m: OptionsModel(m, sampler_cfg_function=fn)),)


def _freeu_inputs(b1: float, b2: float) -> dict:
    def f(default):
        return ("FLOAT", {"default": default, "min": 0.0, "max": 10.0, "step": 0.01})

    return {"required": {"model": ("MODEL",), "b1": f(b1), "b2": f(b2), "s1": f(0.9), "s2": f(0.2)}}


class FreeU:
    """FreeU in the UNet's decoder (models/freeu.py): backbone features scaled by b1 / b2, skip features
    low-pass-scaled by s1 / s2 (at 4x and 2x the UNet's base width)."""

    V2 = False

    @classmethod
    def INPUT_TYPES(cls):
        return _freeu_inputs(1.1, 1.2)

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "patch"
    CATEGORY = "model_patches/unet"

    def patch(self, model, b1=None, b2=None, s1=0.9, s2=0.2):
        from ..models.freeu import with_freeu

        _check_model(model)
        defaults = self.INPUT_TYPES()["required"]
        b1 = defaults["b1"][1]["default"] if b1 is None else b1
        b2 = defaults["b2"][1]["default"] if b2 is None else b2
        vals = [check_float(n, v, 0.0, 10.0) for n, v in (("b1", b1), ("b2", b2), ("s1", s1), ("s2", s2))]
        return (with_freeu(model, *vals, v2=self.V2),)


class FreeU_V2(FreeU):  # noqa: N801  (ComfyUI's name)
    """FreeU's second version: the backbone scaling follows each image's normalised channel mean."""

    V2 = True

    @classmethod
    def INPUT_TYPES(cls):
        return _freeu_inputs(1.3, 1.4)


class DifferentialDiffusion:
    """Each pixel of the noise mask denoises from the step its mask value reaches (a soft mask's grey is its
    denoise strength); `strength` < 1 mixes that step mask with the plain mask."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",)},
                "optional": {"strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01})}}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "apply"
    CATEGORY = "_for_testing"

    def apply(self, model, strength=1.0):
        _check_model(model)
        strength = check_float("strength", strength, 0.0, 1.0)

        def mask_function(sigma, denoise_mask, extra_options):
            stepped = differential_denoise_mask(sigma, denoise_mask, extra_options)
            if strength and strength < 1:
                return strength * stepped + (1 - strength) * denoise_mask
            return stepped

        return (hoist(model, lambda m: OptionsModel(m, denoise_mask_function=mask_function)),)


__all__ = ["DifferentialDiffusion", "FreeU", "FreeU_V2", "ModelSamplingContinuousEDM", "ModelSamplingDiscrete",
           "RescaleCFG"]
