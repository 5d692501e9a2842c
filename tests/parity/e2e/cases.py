"""The end-to-end parity workflows (API format), per checkpoint family: every supported node that touches a model.

Each case is `(name, workflow, options)`; options: {"fp32_text_enc": True} runs both ComfyUI and us with
full-precision text encoders. Images are 64 x 64 (latents 8 x 8) or the 96 x 64 input image; 3-6 steps.
Inputs (inputs/): src.png (96x64 RGB), mask.png (96x64 L-mode grey: ComfyUI 0.30 reads 255 as 0.99611),
mask_rgb.png (the same mask as RGB: exact k/255).
"""

from __future__ import annotations

NEG = "blurry, low quality"


def _ckpt(nid: str, name: str) -> dict:
    return {nid: {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": name}}}


def _enc(nid: str, text: str, clip) -> dict:
    return {nid: {"class_type": "CLIPTextEncode", "inputs": {"text": text, "clip": clip}}}


def _empty(nid: str, w: int = 64, h: int = 64, b: int = 1) -> dict:
    return {nid: {"class_type": "EmptyLatentImage", "inputs": {"width": w, "height": h, "batch_size": b}}}


def _ks(nid: str, model, pos, neg, latent, seed=1, steps=4, cfg=7.0, sampler="euler", scheduler="normal",
        denoise=1.0) -> dict:
    return {nid: {"class_type": "KSampler", "inputs": {
        "model": model, "seed": seed, "steps": steps, "cfg": cfg, "sampler_name": sampler, "scheduler": scheduler,
        "positive": pos, "negative": neg, "latent_image": latent, "denoise": denoise}}}


def _ksa(nid: str, model, pos, neg, latent, *, add_noise="enable", seed=1, steps=6, cfg=7.0, sampler="euler",
         scheduler="normal", start=0, end=10000, leftover="disable") -> dict:
    return {nid: {"class_type": "KSamplerAdvanced", "inputs": {
        "model": model, "add_noise": add_noise, "noise_seed": seed, "steps": steps, "cfg": cfg,
        "sampler_name": sampler, "scheduler": scheduler, "positive": pos, "negative": neg, "latent_image": latent,
        "start_at_step": start, "end_at_step": end, "return_with_leftover_noise": leftover}}}


def _decode_save(dec: str, save: str, latent, vae) -> dict:
    return {dec: {"class_type": "VAEDecode", "inputs": {"samples": latent, "vae": vae}},
            save: {"class_type": "SaveImage", "inputs": {"images": [dec, 0], "filename_prefix": "p"}}}


def _txt2img(ckpt: str, pos: str, *, seed=1, steps=4, cfg=7.0, sampler="euler", scheduler="normal",
             neg: str = NEG) -> dict:
    return {**_ckpt("1", ckpt), **_enc("2", pos, ["1", 1]), **_enc("3", neg, ["1", 1]), **_empty("4"),
            **_ks("5", ["1", 0], ["2", 0], ["3", 0], ["4", 0], seed, steps, cfg, sampler, scheduler),
            **_decode_save("6", "7", ["5", 0], ["1", 2])}


def _img2img(ckpt: str, pos: str, *, denoise=0.6, sampler="euler_ancestral", seed=5) -> dict:
    return {**_ckpt("1", ckpt), **_enc("2", pos, ["1", 1]), **_enc("3", NEG, ["1", 1]),
            "4": {"class_type": "LoadImage", "inputs": {"image": "src.png"}},
            "8": {"class_type": "VAEEncode", "inputs": {"pixels": ["4", 0], "vae": ["1", 2]}},
            **_ks("5", ["1", 0], ["2", 0], ["3", 0], ["8", 0], seed, 5, 6.0, sampler, "karras", denoise),
            **_decode_save("6", "7", ["5", 0], ["1", 2])}


# ------------------------------------------------------------------------------------------ SD1.5
SD15 = "sd15_mini.safetensors"


def sd15_cases() -> list[tuple[str, dict, dict]]:
    c = []
    c.append(("sd15_txt2img", _txt2img(SD15, "a red barn in a green field, photo"), {}))
    long = ", ".join(f"word{i} (detail:1.{i % 5})" for i in range(40))
    wf = _txt2img(SD15, "a ((castle)) on a (hill:1.3), [sunset], " + long, sampler="dpmpp_2m", scheduler="karras",
                  seed=7)
    wf["9"] = {"class_type": "CLIPSetLastLayer", "inputs": {"clip": ["1", 1], "stop_at_clip_layer": -2}}
    wf["2"]["inputs"]["clip"] = ["9", 0]
    wf["3"]["inputs"]["clip"] = ["9", 0]
    c.append(("sd15_weights_long_clipskip", wf, {}))
    c.append(("sd15_embedding", _txt2img(SD15, "a photo of embedding:pe_sd15, (embedding:pe_sd15:1.2) and "
                                               "embedding:not_there", seed=3), {}))
    wf = _txt2img(SD15, "a watercolor lighthouse", seed=11)
    wf["10"] = {"class_type": "LoraLoader", "inputs": {"model": ["1", 0], "clip": ["1", 1],
                                                       "lora_name": "sd15_mini_lora.safetensors",
                                                       "strength_model": 0.8, "strength_clip": 1.0}}
    wf["2"]["inputs"]["clip"] = ["10", 1]
    wf["3"]["inputs"]["clip"] = ["10", 1]
    wf["5"]["inputs"]["model"] = ["10", 0]
    c.append(("sd15_lora", wf, {}))
    c.append(("sd15_lora_fp32_text_enc", wf, {"fp32_text_enc": True}))
    wf = _txt2img(SD15, "a watercolor lighthouse", seed=12, sampler="heun")
    wf["10"] = {"class_type": "LoraLoaderModelOnly", "inputs": {"model": ["1", 0], "strength_model": 1.0,
                                                                "lora_name": "sd15_mini_lora.safetensors"}}
    wf["5"]["inputs"]["model"] = ["10", 0]
    c.append(("sd15_lora_model_only", wf, {}))
    c.append(("sd15_img2img", _img2img(SD15, "a painting of a landscape"), {}))
    # inpainting noise mask from an L-mode PNG (ComfyUI 0.30: 255 -> 0.99611)
    wf = _img2img(SD15, "a stone well", denoise=0.8, sampler="dpmpp_2m")
    wf["11"] = {"class_type": "LoadImageMask", "inputs": {"image": "mask.png", "channel": "red"}}
    wf["12"] = {"class_type": "SetLatentNoiseMask", "inputs": {"samples": ["8", 0], "mask": ["11", 0]}}
    wf["5"]["inputs"]["latent_image"] = ["12", 0]
    c.append(("sd15_noise_mask", wf, {}))
    # VAEEncodeForInpaint and InpaintModelConditioning on a plain model
    wf = _img2img(SD15, "a wooden door", denoise=1.0, sampler="euler")
    wf["11"] = {"class_type": "LoadImageMask", "inputs": {"image": "mask_rgb.png", "channel": "green"}}
    wf["8"] = {"class_type": "VAEEncodeForInpaint", "inputs": {"pixels": ["4", 0], "vae": ["1", 2],
                                                               "mask": ["11", 0], "grow_mask_by": 4}}
    c.append(("sd15_vae_encode_for_inpaint", wf, {}))
    wf = _img2img(SD15, "a wooden door", denoise=0.9, sampler="euler")
    wf["11"] = {"class_type": "LoadImageMask", "inputs": {"image": "mask_rgb.png", "channel": "red"}}
    wf["13"] = {"class_type": "InpaintModelConditioning", "inputs": {
        "positive": ["2", 0], "negative": ["3", 0], "vae": ["1", 2], "pixels": ["4", 0], "mask": ["11", 0],
        "noise_mask": True}}
    wf["5"]["inputs"].update(positive=["13", 0], negative=["13", 1], latent_image=["13", 2])
    del wf["8"]  # the VAEEncode of _img2img: InpaintModelConditioning encodes
    c.append(("sd15_inpaint_model_conditioning", wf, {}))
    # KSamplerAdvanced: two passes over one schedule, leftover noise in between
    wf = {**_ckpt("1", SD15), **_enc("2", "a busy market street", ["1", 1]), **_enc("3", NEG, ["1", 1]),
          **_empty("4", 64, 64, 2),
          **_ksa("5", ["1", 0], ["2", 0], ["3", 0], ["4", 0], seed=21, steps=6, sampler="dpmpp_2m_sde",
                 scheduler="karras", end=3, leftover="enable"),
          **_ksa("8", ["1", 0], ["2", 0], ["3", 0], ["5", 0], add_noise="disable", seed=21, steps=6,
                 sampler="dpmpp_2m_sde", scheduler="karras", start=3),
          **_decode_save("6", "7", ["8", 0], ["1", 2])}
    c.append(("sd15_ksampler_advanced_batch2", wf, {}))
    # TwoSamplersForMask (Impact Pack, through KSamplerProvider + ToBasicPipe) with the L-mode mask quirk
    for name, mask in (("sd15_two_samplers_L_mask", "mask.png"), ("sd15_two_samplers_rgb_mask", "mask_rgb.png")):
        wf = {**_ckpt("1", SD15), **_enc("2", "a meadow", ["1", 1]), **_enc("3", NEG, ["1", 1]),
              **_enc("12", "a red brick wall", ["1", 1]),
              "4": {"class_type": "LoadImage", "inputs": {"image": "src.png"}},
              "8": {"class_type": "VAEEncode", "inputs": {"pixels": ["4", 0], "vae": ["1", 2]}},
              "11": {"class_type": "LoadImageMask", "inputs": {"image": mask, "channel": "red"}},
              "13": {"class_type": "ToBasicPipe", "inputs": {"model": ["1", 0], "clip": ["1", 1], "vae": ["1", 2],
                                                             "positive": ["2", 0], "negative": ["3", 0]}},
              "14": {"class_type": "ToBasicPipe", "inputs": {"model": ["1", 0], "clip": ["1", 1], "vae": ["1", 2],
                                                             "positive": ["12", 0], "negative": ["3", 0]}},
              "15": {"class_type": "KSamplerProvider", "inputs": {
                  "seed": 31, "steps": 4, "cfg": 6.5, "sampler_name": "euler", "scheduler": "normal",
                  "denoise": 0.7, "basic_pipe": ["13", 0]}},
              "16": {"class_type": "KSamplerProvider", "inputs": {
                  "seed": 32, "steps": 5, "cfg": 7.5, "sampler_name": "dpmpp_2m", "scheduler": "karras",
                  "denoise": 1.0, "basic_pipe": ["14", 0]}},
              "5": {"class_type": "TwoSamplersForMask", "inputs": {
                  "latent_image": ["8", 0], "base_sampler": ["15", 0], "mask_sampler": ["16", 0],
                  "mask": ["11", 0]}},
              **_decode_save("6", "7", ["5", 0], ["1", 2])}
        c.append((name, wf, {}))
    # regional conditioning: masked, area and timestep-range conditioning combined
    wf = {**_ckpt("1", SD15), **_enc("2", "a quiet lake", ["1", 1]), **_enc("3", NEG, ["1", 1]),
          **_enc("12", "a sailing boat", ["1", 1]), **_enc("17", "storm clouds", ["1", 1]), **_empty("4", 96, 128),
          "11": {"class_type": "LoadImageMask", "inputs": {"image": "mask_rgb.png", "channel": "red"}},
          "13": {"class_type": "ConditioningSetMask", "inputs": {"conditioning": ["12", 0], "mask": ["11", 0],
                                                                 "strength": 1.2, "set_cond_area": "mask bounds"}},
          "14": {"class_type": "ConditioningSetArea", "inputs": {"conditioning": ["17", 0], "width": 96,
                                                                 "height": 64, "x": 0, "y": 0, "strength": 0.8}},
          "15": {"class_type": "ConditioningSetTimestepRange", "inputs": {"conditioning": ["14", 0],
                                                                          "start": 0.0, "end": 0.6}},
          "16": {"class_type": "ConditioningCombine", "inputs": {"conditioning_1": ["2", 0],
                                                                 "conditioning_2": ["13", 0]}},
          "18": {"class_type": "ConditioningCombine", "inputs": {"conditioning_1": ["16", 0],
                                                                 "conditioning_2": ["15", 0]}},
          **_ks("5", ["1", 0], ["18", 0], ["3", 0], ["4", 0], 41, 5, 6.0, "dpmpp_2m", "karras"),
          **_decode_save("6", "7", ["5", 0], ["1", 2])}
    c.append(("sd15_regional_conditioning", wf, {}))
    # ControlNet: Apply (old node) and ApplyAdvanced with a start/end window
    wf = {**_ckpt("1", SD15), **_enc("2", "a dancer on a stage", ["1", 1]), **_enc("3", NEG, ["1", 1]),
          **_empty("4", 96, 64),
          "11": {"class_type": "LoadImage", "inputs": {"image": "src.png"}},
          "12": {"class_type": "ControlNetLoader", "inputs": {"control_net_name": "sd15_mini_cn.safetensors"}},
          "13": {"class_type": "ControlNetApplyAdvanced", "inputs": {
              "positive": ["2", 0], "negative": ["3", 0], "control_net": ["12", 0], "image": ["11", 0],
              "strength": 0.9, "start_percent": 0.0, "end_percent": 0.7}},
          "14": {"class_type": "ControlNetApply", "inputs": {"conditioning": ["13", 0], "control_net": ["12", 0],
                                                             "image": ["11", 0], "strength": 0.4}},
          **_ks("5", ["1", 0], ["14", 0], ["13", 1], ["4", 0], 51, 4, 6.0, "euler", "normal"),
          **_decode_save("6", "7", ["5", 0], ["1", 2])}
    c.append(("sd15_controlnet", wf, {}))
    # latent and image plumbing around the models
    wf = {**_ckpt("1", SD15), **_enc("2", "a city at night", ["1", 1]), **_enc("3", NEG, ["1", 1]),
          "4": {"class_type": "LoadImage", "inputs": {"image": "src.png"}},
          "9": {"class_type": "ImageScale", "inputs": {"image": ["4", 0], "upscale_method": "bilinear",
                                                       "width": 64, "height": 64, "crop": "center"}},
          "8": {"class_type": "VAEEncode", "inputs": {"pixels": ["9", 0], "vae": ["1", 2]}},
          **_empty("10", 32, 32),
          **_ks("11", ["1", 0], ["2", 0], ["3", 0], ["10", 0], 61, 3, 5.0, "euler", "simple"),
          "12": {"class_type": "LoadImageMask", "inputs": {"image": "mask_rgb.png", "channel": "red"}},
          "13": {"class_type": "LatentCompositeMasked", "inputs": {"destination": ["8", 0], "source": ["11", 0],
                                                                   "x": 16, "y": 16, "resize_source": False,
                                                                   "mask": ["12", 0]}},
          **_ks("5", ["1", 0], ["2", 0], ["3", 0], ["13", 0], 62, 4, 5.0, "dpmpp_sde", "karras", 0.5),
          **_decode_save("6", "7", ["5", 0], ["1", 2])}
    c.append(("sd15_latent_composite", wf, {}))
    return c


# ------------------------------------------------------------------------------------------ SD2 v
SD2 = "sd2v_mini.safetensors"


def sd2_cases() -> list[tuple[str, dict, dict]]:
    wf = _txt2img(SD2, "a (snowy:1.2) mountain, embedding:pe_sd2v", sampler="dpmpp_2m", scheduler="karras", seed=71)
    return [("sd2v_txt2img", _txt2img(SD2, "a snowy mountain village", seed=70), {}),
            ("sd2v_weights_embedding", wf, {}),
            ("sd2v_img2img", _img2img(SD2, "an oil painting", denoise=0.7, sampler="euler_ancestral", seed=72), {})]


# ------------------------------------------------------------------------------------------ SDXL
XL = "sdxl_mini.safetensors"
REFINER = "sdxl_refiner_mini.safetensors"


def _sdxl_enc(nid: str, clip, text_g: str, text_l: str, w=1024, h=1024, cw=0, ch=0, tw=1024, th=1024) -> dict:
    return {nid: {"class_type": "CLIPTextEncodeSDXL", "inputs": {
        "clip": clip, "width": w, "height": h, "crop_w": cw, "crop_h": ch, "target_width": tw, "target_height": th,
        "text_g": text_g, "text_l": text_l}}}


def _refiner_enc(nid: str, clip, text: str, ascore: float, w=1024, h=1024) -> dict:
    return {nid: {"class_type": "CLIPTextEncodeSDXLRefiner", "inputs": {
        "ascore": ascore, "width": w, "height": h, "text": text, "clip": clip}}}


def sdxl_cases() -> list[tuple[str, dict, dict]]:
    c = [("sdxl_txt2img", _txt2img(XL, "a lighthouse on a cliff, (dramatic:1.2) light", seed=80), {})]
    long_l = ", ".join(f"tag{i}" for i in range(60))
    wf = {**_ckpt("1", XL),
          **_sdxl_enc("2", ["1", 1], "a fox in the snow", "a fox, snow, winter, " + long_l, 1024, 768, 32, 16, 896,
                      640),
          **_sdxl_enc("3", ["1", 1], NEG, "", 512, 512, 0, 0, 512, 512), **_empty("4"),
          **_ks("5", ["1", 0], ["2", 0], ["3", 0], ["4", 0], 81, 4, 6.0, "dpmpp_2m", "karras"),
          **_decode_save("6", "7", ["5", 0], ["1", 2])}
    c.append(("sdxl_clip_text_encode_sdxl", wf, {}))
    wf = {**_ckpt("1", XL), **_refiner_enc("2", ["1", 1], "a fox in the snow", 8.0, 1152, 896),
          **_enc("3", "embedding:pe_sdxl, " + NEG, ["1", 1]), **_empty("4"),
          **_ks("5", ["1", 0], ["2", 0], ["3", 0], ["4", 0], 82, 4, 6.0, "euler", "normal"),
          **_decode_save("6", "7", ["5", 0], ["1", 2])}
    c.append(("sdxl_refiner_encoder_on_base_embedding", wf, {}))
    return c


def refiner_cases() -> list[tuple[str, dict, dict]]:
    c = [("refiner_txt2img_plain_encode", _txt2img(REFINER, "a cabin in the woods", seed=90), {})]
    wf = {**_ckpt("1", REFINER), **_refiner_enc("2", ["1", 1], "a cabin, embedding:pe_refiner", 7.5, 1024, 768),
          **_refiner_enc("3", ["1", 1], NEG, 2.0, 1024, 768),
          "4": {"class_type": "LoadImage", "inputs": {"image": "src.png"}},
          "8": {"class_type": "VAEEncode", "inputs": {"pixels": ["4", 0], "vae": ["1", 2]}},
          **_ks("5", ["1", 0], ["2", 0], ["3", 0], ["8", 0], 91, 5, 5.0, "dpmpp_2m", "karras", 0.4),
          **_decode_save("6", "7", ["5", 0], ["1", 2])}
    c.append(("refiner_img2img_ascore", wf, {}))
    # the SDXL example workflow: base steps 0-3 with leftover noise, refiner steps 3-5
    wf = {**_ckpt("1", XL), **_ckpt("11", REFINER),
          **_sdxl_enc("2", ["1", 1], "a castle at dawn", "a castle at dawn"),
          **_sdxl_enc("3", ["1", 1], NEG, NEG),
          **_refiner_enc("12", ["11", 1], "a castle at dawn", 6.0),
          **_refiner_enc("13", ["11", 1], NEG, 2.5), **_empty("4"),
          **_ksa("5", ["1", 0], ["2", 0], ["3", 0], ["4", 0], seed=92, steps=5, cfg=7.0, sampler="euler",
                 scheduler="normal", end=3, leftover="enable"),
          **_ksa("8", ["11", 0], ["12", 0], ["13", 0], ["5", 0], add_noise="disable", seed=92, steps=5, cfg=7.0,
                 sampler="euler", scheduler="normal", start=3),
          **_decode_save("6", "7", ["8", 0], ["11", 2])}
    c.append(("sdxl_base_then_refiner", wf, {}))
    return c


FAMILY_CASES = {"sd15": sd15_cases, "sd2v": sd2_cases, "sdxl": sdxl_cases, "refiner": refiner_cases}


def all_cases(families: list[str] | None = None) -> dict[str, list[tuple[str, dict, dict]]]:
    return {f: fn() for f, fn in FAMILY_CASES.items() if not families or f in families}
