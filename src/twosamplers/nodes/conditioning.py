"""ComfyUI's conditioning nodes (names, inputs and defaults as in ComfyUI 0.30), which the KSampler honours.

Set* nodes return a new CONDITIONING whose entries carry the option keys ComfyUI stores (what they do at
sampling time: docs/engine.md, "Regional conditioning"); Combine concatenates lists; Concat and Average
combine prompt tensors. Inputs are never modified: entries are new lists with copied option dicts (the
tensors themselves are shared, as ComfyUI shares them).
"""

from __future__ import annotations

import warnings

import torch

from .._checks import check_choice, check_float, check_int, check_mask
from ..engine.conditioning import normalize_conditioning

MAX_RESOLUTION = 16384
SET_COND_AREAS = ("default", "mask bounds")


def _check_cond(cond: object, name: str) -> list:
    """Validate a CONDITIONING list (options included); return it as a list of pairs."""
    normalize_conditioning(cond, name)
    if isinstance(cond, torch.Tensor):
        cond = [[cond, {}]]
    return list(cond)


def _with_options(cond: list, values: dict) -> list:
    """Every entry with `values` set in a copy of its options."""
    return [[t, {**opts, **values}] for t, opts in cond]


def _strength_input(default: float = 1.0) -> tuple:
    return ("FLOAT", {"default": default, "min": 0.0, "max": 10.0, "step": 0.01})


class ConditioningCombine:
    """Both lists one after the other: at sampling time each entry is evaluated and they are averaged per
    pixel by their weights."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"conditioning_1": ("CONDITIONING",), "conditioning_2": ("CONDITIONING",)}}

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "combine"
    CATEGORY = "conditioning"

    def combine(self, conditioning_1, conditioning_2):
        a = _check_cond(conditioning_1, "conditioning_1")
        b = _check_cond(conditioning_2, "conditioning_2")
        return ([[t, dict(o)] for t, o in a + b],)


class ConditioningAverage:
    """Each entry of conditioning_to blended with the first entry of conditioning_from:
    to * s + from * (1 - s) (from cut or zero-padded to to's length); pooled outputs blend alike."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "conditioning_to": ("CONDITIONING",),
            "conditioning_from": ("CONDITIONING",),
            "conditioning_to_strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01}),
        }}

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "addWeighted"
    CATEGORY = "conditioning"

    def addWeighted(self, conditioning_to, conditioning_from, conditioning_to_strength):  # noqa: N802 (ComfyUI name)
        to = _check_cond(conditioning_to, "conditioning_to")
        src = _check_cond(conditioning_from, "conditioning_from")
        s = check_float("conditioning_to_strength", conditioning_to_strength, 0.0, 1.0)
        if len(src) > 1:
            warnings.warn("ConditioningAverage uses only the first entry of conditioning_from "
                          f"({len(src)} given)", stacklevel=2)
        frm, pooled_from = src[0][0], src[0][1].get("pooled_output")
        out = []
        for t, opts in to:
            f = frm[:, : t.shape[1]]
            if f.shape[1] < t.shape[1]:
                pad = torch.zeros((f.shape[0], t.shape[1] - f.shape[1], f.shape[2]), dtype=f.dtype, device=f.device)
                f = torch.cat([f, pad], dim=1)
            blended = t * s + f * (1.0 - s)
            new = dict(opts)
            pooled_to = opts.get("pooled_output", pooled_from)
            if pooled_from is not None and pooled_to is not None:
                new["pooled_output"] = pooled_to * s + pooled_from * (1.0 - s)
            elif pooled_from is not None:
                new["pooled_output"] = pooled_from
            out.append([blended, new])
        return (out,)


class ConditioningConcat:
    """Each entry of conditioning_to with the first prompt of conditioning_from appended along the tokens
    (options of conditioning_to kept)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"conditioning_to": ("CONDITIONING",), "conditioning_from": ("CONDITIONING",)}}

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "concat"
    CATEGORY = "conditioning"

    def concat(self, conditioning_to, conditioning_from):
        to = _check_cond(conditioning_to, "conditioning_to")
        src = _check_cond(conditioning_from, "conditioning_from")
        if len(src) > 1:
            warnings.warn("ConditioningConcat uses only the first entry of conditioning_from "
                          f"({len(src)} given)", stacklevel=2)
        frm = src[0][0]
        out = []
        for t, opts in to:
            if frm.shape[2] != t.shape[2]:
                raise ValueError(f"conditioning_from has width {frm.shape[2]}, conditioning_to {t.shape[2]}: "
                                 "prompts of different text encoders cannot be concatenated")
            out.append([torch.cat([t, frm.to(t.dtype)], dim=1), dict(opts)])
        return (out,)


class ConditioningSetArea:
    """The prompt acts only on a rectangle given in image pixels (stored in latent pixels: //8); its weight
    fades in over up to 8 latent pixels at edges inside the image."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "conditioning": ("CONDITIONING",),
            "width": ("INT", {"default": 64, "min": 64, "max": MAX_RESOLUTION, "step": 8}),
            "height": ("INT", {"default": 64, "min": 64, "max": MAX_RESOLUTION, "step": 8}),
            "x": ("INT", {"default": 0, "min": 0, "max": MAX_RESOLUTION, "step": 8}),
            "y": ("INT", {"default": 0, "min": 0, "max": MAX_RESOLUTION, "step": 8}),
            "strength": _strength_input(),
        }}

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "append"
    CATEGORY = "conditioning"

    def append(self, conditioning, width, height, x, y, strength):
        cond = _check_cond(conditioning, "conditioning")
        width = check_int("width", width, 8, MAX_RESOLUTION)
        height = check_int("height", height, 8, MAX_RESOLUTION)
        x = check_int("x", x, 0, MAX_RESOLUTION)
        y = check_int("y", y, 0, MAX_RESOLUTION)
        strength = check_float("strength", strength, 0.0, 10.0)
        area = (height // 8, width // 8, y // 8, x // 8)
        return (_with_options(cond, {"area": area, "strength": strength, "set_area_to_bounds": False}),)


class ConditioningSetAreaPercentage:
    """ConditioningSetArea with the rectangle as fractions of the image (resolved when sampling)."""

    @classmethod
    def INPUT_TYPES(cls):
        frac = {"min": 0.0, "max": 1.0, "step": 0.01}
        return {"required": {
            "conditioning": ("CONDITIONING",),
            "width": ("FLOAT", {"default": 1.0, **frac}),
            "height": ("FLOAT", {"default": 1.0, **frac}),
            "x": ("FLOAT", {"default": 0.0, **frac}),
            "y": ("FLOAT", {"default": 0.0, **frac}),
            "strength": _strength_input(),
        }}

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "append"
    CATEGORY = "conditioning"

    def append(self, conditioning, width, height, x, y, strength):
        cond = _check_cond(conditioning, "conditioning")
        w, h, fx, fy = (check_float(n, v, 0.0, 1.0) for n, v in (("width", width), ("height", height),
                                                                   ("x", x), ("y", y)))
        strength = check_float("strength", strength, 0.0, 10.0)
        area = ("percentage", h, w, fy, fx)
        return (_with_options(cond, {"area": area, "strength": strength, "set_area_to_bounds": False}),)


class ConditioningSetAreaStrength:
    """Only the entry's weight against the entries it overlaps."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"conditioning": ("CONDITIONING",), "strength": _strength_input()}}

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "append"
    CATEGORY = "conditioning"

    def append(self, conditioning, strength):
        cond = _check_cond(conditioning, "conditioning")
        strength = check_float("strength", strength, 0.0, 10.0)
        return (_with_options(cond, {"strength": strength}),)


class ConditioningSetMask:
    """The prompt acts where the mask is (weight mask x strength); "mask bounds" also runs the model only on
    the mask's bounding box."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "conditioning": ("CONDITIONING",),
            "mask": ("MASK",),
            "strength": _strength_input(),
            "set_cond_area": (list(SET_COND_AREAS),),
        }}

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "append"
    CATEGORY = "conditioning"

    def append(self, conditioning, mask, strength, set_cond_area):
        cond = _check_cond(conditioning, "conditioning")
        mask = check_mask(mask, "mask")
        if mask.ndim == 4:
            mask = mask.reshape(-1, mask.shape[-2], mask.shape[-1])
        elif mask.ndim == 2:
            mask = mask.unsqueeze(0)
        strength = check_float("strength", strength, 0.0, 10.0)
        check_choice("set_cond_area", set_cond_area, SET_COND_AREAS)
        values = {"mask": mask, "set_area_to_bounds": set_cond_area != "default", "mask_strength": strength}
        return (_with_options(cond, values),)


class ConditioningSetTimestepRange:
    """The entry is used only while sampling is between start and end (fractions of the model's full
    schedule, 0 = the noisiest step)."""

    @classmethod
    def INPUT_TYPES(cls):
        frac = {"min": 0.0, "max": 1.0, "step": 0.001}
        return {"required": {
            "conditioning": ("CONDITIONING",),
            "start": ("FLOAT", {"default": 0.0, **frac}),
            "end": ("FLOAT", {"default": 1.0, **frac}),
        }}

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "set_range"
    CATEGORY = "advanced/conditioning"

    def set_range(self, conditioning, start, end):
        cond = _check_cond(conditioning, "conditioning")
        start = check_float("start", start, 0.0, 1.0)
        end = check_float("end", end, 0.0, 1.0)
        return (_with_options(cond, {"start_percent": start, "end_percent": end}),)


NODE_CLASS_MAPPINGS = {
    "ConditioningCombine": ConditioningCombine,
    "ConditioningAverage": ConditioningAverage,
    "ConditioningConcat": ConditioningConcat,
    "ConditioningSetArea": ConditioningSetArea,
    "ConditioningSetAreaPercentage": ConditioningSetAreaPercentage,
    "ConditioningSetAreaStrength": ConditioningSetAreaStrength,
    "ConditioningSetMask": ConditioningSetMask,
    "ConditioningSetTimestepRange": ConditioningSetTimestepRange,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "ConditioningCombine": "Conditioning (Combine)",
    "ConditioningAverage": "Conditioning (Average)",
    "ConditioningConcat": "Conditioning (Concat)",
    "ConditioningSetArea": "Conditioning (Set Area)",
    "ConditioningSetAreaPercentage": "Conditioning (Set Area with Percentage)",
    "ConditioningSetAreaStrength": "Conditioning (Set Area Strength)",
    "ConditioningSetMask": "Conditioning (Set Mask)",
    "ConditioningSetTimestepRange": "ConditioningSetTimestepRange",
}
