"""GLIGEN text boxes: GLIGENLoader (models/gligen/) and GLIGENTextBoxApply, on `models.gligen`. Inputs, defaults and
ranges are ComfyUI 0.30's."""

from __future__ import annotations

import torch

from .._checks import check_int
from .core import MAX_RESOLUTION, FolderNode, _check_clip
from .folders import CHECKPOINT_EXTENSIONS, Folders, named_errors


class GLIGENLoader(FolderNode):
    @classmethod
    def INPUT_TYPES(cls, folders: Folders | None = None):
        names = folders.list_models("gligen", CHECKPOINT_EXTENSIONS) if folders is not None else []
        return {"required": {"gligen_name": (names,)}}

    RETURN_TYPES = ("GLIGEN",)
    FUNCTION = "load_gligen"
    CATEGORY = "loaders"
    FILE_INPUTS = ("gligen_name",)

    def check_inputs(self, gligen_name):
        self.folders.resolve_model("gligen", gligen_name, "GLIGEN model")

    def load_gligen(self, gligen_name):
        from ..models.gligen import load_gligen

        path = self.folders.resolve_model("gligen", gligen_name, "GLIGEN model")
        with named_errors(path, gligen_name):
            return (load_gligen(path, allow_pickle=bool(self.folders.load_options.get("allow_pickle"))),)


class GLIGENTextBoxApply:
    """Adds a text box to every entry: the phrase's pooled text embedding and the box in latent pixels (pixel
    sizes // 8), after the entry's earlier boxes."""

    @classmethod
    def INPUT_TYPES(cls):
        size = {"min": 8, "max": MAX_RESOLUTION, "step": 8}
        pos = {"default": 0, "min": 0, "max": MAX_RESOLUTION, "step": 8}
        return {"required": {"conditioning_to": ("CONDITIONING",), "clip": ("CLIP",),
                             "gligen_textbox_model": ("GLIGEN",),
                             "text": ("STRING", {"multiline": True, "dynamicPrompts": True}),
                             "width": ("INT", {"default": 64, **size}), "height": ("INT", {"default": 64, **size}),
                             "x": ("INT", pos), "y": ("INT", pos)}}

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "append"
    CATEGORY = "conditioning/gligen"

    def append(self, conditioning_to, clip, gligen_textbox_model, text, width=64, height=64, x=0, y=0):
        from ..models.gligen import GligenModel

        if not isinstance(gligen_textbox_model, GligenModel):
            raise TypeError(f"gligen_textbox_model must be a GLIGEN (from GLIGENLoader), got "
                            f"{type(gligen_textbox_model).__name__}")
        if not isinstance(text, str):
            raise TypeError(f"text must be a string, got {type(text).__name__}")
        width = check_int("width", width, 8, MAX_RESOLUTION)
        height = check_int("height", height, 8, MAX_RESOLUTION)
        x, y = check_int("x", x, 0, MAX_RESOLUTION), check_int("y", y, 0, MAX_RESOLUTION)
        pooled = _check_clip(clip).encode_prompt(text)[0][1].get("pooled_output")
        if not isinstance(pooled, torch.Tensor) or pooled.shape[-1] != gligen_textbox_model.key_dim:
            raise ValueError(f"GLIGEN needs the {gligen_textbox_model.key_dim}-wide pooled text embedding of its "
                             "model family (SD1.x's CLIP-L); this CLIP gives "
                             f"{None if pooled is None else pooled.shape[-1]}")
        box = (pooled, height // 8, width // 8, y // 8, x // 8)
        out = []
        for tensor, options in conditioning_to:
            options = dict(options)
            prev = list(options["gligen"][2]) if "gligen" in options else []
            options["gligen"] = ("position", gligen_textbox_model, prev + [box])
            out.append([tensor, options])
        return (out,)


__all__ = ["GLIGENLoader", "GLIGENTextBoxApply"]
