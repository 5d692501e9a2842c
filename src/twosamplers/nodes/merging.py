"""ComfyUI's model merging nodes (ModelMergeSimple, ModelMergeBlocks, ModelMergeAdd, ModelMergeSubtract,
ModelMergeSD1 / SD2 / SDXL, CLIPMergeSimple / Add / Subtract) and CheckpointSave, on `models.merge` and
`models.ldm_export`. Inputs, defaults and ranges are ComfyUI 0.30's; the merge math is described in
models/merge.py."""

from __future__ import annotations

import json

from .._checks import check_float
from ..models.merge import block_ratio, merge
from .core import FolderNode, _check_clip, _check_model
from .folders import PendingWrite, split_prefix

CATEGORY = "model/merging"
_RATIO = ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01})
_MULTIPLIER = ("FLOAT", {"default": 1.0, "min": -10.0, "max": 10.0, "step": 0.01})


def _ratio(name: str, value) -> float:
    return check_float(name, value, 0.0, 1.0)


def _simple(ratio: float):
    return lambda _name: (1.0 - ratio, ratio)


class ModelMergeSimple:
    """ratio * model1 + (1 - ratio) * model2, weight by weight."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model1": ("MODEL",), "model2": ("MODEL",), "ratio": _RATIO}}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "merge"
    CATEGORY = CATEGORY

    def merge(self, model1, model2, ratio=1.0):
        _check_model(model1, "model1")
        _check_model(model2, "model2")
        return (merge(model1, model2, _simple(_ratio("ratio", ratio)), name="ModelMergeSimple"),)


class ModelMergeBlocks:
    """ModelMergeSimple with a ratio per UNet block: the longest input name that starts a weight's LDM name
    decides (input_blocks.*, middle_block.*, output_blocks.* / out.*); other weights take the first ratio."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model1": ("MODEL",), "model2": ("MODEL",), "input": _RATIO, "middle": _RATIO,
                             "out": _RATIO}}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "merge"
    CATEGORY = CATEGORY

    @classmethod
    def block_names(cls) -> list[str]:
        return [k for k in cls.INPUT_TYPES()["required"] if k not in ("model1", "model2")]

    def merge(self, model1, model2, **ratios):
        _check_model(model1, "model1")
        _check_model(model2, "model2")
        names = self.block_names()
        unknown = sorted(set(ratios) - set(names))
        if unknown:
            raise TypeError(f"{type(self).__name__}: unknown inputs {unknown}")
        # in the node's input order (the first is the default), each defaulting to 1.0 as the widgets do
        ordered = {k: _ratio(k, ratios.get(k, 1.0)) for k in names}
        pick = block_ratio(ordered)
        return (merge(model1, model2, lambda name: (1.0 - pick(name), pick(name)), name=type(self).__name__),)


class ModelMergeSD1(ModelMergeBlocks):
    CATEGORY = "model/merging/model specific"

    @classmethod
    def INPUT_TYPES(cls):
        args = {"model1": ("MODEL",), "model2": ("MODEL",), "time_embed.": _RATIO, "label_emb.": _RATIO}
        args.update({f"input_blocks.{i}.": _RATIO for i in range(12)})
        args.update({f"middle_block.{i}.": _RATIO for i in range(3)})
        args.update({f"output_blocks.{i}.": _RATIO for i in range(12)})
        args["out."] = _RATIO
        return {"required": args}


class ModelMergeSD2(ModelMergeSD1):
    pass


class ModelMergeSDXL(ModelMergeBlocks):
    CATEGORY = "model/merging/model specific"

    @classmethod
    def INPUT_TYPES(cls):
        args = {"model1": ("MODEL",), "model2": ("MODEL",), "time_embed.": _RATIO, "label_emb.": _RATIO}
        args.update({f"input_blocks.{i}": _RATIO for i in range(9)})
        args.update({f"middle_block.{i}": _RATIO for i in range(3)})
        args.update({f"output_blocks.{i}": _RATIO for i in range(9)})
        args["out."] = _RATIO
        return {"required": args}


class ModelMergeAdd:
    """model1 + model2."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model1": ("MODEL",), "model2": ("MODEL",)}}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "merge"
    CATEGORY = CATEGORY

    def merge(self, model1, model2):
        _check_model(model1, "model1")
        _check_model(model2, "model2")
        return (merge(model1, model2, lambda _n: (1.0, 1.0), name="ModelMergeAdd"),)


class ModelMergeSubtract:
    """multiplier * model1 - multiplier * model2 (with 1: the difference model1 - model2)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model1": ("MODEL",), "model2": ("MODEL",), "multiplier": _MULTIPLIER}}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "merge"
    CATEGORY = CATEGORY

    def merge(self, model1, model2, multiplier=1.0):
        _check_model(model1, "model1")
        _check_model(model2, "model2")
        m = check_float("multiplier", multiplier, -10.0, 10.0)
        return (merge(model1, model2, lambda _n: (-m, m), name="ModelMergeSubtract"),)


class CLIPMergeSimple:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"clip1": ("CLIP",), "clip2": ("CLIP",), "ratio": _RATIO}}

    RETURN_TYPES = ("CLIP",)
    FUNCTION = "merge"
    CATEGORY = CATEGORY

    def merge(self, clip1, clip2, ratio=1.0):
        _check_clip(clip1, "clip1")
        _check_clip(clip2, "clip2")
        return (merge(clip1, clip2, _simple(_ratio("ratio", ratio)), part="clip", name="CLIPMergeSimple"),)


class CLIPMergeAdd:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"clip1": ("CLIP",), "clip2": ("CLIP",)}}

    RETURN_TYPES = ("CLIP",)
    FUNCTION = "merge"
    CATEGORY = CATEGORY

    def merge(self, clip1, clip2):
        _check_clip(clip1, "clip1")
        _check_clip(clip2, "clip2")
        return (merge(clip1, clip2, lambda _n: (1.0, 1.0), part="clip", name="CLIPMergeAdd"),)


class CLIPMergeSubtract:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"clip1": ("CLIP",), "clip2": ("CLIP",), "multiplier": _MULTIPLIER}}

    RETURN_TYPES = ("CLIP",)
    FUNCTION = "merge"
    CATEGORY = CATEGORY

    def merge(self, clip1, clip2, multiplier=1.0):
        _check_clip(clip1, "clip1")
        _check_clip(clip2, "clip2")
        m = check_float("multiplier", multiplier, -10.0, 10.0)
        return (merge(clip1, clip2, lambda _n: (-m, m), part="clip", name="CLIPMergeSubtract"),)


class CheckpointSave(FolderNode):
    """Writes MODEL + CLIP + VAE as one `.safetensors` checkpoint in the original (LDM) layout under the output
    folder (`filename_prefix` "checkpoints/ComfyUI" -> output/checkpoints/ComfyUI_00001_.safetensors), with
    their patches (merges, LoRAs) applied, the prompt and workflow as metadata. Written atomically, and by the
    workflow runner only once every node has run."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "clip": ("CLIP",), "vae": ("VAE",),
                             "filename_prefix": ("STRING", {"default": "checkpoints/ComfyUI"})},
                "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO", "unique_id": "UNIQUE_ID"}}

    RETURN_TYPES = ()
    FUNCTION = "save"
    OUTPUT_NODE = True
    CATEGORY = CATEGORY

    def save(self, model, clip, vae, filename_prefix="checkpoints/ComfyUI", prompt=None, extra_pnginfo=None,
             unique_id=None):
        from safetensors.torch import save_file

        from ..models.ldm_export import ExportError, check_exportable, checkpoint_state

        _check_model(model)
        _check_clip(clip)
        vae_module = getattr(getattr(vae, "model", vae), "vae", None)
        if vae_module is None:
            raise TypeError(f"vae must be a VAE of a Stable Diffusion checkpoint or VAE file, got {type(vae).__name__}")
        sub, name = split_prefix(filename_prefix)
        try:
            check_exportable(model, clip)  # families and names checked before anything is written
        except ExportError as e:
            raise ValueError(f"CheckpointSave: {e}") from None
        meta = {}
        if prompt is not None:
            meta["prompt"] = json.dumps(prompt)
        for k, v in (extra_pnginfo or {}).items():
            meta[k] = json.dumps(v)

        def write(tmp: str) -> None:
            tensors, spec = checkpoint_state(model, clip, vae_module)
            save_file(tensors, tmp, metadata={**spec, **meta})

        item = self.folders.write(PendingWrite(sub, name, "safetensors", write, unique_id, "checkpoint"))
        return {"ui": {"checkpoints": [item]}, "result": ()}


__all__ = ["CLIPMergeAdd", "CLIPMergeSimple", "CLIPMergeSubtract", "CheckpointSave", "ModelMergeAdd",
           "ModelMergeBlocks", "ModelMergeSD1", "ModelMergeSD2", "ModelMergeSDXL", "ModelMergeSimple",
           "ModelMergeSubtract"]
