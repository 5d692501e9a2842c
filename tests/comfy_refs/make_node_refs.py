"""Reference outputs of ComfyUI 0.30's own node classes for the node classes issue 23 added (run ComfyUI, keep its
numbers; no ComfyUI code is copied into the project). Run it with the shared oracle's interpreter:

    source ../shared/comfy/env.sh && comfy_python tests/comfy_refs/make_node_refs.py

It draws every input from numpy's PCG64 with fixed seeds, calls ComfyUI's node classes on them and writes inputs
and outputs to tests/comfy_refs/nodes.safetensors (small tensors only), plus nodes.json (the cases' settings and
the ComfyUI / torch / kornia / spandrel versions). The VAE cases use a full-size SD VAE with weights drawn by
`random_vae.py` (the same numpy draws on both sides; the file is not kept) and write only their outputs.
tests/test_nodes_comfy_parity.py runs the project's classes on the same inputs.
"""

import json
import os
import sys
from pathlib import Path

import comfy_env  # noqa: F401  (ComfyUI on the path, CPU)
import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import random_vae  # noqa: E402

torch.set_num_threads(1)
import nodes  # noqa: E402
from comfy_extras import nodes_canny, nodes_custom_sampler, nodes_images, nodes_mask, nodes_post_processing  # noqa: E402

T = {}
CASES = {}


def rnd(seed, *shape, lo=0.0, hi=1.0):
    g = np.random.default_rng(seed)
    return torch.from_numpy((g.random(shape) * (hi - lo) + lo).astype(np.float32))


def out(r):
    """A V1 node's tuple or a V3 NodeOutput -> tuple."""
    return tuple(r.result) if hasattr(r, "result") else tuple(r)


def keep(name, value):
    with torch.inference_mode(False):
        T[name] = value.detach().float().contiguous().clone()


# ------------------------------------------------------------------------------------------------ inputs
lat = rnd(1, 2, 4, 12, 16, lo=-3, hi=3)
lat_b = rnd(2, 1, 4, 7, 9, lo=-3, hi=3)
img = rnd(3, 2, 20, 28, 3)
img_rgba = rnd(4, 1, 13, 11, 4)
mask = rnd(5, 1, 20, 28)
mask_b = rnd(6, 1, 9, 13)
noise_mask = rnd(7, 2, 1, 12, 16)
for k, v in (("lat", lat), ("lat_b", lat_b), ("img", img), ("img_rgba", img_rgba), ("mask", mask),
             ("mask_b", mask_b), ("noise_mask", noise_mask)):
    keep("in/" + k, v)

# ------------------------------------------------------------------------------------------------ latents
for method in ("nearest-exact", "bilinear", "area", "bicubic", "bislerp"):
    for w, h, crop in ((200, 72, "disabled"), (0, 136, "center"), (96, 0, "disabled"), (256, 64, "center")):
        keep(f"LatentUpscale/{method}/{w}x{h}/{crop}", out(nodes.LatentUpscale().upscale(
            {"samples": lat}, method, w, h, crop))[0]["samples"])
    for s in (0.5, 1.37, 2.0):
        keep(f"LatentUpscaleBy/{method}/{s}",
             out(nodes.LatentUpscaleBy().upscale({"samples": lat}, method, s))[0]["samples"])
for x, y, f in ((0, 0, 0), (16, 8, 0), (40, 24, 16), (8, 48, 8), (96, 80, 24)):
    keep(f"LatentComposite/{x}/{y}/{f}", out(nodes.LatentComposite().composite(
        {"samples": lat}, {"samples": lat_b}, x, y, feather=f))[0]["samples"])
for bf in (0.0, 0.3, 1.0):
    keep(f"LatentBlend/{bf}", out(nodes.LatentBlend().blend({"samples": lat}, {"samples": lat_b}, bf))[0]["samples"])
for bi, ln in ((0, 1), (1, 1), (-1, 1), (0, 5), (3, 2)):
    o = out(nodes.LatentFromBatch().frombatch({"samples": lat, "noise_mask": noise_mask}, bi, ln))[0]
    keep(f"LatentFromBatch/{bi}/{ln}", o["samples"])
    keep(f"LatentFromBatch/{bi}/{ln}/noise_mask", o["noise_mask"])
    CASES[f"LatentFromBatch/{bi}/{ln}/batch_index"] = o["batch_index"]
for amount in (1, 3):
    o = out(nodes.RepeatLatentBatch().repeat({"samples": lat, "noise_mask": noise_mask}, amount))[0]
    keep(f"RepeatLatentBatch/{amount}", o["samples"])
    keep(f"RepeatLatentBatch/{amount}/noise_mask", o["noise_mask"])
for w, h, x, y in ((64, 64, 0, 0), (96, 64, 16, 8), (512, 512, 120, 90)):
    keep(f"LatentCrop/{w}/{h}/{x}/{y}", out(nodes.LatentCrop().crop({"samples": lat}, w, h, x, y))[0]["samples"])

# ------------------------------------------------------------------------------------------------ images
for method in ("nearest-exact", "bilinear", "area", "bicubic", "lanczos"):
    for s in (0.5, 1.3, 2.0):
        keep(f"ImageScaleBy/{method}/{s}", out(nodes.ImageScaleBy().upscale(img, method, s))[0])
keep("ImageInvert", out(nodes.ImageInvert().invert(img))[0])
keep("ImageBatch/resize", out(nodes.ImageBatch().batch(img, img_rgba))[0])
keep("ImageBatch/same", out(nodes.ImageBatch().batch(img, img))[0])
for w, h, x, y in ((10, 7, 3, 2), (512, 512, 0, 0), (5, 5, 40, 40)):
    keep(f"ImageCrop/{w}/{h}/{x}/{y}", out(nodes_images.ImageCrop.execute(img, w, h, x, y))[0])
for sides, f in (((8, 16, 0, 24), 40), ((0, 0, 32, 0), 6), ((16, 8, 8, 16), 4), ((8, 8, 8, 8), 0)):
    i2, m2 = out(nodes.ImagePadForOutpaint().expand_image(img, *sides, f))
    keep(f"ImagePadForOutpaint/{sides}/{f}/image", i2)
    keep(f"ImagePadForOutpaint/{sides}/{f}/mask", m2)
for x, y, rs, m in ((0, 0, False, None), (5, 3, False, "mask_b"), (20, 15, False, "mask_b"), (0, 0, True, "mask_b")):
    src = img_rgba if x == 5 else img[:1, :9, :13]
    o = out(nodes_mask.ImageCompositeMasked.execute(img, src, x, y, rs, mask_b if m else None))[0]
    keep(f"ImageCompositeMasked/{x}/{y}/{rs}/{m}", o)
for mode in ("normal", "multiply", "screen", "overlay", "soft_light", "difference"):
    keep(f"ImageBlend/{mode}", out(nodes_post_processing.Blend.execute(img, img.flip(2), 0.35, mode))[0])
keep("ImageBlend/resize", out(nodes_post_processing.Blend.execute(img, img_rgba, 0.6, "normal"))[0])
edges_in = rnd(8, 1, 32, 40, 3)
keep("in/edges", edges_in)
for lo, hi in ((0.4, 0.8), (0.1, 0.3)):
    keep(f"Canny/{lo}/{hi}", out(nodes_canny.Canny.execute(edges_in, lo, hi))[0])
for op in ("multiply", "add", "subtract", "and", "or", "xor"):
    for x, y in ((0, 0), (7, 5), (25, 18)):
        keep(f"MaskComposite/{op}/{x}/{y}", out(nodes_mask.MaskComposite.execute(mask, mask_b, x, y, op))[0])
for x, y, w, h in ((0, 0, 5, 5), (3, 4, 100, 100), (27, 19, 3, 3)):
    keep(f"CropMask/{x}/{y}/{w}/{h}", out(nodes_mask.CropMask.execute(mask, x, y, w, h))[0])

# ------------------------------------------------------------------------------------------------ sigmas
CS = nodes_custom_sampler
for steps in (1, 7, 20):
    keep(f"KarrasScheduler/{steps}", out(CS.KarrasScheduler.execute(steps, 14.614642, 0.0291675, 7.0))[0])
    keep(f"ExponentialScheduler/{steps}", out(CS.ExponentialScheduler.execute(steps, 14.614642, 0.0291675))[0])
keep("KarrasScheduler/custom", out(CS.KarrasScheduler.execute(9, 3.5, 0.1, 4.2))[0])
base = out(CS.KarrasScheduler.execute(10, 14.614642, 0.0291675, 7.0))[0]
for step in (0, 3, 10, 15):
    hi, lo = out(CS.SplitSigmas.execute(base, step))
    keep(f"SplitSigmas/{step}/high", hi)
    keep(f"SplitSigmas/{step}/low", lo)
for d in (1.0, 0.5, 0.25):
    hi, lo = out(CS.SplitSigmasDenoise.execute(base, d))
    keep(f"SplitSigmasDenoise/{d}/high", hi)
    keep(f"SplitSigmasDenoise/{d}/low", lo)
keep("FlipSigmas", out(CS.FlipSigmas.execute(base.clone()))[0])


class _Model:  # what BasicScheduler / SDTurboScheduler ask of a MODEL: its model_sampling (SD1.5's, eps)
    def __init__(self):
        import comfy.model_sampling
        import comfy.supported_models

        cfg = comfy.supported_models.SD15({})
        cls = type("MS", (comfy.model_sampling.ModelSamplingDiscrete, comfy.model_sampling.EPS), {})
        self.ms = cls(cfg)

    def get_model_object(self, name):
        return self.ms


model = _Model()
for sched in ("normal", "karras", "exponential", "sgm_uniform", "simple", "ddim_uniform", "beta", "linear_quadratic",
              "kl_optimal"):
    for steps, d in ((8, 1.0), (5, 0.6), (3, 0.0)):
        keep(f"BasicScheduler/{sched}/{steps}/{d}", out(CS.BasicScheduler.execute(model, sched, steps, d))[0])
for steps, d in ((1, 1.0), (4, 1.0), (2, 0.5)):
    keep(f"SDTurboScheduler/{steps}/{d}", out(CS.SDTurboScheduler.execute(model, steps, d))[0])

# ------------------------------------------------------------------------------------------------ upscale model
import spandrel  # noqa: E402
from spandrel.architectures.ESRGAN import ESRGAN  # noqa: E402

torch.manual_seed(0)
net = ESRGAN(in_nc=3, out_nc=3, num_filters=8, num_blocks=1, scale=2)
for k, v in net.state_dict().items():
    keep("esrgan/" + k, v)
from comfy_extras import nodes_upscale_model  # noqa: E402

desc = spandrel.ModelLoader().load_from_state_dict({k: v.clone() for k, v in net.state_dict().items()}).eval()
import comfy.model_management  # noqa: E402
import comfy.model_patcher  # noqa: E402

desc.patcher = comfy.model_patcher.CoreModelPatcher(desc.model, load_device=torch.device("cpu"),
                                                   offload_device=torch.device("cpu"))
up_in = rnd(9, 1, 12, 600, 3)
keep("in/upscale", up_in)
up = out(nodes_upscale_model.ImageUpscaleWithModel.execute(desc, up_in))[0]
keep("ImageUpscaleWithModel/strided", up[:, ::3, ::7, :])
CASES["ImageUpscaleWithModel/shape"] = list(up.shape)

# ------------------------------------------------------------------------------------------------ VAE (full size)
if os.environ.get("SKIP_VAE") != "1":
    import comfy.sd  # noqa: E402
    import comfy.utils  # noqa: E402

    shapes = random_vae.sd_vae_shapes_from_comfy()
    CASES["vae_shapes"] = shapes
    sd = random_vae.state_dict(shapes)
    vae = comfy.sd.VAE(sd={k: torch.from_numpy(v) for k, v in sd.items()})
    vimg = rnd(10, 1, 72, 96, 3)
    vlat = rnd(11, 1, 4, 9, 12, lo=-2, hi=2)
    keep("in/vae_img", vimg)
    keep("in/vae_lat", vlat)
    with torch.inference_mode():  # as ComfyUI's executor runs nodes
        keep("VAEDecode", out(nodes.VAEDecode().decode(vae, {"samples": vlat}))[0])
        keep("VAEEncode", out(nodes.VAEEncode().encode(vae, vimg))[0]["samples"])
        keep("VAEDecodeTiled/64/32", out(nodes.VAEDecodeTiled().decode(vae, {"samples": vlat}, 64, 32))[0])
        keep("VAEEncodeTiled/64/16", out(nodes.VAEEncodeTiled().encode(vae, vimg, 64, 16))[0]["samples"])

import comfyui_version  # noqa: E402
import kornia  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

save_file(T, str(HERE / "nodes.safetensors"))
meta = {"comfyui": comfyui_version.__version__, "torch": torch.__version__, "kornia": kornia.__version__,
        "spandrel": spandrel.__version__, "threads": 1, "cases": CASES}
(HERE / "nodes.json").write_text(json.dumps(meta, indent=1) + "\n")
print(len(T), "tensors", sum(v.numel() for v in T.values()), "values")
