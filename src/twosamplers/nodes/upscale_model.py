"""UpscaleModelLoader and ImageUpscaleWithModel: ESRGAN-family upscale networks from models/upscale_models/
(`models.upscale`, spandrel in the `upscale` extra). A model file that is a pickle is read only when the run
allows pickles; safetensors files are read whatever their suffix."""

from __future__ import annotations

from ..models.upscale import load_upscale_model, upscale_image
from .core import FolderNode, _image
from .folders import Folders, named_errors

UPSCALE_EXTENSIONS = (".safetensors", ".pth", ".pt", ".bin", ".ckpt", ".sft")


class UpscaleModelLoader(FolderNode):
    @classmethod
    def INPUT_TYPES(cls, folders: Folders | None = None):
        names = folders.list_models("upscale_models", UPSCALE_EXTENSIONS) if folders is not None else []
        return {"required": {"model_name": (names,)}}

    RETURN_TYPES = ("UPSCALE_MODEL",)
    FUNCTION = "load_model"
    CATEGORY = "loaders"
    FILE_INPUTS = ("model_name",)

    def check_inputs(self, model_name):
        self.folders.resolve_model("upscale_models", model_name, "upscale model")

    def load_model(self, model_name):
        path = self.folders.resolve_model("upscale_models", model_name, "upscale model")
        opts = self.folders.load_options
        with named_errors(path, model_name):
            return (load_upscale_model(path, device=opts.get("device"), allow_pickle=bool(opts.get("allow_pickle"))),)


class ImageUpscaleWithModel:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"upscale_model": ("UPSCALE_MODEL",), "image": ("IMAGE",)}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "upscale"
    CATEGORY = "image/upscaling"

    def upscale(self, upscale_model, image):
        image = _image(image, "image")
        if not callable(upscale_model) or not hasattr(upscale_model, "scale"):
            raise TypeError(f"upscale_model must be an UPSCALE_MODEL (from UpscaleModelLoader), got "
                            f"{type(upscale_model).__name__}")
        return (upscale_image(upscale_model, image),)


__all__ = ["ImageUpscaleWithModel", "UpscaleModelLoader"]
