# ruff: noqa: I001  (comfy_env must be imported before any ComfyUI module)
"""Reference tensors for the 16-channel VAE and the all-in-one checkpoints, made by ComfyUI 0.30.0.

    python tests/flow_models.py /tmp/flowmodels
    source ../shared/comfy/env.sh
    (cd tests/comfy_oracle && comfy_python flow_vae_ckpt.py /tmp/flowmodels ../data/flow_vae_ckpt.safetensors)

- vae/<file>/encode, vae/<file>/decode: VAELoader(<file>) then VAEEncode(in/image, 40 x 56, cropped to 40 x 56)
  and VAEDecode(in/latent);
- ckpt/<file>/fwd: CheckpointLoaderSimple's MODEL, apply_model as in flow_transformers.py;
- ckpt/<file>/encode: its VAE's VAEEncode(in/image); ckpt/flux_dev_aio/cond, /pooled: its CLIP's CLIPTextEncode
  (the SD3 checkpoint's tiny T5 is not 4096 wide, which ComfyUI's SD3 CLIP needs, so its CLIP is not run).
"""

import sys

import tiny_patches  # noqa: F401
import torch
from safetensors.torch import save_file

import folder_paths
import nodes


def main(models_dir, out_path):
    for kind in ("vae", "checkpoints"):
        folder_paths.folder_names_and_paths[kind] = ([f"{models_dir}/{kind}"], folder_paths.supported_pt_extensions)
    g = torch.Generator().manual_seed(4)
    out = {"in/image": torch.rand(1, 43, 61, 3, generator=g), "in/latent": torch.randn(1, 16, 5, 7, generator=g),
           "in/x": torch.randn(1, 16, 6, 6, generator=g), "in/sigma": torch.tensor([0.6]),
           "in/context": torch.randn(1, 4, 128, generator=g), "in/pooled_flux": torch.randn(1, 32, generator=g),
           "in/pooled_sd3": torch.randn(1, 80, generator=g)}
    for name in ("ae.safetensors", "sd35_vae.safetensors"):
        vae = nodes.VAELoader().load_vae(name)[0]
        out[f"vae/{name}/encode"] = nodes.VAEEncode().encode(vae, out["in/image"])[0]["samples"].float()
        out[f"vae/{name}/decode"] = nodes.VAEDecode().decode(vae, {"samples": out["in/latent"]})[0].float()
    for name, fam in (("flux_dev_aio.safetensors", "flux"), ("sd35_large_aio.safetensors", "sd3")):
        model, clip, vae = nodes.CheckpointLoaderSimple().load_checkpoint(name)[:3]
        import comfy.model_management
        comfy.model_management.load_models_gpu([model])
        kw = {"y": out[f"in/pooled_{fam}"]}
        if fam == "flux":
            kw["guidance"] = torch.tensor([3.5])
        with torch.no_grad():
            out[f"ckpt/{name}/fwd"] = model.model.apply_model(out["in/x"], out["in/sigma"],
                                                              c_crossattn=out["in/context"], **kw).float()
        out[f"ckpt/{name}/encode"] = nodes.VAEEncode().encode(vae, out["in/image"])[0]["samples"].float()
        if fam == "flux":
            c = nodes.CLIPTextEncode().encode(clip, "a lighthouse at dawn")[0]
            out[f"ckpt/{name}/cond"] = c[0][0].float()
            out[f"ckpt/{name}/pooled"] = c[0][1]["pooled_output"].float()
    save_file({k: v.clone().contiguous() for k, v in out.items()}, out_path)
    print(f"wrote {len(out)} tensors to {out_path}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
