"""`/object_info`: the node registry in ComfyUI's schema, so clients and ComfyUI's editor know our nodes.

Per node type: `input` (INPUT_TYPES with the server's file choices: checkpoints, LoRAs, input images),
`input_order`, `is_input_list`, `output`, `output_is_list`, `output_name`, `name`, `display_name`,
`description`, `python_module`, `category`, `output_node`, plus ComfyUI 0.30's `has_intermediate_output`,
`search_aliases` and the optional `output_tooltips` / `deprecated` / `experimental`.
"""

from __future__ import annotations

import json

from ..nodes import NODE_DISPLAY_NAME_MAPPINGS
from ..nodes.registry import NODES, input_types

# ComfyUI's titles of its core nodes (what a ComfyUI user searches the node library for)
CORE_DISPLAY_NAMES = {
    "CheckpointLoaderSimple": "Load Checkpoint", "CLIPTextEncode": "CLIP Text Encode (Prompt)",
    "CLIPSetLastLayer": "CLIP Set Last Layer", "KSamplerAdvanced": "KSampler (Advanced)",
    "ControlNetLoader": "Load ControlNet Model", "ControlNetApplyAdvanced": "Apply ControlNet",
    "ControlNetApply": "Apply ControlNet (OLD)", "EmptyLatentImage": "Empty Latent Image",
    "SetLatentNoiseMask": "Set Latent Noise Mask", "VAEEncode": "VAE Encode",
    "VAEEncodeForInpaint": "VAE Encode (for Inpainting)", "VAEDecode": "VAE Decode", "LoadImage": "Load Image",
    "LoadImageMask": "Load Image (as Mask)", "ImageScale": "Upscale Image", "SaveImage": "Save Image",
    "PreviewImage": "Preview Image", "ImageToMask": "Convert Image to Mask", "MaskToImage": "Convert Mask to Image",
    "LoraLoaderModelOnly": "LoraLoaderModelOnly",
}


def node_info(name: str, folders=None) -> dict:
    cls = NODES[name]
    inputs = input_types(cls, folders)
    returns = list(getattr(cls, "RETURN_TYPES", ()))
    info = {
        "input": inputs,
        "input_order": {section: list(values.keys()) for section, values in inputs.items()
                        if isinstance(values, dict)},
        "is_input_list": bool(getattr(cls, "INPUT_IS_LIST", False)),
        "output": returns,
        "output_is_list": list(getattr(cls, "OUTPUT_IS_LIST", [False] * len(returns))),
        "output_name": list(getattr(cls, "RETURN_NAMES", returns)),
        "name": name,
        "display_name": NODE_DISPLAY_NAME_MAPPINGS.get(name) or CORE_DISPLAY_NAMES.get(name, name),
        "description": getattr(cls, "DESCRIPTION", "") or "",
        "python_module": getattr(cls, "RELATIVE_PYTHON_MODULE", "nodes"),
        "category": getattr(cls, "CATEGORY", "sd"),
        "output_node": bool(getattr(cls, "OUTPUT_NODE", False)),
        "has_intermediate_output": False,
        "search_aliases": list(getattr(cls, "SEARCH_ALIASES", [])),
    }
    for attr, key in (("OUTPUT_TOOLTIPS", "output_tooltips"),):
        if hasattr(cls, attr):
            info[key] = list(getattr(cls, attr))
    for attr, key in (("DEPRECATED", "deprecated"), ("EXPERIMENTAL", "experimental")):
        if getattr(cls, attr, False):
            info[key] = True
    return json.loads(json.dumps(info, default=str))  # tuples -> lists, anything odd -> text


def object_info(folders=None) -> dict:
    return {name: node_info(name, folders) for name in NODES}


__all__ = ["CORE_DISPLAY_NAMES", "node_info", "object_info"]
