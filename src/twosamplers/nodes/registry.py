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
from . import (
    control,
    core,
    custom_sampling,
    edit_conditioning,
    flow,
    gligen_nodes,
    image,
    image_edit,
    image_filters,
    image_prompts,
    impact_extra,
    impact_lists,
    impact_logic,
    impact_switch,
    impact_util,
    latent_edit,
    lora_files,
    mask,
    merging,
    model_files,
    model_patches,
    pipe,
    primitive,
    regional_advanced,
    style_model_nodes,
    text,
    upscale_hooks,
    upscale_model,
    upscalers,
    vae_nodes,
)

NODES: dict[str, type] = {
    # loaders and prompts
    "CheckpointLoaderSimple": core.CheckpointLoaderSimple,
    "CLIPTextEncode": core.CLIPTextEncode,
    "CLIPTextEncodeSDXL": core.CLIPTextEncodeSDXL,
    "CLIPTextEncodeSDXLRefiner": core.CLIPTextEncodeSDXLRefiner,
    "CLIPSetLastLayer": core.CLIPSetLastLayer,
    # Flux.1 and SD3/SD3.5: separate files, model sampling, guidance, latents
    "UNETLoader": flow.UNETLoader,
    "DualCLIPLoader": flow.DualCLIPLoader,
    "TripleCLIPLoader": flow.TripleCLIPLoader,
    "CLIPLoader": flow.CLIPLoader,
    "ModelSamplingFlux": flow.ModelSamplingFlux,
    "ModelSamplingSD3": flow.ModelSamplingSD3,
    "FluxGuidance": flow.FluxGuidance,
    "FluxDisableGuidance": flow.FluxDisableGuidance,
    "CLIPTextEncodeFlux": flow.CLIPTextEncodeFlux,
    "CLIPTextEncodeSD3": flow.CLIPTextEncodeSD3,
    "EmptySD3LatentImage": flow.EmptySD3LatentImage,
    # sampling
    "KSampler": core.KSampler,
    "KSamplerAdvanced": core.KSamplerAdvanced,
    # ControlNets and inpainting
    "ControlNetLoader": control.ControlNetLoader,
    "ControlNetApplyAdvanced": control.ControlNetApplyAdvanced,
    "ControlNetApply": control.ControlNetApply,
    "ControlNetApplySD3": control.ControlNetApplySD3,
    "SetUnionControlNetType": control.SetUnionControlNetType,
    "ControlNetInpaintingAliMamaApply": control.ControlNetInpaintingAliMamaApply,
    "InpaintModelConditioning": control.InpaintModelConditioning,
    "InstructPixToPixConditioning": edit_conditioning.InstructPixToPixConditioning,
    "StyleModelLoader": style_model_nodes.StyleModelLoader,
    "StyleModelApply": style_model_nodes.StyleModelApply,
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
    **text.NODE_CLASSES,
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
    # VAE files, tiled VAE, checkpoints with a config
    "VAELoader": vae_nodes.VAELoader,
    "VAEDecodeTiled": vae_nodes.VAEDecodeTiled,
    "VAEEncodeTiled": vae_nodes.VAEEncodeTiled,
    "CheckpointLoader": vae_nodes.CheckpointLoader,
    # latent editing
    "LatentUpscale": latent_edit.LatentUpscale,
    "LatentUpscaleBy": latent_edit.LatentUpscaleBy,
    "LatentComposite": latent_edit.LatentComposite,
    "LatentBlend": latent_edit.LatentBlend,
    "LatentCrop": latent_edit.LatentCrop,
    "LatentFromBatch": latent_edit.LatentFromBatch,
    "RepeatLatentBatch": latent_edit.RepeatLatentBatch,
    # image and mask editing
    "ImageScaleBy": image_edit.ImageScaleBy,
    "ImageInvert": image_edit.ImageInvert,
    "ImageBlend": image_edit.ImageBlend,
    "ImageBatch": image_edit.ImageBatch,
    "ImageCrop": image_edit.ImageCrop,
    "ImagePadForOutpaint": image_edit.ImagePadForOutpaint,
    "ImageCompositeMasked": image_edit.ImageCompositeMasked,
    "Canny": image_edit.Canny,
    "MaskComposite": image_edit.MaskComposite,
    "CropMask": image_edit.CropMask,
    "ImageBlur": image_filters.ImageBlur,
    "ImageSharpen": image_filters.ImageSharpen,
    "ImageScaleToTotalPixels": image_filters.ImageScaleToTotalPixels,
    # upscale networks (spandrel)
    "UpscaleModelLoader": upscale_model.UpscaleModelLoader,
    "ImageUpscaleWithModel": upscale_model.ImageUpscaleWithModel,
    # custom sampling
    "SamplerCustom": custom_sampling.SamplerCustom,
    "SamplerCustomAdvanced": custom_sampling.SamplerCustomAdvanced,
    "KSamplerSelect": custom_sampling.KSamplerSelect,
    "BasicScheduler": custom_sampling.BasicScheduler,
    "KarrasScheduler": custom_sampling.KarrasScheduler,
    "ExponentialScheduler": custom_sampling.ExponentialScheduler,
    "SDTurboScheduler": custom_sampling.SDTurboScheduler,
    "SplitSigmas": custom_sampling.SplitSigmas,
    "SplitSigmasDenoise": custom_sampling.SplitSigmasDenoise,
    "FlipSigmas": custom_sampling.FlipSigmas,
    "RandomNoise": custom_sampling.RandomNoise,
    "DisableNoise": custom_sampling.DisableNoise,
    "CFGGuider": custom_sampling.CFGGuider,
    "BasicGuider": custom_sampling.BasicGuider,
    "DualCFGGuider": custom_sampling.DualCFGGuider,
    "ConditioningZeroOut": custom_sampling.ConditioningZeroOut,
    # Impact Pack around the sampler family
    "PreviewBridge": impact_extra.PreviewBridge,
    "PreviewBridgeLatent": impact_extra.PreviewBridgeLatent,
    "ImpactKSamplerBasicPipe": impact_extra.ImpactKSamplerBasicPipe,
    "ImpactKSamplerAdvancedBasicPipe": impact_extra.ImpactKSamplerAdvancedBasicPipe,
    "ImpactWildcardProcessor": impact_extra.ImpactWildcardProcessor,
    "ImpactWildcardEncode": impact_extra.ImpactWildcardEncode,
    "ImpactInt": impact_extra.ImpactInt,
    "ImpactFloat": impact_extra.ImpactFloat,
    "ImpactBoolean": impact_extra.ImpactBoolean,
    "ImpactSwitch": impact_switch.ImpactSwitch,
    "ImpactInversedSwitch": impact_switch.ImpactInversedSwitch,
    **impact_logic.NODE_CLASSES,
    **impact_util.NODE_CLASSES,
    **impact_lists.NODE_CLASSES,
    "RegionalSamplerAdvanced": regional_advanced.RegionalSamplerAdvanced,
    # Impact Pack's iterative upscalers and their PK_HOOK schedules
    **upscalers.NODE_CLASSES,
    **upscale_hooks.NODE_CLASSES,
    # model sampling patches
    "ModelSamplingDiscrete": model_patches.ModelSamplingDiscrete,
    "ModelSamplingContinuousEDM": model_patches.ModelSamplingContinuousEDM,
    "RescaleCFG": model_patches.RescaleCFG,
    "DifferentialDiffusion": model_patches.DifferentialDiffusion,
    "FreeU": model_patches.FreeU,
    "FreeU_V2": model_patches.FreeU_V2,
    # model merging and saving
    "ModelMergeSimple": merging.ModelMergeSimple,
    "ModelMergeBlocks": merging.ModelMergeBlocks,
    "ModelMergeAdd": merging.ModelMergeAdd,
    "ModelMergeSubtract": merging.ModelMergeSubtract,
    "ModelMergeSD1": merging.ModelMergeSD1,
    "ModelMergeSD2": merging.ModelMergeSD2,
    "ModelMergeSDXL": merging.ModelMergeSDXL,
    "CLIPMergeSimple": merging.CLIPMergeSimple,
    "CLIPMergeAdd": merging.CLIPMergeAdd,
    "CLIPMergeSubtract": merging.CLIPMergeSubtract,
    "CheckpointSave": merging.CheckpointSave,
    # weights that patch a checkpoint
    "HypernetworkLoader": model_files.HypernetworkLoader,
    "DiffControlNetLoader": model_files.DiffControlNetLoader,
    # image prompts (unCLIP, Revision)
    "CLIPVisionLoader": image_prompts.CLIPVisionLoader,
    "CLIPVisionEncode": image_prompts.CLIPVisionEncode,
    "unCLIPConditioning": image_prompts.unCLIPConditioning,
    "unCLIPCheckpointLoader": image_prompts.unCLIPCheckpointLoader,
    # GLIGEN text boxes
    "GLIGENLoader": gligen_nodes.GLIGENLoader,
    "GLIGENTextBoxApply": gligen_nodes.GLIGENTextBoxApply,
}

# Names older ComfyUI versions registered (and workflows saved then still carry) -> today's name.
ALIASES: dict[str, str] = {
    "ConditioningAverage ": "ConditioningAverage",  # registered with a trailing space until 2024
}


# Node families `twosamplers run` refuses by design: each needs a model family or a node pack this project does not
# run. (family, why, exact type names, pattern for the rest of the family). `scope_note(type)` names the family in
# refusals; `twosamplers run --list-nodes` and the README list them.
OUT_OF_SCOPE: list[tuple[str, str, tuple[str, ...], str]] = [
    ("detection and segmentation", "SAM, Ultralytics/YOLO, MMDet and ONNX detectors and Impact Pack's SEGS "
     "detailers need detector and segmentation models", (
         "SAMLoader", "UltralyticsDetectorProvider", "MMDetLoader", "ONNXDetectorProvider", "FaceDetailer",
         "FaceDetailerPipe", "MaskToSEGS", "MasksToMaskList", "Segs & Mask ForEach", "BasicPipeToDetailerPipe",
         "BasicPipeToDetailerPipeSDXL", "DetailerPipeToBasicPipe", "EditDetailerPipe", "EditDetailerPipeSDXL"),
     r"(SAM|SEGS|Segs|Detailer|Detector|BBOX|Bbox|Segm)"),
    ("image adapters", "IPAdapter, InstantID, PuLID and PhotoMaker need image encoders and adapter weights of "
     "another kind (T2I-Adapter style models run; Flux Redux needs a SigLIP vision model, not loaded here)", (
         "PhotoMakerLoader", "PhotoMakerEncode", "InstantIDModelLoader"),
     r"^(IPAdapter|InstantID|PuLID)"),
    ("preprocessors and estimators", "ControlNet preprocessors (comfyui_controlnet_aux), depth, pose and line "
     "estimators need their own networks", ("MiDaS-DepthMapPreprocessor", "DWPreprocessor", "AIO_Preprocessor"),
     r"(Preprocessor|MiDaS|Zoe|DepthAnything|OpenPose|DWPose)"),
    ("other model patches", "Fooocus inpaint heads, Stable Cascade / AuraFlow sampling, attention-guidance patches "
     "(PAG, SAG) and similar model surgery", ("ModelSamplingStableCascade",),
     r"^(Fooocus|INPAINT_|ModelSampling|PerturbedAttention|SelfAttentionGuidance)"),
    ("Flux Kontext edit models", "Flux.1 Kontext's reference latents and image scaling need the Kontext model "
     "(InstructPix2Pix / CosXL-edit checkpoints and DualCFGGuider run)", ("ReferenceLatent", "FluxKontextImageScale"),
     r"^FluxKontext"),
    ("control LoRAs and other ControlNet families", "Control LoRAs (Stability's SDXL Control-LoRAs, BFL's FLUX.1 "
     "Canny / Depth dev LoRAs) and the ControlNets of model families not run here (Qwen-Image, Z-Image); "
     "ControlNets for SD1.x/2.x/SDXL, Flux.1 (XLabs, Mistoline, InstantX / Union, Alimama inpainting) and "
     "SD3/SD3.5 run", ("QwenImageDiffsynthControlnet", "ZImageFunControlnet"),
     r"^(QwenImage|ZImage)\w*Control[Nn]et"),
    ("UI bridges and queue loops", "Impact Pack's sender / receiver nodes and queue-loop controls pass data "
     "between queue runs or through the browser, which a headless run does not have", (
         "ImpactConditionalStopIteration", "ImpactQueueTrigger", "ImpactQueueTriggerCountdown",
         "ImpactSetWidgetValue", "ImpactNodeSetMuteState", "ImpactRemoteBoolean", "ImpactRemoteInt"),
     r"(Sender|Receiver)$"),
    ("regular-expression text nodes", "RegexMatch / RegexExtract / RegexReplace run a pattern the workflow "
     "brings, which can backtrack for hours; a run must never hang (the other text nodes run)",
     ("RegexMatch", "RegexExtract", "RegexReplace"), r"^Regex"),
    ("parts that need another node pack", "Impact Pack's tiled upscaler (PixelTiledKSampleUpscalerProvider[Pipe], "
     "TiledKSamplerProvider) runs BlenderNeko's ComfyUI_TiledKSampler, its noise-injection and unsampler hooks run "
     "BlenderNeko's ComfyUI Noise; neither pack is emulated (the untiled upscalers and the cfg / denoise / steps "
     "hooks run)", ("PixelTiledKSampleUpscalerProvider", "PixelTiledKSampleUpscalerProviderPipe",
                    "TiledKSamplerProvider", "NoiseInjectionHookProvider", "UnsamplerHookProvider"),
     r"^PixelTiledKSample"),
    ("workflow components", "ltdrdata's ComfyUI-Workflow-Component nodes ('## name [hash]') need that extension's "
     "component files", (), r"^## "),
    ("video and other model families", "video models (SVD, AnimateDiff, Wan, LTXV, Hunyuan), Stable Cascade, "
     "audio and 3D", ("SVD_img2vid_Conditioning", "ImageOnlyCheckpointLoader", "VideoLinearCFGGuidance"),
     r"(AnimateDiff|ADE_|Video|SVD|Wan|LTXV|Hunyuan|Mochi|Cosmos|Audio|3D|StableCascade)"),
]
# Node types other parts of the project are adding now (refused until they land).
IN_PROGRESS = {
    "CLIPTextEncodeSDXL": "SDXL text encoding (issue 22)", "CLIPTextEncodeSDXLRefiner": "SDXL text encoding (issue 22)",
    "UNETLoader": "Flux / SD3 loaders (issue 26)", "DualCLIPLoader": "Flux / SD3 loaders (issue 26)",
    "CLIPLoader": "Flux / SD3 loaders (issue 26)", "TripleCLIPLoader": "Flux / SD3 loaders (issue 26)",
    "ModelSamplingFlux": "Flux / SD3 loaders (issue 26)", "FluxGuidance": "Flux / SD3 loaders (issue 26)",
    "EmptySD3LatentImage": "Flux / SD3 loaders (issue 26)", "ModelSamplingSD3": "Flux / SD3 loaders (issue 26)",
}
IN_PROGRESS = {name: why for name, why in IN_PROGRESS.items() if name not in NODES}


def _names_file(name: str) -> frozenset[str]:
    from importlib.resources import files

    text = files("twosamplers").joinpath("data", name).read_text(encoding="utf-8")
    return frozenset(ln for ln in text.splitlines() if ln and not ln.startswith("#"))


_KNOWN: dict[str, frozenset[str]] = {}


def known_names(which: str) -> frozenset[str]:
    """ComfyUI 0.30's own node type names ("core") or Impact Pack V7.10.6's ("impact"), from data/."""
    if which not in _KNOWN:
        _KNOWN[which] = _names_file({"core": "comfy_core_nodes.txt", "impact": "impact_nodes.txt"}[which])
    return _KNOWN[which]


def scope_note(class_type: str) -> str:
    """Why an unsupported node type is refused: its out-of-scope family, work in progress, a ComfyUI core or Impact
    Pack node not run yet, or another node pack (out of scope)."""
    import re

    if class_type in IN_PROGRESS:
        return f"not yet: {IN_PROGRESS[class_type]}"
    for family, _why, names, pattern in OUT_OF_SCOPE:
        if class_type in names or re.search(pattern, class_type):
            return f"out of scope: {family}"
    if class_type in known_names("core"):
        return "a ComfyUI 0.30 core node not supported yet"
    if class_type in known_names("impact"):
        return "an Impact Pack node outside the two-sampler family, not emulated yet"
    return "out of scope: a custom node of another node pack (not in ComfyUI 0.30 or Impact Pack)"


def out_of_scope_markdown() -> str:
    """The refused families for the README and --list-nodes."""
    return "\n".join(f"- {family}: {why}" for family, why, _n, _p in OUT_OF_SCOPE)


def node_class(class_type: str) -> type | None:
    return NODES.get(class_type) or NODES.get(ALIASES.get(class_type, ""))


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


__all__ = ["ALIASES", "IN_PROGRESS", "NODES", "OUT_OF_SCOPE", "input_types", "node_class", "node_list_markdown",
           "out_of_scope_markdown", "scope_note"]
