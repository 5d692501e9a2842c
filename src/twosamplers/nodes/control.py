"""ComfyUI's ControlNet and inpainting nodes: ControlNetLoader, ControlNetApplyAdvanced, ControlNetApply,
ControlNetApplySD3, SetUnionControlNetType, ControlNetInpaintingAliMamaApply, InpaintModelConditioning, over the
engine's `models.controlnet` / `models.flow_control` / `models.control` / `models.inpaint`."""

from __future__ import annotations

import torch

from .._checks import check_float
from ..models.control import apply_controlnet, is_control_network
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

        path = self._path(control_net_name)
        with named_errors(path, control_net_name):
            flow = _load_flow_controlnet(self.folders, path)
        if flow is not None:
            return (flow,)
        opts = {k: v for k, v in self.folders.load_options.items() if k in ("device", "dtype", "allow_pickle")}
        if isinstance(opts.get("dtype"), str):
            from ..models.sd import resolve_device_dtype

            opts["device"], opts["dtype"] = resolve_device_dtype(opts.get("device"), opts["dtype"])
        with named_errors(path, control_net_name):  # errors name the file as the workflow does
            return (load_controlnet(path, **opts),)


def _load_flow_controlnet(folders: Folders, path):
    """A Flux / SD3 ControlNet (models/flow_control.py) when the file is one, else None (an SD ControlNet)."""
    from ..models.flow_control import flow_controlnet_kind, header_keys, is_flow_controlnet_file, load_flow_controlnet
    from ..models.flow_loading import resolve_flow_device_dtype

    if not is_flow_controlnet_file(path):
        return None
    family = "flux" if flow_controlnet_kind(header_keys(path)).startswith("flux") else "sd3"
    opts = folders.load_options
    device, dtype = resolve_flow_device_dtype(family, opts.get("device"), opts.get("dtype"))
    return load_flow_controlnet(path, device=device, dtype=dtype)


class SetUnionControlNetType:
    """The control type of a Union ControlNet (Flux InstantX / Shakker Union): "auto" leaves it to the network;
    other ControlNets ignore it, as in ComfyUI."""

    @classmethod
    def INPUT_TYPES(cls):
        from ..models.flow_control import UNION_TYPES

        return {"required": {"control_net": ("CONTROL_NET",), "type": (["auto", *UNION_TYPES],)}}

    RETURN_TYPES = ("CONTROL_NET",)
    FUNCTION = "set_controlnet_type"
    CATEGORY = "conditioning/controlnet"

    def set_controlnet_type(self, control_net, type):  # noqa: A002 (ComfyUI's input name)
        from ..models.flow_control import UNION_TYPES

        if type != "auto" and type not in UNION_TYPES:
            raise ValueError(f"type must be 'auto' or one of {list(UNION_TYPES)}, got {type!r}")
        set_type = getattr(control_net, "with_control_type", None)
        if set_type is None:
            if not is_control_network(control_net):
                raise TypeError(f"control_net must be a CONTROL_NET, got {control_net.__class__.__name__}")
            return (control_net,)  # an SD ControlNet: ComfyUI sets an argument that it does not read
        return (set_type(type),)


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
        coder = None
        if vae is not None:  # Flux InstantX / Union and SD3 ControlNets encode the hint with it
            coder = _vae(vae).model
        return apply_controlnet(positive, negative, control_net, image, strength, start, end, vae=coder)


class ControlNetApplySD3(ControlNetApplyAdvanced):
    """ComfyUI's deprecated "Apply Controlnet with VAE" (comfy_extras' SD3 nodes, still in Flux and SD3 example
    workflows): ControlNetApplyAdvanced with the vae a required input, given before the image."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "positive": ("CONDITIONING",), "negative": ("CONDITIONING",), "control_net": ("CONTROL_NET",),
            "vae": ("VAE",), "image": ("IMAGE",), "strength": _STRENGTH,
            "start_percent": ("FLOAT", {"default": 0.0, **_PERCENT}),
            "end_percent": ("FLOAT", {"default": 1.0, **_PERCENT}),
        }}

    DEPRECATED = True  # as in ComfyUI 0.30, which hides it from the node search

    def apply_controlnet(self, positive, negative, control_net, vae, image, strength, start_percent, end_percent):
        if vae is None:
            raise ValueError("vae is required: connect the VAE the ControlNet's hint image is encoded with")
        return super().apply_controlnet(positive, negative, control_net, image, strength, start_percent, end_percent,
                                        vae=vae)


class ControlNetInpaintingAliMamaApply:
    """An inpainting ControlNet (Alimama's Flux / SD3 ones, 17-channel hint) with the area to repaint: the hint
    image blanked under the mask, and 1 - mask as the hint's extra channel. Other ControlNets: as
    ControlNetApplyAdvanced with the vae."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "positive": ("CONDITIONING",), "negative": ("CONDITIONING",), "control_net": ("CONTROL_NET",),
            "vae": ("VAE",), "image": ("IMAGE",), "mask": ("MASK",), "strength": _STRENGTH,
            "start_percent": ("FLOAT", {"default": 0.0, **_PERCENT}),
            "end_percent": ("FLOAT", {"default": 1.0, **_PERCENT}),
        }}

    RETURN_TYPES = ("CONDITIONING", "CONDITIONING")
    RETURN_NAMES = ("positive", "negative")
    FUNCTION = "apply_inpaint_controlnet"
    CATEGORY = "conditioning/controlnet"

    def apply_inpaint_controlnet(self, positive, negative, control_net, vae, image, mask, strength, start_percent,
                                 end_percent):
        from ..models.control import center_upscale, check_hint

        start = check_float("start_percent", start_percent, 0.0, 1.0)
        end = check_float("end_percent", end_percent, 0.0, 1.0)
        image = check_hint(image, "image")
        extra = None
        if getattr(control_net, "concat_mask", False):
            if not isinstance(mask, torch.Tensor) or mask.ndim not in (2, 3) or not mask.is_floating_point():
                raise ValueError("mask must be a MASK tensor (H, W) or (B, H, W) in [0, 1]")
            extra = 1.0 - mask.reshape((-1, 1, mask.shape[-2], mask.shape[-1])).float()
            keep = center_upscale(extra, image.shape[1], image.shape[2], mode="bilinear").round()
            image = image * keep.movedim(1, -1).repeat(1, 1, 1, image.shape[3])
        return apply_controlnet(positive, negative, control_net, image, strength, start, end, vae=_vae(vae).model,
                                extra_concat=extra)


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


__all__ = ["ControlNetApply", "ControlNetApplyAdvanced", "ControlNetApplySD3", "ControlNetInpaintingAliMamaApply",
           "ControlNetLoader", "InpaintModelConditioning", "SetUnionControlNetType"]
