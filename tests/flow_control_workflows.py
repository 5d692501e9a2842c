"""ComfyUI API-format workflows with Flux / SD3 ControlNets on the tiny models of tests/flow_models.py and
tests/flow_control_models.py: XLabs (pixel hint), InstantX (VAE hint) chained with XLabs under cfg 2 and step
windows, a Union ControlNet with SetUnionControlNetType, TwoSamplersForMask with a ControlNet on the mask pass, and
an SD3 ControlNet. ComfyUI 0.30.0 runs them in tests/comfy_oracle/flow_controlnet.py, `twosamplers.workflow.run`
in tests/test_flow_controlnet.py; their SaveLatent outputs are compared.

Inputs: tests/flow_workflows.write_inputs (src.png, 64 x 64, is the hint image).
"""

from __future__ import annotations

from flow_workflows import _flux_base, _sd3_base


def _cn(node: str, pos, neg, name_node: str, strength: float, start: float = 0.0, end: float = 1.0,
        vae=None) -> dict:
    inputs = {"positive": pos, "negative": neg, "control_net": [name_node, 0], "image": ["50", 0],
              "strength": strength, "start_percent": start, "end_percent": end}
    if vae is not None:
        inputs["vae"] = vae
    return {node: {"class_type": "ControlNetApplyAdvanced", "inputs": inputs}}


def _sample(wf: dict, pos, neg, *, seed: int, steps: int = 4, cfg: float = 1.0, sampler: str = "euler",
            scheduler: str = "simple", width: int = 64, height: int = 64, prefix: str = "cn") -> dict:
    wf.update({
        "60": {"class_type": "EmptySD3LatentImage", "inputs": {"width": width, "height": height, "batch_size": 1}},
        "61": {"class_type": "KSampler", "inputs": {"model": ["6", 0], "seed": seed, "steps": steps, "cfg": cfg,
                                                    "sampler_name": sampler, "scheduler": scheduler,
                                                    "positive": pos, "negative": neg, "latent_image": ["60", 0],
                                                    "denoise": 1.0}},
        "62": {"class_type": "SaveLatent", "inputs": {"samples": ["61", 0], "filename_prefix": prefix}},
    })
    return wf


def _flux_cn_base() -> dict:
    wf = _flux_base("a house by a lake")
    wf["50"] = {"class_type": "LoadImage", "inputs": {"image": "src.png"}}
    wf["51"] = {"class_type": "VAELoader", "inputs": {"vae_name": "ae.safetensors"}}
    return wf


def flux_cn_xlabs() -> dict:
    """XLabs: the hint goes through its own pixel encoder (no VAE); a 48 x 64 latent crops the 64 x 64 hint."""
    wf = _flux_cn_base()
    wf["52"] = {"class_type": "ControlNetLoader", "inputs": {"control_net_name": "flux_xlabs_cn.safetensors"}}
    wf.update(_cn("53", ["4", 0], ["5", 0], "52", 0.8))
    return _sample(wf, ["53", 0], ["53", 1], seed=31, width=48, height=64, prefix="cn_xlabs")


def flux_cn_instantx_chain() -> dict:
    """InstantX (VAE hint, first 60 % of the steps) chained with XLabs (from 20 %), cfg 2: cond and uncond."""
    wf = _flux_cn_base()
    wf["52"] = {"class_type": "ControlNetLoader", "inputs": {"control_net_name": "flux_instantx_cn.safetensors"}}
    wf["54"] = {"class_type": "ControlNetLoader", "inputs": {"control_net_name": "flux_xlabs_cn.safetensors"}}
    wf.update(_cn("53", ["4", 0], ["5", 0], "52", 0.7, 0.0, 0.6, vae=["51", 0]))
    wf.update(_cn("55", ["53", 0], ["53", 1], "54", 0.5, 0.2, 1.0))
    return _sample(wf, ["55", 0], ["55", 1], seed=32, steps=5, cfg=2.0, sampler="dpmpp_2m", scheduler="beta",
                   prefix="cn_chain")


def flux_cn_union() -> dict:
    """A Union ControlNet told its type (SetUnionControlNetType "depth"), strength 1.2."""
    wf = _flux_cn_base()
    wf["52"] = {"class_type": "ControlNetLoader", "inputs": {"control_net_name": "flux_union_cn.safetensors"}}
    wf["56"] = {"class_type": "SetUnionControlNetType", "inputs": {"control_net": ["52", 0], "type": "depth"}}
    wf.update(_cn("53", ["4", 0], ["5", 0], "56", 1.2, vae=["51", 0]))
    return _sample(wf, ["53", 0], ["53", 1], seed=33, sampler="euler_ancestral", prefix="cn_union")


def flux_cn_union_auto() -> dict:
    """The same Union ControlNet left on "auto" (no type token)."""
    wf = _flux_cn_base()
    wf["52"] = {"class_type": "ControlNetLoader", "inputs": {"control_net_name": "flux_union_cn.safetensors"}}
    wf["56"] = {"class_type": "SetUnionControlNetType", "inputs": {"control_net": ["52", 0], "type": "auto"}}
    wf.update(_cn("53", ["4", 0], ["5", 0], "56", 1.0, vae=["51", 0]))
    return _sample(wf, ["53", 0], ["53", 1], seed=34, prefix="cn_union_auto")


def flux_cn_two_samplers() -> dict:
    """TwoSamplersForMask: the base pass plain, the mask pass guided by the XLabs ControlNet."""
    wf = _flux_cn_base()
    wf.update({
        "52": {"class_type": "ControlNetLoader", "inputs": {"control_net_name": "flux_xlabs_cn.safetensors"}},
        "20": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["2", 0], "text": "a brick chimney"}},
        "40": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "flux_dev_aio.safetensors"}},
        "22": {"class_type": "KSamplerProvider", "inputs": {"seed": 1, "steps": 4, "cfg": 1.0,
                                                            "sampler_name": "euler", "scheduler": "simple",
                                                            "denoise": 1.0, "basic_pipe": ["24", 0]}},
        "23": {"class_type": "KSamplerProvider", "inputs": {"seed": 2, "steps": 4, "cfg": 1.0,
                                                            "sampler_name": "dpmpp_2m", "scheduler": "beta",
                                                            "denoise": 0.9, "basic_pipe": ["25", 0]}},
        "24": {"class_type": "ToBasicPipe", "inputs": {"model": ["6", 0], "clip": ["2", 0], "vae": ["40", 2],
                                                       "positive": ["4", 0], "negative": ["5", 0]}},
        "25": {"class_type": "ToBasicPipe", "inputs": {"model": ["6", 0], "clip": ["2", 0], "vae": ["40", 2],
                                                       "positive": ["53", 0], "negative": ["53", 1]}},
        "26": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "27": {"class_type": "LoadImageMask", "inputs": {"image": "mask.png", "channel": "red"}},
        "28": {"class_type": "TwoSamplersForMask", "inputs": {"latent_image": ["26", 0], "base_sampler": ["22", 0],
                                                              "mask_sampler": ["23", 0], "mask": ["27", 0]}},
        "29": {"class_type": "SaveLatent", "inputs": {"samples": ["28", 0], "filename_prefix": "cn_two"}},
    })
    wf.update(_cn("53", ["20", 0], ["5", 0], "52", 0.9, 0.0, 0.8))
    return wf


def sd3_cn() -> dict:
    """An SD3 ControlNet (diffusers layout, VAE hint) on SD3.5 large, cfg 4, its window 10 %..90 %."""
    wf = _sd3_base()
    wf["50"] = {"class_type": "LoadImage", "inputs": {"image": "src.png"}}
    wf["51"] = {"class_type": "VAELoader", "inputs": {"vae_name": "sd35_vae.safetensors"}}
    wf["52"] = {"class_type": "ControlNetLoader", "inputs": {"control_net_name": "sd3_cn.safetensors"}}
    wf.update(_cn("53", ["3", 0], ["5", 0], "52", 0.9, 0.1, 0.9, vae=["51", 0]))
    return _sample(wf, ["53", 0], ["53", 1], seed=35, steps=5, cfg=4.0, sampler="dpmpp_2m",
                   scheduler="sgm_uniform", prefix="cn_sd3")


def sd35_cn_canny_depth() -> dict:
    """Stability's SD3.5 ControlNets: canny (0.8, whole schedule) chained with depth (0.6, to 70 %), cfg 3.5."""
    wf = _sd3_base()
    wf["50"] = {"class_type": "LoadImage", "inputs": {"image": "src.png"}}
    wf["51"] = {"class_type": "VAELoader", "inputs": {"vae_name": "sd35_vae.safetensors"}}
    wf["52"] = {"class_type": "ControlNetLoader", "inputs": {"control_net_name": "sd35_canny_cn.safetensors"}}
    wf["54"] = {"class_type": "ControlNetLoader", "inputs": {"control_net_name": "sd35_depth_cn.safetensors"}}
    wf.update(_cn("53", ["3", 0], ["5", 0], "52", 0.8, vae=["51", 0]))
    wf.update(_cn("55", ["53", 0], ["53", 1], "54", 0.6, 0.0, 0.7, vae=["51", 0]))
    return _sample(wf, ["55", 0], ["55", 1], seed=36, steps=4, cfg=3.5, width=64, height=48, prefix="cn_sd35")


def flux_cn_mistoline() -> dict:
    """Mistoline: its own pixel encoder, SiLU after its projections, double and single blocks."""
    wf = _flux_cn_base()
    wf["52"] = {"class_type": "ControlNetLoader", "inputs": {"control_net_name": "flux_mistoline_cn.safetensors"}}
    wf.update(_cn("53", ["4", 0], ["5", 0], "52", 0.9, 0.0, 0.8))
    return _sample(wf, ["53", 0], ["53", 1], seed=37, prefix="cn_mistoline")


def _inpaint(wf: dict, cn: str, vae_node) -> dict:
    wf["52"] = {"class_type": "ControlNetLoader", "inputs": {"control_net_name": cn}}
    wf["57"] = {"class_type": "LoadImageMask", "inputs": {"image": "mask.png", "channel": "red"}}
    wf["53"] = {"class_type": "ControlNetInpaintingAliMamaApply", "inputs": {
        "positive": ["3" if "sd3" in cn else "4", 0], "negative": ["5", 0], "control_net": ["52", 0],
        "vae": vae_node, "image": ["50", 0], "mask": ["57", 0], "strength": 0.9, "start_percent": 0.0,
        "end_percent": 1.0}}
    return wf


def flux_cn_inpaint_alimama() -> dict:
    """A Flux inpainting ControlNet under ControlNetInpaintingAliMamaApply (masked hint + 1 - mask channel)."""
    wf = _inpaint(_flux_cn_base(), "flux_inpaint_cn.safetensors", ["51", 0])
    return _sample(wf, ["53", 0], ["53", 1], seed=38, prefix="cn_inpaint")


def flux_cn_inpaint_plain() -> dict:
    """The same ControlNet under ControlNetApplyAdvanced: a mask channel of ones."""
    wf = _flux_cn_base()
    wf["52"] = {"class_type": "ControlNetLoader", "inputs": {"control_net_name": "flux_inpaint_cn.safetensors"}}
    wf.update(_cn("53", ["4", 0], ["5", 0], "52", 0.9, vae=["51", 0]))
    return _sample(wf, ["53", 0], ["53", 1], seed=38, prefix="cn_inpaint_plain")


def sd3_cn_inpaint_alimama() -> dict:
    """An SD3 inpainting ControlNet (17-channel hint, diffusers layout) under ControlNetInpaintingAliMamaApply."""
    wf = _sd3_base()
    wf["50"] = {"class_type": "LoadImage", "inputs": {"image": "src.png"}}
    wf["51"] = {"class_type": "VAELoader", "inputs": {"vae_name": "sd35_vae.safetensors"}}
    wf = _inpaint(wf, "sd3_inpaint_cn.safetensors", ["51", 0])
    return _sample(wf, ["53", 0], ["53", 1], seed=39, steps=4, cfg=4.0, prefix="cn_sd3_inpaint")


WORKFLOWS = {f.__name__: f for f in (flux_cn_xlabs, flux_cn_instantx_chain, flux_cn_union, flux_cn_union_auto,
                                     flux_cn_two_samplers, sd3_cn, sd35_cn_canny_depth, flux_cn_mistoline,
                                     flux_cn_inpaint_alimama, flux_cn_inpaint_plain, sd3_cn_inpaint_alimama)}
