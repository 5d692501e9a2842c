# ruff: noqa: I001  (comfy_env must be imported before any ComfyUI module)
"""Reference tokens and conditionings for the Flux / SD3 text encoders, made by ComfyUI 0.30.0.

    python tests/flow_models.py /tmp/flowmodels
    source ../shared/comfy/env.sh
    comfy_python tests/comfy_oracle/flow_text.py /tmp/flowmodels tests/data/flow_text.safetensors

Records, for each prompt of PROMPTS (tests/test_flow_text.py has the same list):
SD3 conditionings wider than 128 columns are stored as their first 128 columns, with <key>_shape and
<key>_rest_abs (the sum of |values| beyond, 0 for these tiny encoders).
- tok/<i>/t5xxl: the T5 token ids ComfyUI's Flux tokenizer makes (and tok/<i>/t5w their weights);
- flux/<i>/cond, flux/<i>/pooled: CLIPTextEncode through DualCLIPLoader(clip_l, t5xxl, "flux");
- sd3/<i>/cond, sd3/<i>/pooled: CLIPTextEncode through DualCLIPLoader(clip_l, clip_g, "sd3") (the tiny T5 is not
  4096 wide, which SD3's CLIP needs beside CLIP-L/G in ComfyUI);
- sd3t5/<i>/cond, sd3t5/<i>/pooled: CLIPLoader(t5xxl, "sd3") (T5 alone, 77 tokens minimum);
- skip/<flux|sd3|sd3t5>/cond, /pooled: CLIPSetLastLayer(-2) then CLIPTextEncode(PROMPTS[0]);
- sd3enc/<i>/cond, /pooled: CLIPTextEncodeSD3 for each case of SD3_CASES;
- fluxenc/cond, fluxenc/pooled, fluxenc/guidance: CLIPTextEncodeFlux(clip_l="a castle", t5xxl=PROMPTS[3], 2.5).
The tiny encoders are loaded through tiny_patches.py (ComfyUI's own classes, with tiny configs).
"""

import sys

import tiny_patches  # noqa: F401
import torch
from safetensors.torch import save_file

import folder_paths
import nodes
from comfy_extras.nodes_flux import CLIPTextEncodeFlux
from comfy_extras.nodes_sd3 import CLIPTextEncodeSD3

PROMPTS = [
    "a red barn in a green field",
    "",
    "(masterpiece:1.3), a (small) cat\\(s\\) on a [chair], photo",
    "A castle on a hill at sunset,\nwith  two   spaces and a newline; numbers 1234 and 3.5x zoom!",
    "an ünïcödé café — naïve façade, 東京 tower ☕",
    " ".join([f"word{i}" for i in range(90)]),
    "embedding:missing_thing in a garden",
    "((nested (weights:0.5) here:1.2)) end",
]

# CLIPTextEncodeSD3 cases: (CLIP: "sd3" = CLIP-L + CLIP-G, "sd3t5" = T5 alone, clip_l, clip_g, t5xxl, empty_padding)
SD3_CASES = [
    ("sd3", "a red fox", "a fox in the snow, (photo:1.2)", "unused", "none"),
    ("sd3", "", "a castle", "", "none"),
    ("sd3", "", "a castle", "", "empty_prompt"),
    ("sd3", "short", " ".join(f"word{i}" for i in range(90)), "", "none"),
    ("sd3", "", "", "", "none"),
    ("sd3t5", "x", "y", "", "none"),
    ("sd3t5", "x", "y", "", "empty_prompt"),
    ("sd3t5", "x", "y", "a (tiny:1.3) mouse", "none"),
]


def main(models_dir, out_path):
    folder_paths.folder_names_and_paths["text_encoders"] = ([f"{models_dir}/text_encoders"],
                                                            folder_paths.supported_pt_extensions)
    out = {}
    flux = nodes.DualCLIPLoader().load_clip("clip_l.safetensors", "t5xxl.safetensors", "flux")[0]
    sd3 = nodes.DualCLIPLoader().load_clip("clip_l.safetensors", "clip_g.safetensors", "sd3")[0]
    sd3t5 = nodes.CLIPLoader().load_clip("t5xxl.safetensors", "sd3")[0]
    for i, p in enumerate(PROMPTS):
        toks = flux.tokenize(p)["t5xxl"]
        assert len(toks) == 1
        out[f"tok/{i}/t5xxl"] = torch.tensor([t for t, _ in toks[0]], dtype=torch.int64)
        out[f"tok/{i}/t5w"] = torch.tensor([w for _, w in toks[0]], dtype=torch.float64)
        for name, clip in (("flux", flux), ("sd3", sd3), ("sd3t5", sd3t5)):
            cond = nodes.CLIPTextEncode().encode(clip, p)[0]
            out[f"{name}/{i}/cond"] = cond[0][0].float()
            out[f"{name}/{i}/pooled"] = cond[0][1]["pooled_output"].float()
    for name, clip in (("flux", flux), ("sd3", sd3), ("sd3t5", sd3t5)):
        skipped = nodes.CLIPSetLastLayer().set_last_layer(clip, -2)[0]
        cond = nodes.CLIPTextEncode().encode(skipped, PROMPTS[0])[0]
        out[f"skip/{name}/cond"] = cond[0][0].float()
        out[f"skip/{name}/pooled"] = cond[0][1]["pooled_output"].float()
    for i, (clip_name, l, g, t, pad) in enumerate(SD3_CASES):
        clip = sd3 if clip_name == "sd3" else sd3t5
        c = CLIPTextEncodeSD3.execute(clip, l, g, t, pad)[0]
        out[f"sd3enc/{i}/cond"] = c[0][0].float()
        out[f"sd3enc/{i}/pooled"] = c[0][1]["pooled_output"].float()
    c = CLIPTextEncodeFlux.execute(flux, "a castle", PROMPTS[3], 2.5)[0]
    out["fluxenc/cond"] = c[0][0].float()
    out["fluxenc/pooled"] = c[0][1]["pooled_output"].float()
    out["fluxenc/guidance"] = torch.tensor([c[0][1]["guidance"]])
    # SD3's CLIP conditionings are 4096 wide, zeros beyond the tiny encoders' 80 (L ++ G) or 128 (T5) columns:
    # keep the first 128 columns and the full shape (the tests check that the rest is zero)
    for k in [k for k in out if k.endswith("/cond") and out[k].shape[-1] > 128]:
        out[k + "_shape"] = torch.tensor(out[k].shape)
        out[k + "_rest_abs"] = out[k][..., 128:].abs().sum().reshape(1)
        out[k] = out[k][..., :128]
    save_file({k: v.clone().contiguous() for k, v in out.items()}, out_path)
    print(f"wrote {len(out)} tensors to {out_path}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
