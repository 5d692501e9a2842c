"""Reference outputs of Impact Pack's iterative upscaler family (IterativeLatentUpscale, IterativeImageUpscale,
LatentPixelScale, the PixelKSample / TwoSamplersForMask upscaler providers and the cfg / denoise / steps schedule
hooks), made by running Impact Pack's OWN code inside ComfyUI 0.30 on the random SD1.5-like UNet "a" of
random_models.py and the full-size random VAE of random_vae.py. Nothing of Impact Pack or ComfyUI is copied into the
project: the script imports Impact's modules from a snapshot outside the repository and keeps only their numbers.

    git --git-dir=/work/.mirror/ltdrdata+ComfyUI-Impact-Pack/repo archive HEAD modules | tar -x -C /tmp/impact-snap
    source ../shared/comfy/env.sh && comfy_python tests/comfy_refs/make_upscale_refs.py /tmp/impact-snap/modules

Impact's heavy imports that the upscaler never calls (segment_anything, skimage, cv2, its server, wildcards, SEGS
nodes) are replaced by placeholders that raise when called. Writes tests/comfy_refs/upscale.safetensors (each case's
output) and upscale.json (the cases' settings, the Impact commit and versions). tests/test_upscalers.py runs the
project's node classes on the same inputs.
"""

import importlib.abc
import importlib.machinery
import json
import subprocess
import sys
import types
from pathlib import Path

import comfy_env  # noqa: F401  (ComfyUI on the path, CPU)
import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import random_models as rm  # noqa: E402
import random_vae  # noqa: E402

IMPACT = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/impact-snap/modules").resolve()
IMPACT_GIT = "/work/.mirror/ltdrdata+ComfyUI-Impact-Pack/repo"
_STUB_ROOTS = ("segment_anything", "skimage", "cv2", "server", "piexif", "thirdparty")
_STUB_NAMES = ("impact.wildcards", "impact.config", "impact.segs_nodes")


class _Placeholder(type):
    def __getattr__(cls, item):
        if item.startswith("__"):
            raise AttributeError(item)
        return _Placeholder(item, (), {})

    def __call__(cls, *a, **k):
        raise RuntimeError(f"stubbed by make_upscale_refs.py: {cls.__name__} called")


class _StubModule(types.ModuleType):
    __path__ = []

    def __getattr__(self, item):
        if item.startswith("__"):
            raise AttributeError(item)
        return _Placeholder(item, (), {})


class _Stubs(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path, target=None):
        if name in _STUB_NAMES or name.split(".")[0] in _STUB_ROOTS:
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        return _StubModule(spec.name)

    def exec_module(self, module):
        pass


sys.meta_path.insert(0, _Stubs())
sys.path.insert(0, str(IMPACT))
torch.set_num_threads(1)
_INFERENCE = torch.inference_mode()  # as ComfyUI runs its nodes (for the whole script; keep the guard alive)
_INFERENCE.__enter__()
import comfy.sd  # noqa: E402
import impact.core as icore  # noqa: E402
import impact.impact_pack as ip  # noqa: E402
import impact.special_samplers as ss  # noqa: E402
import nodes  # noqa: E402

icore.PromptServer = types.SimpleNamespace(instance=types.SimpleNamespace(client_id=None))  # no UI to update
# This snapshot calls VAEEncodeTiled.encode(vae, pixels, tile_size), which ComfyUI 0.30 refuses (overlap became a
# required input); later Impact versions pass overlap=64, as ComfyUI's decode default is. Give encode that default.
_encode_tiled = nodes.VAEEncodeTiled.encode
nodes.VAEEncodeTiled.encode = lambda self, vae, pixels, tile_size, overlap=64, **k: _encode_tiled(
    self, vae, pixels, tile_size, overlap, **k)

OUT, CASES = {}, {}


def t(a):
    return torch.from_numpy(np.ascontiguousarray(a))


def keep(key, tensor):
    OUT[key] = tensor.detach().float().contiguous().clone()
    print(key, tuple(OUT[key].shape), float(OUT[key].abs().mean()), flush=True)


C = rm.conditioning()
POS, NEG = [[t(C["positive"]), {}]], [[t(C["negative"]), {}]]
POS2 = [[t(C["negative"]) * 0.5 + t(C["positive"]) * 0.5, {}]]
MODEL = comfy.sd.load_diffusion_model_state_dict({k: t(v) for k, v in rm.unet("a").items()})
SHAPES = random_vae.sd_vae_shapes_from_comfy()  # the same list nodes.json keeps (make_node_refs.py)
VAE = comfy.sd.VAE(sd={k: torch.from_numpy(v) for k, v in random_vae.state_dict(SHAPES).items()})
PIPE = (MODEL, None, VAE, POS, NEG)
LATENT = {"samples": t(C["latent"])}  # 1x4x8x8: a 64x64 image
MASK = t(C["mask"])[0]  # 64x64, soft values
BOX = torch.zeros(64, 64)
BOX[16:48, 8:40] = 1.0
BOX[16:48, 40] = 0.5
# inputs: random_models.conditioning()'s latent (1x4x8x8), mask[0] (64x64) and image (1x72x100x3), not stored


def ksampler(seed, steps, cfg, sampler, scheduler, denoise, positive=POS):
    return {"seed": seed, "steps": steps, "cfg": cfg, "sampler_name": sampler, "scheduler": scheduler,
            "denoise": denoise, "positive": positive}


def iterate(case, upscaler, factor, steps, mode, latent=LATENT, settings=None):
    (out, vae) = ip.IterativeLatentUpscale().doit(latent, factor, steps, "", upscaler, mode)
    assert vae is VAE
    keep(case, out["samples"])
    if "noise_mask" in out:
        keep(case + "/noise_mask", out["noise_mask"])
    CASES[case] = {"factor": factor, "steps": steps, "step_mode": mode, **(settings or {})}


def pixel_upscaler(method, s, tiled=False, tile=512, hook=None):
    return ip.PixelKSampleUpscalerProvider().doit(method, MODEL, VAE, s["seed"], s["steps"], s["cfg"],
                                                  s["sampler_name"], s["scheduler"], POS, NEG, s["denoise"], tiled,
                                                  None, hook, tile_size=tile)[0]


S1 = ksampler(7, 3, 5.0, "euler", "normal", 0.5)
iterate("pixel/bilinear/simple/1.5/2", pixel_upscaler("bilinear", S1), 1.5, 2, "simple", settings={"sampler": S1})
S2 = ksampler(11, 2, 6.0, "dpmpp_2m", "karras", 0.6)
iterate("pixel/nearest-exact/geometric/2.0/3", pixel_upscaler("nearest-exact", S2), 2.0, 3, "geometric",
        settings={"sampler": S2})
masked = {"samples": LATENT["samples"], "noise_mask": BOX[None]}
S3 = ksampler(3, 2, 4.0, "euler_ancestral", "normal", 0.7)
iterate("pixel/area/noise_mask/1.3/2", pixel_upscaler("area", S3), 1.3, 2, "simple", latent=masked,
        settings={"sampler": S3})
S4 = ksampler(5, 2, 7.5, "euler", "simple", 0.8)
cfg_hook = ip.CfgScheduleHookProvider().doit("simple", 2.0)[0]
den_hook = ip.DenoiseScheduleHookProvider().doit("simple", 0.3)[0]
steps_hook = ip.StepsScheduleHookProvider().doit("simple", 4)[0]
both = ip.PixelKSampleHookCombine().doit(ip.PixelKSampleHookCombine().doit(cfg_hook, den_hook)[0], steps_hook)[0]
ups = ip.PixelKSampleUpscalerProviderPipe().doit_pipe("lanczos", S4["seed"], S4["steps"], S4["cfg"], S4["sampler_name"],
                                                      S4["scheduler"], S4["denoise"], False, PIPE, None, both)[0]
iterate("pixel/lanczos/hooks/1.5/3", ups, 1.5, 3, "simple", settings={"sampler": S4, "target_cfg": 2.0,
                                                                       "target_denoise": 0.3, "target_steps": 4})
iterate("pixel/bilinear/tiled320/1.25/1", pixel_upscaler("bilinear", S1, tiled=True, tile=320), 1.25, 1, "simple",
        settings={"sampler": S1, "tile_size": 320})


def two_upscaler(method, schedule, mask, full=False, tiled=False, hooks=(None, None, None), pipe=False):
    base = ss.KSamplerProvider
    b = base().doit(1, 2, 5.0, "euler", "normal", 0.6, PIPE)[0]
    m = base().doit(2, 3, 6.0, "euler", "karras", 0.8, (MODEL, None, VAE, POS2, NEG))[0]
    f = base().doit(9, 2, 3.0, "euler", "normal", 0.4, PIPE)[0] if full else None
    if pipe:
        return ip.TwoSamplersForMaskUpscalerProviderPipe().doit(method, schedule, tiled, b, m, mask, PIPE, f, None,
                                                                *hooks)[0]
    return ip.TwoSamplersForMaskUpscalerProvider().doit(method, schedule, tiled, b, m, mask, VAE, f, None, *hooks)[0]


TWO = {"base": [1, 2, 5.0, "euler", "normal", 0.6], "mask": [2, 3, 6.0, "euler", "karras", 0.8],
       "full": [9, 2, 3.0, "euler", "normal", 0.4]}
iterate("two/bilinear/none/box/1.5/2", two_upscaler("bilinear", "none", BOX), 1.5, 2, "simple", settings=TWO)
iterate("two/area/interleave1/soft/1.5/3", two_upscaler("area", "interleave1", MASK, full=True), 1.5, 3, "simple",
        settings=TWO)
iterate("two/nearest-exact/last1/box/1.4/2", two_upscaler("nearest-exact", "last1", BOX[None], pipe=True), 1.4, 2,
        "simple", settings=TWO)
iterate("two/bilinear/interleave2+last1/box/hooks/1.5/3",
        two_upscaler("bilinear", "interleave2+last1", BOX, hooks=(cfg_hook, den_hook, None)), 1.5, 3, "simple",
        settings=TWO)

# the tiny x2 ESRGAN of make_node_refs.py (its weights are kept in nodes.safetensors)
import spandrel  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

ESRGAN = {k.removeprefix("esrgan/"): v for k, v in load_file(str(HERE / "nodes.safetensors")).items()
          if k.startswith("esrgan/")}
UPSCALE_MODEL = spandrel.ModelLoader().load_from_state_dict(ESRGAN).eval()
import comfy.model_patcher  # noqa: E402  (what ComfyUI's UpscaleModelLoader attaches)

UPSCALE_MODEL.patcher = comfy.model_patcher.CoreModelPatcher(UPSCALE_MODEL.model, load_device=torch.device("cpu"),
                                                            offload_device=torch.device("cpu"))
ups = ip.PixelKSampleUpscalerProvider().doit("area", MODEL, VAE, S1["seed"], S1["steps"], S1["cfg"], S1["sampler_name"],
                                             S1["scheduler"], POS, NEG, S1["denoise"], False, UPSCALE_MODEL)[0]
iterate("pixel/area/esrgan/1.5/2", ups, 1.5, 2, "simple", settings={"sampler": S1})
lat, img = ip.LatentPixelScale().doit(LATENT, "bilinear", 2.5, VAE, False, UPSCALE_MODEL)
keep("LatentPixelScale/esrgan/bilinear/2.5", lat["samples"])
keep("LatentPixelScale/esrgan/bilinear/2.5/image/strided", img[:, ::3, ::3])
lat, img = ip.LatentPixelScale().doit(LATENT, "bilinear", 1.5, VAE, False)
keep("LatentPixelScale/bilinear/1.5", lat["samples"])
keep("LatentPixelScale/bilinear/1.5/image", img)
lat, img = ip.LatentPixelScale().doit(LATENT, "lanczos", 0.75, VAE, False)
keep("LatentPixelScale/lanczos/0.75", lat["samples"])
keep("LatentPixelScale/lanczos/0.75/image", img)
(img,) = ip.IterativeImageUpscale().doit(t(C["image"]), 1.3, 2, "", pixel_upscaler("bilinear", S1), VAE, "simple")
keep("IterativeImageUpscale/bilinear/1.3/2", img)
CASES["IterativeImageUpscale/bilinear/1.3/2"] = {"sampler": S1}


def strip(obj):
    if isinstance(obj, dict):
        return {k: strip(v) for k, v in obj.items() if k != "positive"}
    return obj


from safetensors.torch import save_file  # noqa: E402

commit = subprocess.run(["git", f"--git-dir={IMPACT_GIT}", "rev-parse", "HEAD"], capture_output=True, text=True)
save_file(OUT, str(HERE / "upscale.safetensors"))
(HERE / "upscale.json").write_text(json.dumps({
    "impact_pack_commit": commit.stdout.strip() or "unknown", "comfyui": "0.30.0", "torch": torch.__version__,
    "spandrel": spandrel.__version__,
    "threads": 1, "cases": strip(CASES)}, indent=1) + "\n")
print("wrote", len(OUT), "tensors")
