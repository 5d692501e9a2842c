"""StyleModelLoader and StyleModelApply (T2I-Adapter style models, Flux Redux) over `models.style_model`.
Inputs, defaults and ranges are ComfyUI 0.30's."""

from __future__ import annotations

from .._checks import check_choice, check_float
from .core import FolderNode
from .folders import CHECKPOINT_EXTENSIONS, Folders, named_errors

STRENGTH_TYPES = ["multiply", "attn_bias"]


class StyleModelLoader(FolderNode):
    """style_model_name (a file under models/style_models/) -> STYLE_MODEL."""

    @classmethod
    def INPUT_TYPES(cls, folders: Folders | None = None):
        names = folders.list_models("style_models", CHECKPOINT_EXTENSIONS) if folders is not None else []
        return {"required": {"style_model_name": (names,)}}

    RETURN_TYPES = ("STYLE_MODEL",)
    FUNCTION = "load_style_model"
    CATEGORY = "loaders"
    FILE_INPUTS = ("style_model_name",)

    def check_inputs(self, style_model_name):
        self.folders.resolve_model("style_models", style_model_name, "style model")

    def load_style_model(self, style_model_name):
        from ..models.style_model import load_style_model

        path = self.folders.resolve_model("style_models", style_model_name, "style model")
        with named_errors(path, style_model_name):
            return (load_style_model(path, allow_pickle=bool(self.folders.load_options.get("allow_pickle"))),)


class StyleModelApply:
    """The style model's tokens for the image(s), appended to every entry of the conditioning."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"conditioning": ("CONDITIONING",), "style_model": ("STYLE_MODEL",),
                             "clip_vision_output": ("CLIP_VISION_OUTPUT",),
                             "strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.001}),
                             "strength_type": (STRENGTH_TYPES, {"default": "multiply"})}}

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "apply_stylemodel"
    CATEGORY = "conditioning/style_model"

    def apply_stylemodel(self, conditioning, style_model, clip_vision_output, strength=1.0,
                         strength_type="multiply"):
        from ..models.style_model import StyleModel, apply_style

        if not isinstance(style_model, StyleModel):
            raise TypeError(f"style_model must be a STYLE_MODEL (from StyleModelLoader), got "
                            f"{type(style_model).__name__}")
        strength = check_float("strength", strength, 0.0, 10.0)
        strength_type = check_choice("strength_type", strength_type, STRENGTH_TYPES)
        return (apply_style(conditioning, style_model, clip_vision_output, strength, strength_type),)


__all__ = ["StyleModelApply", "StyleModelLoader"]
