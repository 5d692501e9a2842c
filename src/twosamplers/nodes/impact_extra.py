"""Impact Pack nodes that sit around the sampler family in shared workflows: PreviewBridge (headless),
ImpactKSamplerBasicPipe, ImpactKSamplerAdvancedBasicPipe, ImpactWildcardProcessor, ImpactWildcardEncode and
the constants ImpactInt / ImpactFloat / ImpactBoolean / ImpactStringSelector.

- PreviewBridge shows an image in ComfyUI and lets the user paint a mask on it. Headless it passes the image
  through, and its mask is the one painted: the clipspace file its widget names (in the input folder; mask =
  1 - alpha, resized to the image when the sizes differ), else an empty 64x64 mask (Impact's empty mask). With
  block = "if_empty_mask" and no painted mask ComfyUI stops the workflow there; we refuse it before running.
- PreviewBridgeLatent is the same for a latent, with Impact's own mask rules: a painted clipspace file gives
  mask = 1 - alpha, set as the latent's noise_mask (a file without alpha: a white latent-sized mask and the
  noise_mask removed); with no file (what a fresh ComfyUI run gives), the latent passes unchanged and the mask is
  its noise_mask, else a white (all ones) mask at the latent's size. A white mask counts as empty: with block
  (if_empty_mask) the run is refused. `restore_mask` restores a mask from an earlier run of the same node in the
  same ComfyUI session: a headless run has none, so it changes nothing. The preview itself (decoded with
  preview_method or vae_opt) is not made; a latent whose channels do not fit preview_method without a vae_opt is
  refused, as Impact refuses it.
- The pipe samplers are KSampler / KSamplerAdvanced on a BASIC_PIPE (Impact's numbers: `providers`).
- The wildcard nodes expand Impact's wildcard syntax (`wildcards`) from the wildcards/ folders beside the
  models (models/wildcards, --models DIR/wildcards); mode "Populate" (true) fills populated_text from
  wildcard_text with the seed, "Fixed" keeps the stored populated_text. ImpactWildcardEncode also loads the
  `<lora:name:model:clip>` tags (from loras/) and encodes the text, BREAK-separated parts concatenated.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageOps

from .._checks import MAX_STEPS, SEED_MAX, check_bool, check_choice, check_int, check_seed
from ..engine.latent import check_latent
from ..engine.regional import KSamplerAdvancedWrapper
from . import widgets as W
from . import wildcards as wc
from .core import CLIPTextEncode, FolderNode, _image
from .folders import Folders
from .lora_files import LORA_EXTENSIONS, LoraLoader
from .providers import KSamplerWrapper, check_basic_pipe

LORA_PLACEHOLDER = "Select the LoRA to add to the text"
WILDCARD_PLACEHOLDER = "Select the Wildcard to add to the text"


def _mask_file_name(image) -> str | None:
    """The clipspace file a PreviewBridge widget names ({filename, subfolder} or "sub/name.png [input]")."""
    if isinstance(image, dict):
        name = image.get("filename")
        if not isinstance(name, str) or not name or image.get("type", "input") != "input":
            return None
        sub = image.get("subfolder") or ""
        return f"{sub}/{name}" if isinstance(sub, str) and sub else name
    if isinstance(image, str) and image.strip() and not image.startswith("$"):
        return image
    return None


class PreviewBridge(FolderNode):
    @classmethod
    def INPUT_TYPES(cls, folders: Folders | None = None):
        return {"required": {"images": ("IMAGE",), "image": ("STRING", {"default": ""})},
                "optional": {"block": ("BOOLEAN", {"default": False}),
                             "restore_mask": (["never", "always", "if_same_size"],)},
                "hidden": {"unique_id": "UNIQUE_ID"}}

    RETURN_TYPES = ("IMAGE", "MASK")
    FUNCTION = "doit"
    OUTPUT_NODE = True
    CATEGORY = "ImpactPack/Util"
    FILE_INPUTS = ("image",)
    FILE_REFERENCES = True  # the widget may hold a clipspace file reference ({"filename", "subfolder", ...})

    def _mask_path(self, image):
        name = _mask_file_name(image)
        if name is None:
            return None
        try:
            return self.folders.input_path(name)
        except (FileNotFoundError, ValueError):
            return None

    def check_inputs(self, image="", block=False):
        if image is not None and not isinstance(image, (str, dict)):
            raise ValueError(f"input 'image' must be a clipspace file name or reference, got {image!r}")
        if check_bool("block", block) and self._mask_path(image) is None:
            raise ValueError("block is 'if_empty_mask' and no painted mask file is in the input folder: ComfyUI "
                             "would stop the workflow here (paint the mask, or set block to 'never')")

    def doit(self, images, image="", block=False, restore_mask="never", unique_id=None):
        images = _image(images, "images")
        path = self._mask_path(image)
        if path is None:
            mask = torch.zeros((1, 64, 64), dtype=torch.float32)
        else:
            with Image.open(path) as im:
                im = ImageOps.exif_transpose(im)
                if "A" in im.getbands():
                    alpha = np.array(im.getchannel("A")).astype(np.float32) / 255.0
                    mask = (1.0 - torch.from_numpy(alpha))[None]
                else:
                    mask = torch.zeros((1, 64, 64), dtype=torch.float32)
            if mask.shape[-2:] != images.shape[1:3] and mask.shape[-2:] != (64, 64):
                mask = torch.nn.functional.interpolate(mask[None], size=tuple(images.shape[1:3]),
                                                       mode="bilinear")[0]
        if check_bool("block", block) and not bool(mask.any()):
            raise ValueError("block is 'if_empty_mask' and the mask is empty: ComfyUI would stop the workflow here")
        return {"ui": {"images": []}, "result": (images, mask)}


PREVIEW_METHODS = ("Latent2RGB-FLUX.1", "Latent2RGB-SDXL", "Latent2RGB-SD15", "Latent2RGB-SD3", "Latent2RGB-SD-X4",
                   "Latent2RGB-Playground-2.5", "Latent2RGB-SC-Prior", "Latent2RGB-SC-B", "TAEF1", "TAESDXL",
                   "TAESD15", "TAESD3")


def preview_channels(method: str) -> int:
    """The latent channels Impact expects for a preview method (16 for SD3, Stable Cascade prior and Flux)."""
    return 16 if "SD3" in method or "SC-Prior" in method or "FLUX.1" in method or method == "TAEF1" else 4


class PreviewBridgeLatent(PreviewBridge):
    @classmethod
    def INPUT_TYPES(cls, folders: Folders | None = None):
        return {"required": {"latent": ("LATENT",), "image": ("STRING", {"default": ""}),
                             "preview_method": (list(PREVIEW_METHODS),)},
                "optional": {"vae_opt": ("VAE",), "block": ("BOOLEAN", {"default": False}),
                             "restore_mask": (["never", "always", "if_same_size"],)},
                "hidden": {"unique_id": "UNIQUE_ID"}}

    RETURN_TYPES = ("LATENT", "MASK")

    def check_inputs(self, image="", block=False, preview_method=None):
        if image is not None and not isinstance(image, (str, dict)):
            raise ValueError(f"input 'image' must be a clipspace file name or reference, got {image!r}")
        check_bool("block", block)

    def doit(self, latent, image="", preview_method="Latent2RGB-FLUX.1", vae_opt=None, block=False,
             restore_mask="never", unique_id=None):
        check_latent(latent, "latent")
        samples = latent["samples"]
        method = check_choice("preview_method", preview_method, PREVIEW_METHODS)
        if vae_opt is None and samples.shape[1] != preview_channels(method):
            raise ValueError(f"preview_method {method!r} previews {preview_channels(method)}-channel latents; this "
                             f"latent has {samples.shape[1]} (Impact refuses it too: pick the method of the "
                             "latent's model, or connect vae_opt)")
        check_choice("restore_mask", restore_mask, ("never", "always", "if_same_size"))
        latent_mask = torch.ones((1, *samples.shape[2:]), dtype=torch.float32)
        path = self._mask_path(image)
        out = latent
        if path is not None:
            with Image.open(path) as im:
                im = ImageOps.exif_transpose(im)
                alpha = (np.array(im.getchannel("A")).astype(np.float32) / 255.0) if "A" in im.getbands() else None
            if alpha is None:
                mask, empty = latent_mask, True
                out = {k: v for k, v in latent.items() if k != "noise_mask"}
            else:
                mask = (1.0 - torch.from_numpy(alpha))[None]
                out, empty = {**latent, "noise_mask": mask}, bool((mask == 1).all())
        elif latent.get("noise_mask") is not None:
            nm = latent["noise_mask"]
            mask, empty = (nm.squeeze(0) if nm.ndim == 4 else nm), False
        else:
            mask, empty = latent_mask, True
        if check_bool("block", block) and empty:
            raise ValueError("block is 'if_empty_mask' and the mask is empty (white: nothing painted, no noise_mask): "
                             "ComfyUI would stop the workflow here (paint the mask, or set block to 'never')")
        return {"ui": {"images": []}, "result": (out, mask)}


class ImpactKSamplerBasicPipe:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"basic_pipe": ("BASIC_PIPE",), "seed": W.SEED, "steps": W.STEPS, "cfg": W.CFG,
                             "sampler_name": W.SAMPLER, "scheduler": W.SCHEDULER, "latent_image": ("LATENT",),
                             "denoise": W.DENOISE}}

    RETURN_TYPES = ("BASIC_PIPE", "LATENT", "VAE")
    FUNCTION = "sample"
    CATEGORY = "ImpactPack/sampling"

    def sample(self, basic_pipe, seed, steps, cfg, sampler_name, scheduler, latent_image, denoise=1.0, *,
               disable_pbar=None):
        model, _clip, vae, positive, negative = check_basic_pipe(basic_pipe)
        check_latent(latent_image, "latent_image")
        ks = KSamplerWrapper(model, seed, steps, cfg, sampler_name, scheduler, positive, negative, denoise)
        return (basic_pipe, ks.sample(latent_image, disable_pbar=disable_pbar), vae)


class ImpactKSamplerAdvancedBasicPipe:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "basic_pipe": ("BASIC_PIPE",), "add_noise": ("BOOLEAN", {"default": True}),
            "noise_seed": ("INT", {"default": 0, "min": 0, "max": SEED_MAX}), "steps": W.STEPS, "cfg": W.CFG,
            "sampler_name": W.SAMPLER, "scheduler": W.SCHEDULER, "latent_image": ("LATENT",),
            "start_at_step": ("INT", {"default": 0, "min": 0, "max": MAX_STEPS}),
            "end_at_step": ("INT", {"default": 10000, "min": 0, "max": MAX_STEPS}),
            "return_with_leftover_noise": ("BOOLEAN", {"default": False})}}

    RETURN_TYPES = ("BASIC_PIPE", "LATENT", "VAE")
    FUNCTION = "sample"
    CATEGORY = "ImpactPack/sampling"

    def sample(self, basic_pipe, add_noise, noise_seed, steps, cfg, sampler_name, scheduler, latent_image,
               start_at_step, end_at_step, return_with_leftover_noise, *, disable_pbar=None):
        model, _clip, vae, positive, negative = check_basic_pipe(basic_pipe)
        check_latent(latent_image, "latent_image")
        ks = KSamplerAdvancedWrapper(model, cfg, sampler_name, scheduler, positive, negative)
        out = ks.sample_advanced(check_bool("add_noise", add_noise), check_seed("noise_seed", noise_seed),
                                 check_int("steps", steps, 1, MAX_STEPS), latent_image,
                                 check_int("start_at_step", start_at_step, 0, MAX_STEPS),
                                 check_int("end_at_step", end_at_step, 0, MAX_STEPS),
                                 check_bool("return_with_leftover_noise", return_with_leftover_noise),
                                 disable_pbar=disable_pbar)
        return (basic_pipe, out, vae)


def _wildcard_table(folders: Folders) -> dict:
    return wc.load_wildcards(folders.search_dirs("wildcards"))


def populate(folders: Folders, wildcard_text, populated_text, mode, seed) -> str:
    """The text the node works on: wildcard_text expanded with the seed ("Populate"), else populated_text; then
    expanded once more as Impact's backend does (a no-op for text without wildcards)."""
    for name, v in (("wildcard_text", wildcard_text), ("populated_text", populated_text)):
        if not isinstance(v, str):
            raise TypeError(f"{name} must be a string, got {type(v).__name__}")
    seed = check_seed("seed", seed)
    table = _wildcard_table(folders)
    text = wc.expand(wildcard_text, seed, table) if check_bool("mode", mode) else populated_text
    return wc.expand(text, seed, table)


class ImpactWildcardProcessor(FolderNode):
    @classmethod
    def INPUT_TYPES(cls, folders: Folders | None = None):
        return {"required": {"wildcard_text": ("STRING", {"multiline": True}),
                             "populated_text": ("STRING", {"multiline": True}),
                             "mode": ("BOOLEAN", {"default": True, "label_on": "Populate", "label_off": "Fixed"}),
                             "seed": ("INT", {"default": 0, "min": 0, "max": SEED_MAX}),
                             "Select to add Wildcard": ("STRING", {"default": WILDCARD_PLACEHOLDER})}}

    RETURN_TYPES = ("STRING",)
    FUNCTION = "doit"
    CATEGORY = "ImpactPack/Prompt"

    def doit(self, wildcard_text="", populated_text="", mode=True, seed=0, **_select):
        return (populate(self.folders, wildcard_text, populated_text, mode, seed),)


def _lora_file(folders: Folders, name: str) -> str | None:
    """Impact's LoRA tag lookup: the name (".safetensors" added without a known extension) or the first file
    of the loras/ folders whose name ends with it."""
    if not name.lower().endswith(LORA_EXTENSIONS):
        name += ".safetensors"
    if folders.find_model("loras", name) is not None:
        return name
    return next((n for n in folders.list_models("loras", LORA_EXTENSIONS) if n.endswith(name)), None)


class ImpactWildcardEncode(FolderNode):
    @classmethod
    def INPUT_TYPES(cls, folders: Folders | None = None):
        return {"required": {"model": ("MODEL",), "clip": ("CLIP",),
                             "wildcard_text": ("STRING", {"multiline": True}),
                             "populated_text": ("STRING", {"multiline": True}),
                             "mode": ("BOOLEAN", {"default": True, "label_on": "Populate", "label_off": "Fixed"}),
                             "Select to add LoRA": ("STRING", {"default": LORA_PLACEHOLDER}),
                             "Select to add Wildcard": ("STRING", {"default": WILDCARD_PLACEHOLDER}),
                             "seed": ("INT", {"default": 0, "min": 0, "max": SEED_MAX})}}

    RETURN_TYPES = ("MODEL", "CLIP", "CONDITIONING", "STRING")
    RETURN_NAMES = ("model", "clip", "conditioning", "populated_text")
    FUNCTION = "doit"
    CATEGORY = "ImpactPack/Prompt"

    def doit(self, model, clip, wildcard_text="", populated_text="", mode=True, seed=0, **_select):
        text = populate(self.folders, wildcard_text, populated_text, mode, seed)
        missing = []
        for name, sm, sc in wc.lora_tags(text):
            found = _lora_file(self.folders, name)
            if found is None:
                missing.append(name)
                continue
            model, clip = LoraLoader(self.folders).load_lora(model, clip, found, sm, sc)
        if missing:
            raise FileNotFoundError(f"LoRA tag(s) {', '.join(repr(m) for m in missing)} in the prompt: no such file "
                                    f"in loras/ (searched: {', '.join(map(str, self.folders.search_dirs('loras')))})")
        parts = [p.strip() for p in wc.without_lora_tags(text).split("BREAK")]
        parts = [p for p in parts if p] or [""]
        cond = None
        for part in parts:
            cur = CLIPTextEncode().encode(clip, part)[0]
            cond = cur if cond is None else [[torch.cat([t, cur[0][0].to(t.dtype)], dim=1), dict(o)]
                                             for t, o in cond]
        return (model, clip, cond, text)


class ImpactInt:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"default": 0, "min": 0, "max": 2**63 - 1, "step": 1})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "doit"
    CATEGORY = "ImpactPack/Logic"

    def doit(self, value):
        return (check_int("value", value, 0, 2**63 - 1),)


class ImpactFloat:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("FLOAT", {"default": 1.0, "min": -3.402823466e38, "max": 3.402823466e38})}}

    RETURN_TYPES = ("FLOAT",)
    FUNCTION = "doit"
    CATEGORY = "ImpactPack/Logic"

    def doit(self, value):
        return (float(value),)


class ImpactBoolean:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("BOOLEAN", {"default": False})}}

    RETURN_TYPES = ("BOOLEAN",)
    FUNCTION = "doit"
    CATEGORY = "ImpactPack/Logic"

    def doit(self, value):
        return (check_bool("value", value),)


__all__ = ["PREVIEW_METHODS", "ImpactBoolean", "ImpactFloat", "ImpactInt", "ImpactKSamplerAdvancedBasicPipe",
           "ImpactKSamplerBasicPipe", "ImpactWildcardEncode", "ImpactWildcardProcessor", "PreviewBridge",
           "PreviewBridgeLatent", "populate"]
