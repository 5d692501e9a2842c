"""The model families twosamplers runs, with how each loads and what works on it: one table for the CLI's
`run --list-nodes` and the README's model table."""

from __future__ import annotations

# (family, how it loads, what is supported)
FAMILIES: tuple[tuple[str, str, str], ...] = (
    ("textures / ideal", "built in (no file)", "every sampler, scheduler and node of the family; CPU"),
    ("SD 1.x, SD 2.x (eps, v)", "single-file checkpoint or diffusers folder",
     "all nodes; LoRA (kohya, diffusers/PEFT, LoCon, LoHa, LoKr, DoRA), embeddings, ControlNet, inpainting models, "
     "InstructPix2Pix edit models (SD1.x)"),
    ("SDXL base", "single-file checkpoint or diffusers folder",
     "all nodes; LoRA, embeddings, ControlNet, inpainting models, InstructPix2Pix / CosXL edit models (EDM "
     "v-prediction, DualCFGGuider)"),
    ("Flux.1 dev / schnell", "all-in-one checkpoint; UNETLoader (weight_dtype incl. fp8) + DualCLIPLoader(flux) + "
     "the 16-channel VAE; a folder of those files; a diffusers folder",
     "all nodes (CONST flow sampling through every sampler/scheduler, ModelSamplingFlux, FluxGuidance, "
     "CLIPTextEncodeFlux, regional/joint modes, crop-to-mask); LoRA (kohya, diffusers, ComfyUI, XLabs); "
     "embeddings; ControlNet (XLabs, Mistoline, InstantX, Union with SetUnionControlNetType, Alimama inpainting); "
     "Fill / Canny / Depth models (extra input channels: InpaintModelConditioning, InstructPixToPixConditioning); "
     "no Kontext, no Redux (its SigLIP vision model)"),
    ("SD3.5 large / medium (and SD3 medium)", "all-in-one checkpoint; UNETLoader + TripleCLIPLoader / "
     "DualCLIPLoader(sd3) / CLIPLoader(sd3) + the 16-channel VAE; a folder of those files; a diffusers folder",
     "all nodes (CONST flow sampling, ModelSamplingSD3, CLIPTextEncodeSD3, ConditioningSetTimestepRange); "
     "LoRA (kohya, diffusers); "
     "embeddings; ControlNet (SD3 diffusers layout incl. inpainting, SD3.5 Stability blur/canny/depth); "
     "no skip-layer guidance"),
)


def families_text() -> str:
    """The table as plain text lines ("family: loading; supported")."""
    return "\n".join(f"{name}: {how}; {what}" for name, how, what in FAMILIES)


__all__ = ["FAMILIES", "families_text"]
