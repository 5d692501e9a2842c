"""Loader nodes for weights that patch a checkpoint: HypernetworkLoader (models/hypernetworks/) and
DiffControlNetLoader (diff ControlNets under models/controlnet/, made whole with the MODEL's UNet weights). Inputs,
defaults and ranges are ComfyUI 0.30's."""

from __future__ import annotations

from .._checks import check_float
from .control import CONTROL_EXTENSIONS, ControlNetLoader
from .core import FolderNode, _check_model
from .folders import Folders, named_errors

HYPERNETWORK_EXTENSIONS = (".pt", ".safetensors", ".pth", ".bin")


class HypernetworkLoader(FolderNode):
    """MODEL with a hypernetwork (A1111's .pt format) patching its attention at `strength`."""

    @classmethod
    def INPUT_TYPES(cls, folders: Folders | None = None):
        names = folders.list_models("hypernetworks", HYPERNETWORK_EXTENSIONS) if folders is not None else []
        return {"required": {"model": ("MODEL",), "hypernetwork_name": (names,),
                             "strength": ("FLOAT", {"default": 1.0, "min": -10.0, "max": 10.0, "step": 0.01})}}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "load_hypernetwork"
    CATEGORY = "loaders"
    FILE_INPUTS = ("hypernetwork_name",)

    def check_inputs(self, hypernetwork_name):
        self.folders.resolve_model("hypernetworks", hypernetwork_name, "hypernetwork")

    def load_hypernetwork(self, model, hypernetwork_name, strength=1.0):
        from ..models.hypernetwork import with_hypernetwork

        _check_model(model)
        strength = check_float("strength", strength, -10.0, 10.0)
        path = self.folders.resolve_model("hypernetworks", hypernetwork_name, "hypernetwork")
        with named_errors(path, hypernetwork_name):
            return (with_hypernetwork(model, path, strength,
                                      allow_pickle=bool(self.folders.load_options.get("allow_pickle"))),)


class DiffControlNetLoader(ControlNetLoader):
    """A ControlNet file for `model`: a diff ControlNet gets the MODEL's UNet weights added (models/diff_controlnet.py);
    any other ControlNet file loads as ControlNetLoader loads it."""

    @classmethod
    def INPUT_TYPES(cls, folders: Folders | None = None):
        names = folders.list_models("controlnet", CONTROL_EXTENSIONS, "config.json") if folders is not None else []
        return {"required": {"model": ("MODEL",), "control_net_name": (names,)}}

    FUNCTION = "load_diff_controlnet"

    def load_diff_controlnet(self, model, control_net_name):
        from ..models.diff_controlnet import load_diff_controlnet

        _check_model(model)
        path = self._path(control_net_name)
        if path.is_dir():  # a diffusers folder is never a diff file
            return self.load_controlnet(control_net_name)
        allow_pickle = bool(self.folders.load_options.get("allow_pickle"))
        with named_errors(path, control_net_name):
            return (load_diff_controlnet(path, model, allow_pickle=allow_pickle),)


__all__ = ["DiffControlNetLoader", "HypernetworkLoader"]
