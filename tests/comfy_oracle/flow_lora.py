# ruff: noqa: I001  (comfy_env must be imported before any ComfyUI module)
"""Reference tensors for Flux / SD3 LoRAs, made by ComfyUI 0.30.0's LoraLoader (tensor by tensor).

    python tests/flow_models.py /tmp/flowmodels
    source ../shared/comfy/env.sh
    (cd tests/comfy_oracle && comfy_python flow_lora.py /tmp/flowmodels ../data/flow_lora.safetensors)

For each LoRA file of tests/flow_models.py: the diffusion model (flux_lora_base / sd35_large) loaded with UNETLoader,
the LoRA applied with LoraLoader (Flux, with DualCLIPLoader's CLIP; strength_model 0.8, strength_clip 0.7) or
LoraLoaderModelOnly (SD3, 0.8); then for every weight of the patched model that differs from the unpatched one
(ComfyUI state-dict keys, BFL / MMDiT names): w/<lora>/<key> = patched - unpatched as float16, and sha/<lora>/<key>
= SHA-256 of the patched float32 tensor's bytes; for Flux the CLIPTextEncode of PROMPT with the patched CLIP:
cond/<lora>, pooled/<lora>. ComfyUI 0.30 leaves XLabs files that do not cover all 19 + 38 blocks
unconverted, so the xlabs file changes nothing here (tests compare it with its kohya twin instead).
"""

import hashlib
import sys

import tiny_patches  # noqa: F401
import torch
from safetensors.torch import save_file

import comfy.model_management
import folder_paths
import nodes

PROMPT = "a (red:1.2) fox in the snow"


def weights(model):
    comfy.model_management.load_models_gpu([model])
    return {k: v.detach().float().clone() for k, v in model.model.diffusion_model.state_dict().items()}


def main(models_dir, out_path):
    for kind in ("diffusion_models", "text_encoders", "loras"):
        folder_paths.folder_names_and_paths[kind] = ([f"{models_dir}/{kind}"], folder_paths.supported_pt_extensions)
    out = {}
    for base_name, loras in (("flux_lora_base.safetensors", ("flux_kohya", "flux_diffusers", "flux_comfy",
                                                             "flux_xlabs")),
                             ("sd35_large.safetensors", ("sd3_kohya", "sd3_diffusers"))):
        base = nodes.UNETLoader().load_unet(base_name, "default")[0]
        plain = weights(base)
        clip = None
        if base_name.startswith("flux"):
            clip = nodes.DualCLIPLoader().load_clip("clip_l.safetensors", "t5xxl.safetensors", "flux")[0]
            c = nodes.CLIPTextEncode().encode(clip, PROMPT)[0]
            out["cond/none"], out["pooled/none"] = c[0][0].float(), c[0][1]["pooled_output"].float()
        for name in loras:
            if clip is not None:
                m, cl = nodes.LoraLoader().load_lora(base, clip, name + ".safetensors", 0.8, 0.7)
                c = nodes.CLIPTextEncode().encode(cl, PROMPT)[0]
                out[f"cond/{name}"], out[f"pooled/{name}"] = c[0][0].float(), c[0][1]["pooled_output"].float()
            else:
                m = nodes.LoraLoaderModelOnly().load_lora_model_only(base, name + ".safetensors", 0.8)[0]
            patched = weights(m)
            changed = [k for k in patched if not torch.equal(patched[k], plain[k])]
            print(name, len(changed), "weights changed")
            for k in changed:  # the patch as fp16 (size), and the exact patched weight's SHA-256
                out[f"w/{name}/{k}"] = (patched[k] - plain[k]).half()
                digest = hashlib.sha256(patched[k].contiguous().numpy().tobytes()).digest()
                out[f"sha/{name}/{k}"] = torch.frombuffer(bytearray(digest), dtype=torch.uint8)
            comfy.model_management.unload_all_models()
    save_file({k: v.clone().contiguous() for k, v in out.items()}, out_path)
    print(f"wrote {len(out)} tensors to {out_path}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
