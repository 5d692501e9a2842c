"""The node types a workflow may use: ComfyUI name -> node class. Adding a node is one class and one line here
(or in `NODE_CLASS_MAPPINGS`, whose nodes are all included). ComfyUI's own nodes (KSampler, CheckpointLoaderSimple,
...) stay out of `NODE_CLASS_MAPPINGS`, which is what ComfyUI would load from us as a custom-node pack.

A node class follows ComfyUI's convention: `INPUT_TYPES()` (required / optional / hidden inputs, in widget
order), `RETURN_TYPES`, `FUNCTION`, optional `OUTPUT_NODE`. Classes that read or write files derive from
`core.FolderNode` (they get the run's folders), may take `folders` in INPUT_TYPES (file-name choices)
and may define `check_inputs(**constant inputs)`, which the runner calls before anything runs. `INPUT_FILES`
names the FILE_INPUTS that are files of the input folder (LoadImage's image), as opposed to models.
"""

from __future__ import annotations

import inspect

from . import NODE_CLASS_MAPPINGS as IMPACT_NODES
from . import control, core, image, lora_files, mask, pipe, primitive

NODES: dict[str, type] = {
    # loaders and prompts
    "CheckpointLoaderSimple": core.CheckpointLoaderSimple,
    "CLIPTextEncode": core.CLIPTextEncode,
    "CLIPTextEncodeSDXL": core.CLIPTextEncodeSDXL,
    "CLIPTextEncodeSDXLRefiner": core.CLIPTextEncodeSDXLRefiner,
    "CLIPSetLastLayer": core.CLIPSetLastLayer,
    # sampling
    "KSampler": core.KSampler,
    "KSamplerAdvanced": core.KSamplerAdvanced,
    # ControlNets and inpainting
    "ControlNetLoader": control.ControlNetLoader,
    "ControlNetApplyAdvanced": control.ControlNetApplyAdvanced,
    "ControlNetApply": control.ControlNetApply,
    "InpaintModelConditioning": control.InpaintModelConditioning,
    # latents
    "EmptyLatentImage": core.EmptyLatentImage,
    "SetLatentNoiseMask": core.SetLatentNoiseMask,
    "LatentCompositeMasked": core.LatentCompositeMasked,
    "VAEEncode": core.VAEEncode,
    "VAEEncodeForInpaint": core.VAEEncodeForInpaint,
    "VAEDecode": core.VAEDecode,
    "SaveLatent": core.SaveLatent,
    "LoadLatent": core.LoadLatent,
    # images and masks
    "LoadImage": image.LoadImage,
    "LoadImageMask": image.LoadImageMask,
    "ImageScale": image.ImageScale,
    "SaveImage": image.SaveImage,
    "PreviewImage": image.PreviewImage,
    "ImageToMask": mask.ImageToMask,
    "MaskToImage": mask.MaskToImage,
    "SolidMask": mask.SolidMask,
    "InvertMask": mask.InvertMask,
    "GrowMask": mask.GrowMask,
    "FeatherMask": mask.FeatherMask,
    # constants
    "PrimitiveInt": primitive.PrimitiveInt,
    "PrimitiveFloat": primitive.PrimitiveFloat,
    "PrimitiveString": primitive.PrimitiveString,
    "PrimitiveStringMultiline": primitive.PrimitiveStringMultiline,
    "PrimitiveBoolean": primitive.PrimitiveBoolean,
    # Impact Pack's pipes; then nodes/__init__.py's NODE_CLASS_MAPPINGS: the Impact sampler family, ComfyUI's
    # conditioning nodes (ConditioningCombine, ...SetMask, ...SetArea, ...SetTimestepRange, ...) and LoRA loaders
    "ToBasicPipe": pipe.ToBasicPipe,
    "FromBasicPipe": pipe.FromBasicPipe,
    "FromBasicPipe_v2": pipe.FromBasicPipe_v2,
    "EditBasicPipe": pipe.EditBasicPipe,
    **IMPACT_NODES,
    # LoRA loaders that look lora_name up in the run's loras/ folders
    "LoraLoader": lora_files.LoraLoader,
    "LoraLoaderModelOnly": lora_files.LoraLoaderModelOnly,
}


def node_class(class_type: str) -> type | None:
    return NODES.get(class_type)


def input_types(cls: type, folders=None) -> dict:
    """cls.INPUT_TYPES(), given the run's folders when it takes them (file-name choices)."""
    fn = cls.INPUT_TYPES
    try:
        takes = len(inspect.signature(fn).parameters) > 0
    except (TypeError, ValueError):
        takes = False
    return fn(folders) if takes else fn()


def node_list_markdown() -> str:
    """The supported node list for the README: one line per node type, by category."""
    by_cat: dict[str, list[str]] = {}
    for name, cls in NODES.items():
        by_cat.setdefault(getattr(cls, "CATEGORY", "other"), []).append(name)
    lines = []
    for cat in sorted(by_cat):
        lines.append(f"- {cat}: " + ", ".join(f"`{n}`" for n in sorted(by_cat[cat])))
    return "\n".join(lines)


__all__ = ["NODES", "input_types", "node_class", "node_list_markdown"]
