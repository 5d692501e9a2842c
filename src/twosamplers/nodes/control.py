"""ComfyUI's ControlNet and inpainting nodes: ControlNetLoader, ControlNetApplyAdvanced, ControlNetApply,
InpaintModelConditioning, over the engine's `models.controlnet` / `models.control` / `models.inpaint`."""

from __future__ import annotations

from .._checks import check_float
from ..models.control import apply_controlnet
from ..models.inpaint import inpaint_model_conditioning
from .core import FolderNode, _vae
from .folders import Folders, named_errors

CONTROL_EXTENSIONS = (".safetensors", ".sft", ".pth", ".ckpt", ".pt", ".bin")
_STRENGTH = ("FLOAT", {"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.01})
_PERCENT = {"min": 0.0, "max": 1.0, "step": 0.001}


class ControlNetLoader(FolderNode):
    """control_net_name (a file or diffusers folder under models/controlnet/) -> CONTROL_NET."""

    @classmethod
    def INPUT_TYPES(cls, folders: Folders | None = None):
        names = folders.list_models("controlnet", CONTROL_EXTENSIONS, "config.json") if folders is not None else []
        return {"required": {"control_net_name": (names,)}}

    RETURN_TYPES = ("CONTROL_NET",)
    FUNCTION = "load_controlnet"
    CATEGORY = "loaders"
    FILE_INPUTS = ("control_net_name",)

    def check_inputs(self, control_net_name):
        self._path(control_net_name)

    def _path(self, name: str):
        p = self.folders.find_model("controlnet", name, "config.json") if isinstance(name, str) and name else None
        if p is None:
            where = ", ".join(str(d) for d in self.folders.search_dirs("controlnet")) or "no controlnet folder " \
                "given (use --models DIR or --comfyui DIR)"
            raise FileNotFoundError(f"ControlNet {name!r} not found (searched: {where})")
        return p

    def load_controlnet(self, control_net_name):
        from ..models.controlnet import load_controlnet

        opts = {k: v for k, v in self.folders.load_options.items() if k in ("device", "dtype", "allow_pickle")}
        if isinstance(opts.get("dtype"), str):
            from ..models.sd import resolve_device_dtype

            opts["device"], opts["dtype"] = resolve_device_dtype(opts.get("device"), opts["dtype"])
        path = self._path(control_net_name)
        with named_errors(path, control_net_name):  # errors name the file as the workflow does
            return (load_controlnet(path, **opts),)


class ControlNetApplyAdvanced:
    """The ControlNet on both conditionings, at `strength`, between start_percent and end_percent of the
    schedule (see `models.control`); strength 0 returns them unchanged."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "positive": ("CONDITIONING",),
            "negative": ("CONDITIONING",),
            "control_net": ("CONTROL_NET",),
            "image": ("IMAGE",),
            "strength": _STRENGTH,
            "start_percent": ("FLOAT", {"default": 0.0, **_PERCENT}),
            "end_percent": ("FLOAT", {"default": 1.0, **_PERCENT}),
        }, "optional": {"vae": ("VAE",)}}

    RETURN_TYPES = ("CONDITIONING", "CONDITIONING")
    RETURN_NAMES = ("positive", "negative")
    FUNCTION = "apply_controlnet"
    CATEGORY = "conditioning/controlnet"

    def apply_controlnet(self, positive, negative, control_net, image, strength, start_percent, end_percent,
                         vae=None):
        start = check_float("start_percent", start_percent, 0.0, 1.0)
        end = check_float("end_percent", end_percent, 0.0, 1.0)
        return apply_controlnet(positive, negative, control_net, image, strength, start, end)


class ControlNetApply:
    """The older single-conditioning form: the ControlNet over the whole schedule."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"conditioning": ("CONDITIONING",), "control_net": ("CONTROL_NET",),
                             "image": ("IMAGE",), "strength": _STRENGTH}}

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "apply_controlnet"
    CATEGORY = "conditioning/controlnet"

    def apply_controlnet(self, conditioning, control_net, image, strength):
        out = apply_controlnet(conditioning, [], control_net, image, strength)[0]
        if out is not conditioning:  # as ComfyUI's node, these ControlNets guide the uncond too (at sampling)
            for _tensor, options in out:
                options["control"].apply_to_uncond = True
        return (out,)


class InpaintModelConditioning:
    """Conditioning for inpainting checkpoints (the greyed-out image's latent and the mask) and the image's latent
    (with the mask as noise mask when noise_mask)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"positive": ("CONDITIONING",), "negative": ("CONDITIONING",), "vae": ("VAE",),
                             "pixels": ("IMAGE",), "mask": ("MASK",),
                             "noise_mask": ("BOOLEAN", {"default": True})}}

    RETURN_TYPES = ("CONDITIONING", "CONDITIONING", "LATENT")
    RETURN_NAMES = ("positive", "negative", "latent")
    FUNCTION = "encode"
    CATEGORY = "conditioning/inpaint"

    def encode(self, positive, negative, pixels, vae, mask, noise_mask=True):
        return inpaint_model_conditioning(positive, negative, _vae(vae).model, pixels, mask, bool(noise_mask))


__all__ = ["ControlNetApply", "ControlNetApplyAdvanced", "ControlNetLoader", "InpaintModelConditioning"]
