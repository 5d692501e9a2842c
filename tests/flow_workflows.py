"""ComfyUI API-format workflows on the tiny Flux.1 / SD3.5 models of tests/flow_models.py: what a user builds in
ComfyUI (txt2img from separate files, inpainting with a noise mask, TwoSamplersForMask, regional conditioning, an
all-in-one checkpoint, a LoRA). ComfyUI 0.30.0 runs them in tests/comfy_oracle/flow_workflows.py and
`twosamplers.workflow.run` in tests/test_flow_workflows.py; their SaveLatent / SaveImage outputs are compared.

    python tests/flow_workflows.py INPUT_DIR     # writes the input images (src.png 64 x 64, mask.png RGB)
"""

from __future__ import annotations

import sys
from pathlib import Path


def _flux_base(prompt: str = "a red barn in a green field", guidance: float = 3.5) -> dict:
    return {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": "flux_dev.safetensors", "weight_dtype": "default"}},
        "2": {"class_type": "DualCLIPLoader", "inputs": {"clip_name1": "clip_l.safetensors",
                                                         "clip_name2": "t5xxl.safetensors", "type": "flux"}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["2", 0], "text": prompt}},
        "4": {"class_type": "FluxGuidance", "inputs": {"conditioning": ["3", 0], "guidance": guidance}},
        "5": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["2", 0], "text": ""}},
        "6": {"class_type": "ModelSamplingFlux", "inputs": {"model": ["1", 0], "max_shift": 1.15, "base_shift": 0.5,
                                                            "width": 64, "height": 64}},
    }


def flux_t2i() -> dict:
    wf = _flux_base()
    wf.update({
        "7": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "8": {"class_type": "KSampler", "inputs": {"model": ["6", 0], "seed": 11, "steps": 4, "cfg": 1.0,
                                                   "sampler_name": "euler", "scheduler": "simple",
                                                   "positive": ["4", 0], "negative": ["5", 0],
                                                   "latent_image": ["7", 0], "denoise": 1.0}},
        "9": {"class_type": "SaveLatent", "inputs": {"samples": ["8", 0], "filename_prefix": "flux_t2i"}},
        "10": {"class_type": "VAELoader", "inputs": {"vae_name": "ae.safetensors"}},
        "11": {"class_type": "VAEDecode", "inputs": {"samples": ["8", 0], "vae": ["10", 0]}},
        "12": {"class_type": "SaveImage", "inputs": {"images": ["11", 0], "filename_prefix": "flux_t2i"}},
    })
    return wf


def flux_aio() -> dict:
    """CheckpointLoaderSimple on the all-in-one file, cfg 2 with a negative, dpmpp_2m / beta, batch 2."""
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "flux_dev_aio.safetensors"}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "a (lighthouse:1.2) at dawn"}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "blurry"}},
        "4": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 48, "height": 64, "batch_size": 2}},
        "5": {"class_type": "KSampler", "inputs": {"model": ["1", 0], "seed": 3, "steps": 4, "cfg": 2.0,
                                                   "sampler_name": "dpmpp_2m", "scheduler": "beta",
                                                   "positive": ["2", 0], "negative": ["3", 0],
                                                   "latent_image": ["4", 0], "denoise": 1.0}},
        "6": {"class_type": "SaveLatent", "inputs": {"samples": ["5", 0], "filename_prefix": "flux_aio"}},
        "7": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
        "8": {"class_type": "SaveImage", "inputs": {"images": ["7", 0], "filename_prefix": "flux_aio"}},
    }


def flux_inpaint() -> dict:
    """img2img with a noise mask: VAEEncode a picture, SetLatentNoiseMask, denoise 0.8."""
    wf = _flux_base("a stone wall")
    wf.update({
        "10": {"class_type": "VAELoader", "inputs": {"vae_name": "ae.safetensors"}},
        "11": {"class_type": "LoadImage", "inputs": {"image": "src.png"}},
        "12": {"class_type": "VAEEncode", "inputs": {"pixels": ["11", 0], "vae": ["10", 0]}},
        "13": {"class_type": "LoadImageMask", "inputs": {"image": "mask.png", "channel": "red"}},
        "14": {"class_type": "SetLatentNoiseMask", "inputs": {"samples": ["12", 0], "mask": ["13", 0]}},
        "15": {"class_type": "KSampler", "inputs": {"model": ["6", 0], "seed": 5, "steps": 5, "cfg": 1.0,
                                                    "sampler_name": "euler_ancestral", "scheduler": "normal",
                                                    "positive": ["4", 0], "negative": ["5", 0],
                                                    "latent_image": ["14", 0], "denoise": 0.8}},
        "16": {"class_type": "SaveLatent", "inputs": {"samples": ["15", 0], "filename_prefix": "flux_inpaint"}},
    })
    return wf


def flux_two_samplers() -> dict:
    """Impact's TwoSamplersForMask: a base and a mask KSamplerProvider with their own prompts, seeds, samplers."""
    wf = _flux_base()
    wf.update({
        "20": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["2", 0], "text": "a brick chimney"}},
        "21": {"class_type": "FluxGuidance", "inputs": {"conditioning": ["20", 0], "guidance": 5.0}},
        "22": {"class_type": "KSamplerProvider", "inputs": {"seed": 1, "steps": 4, "cfg": 1.0,
                                                            "sampler_name": "euler", "scheduler": "simple",
                                                            "denoise": 1.0, "basic_pipe": ["24", 0]}},
        "23": {"class_type": "KSamplerProvider", "inputs": {"seed": 2, "steps": 4, "cfg": 1.0,
                                                            "sampler_name": "dpmpp_2m", "scheduler": "beta",
                                                            "denoise": 0.9, "basic_pipe": ["25", 0]}},
        "24": {"class_type": "ToBasicPipe", "inputs": {"model": ["6", 0], "clip": ["2", 0], "vae": ["40", 2],
                                                       "positive": ["4", 0], "negative": ["5", 0]}},
        "25": {"class_type": "ToBasicPipe", "inputs": {"model": ["6", 0], "clip": ["2", 0], "vae": ["40", 2],
                                                       "positive": ["21", 0], "negative": ["5", 0]}},
        "40": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "flux_dev_aio.safetensors"}},
        "26": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "27": {"class_type": "LoadImageMask", "inputs": {"image": "mask.png", "channel": "red"}},
        "28": {"class_type": "TwoSamplersForMask", "inputs": {"latent_image": ["26", 0], "base_sampler": ["22", 0],
                                                              "mask_sampler": ["23", 0], "mask": ["27", 0]}},
        "29": {"class_type": "SaveLatent", "inputs": {"samples": ["28", 0], "filename_prefix": "flux_two"}},
    })
    return wf


def flux_regional_cond() -> dict:
    """Regional conditioning: a second prompt under a mask (ConditioningSetMask + ConditioningCombine)."""
    wf = _flux_base()
    wf.update({
        "20": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["2", 0], "text": "a blue pond"}},
        "21": {"class_type": "LoadImageMask", "inputs": {"image": "mask.png", "channel": "red"}},
        "22": {"class_type": "ConditioningSetMask", "inputs": {"conditioning": ["20", 0], "mask": ["21", 0],
                                                               "strength": 1.0, "set_cond_area": "default"}},
        "23": {"class_type": "ConditioningCombine", "inputs": {"conditioning_1": ["4", 0],
                                                               "conditioning_2": ["22", 0]}},
        "24": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "25": {"class_type": "KSampler", "inputs": {"model": ["6", 0], "seed": 8, "steps": 4, "cfg": 1.0,
                                                    "sampler_name": "euler", "scheduler": "simple",
                                                    "positive": ["23", 0], "negative": ["5", 0],
                                                    "latent_image": ["24", 0], "denoise": 1.0}},
        "26": {"class_type": "SaveLatent", "inputs": {"samples": ["25", 0], "filename_prefix": "flux_region"}},
    })
    return wf


def flux_lora() -> dict:
    """LoraLoader on the separate files (flux_lora_base + its kohya LoRA), schnell-style cfg 1."""
    wf = _flux_base("a fox")
    wf["1"]["inputs"]["unet_name"] = "flux_lora_base.safetensors"
    wf.update({
        "30": {"class_type": "LoraLoader", "inputs": {"model": ["6", 0], "clip": ["2", 0],
                                                      "lora_name": "flux_kohya.safetensors", "strength_model": 0.8,
                                                      "strength_clip": 0.7}},
        "31": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["30", 1], "text": "a fox"}},
        "32": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 32, "height": 32, "batch_size": 1}},
        "33": {"class_type": "KSampler", "inputs": {"model": ["30", 0], "seed": 4, "steps": 3, "cfg": 1.0,
                                                    "sampler_name": "euler", "scheduler": "simple",
                                                    "positive": ["31", 0], "negative": ["5", 0],
                                                    "latent_image": ["32", 0], "denoise": 1.0}},
        "34": {"class_type": "SaveLatent", "inputs": {"samples": ["33", 0], "filename_prefix": "flux_lora"}},
    })
    return wf


def _sd3_base(prompt: str = "a castle on a hill") -> dict:
    return {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": "sd35_large_4096.safetensors",
                                                     "weight_dtype": "default"}},
        "2": {"class_type": "DualCLIPLoader", "inputs": {"clip_name1": "clip_l.safetensors",
                                                         "clip_name2": "clip_g.safetensors", "type": "sd3"}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["2", 0], "text": prompt}},
        "5": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["2", 0], "text": "low quality"}},
        "6": {"class_type": "ModelSamplingSD3", "inputs": {"model": ["1", 0], "shift": 3.0}},
    }


def sd3_t2i() -> dict:
    wf = _sd3_base()
    wf.update({
        "7": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 64, "height": 48, "batch_size": 1}},
        "8": {"class_type": "KSampler", "inputs": {"model": ["6", 0], "seed": 21, "steps": 5, "cfg": 4.5,
                                                   "sampler_name": "dpmpp_2m", "scheduler": "sgm_uniform",
                                                   "positive": ["3", 0], "negative": ["5", 0],
                                                   "latent_image": ["7", 0], "denoise": 1.0}},
        "9": {"class_type": "SaveLatent", "inputs": {"samples": ["8", 0], "filename_prefix": "sd3_t2i"}},
        "10": {"class_type": "VAELoader", "inputs": {"vae_name": "sd35_vae.safetensors"}},
        "11": {"class_type": "VAEDecode", "inputs": {"samples": ["8", 0], "vae": ["10", 0]}},
        "12": {"class_type": "SaveImage", "inputs": {"images": ["11", 0], "filename_prefix": "sd3_t2i"}},
    })
    return wf


def sd3_two_samplers() -> dict:
    """TwoSamplersForMask on SD3.5 with a timestep-limited negative (SD3's usual negative idiom)."""
    wf = _sd3_base()
    wf.update({
        "20": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["2", 0], "text": "a dragon"}},
        "21": {"class_type": "ConditioningSetTimestepRange", "inputs": {"conditioning": ["5", 0], "start": 0.0,
                                                                        "end": 0.5}},
        "22": {"class_type": "KSamplerProvider", "inputs": {"seed": 1, "steps": 4, "cfg": 4.0,
                                                            "sampler_name": "euler", "scheduler": "simple",
                                                            "denoise": 1.0, "basic_pipe": ["24", 0]}},
        "23": {"class_type": "KSamplerProvider", "inputs": {"seed": 2, "steps": 4, "cfg": 5.0,
                                                            "sampler_name": "dpmpp_2m_sde", "scheduler": "karras",
                                                            "denoise": 1.0, "basic_pipe": ["25", 0]}},
        "24": {"class_type": "ToBasicPipe", "inputs": {"model": ["6", 0], "clip": ["2", 0], "vae": ["40", 2],
                                                       "positive": ["3", 0], "negative": ["21", 0]}},
        "25": {"class_type": "ToBasicPipe", "inputs": {"model": ["1", 0], "clip": ["2", 0], "vae": ["40", 2],
                                                       "positive": ["20", 0], "negative": ["5", 0]}},
        "40": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd35_large_aio.safetensors"}},
        "26": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "27": {"class_type": "LoadImageMask", "inputs": {"image": "mask.png", "channel": "red"}},
        "28": {"class_type": "TwoSamplersForMask", "inputs": {"latent_image": ["26", 0], "base_sampler": ["22", 0],
                                                              "mask_sampler": ["23", 0], "mask": ["27", 0]}},
        "29": {"class_type": "SaveLatent", "inputs": {"samples": ["28", 0], "filename_prefix": "sd3_two"}},
    })
    return wf


WORKFLOWS = {f.__name__: f for f in (flux_t2i, flux_aio, flux_inpaint, flux_two_samplers, flux_regional_cond,
                                     flux_lora, sd3_t2i, sd3_two_samplers)}


def write_inputs(folder: Path) -> None:
    """src.png: a 64 x 64 RGB gradient with a disc; mask.png: RGB, white on the right half (a soft 8-px edge)."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    y, x = np.mgrid[0:64, 0:64]
    img = np.stack([x * 4, y * 4, 255 - ((x - 32) ** 2 + (y - 32) ** 2 < 300) * 200], axis=-1)
    Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(folder / "src.png")
    m = ((x - 28).clip(0, 8) * 32).clip(0, 255).astype(np.uint8)
    Image.fromarray(np.stack([m, m, m], axis=-1)).save(folder / "mask.png")


if __name__ == "__main__":
    write_inputs(Path(sys.argv[1]))


def regional_sampler(family: str) -> dict:
    """Impact's RegionalSampler with a base and two regions (3 regions in all) on Flux or SD3.5; ComfyUI 0.30
    without Impact Pack cannot run it, so it is checked for determinism and shape (tests/test_flow_workflows.py).
    Regions: mask.png's red channel and its inverse, over the base sampler."""
    wf = _flux_base() if family == "flux" else _sd3_base()
    if family == "sd3":
        wf["4"] = {"class_type": "ConditioningSetTimestepRange", "inputs": {"conditioning": ["3", 0], "start": 0.0,
                                                                            "end": 1.0}}
    ckpt = "flux_dev_aio.safetensors" if family == "flux" else "sd35_large_aio.safetensors"
    cfg = 1.0 if family == "flux" else 4.0
    wf.update({
        "40": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "20": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["2", 0], "text": "a brick wall"}},
        "21": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["2", 0], "text": "blue water"}},
        "22": {"class_type": "ToBasicPipe", "inputs": {"model": ["6", 0], "clip": ["2", 0], "vae": ["40", 2],
                                                       "positive": ["4", 0], "negative": ["5", 0]}},
        "23": {"class_type": "EditBasicPipe", "inputs": {"basic_pipe": ["22", 0], "positive": ["20", 0]}},
        "24": {"class_type": "EditBasicPipe", "inputs": {"basic_pipe": ["22", 0], "positive": ["21", 0]}},
        "30": {"class_type": "KSamplerAdvancedProvider", "inputs": {"cfg": cfg, "sampler_name": "euler",
                                                                    "scheduler": "simple", "sigma_factor": 1.0,
                                                                    "basic_pipe": ["22", 0]}},
        "31": {"class_type": "KSamplerAdvancedProvider", "inputs": {"cfg": cfg, "sampler_name": "euler_ancestral",
                                                                    "scheduler": "simple", "sigma_factor": 1.0,
                                                                    "basic_pipe": ["23", 0]}},
        "32": {"class_type": "KSamplerAdvancedProvider", "inputs": {"cfg": cfg, "sampler_name": "dpmpp_2m",
                                                                    "scheduler": "simple", "sigma_factor": 1.0,
                                                                    "basic_pipe": ["24", 0]}},
        "33": {"class_type": "LoadImageMask", "inputs": {"image": "mask.png", "channel": "red"}},
        "34": {"class_type": "InvertMask", "inputs": {"mask": ["33", 0]}},
        "35": {"class_type": "RegionalPrompt", "inputs": {"mask": ["33", 0], "advanced_sampler": ["31", 0]}},
        "36": {"class_type": "RegionalPrompt", "inputs": {"mask": ["34", 0], "advanced_sampler": ["32", 0]}},
        "37": {"class_type": "CombineRegionalPrompts", "inputs": {"regional_prompts1": ["35", 0],
                                                                   "regional_prompts2": ["36", 0]}},
        "38": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "39": {"class_type": "RegionalSampler", "inputs": {
            "seed": 7, "seed_2nd": 0, "seed_2nd_mode": "ignore", "steps": 4, "base_only_steps": 1, "denoise": 1.0,
            "samples": ["38", 0], "base_sampler": ["30", 0], "regional_prompts": ["37", 0], "overlap_factor": 2,
            "restore_latent": True, "additional_mode": "ratio between", "additional_sampler": "AUTO",
            "additional_sigma_ratio": 0.3}},
        "41": {"class_type": "VAEDecode", "inputs": {"samples": ["39", 0], "vae": ["40", 2]}},
        "42": {"class_type": "SaveImage", "inputs": {"images": ["41", 0], "filename_prefix": f"{family}_regional"}},
    })
    return wf
