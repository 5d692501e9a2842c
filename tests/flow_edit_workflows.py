"""Flux.1 Fill / Canny-Depth workflows for the parity of InstructPixToPixConditioning and the models' extra input
channels (src/twosamplers/models/flow_concat.py). The tiny transformers are tests/flow_models.py's Flux dev with
a wider patch embedding (`img_in`: 384 features for Fill, 128 for Canny / Depth), the rest of the files are
tests/flow_models.py's. ComfyUI 0.30.0 runs the workflows in tests/comfy_oracle/flow_edit_workflows.py (references
in tests/parity/flow_edit/), `twosamplers.workflow.run` in tests/test_flow_edit_parity.py.

    python tests/flow_edit_workflows.py MODELS_DIR INPUT_DIR    # the model files and input images
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from flow_models import flux_transformer, write_models
from flow_workflows import _flux_base, write_inputs

EDIT_FEATURES = {"flux_fill.safetensors": 384, "flux_canny.safetensors": 128}
BASE_FILES = ["text_encoders/clip_l.safetensors", "text_encoders/t5xxl.safetensors", "vae/ae.safetensors",
              "diffusion_models/flux_dev.safetensors"]


def edit_transformer(features: int) -> dict:
    """Flux dev (tests/flow_models.py, seed 0) with `img_in` drawn anew for `features` inputs (seed = features)."""
    sd = flux_transformer("dev")
    g = torch.Generator().manual_seed(features)
    hidden = sd["img_in.weight"].shape[0]
    sd["img_in.weight"] = torch.randn(hidden, features, generator=g) * features ** -0.5
    return sd


def write_edit_models(root: Path) -> None:
    from safetensors.torch import save_file

    write_models(root, BASE_FILES)
    for name, features in EDIT_FEATURES.items():
        path = root / "diffusion_models" / name
        save_file({k: v.contiguous() for k, v in edit_transformer(features).items()}, str(path))


def _base(unet: str, prompt: str) -> dict:
    wf = _flux_base(prompt, guidance=10.0)
    wf["1"]["inputs"]["unet_name"] = unet
    wf["10"] = {"class_type": "VAELoader", "inputs": {"vae_name": "ae.safetensors"}}
    wf["11"] = {"class_type": "LoadImage", "inputs": {"image": "src.png"}}
    return wf


def _sample(wf: dict, positive, negative, latent, prefix: str, seed: int, denoise: float = 1.0) -> dict:
    wf["20"] = {"class_type": "KSampler", "inputs": {"model": ["6", 0], "seed": seed, "steps": 4, "cfg": 1.0,
                                                     "sampler_name": "euler", "scheduler": "simple",
                                                     "positive": positive, "negative": negative,
                                                     "latent_image": latent, "denoise": denoise}}
    wf["21"] = {"class_type": "SaveLatent", "inputs": {"samples": ["20", 0], "filename_prefix": prefix}}
    return wf


def flux_canny_ip2p() -> dict:
    """InstructPixToPixConditioning on a 68 x 60 image (cropped to 64 x 56 around the centre) for a Canny-style
    model; its zero latent is sampled."""
    wf = _base("flux_canny.safetensors", "a red barn")
    wf["12"] = {"class_type": "ImageScale", "inputs": {"image": ["11", 0], "upscale_method": "bilinear",
                                                       "width": 68, "height": 60, "crop": "disabled"}}
    wf["13"] = {"class_type": "InstructPixToPixConditioning", "inputs": {"positive": ["4", 0], "negative": ["5", 0],
                                                                         "vae": ["10", 0], "pixels": ["12", 0]}}
    return _sample(wf, ["13", 0], ["13", 1], ["13", 2], "flux_canny_ip2p", 7)


def flux_canny_no_image() -> dict:
    """A Canny-style model without concat_latent_image: ComfyUI feeds zeros."""
    wf = _base("flux_canny.safetensors", "a blue lake")
    wf["12"] = {"class_type": "EmptySD3LatentImage", "inputs": {"width": 48, "height": 64, "batch_size": 1}}
    return _sample(wf, ["4", 0], ["5", 0], ["12", 0], "flux_canny_no_image", 3)


def flux_fill_inpaint() -> dict:
    """Flux Fill through InpaintModelConditioning (concat image + concat mask, noise mask on)."""
    wf = _base("flux_fill.safetensors", "a stone wall")
    wf["12"] = {"class_type": "LoadImageMask", "inputs": {"image": "mask.png", "channel": "red"}}
    wf["13"] = {"class_type": "InpaintModelConditioning", "inputs": {
        "positive": ["4", 0], "negative": ["5", 0], "vae": ["10", 0], "pixels": ["11", 0], "mask": ["12", 0],
        "noise_mask": True}}
    return _sample(wf, ["13", 0], ["13", 1], ["13", 2], "flux_fill_inpaint", 5)


def flux_fill_noise_mask() -> dict:
    """Flux Fill with only a noise mask (SetLatentNoiseMask): zeros for the image, the sampler's mask folded."""
    wf = _base("flux_fill.safetensors", "moss")
    wf["12"] = {"class_type": "LoadImageMask", "inputs": {"image": "mask.png", "channel": "red"}}
    wf["13"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["11", 0], "vae": ["10", 0]}}
    wf["14"] = {"class_type": "SetLatentNoiseMask", "inputs": {"samples": ["13", 0], "mask": ["12", 0]}}
    return _sample(wf, ["4", 0], ["5", 0], ["14", 0], "flux_fill_noise_mask", 9, denoise=0.75)


def flux_dev_ip2p_ignored() -> dict:
    """InstructPixToPixConditioning on plain Flux dev (64 features): the image is ignored, as in ComfyUI."""
    wf = _base("flux_dev.safetensors", "a red barn")
    wf["13"] = {"class_type": "InstructPixToPixConditioning", "inputs": {"positive": ["4", 0], "negative": ["5", 0],
                                                                         "vae": ["10", 0], "pixels": ["11", 0]}}
    return _sample(wf, ["13", 0], ["13", 1], ["13", 2], "flux_dev_ip2p_ignored", 2)


WORKFLOWS = {f.__name__: f for f in (flux_canny_ip2p, flux_canny_no_image, flux_fill_inpaint, flux_fill_noise_mask,
                                     flux_dev_ip2p_ignored)}

if __name__ == "__main__":
    write_edit_models(Path(sys.argv[1]))
    write_inputs(Path(sys.argv[2]))
