"""Image prompts: CLIPVisionLoader, CLIPVisionEncode, unCLIPConditioning and unCLIPCheckpointLoader (SD2.1 unCLIP
checkpoints, SDXL Revision), on `models.clip_vision` and `models.unclip`. Inputs, defaults and ranges are ComfyUI
0.30's."""

from __future__ import annotations

from .._checks import check_choice, check_float
from .core import FolderNode
from .folders import CHECKPOINT_EXTENSIONS, Folders, named_errors
from .handles import ClipHandle, ModelHandle, VaeHandle

CATEGORY = "conditioning"


def _check_clip_vision(value):
    if not callable(getattr(value, "encode_image", None)) or not hasattr(value, "image_size"):
        raise TypeError(f"clip_vision must be a CLIP_VISION (from CLIPVisionLoader or unCLIPCheckpointLoader), got "
                        f"{type(value).__name__}")
    return value


class CLIPVisionLoader(FolderNode):
    @classmethod
    def INPUT_TYPES(cls, folders: Folders | None = None):
        names = folders.list_models("clip_vision", CHECKPOINT_EXTENSIONS) if folders is not None else []
        return {"required": {"clip_name": (names,)}}

    RETURN_TYPES = ("CLIP_VISION",)
    FUNCTION = "load_clip"
    CATEGORY = "loaders"
    FILE_INPUTS = ("clip_name",)

    def check_inputs(self, clip_name):
        self.folders.resolve_model("clip_vision", clip_name, "CLIP vision model")

    def load_clip(self, clip_name):
        from ..models.clip_vision import load_clip_vision

        path = self.folders.resolve_model("clip_vision", clip_name, "CLIP vision model")
        opts = self.folders.load_options
        with named_errors(path, clip_name):
            return (load_clip_vision(path, device=opts.get("device"), allow_pickle=bool(opts.get("allow_pickle"))),)


class CLIPVisionEncode:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"clip_vision": ("CLIP_VISION",), "image": ("IMAGE",),
                             "crop": (["center", "none"], {"default": "center"})}}  # older files have no crop

    RETURN_TYPES = ("CLIP_VISION_OUTPUT",)
    FUNCTION = "encode"
    CATEGORY = CATEGORY

    def encode(self, clip_vision, image, crop="center"):
        crop = check_choice("crop", crop, ("center", "none"))
        return (_check_clip_vision(clip_vision).encode_image(image, crop=crop == "center"),)


class unCLIPConditioning:  # noqa: N801  (ComfyUI's name)
    """Adds the image prompt to every entry (appended after the entry's earlier ones); strength 0 returns the
    conditioning unchanged. How the model uses it: models/unclip.py."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "conditioning": ("CONDITIONING",), "clip_vision_output": ("CLIP_VISION_OUTPUT",),
            "strength": ("FLOAT", {"default": 1.0, "min": -10.0, "max": 10.0, "step": 0.01}),
            "noise_augmentation": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.01}),
        }}

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "apply_adm"
    CATEGORY = CATEGORY

    def apply_adm(self, conditioning, clip_vision_output, strength=1.0, noise_augmentation=0.0):
        strength = check_float("strength", strength, -10.0, 10.0)
        noise_augmentation = check_float("noise_augmentation", noise_augmentation, 0.0, 1.0)
        if getattr(clip_vision_output, "image_embeds", None) is None:
            raise TypeError("clip_vision_output must be a CLIP_VISION_OUTPUT (from CLIPVisionEncode), got "
                            f"{type(clip_vision_output).__name__}")
        if not isinstance(conditioning, (list, tuple)):
            raise TypeError("conditioning must be a CONDITIONING list [[tensor, {...}], ...]")
        if strength == 0:
            return (conditioning,)
        item = {"clip_vision_output": clip_vision_output, "strength": strength,
                "noise_augmentation": noise_augmentation}
        out = []
        for tensor, options in conditioning:
            options = dict(options)
            options["unclip_conditioning"] = list(options.get("unclip_conditioning", [])) + [item]
            out.append([tensor, options])
        return (out,)


class unCLIPCheckpointLoader(FolderNode):  # noqa: N801  (ComfyUI's name)
    """An SD2.1 unCLIP checkpoint -> (MODEL, CLIP, VAE, CLIP_VISION)."""

    @classmethod
    def INPUT_TYPES(cls, folders: Folders | None = None):
        names = folders.list_models("checkpoints") if folders is not None else []
        return {"required": {"ckpt_name": (names,)}}

    RETURN_TYPES = ("MODEL", "CLIP", "VAE", "CLIP_VISION")
    FUNCTION = "load_checkpoint"
    CATEGORY = "loaders"
    FILE_INPUTS = ("ckpt_name",)

    def check_inputs(self, ckpt_name):
        self.folders.resolve_model("checkpoints", ckpt_name, "checkpoint")

    def load_checkpoint(self, ckpt_name):
        from ..models.unclip import load_unclip

        path = self.folders.resolve_model("checkpoints", ckpt_name, "checkpoint")
        opts = self.folders.load_options
        with named_errors(path, ckpt_name):
            model, vision = load_unclip(path, device=opts.get("device"), dtype=opts.get("dtype"),
                                        allow_pickle=bool(opts.get("allow_pickle")))
        return (ModelHandle(model), ClipHandle(model), VaeHandle(model), vision)


__all__ = ["CLIPVisionEncode", "CLIPVisionLoader", "unCLIPCheckpointLoader", "unCLIPConditioning"]
