"""Regenerate the in-repository engine parity set by running ComfyUI 0.30.0's own sampling code.

    source ../shared/comfy/env.sh
    comfy_python tests/parity/engine/make.py [OUT_DIR] [--impact DIR] [--only engine|cond|regional]
                                                                          # default OUT_DIR: this folder

ComfyUI runs in its own environment (../shared/comfy); this script only calls it and stores its outputs (no
ComfyUI code is copied into the repository). The toy network and the closed-form denoiser are the ones of
tests/conftest.py (formulas in tests/parity/README.md); every input tensor is made here from numpy's PCG64
(the same values on every machine).

Writes, in the layout of the project's shared parity folder (so its checkers read it too):
  OUT_DIR/reference.safetensors + manifest.json   ms/*, sigmas/*, ksigmas/*, noise/*, mask/*, kd/*, pipe/*
  OUT_DIR/cond/reference.safetensors + manifest.json      ComfyUI's masked / area / timestep-range conditioning
                                                          (ConditioningSetMask, ...SetArea(Percentage/Strength),
                                                          ...SetTimestepRange, ConditioningCombine) sampled by
                                                          nodes.common_ksampler
  OUT_DIR/regional/reference.safetensors + manifest.json  Impact Pack's TwoAdvancedSamplersForMask and
                                                          RegionalSampler (only with --impact DIR: a checkout of
                                                          ltdrdata/ComfyUI-Impact-Pack, run beside ComfyUI)
Each manifest's `_meta` records ComfyUI's version, torch, the CPU capability and the thread count.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import types
import zlib

import numpy as np

SEED = 2022


def arr(name: str, shape, scale=1.0, kind="normal") -> np.ndarray:
    g = np.random.Generator(np.random.PCG64([SEED, zlib.crc32(name.encode())]))
    if kind == "normal":
        a = g.standard_normal(shape)
    else:
        a = g.random(shape)
    return (a * scale).astype(np.float32)


# ------------------------------------------------------------------------------------------------ ComfyUI side
def setup(threads: int):
    import comfy_env  # noqa: F401, I001  (first: ComfyUI on the path, CPU only)
    import comfy.utils
    import torch

    comfy.utils.PROGRESS_BAR_ENABLED = False
    torch.set_num_threads(threads)
    return torch


class Toy:
    """The toy EPS network (tests/conftest.py ToyNet) inside ComfyUI's BaseModel and ModelPatcher."""

    def __init__(self, torch):
        import comfy.model_base
        import comfy.model_patcher
        import comfy.supported_models

        class ToyUNet(torch.nn.Module):
            def __init__(self):
                super().__init__()
                idx = torch.arange(4 * 4 * 3 * 3, dtype=torch.float64).reshape(4, 4, 3, 3)
                self.weight = torch.nn.Parameter((0.1 * torch.sin(1.0 + idx)).float(), requires_grad=False)
                self.bias = torch.nn.Parameter((0.01 * torch.arange(1, 5, dtype=torch.float64)).float(),
                                               requires_grad=False)

            @property
            def dtype(self):
                return torch.float32

            def forward(self, x, timesteps=None, context=None, **kwargs):
                h = torch.nn.functional.conv2d(x, self.weight, self.bias, padding=1)
                tt = (timesteps.float() / 1000.0).view(-1, 1, 1, 1)
                c = context.float().mean(dim=(1, 2)).view(-1, 1, 1, 1)
                return torch.tanh(h) * (0.5 + tt) + 0.1 * c + 0.05 * torch.roll(x, shifts=1, dims=1)

        config = comfy.supported_models.SD15({"disable_unet_model_creation": True, "in_channels": 4,
                                               "model_channels": 320, "context_dim": 8})
        model = comfy.model_base.BaseModel(config, device=torch.device("cpu"))
        model.diffusion_model = ToyUNet()
        self.patcher = comfy.model_patcher.ModelPatcher(model, load_device=torch.device("cpu"),
                                                        offload_device=torch.device("cpu"))
        self.model_sampling = model.model_sampling


def closed_form(torch, mean=0.3, var=0.25):
    def D(x, sigma, **kw):
        s2 = (sigma.view(-1, *([1] * (x.ndim - 1)))) ** 2
        return x * var / (var + s2) + mean * s2 / (var + s2)
    return D


def machine(torch) -> dict:
    import comfyui_version

    cpu = None
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), None)
    except OSError:
        pass
    return {"comfyui_version": comfyui_version.__version__, "torch": torch.__version__,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cpu_model": cpu or platform.processor(),
            "torch_threads": torch.get_num_threads(), "device": "cpu",
            "made_by": "tests/parity/engine/make.py (ComfyUI's own code run through ../shared/comfy)"}


def t(torch, a: np.ndarray):
    return torch.from_numpy(np.ascontiguousarray(a))


# ------------------------------------------------------------------------------------------------ engine set
SCHEDULERS = ["simple", "sgm_uniform", "karras", "exponential", "ddim_uniform", "beta", "normal",
              "linear_quadratic", "kl_optimal"]
KD_SAMPLERS = ["euler", "heun", "heunpp2", "dpm_2", "lms", "dpmpp_2m", "ipndm", "ipndm_v", "deis",
               "gradient_estimation"]


def engine_set(torch, out_dir: str) -> None:
    import comfy.k_diffusion.sampling as kds
    import comfy.sample
    import comfy.sampler_helpers
    import comfy.samplers
    import nodes
    from safetensors.torch import save_file

    toy = Toy(torch)
    ms = toy.model_sampling
    T, M = {}, {}
    # ---- model sampling tables
    T["ms/sigmas"], T["ms/log_sigmas"] = ms.sigmas.float().clone(), ms.log_sigmas.float().clone()
    T["ms/in/sigma_probe"] = t(torch, np.concatenate([[0.0292, 0.5, 1.0, 3.3, 14.6146], arr("ms.s", 16, 1.0,
                                                                                              "u") * 14.0]))
    T["ms/in/t_probe"] = t(torch, np.concatenate([[0.0, 1.0, 499.5, 998.7, 999.0], arr("ms.t", 16, 1.0, "u") * 999]))
    T["ms/timestep"] = ms.timestep(T["ms/in/sigma_probe"].clone()).float()
    T["ms/sigma"] = ms.sigma(T["ms/in/t_probe"].clone()).float()
    for k in ("ms/sigmas", "ms/log_sigmas", "ms/timestep", "ms/sigma"):
        M[k] = {}
    M["ms/in/sigma_probe"] = M["ms/in/t_probe"] = {"input": True}
    # ---- schedulers
    for sch in SCHEDULERS:
        for steps in (1, 2, 3, 5, 10, 20, 25, 30, 50):
            k = f"sigmas/{sch}/steps{steps}"
            T[k] = comfy.samplers.calculate_sigmas(ms, sch, steps).float()
            M[k] = {"scheduler": sch, "steps": steps}
    # ---- KSampler sigmas (denoise < 1, the discard-penultimate samplers)
    for sampler in ("euler", "dpm_2", "uni_pc", "uni_pc_bh2", "ddim"):
        for sch in SCHEDULERS:
            for steps in (1, 4, 20):
                for den in (0.05, 0.33, 0.5, 0.75, 1.0):
                    k = f"ksigmas/{sampler}/{sch}/steps{steps}/d{den}"
                    ks = comfy.samplers.KSampler(toy.patcher, steps=steps, device="cpu", sampler=sampler,
                                                 scheduler=sch, denoise=den)
                    T[k] = ks.sigmas.float().clone()
                    M[k] = {"sampler": sampler, "scheduler": sch, "steps": steps, "denoise": den}
    # ---- initial noise
    for seed in (0, 1, 42, 123456789, 2**32 + 17, 2**64 - 1):
        k = f"noise/seed{seed}"
        T[k] = comfy.sample.prepare_noise(torch.zeros(3, 4, 8, 8), seed).float()
        M[k] = {"seed": seed, "shape": [3, 4, 8, 8]}
    for bi in ([0, 1, 2], [3, 1, 3], [5, 0, 2]):
        k = f"noise/seed42/bi{'_'.join(map(str, bi))}"
        T[k] = comfy.sample.prepare_noise(torch.zeros(3, 4, 8, 8), 42, bi).float()
        M[k] = {"seed": 42, "batch_index": bi, "shape": [3, 4, 8, 8]}
    # ---- noise masks
    box = np.zeros((1, 64, 64), np.float32)
    box[:, 16:48, 8:40] = 1.0
    masks = {"box": box, "soft": arr("mask.soft", (1, 64, 64), 1.0, "u"),
             "soft3": arr("mask.soft3", (3, 40, 56), 1.0, "u"), "two": np.stack([box[0], 1 - box[0]])}
    for name, src, shape in (("box_b1_to_1x4x9x7", "box", (1, 4, 9, 7)), ("box_b1_to_2x4x8x8", "box", (2, 4, 8, 8)),
                             ("soft_b1_to_1x4x8x8", "soft", (1, 4, 8, 8)),
                             ("soft_b3_to_2x4x8x8", "soft3", (2, 4, 8, 8)),
                             ("two_b2_to_3x4x8x8", "two", (3, 4, 8, 8)),
                             ("soft_b1_to_1x4x13x5", "soft", (1, 4, 13, 5))):
        k = f"mask/{name}"
        m = t(torch, masks[src])
        T[k + "/in"] = m.clone()
        T[k] = comfy.sampler_helpers.prepare_mask(m.reshape(-1, 1, m.shape[-2], m.shape[-1]), shape, "cpu").float()
        M[k + "/in"] = {}
        M[k] = {"kind": src, "mask_batch": int(m.shape[0]), "out_shape": list(shape)}
    # ---- samplers on the closed-form denoiser
    T["kd/x_unit"] = t(torch, arr("kd.x", (1, 4, 8, 8)))
    M["kd/x_unit"] = {}
    D = closed_form(torch)
    for sampler in KD_SAMPLERS:
        fn = getattr(kds, f"sample_{sampler}")
        for sch in ("normal", "karras", "exponential", "simple"):
            for steps in (4, 10, 25):
                sig = comfy.samplers.calculate_sigmas(ms, sch, steps)
                k = f"kd/{sampler}/{sch}/steps{steps}"
                T[k] = fn(D, T["kd/x_unit"].clone() * sig[0], sig, extra_args={}, disable=True).float()
                M[k] = {"sampler": sampler, "scheduler": sch, "steps": steps}
    # ---- the whole common_ksampler path with the toy network
    T["pipe/latent_in"] = t(torch, arr("pipe.latent", (1, 4, 8, 8)))
    T["pipe/positive_cross_attn"] = t(torch, arr("pipe.pos", (1, 3, 8)))
    T["pipe/negative_cross_attn"] = t(torch, arr("pipe.neg", (1, 3, 8)))
    T["pipe/mask_box"] = t(torch, box.reshape(1, 1, 64, 64))
    T["pipe/mask_soft"] = t(torch, masks["soft"].reshape(1, 1, 64, 64))
    for k in ("pipe/latent_in", "pipe/positive_cross_attn", "pipe/negative_cross_attn", "pipe/mask_box",
              "pipe/mask_soft"):
        M[k] = {}
    pos = [[T["pipe/positive_cross_attn"], {}]]
    neg = [[T["pipe/negative_cross_attn"], {}]]
    for sampler in comfy.samplers.KSampler.SAMPLERS:
        for den, mask, cfg in ((1.0, None, 7.5), (1.0, "box", 7.5), (0.6, "box", 7.5), (0.6, "soft", 1.0)):
            k = f"pipe/{sampler}/karras/d{den}/mask_{mask}/cfg{cfg}"
            latent = {"samples": T["pipe/latent_in"].clone()}
            if mask:
                latent["noise_mask"] = T[f"pipe/mask_{mask}"].clone()
            out = nodes.common_ksampler(toy.patcher, 1234, 6, cfg, sampler, "karras", pos, neg, latent,
                                        denoise=den)[0]
            T[k] = out["samples"].float().clone()
            M[k] = {"sampler": sampler, "scheduler": "karras", "steps": 6, "denoise": den, "mask": mask, "cfg": cfg,
                    "seed": 1234, "latent": "pipe/latent_in"}
    for sampler, sch in (("euler", "normal"), ("dpmpp_2m", "simple"), ("uni_pc", "exponential")):
        k = f"pipe/{sampler}/{sch}/d1.0/mask_None/cfg7.5"
        out = nodes.common_ksampler(toy.patcher, 1234, 6, 7.5, sampler, sch, pos, neg,
                                    {"samples": T["pipe/latent_in"].clone()}, denoise=1.0)[0]
        T[k] = out["samples"].float().clone()
        M[k] = {"sampler": sampler, "scheduler": sch, "steps": 6, "denoise": 1.0, "mask": None, "cfg": 7.5,
                "seed": 1234, "latent": "pipe/latent_in"}
    M["_meta"] = {**machine(torch), "toy_network": "tests/conftest.py ToyNet (SD1.5 EPS model sampling)",
                  "sections": ["ms", "sigmas", "ksigmas", "noise", "mask", "kd", "pipe"]}
    save_file({k: v.contiguous() for k, v in T.items()}, os.path.join(out_dir, "reference.safetensors"))
    with open(os.path.join(out_dir, "manifest.json"), "w") as f:
        json.dump(M, f, indent=1, sort_keys=True)
    print(f"engine: {len(T)} tensors -> {out_dir}", flush=True)


# ------------------------------------------------------------------------------------------------ conditioning
def cond_set(torch, out_dir: str) -> None:
    """Regional conditioning cases: each positive/negative built with ComfyUI's nodes, then sampled."""
    import comfy_extras.nodes_mask  # noqa: F401
    import nodes
    from safetensors.torch import save_file

    toy = Toy(torch)
    T, M = {}, {}

    def inp(name, a):
        T[f"cond/in/{name}"] = t(torch, a).clone()
        M[f"cond/in/{name}"] = {"kind": "input", "shape": list(a.shape)}
        return T[f"cond/in/{name}"]

    texts = {n: [[inp(f"text_{n}", arr(f"cond.{n}", (1, 3, 8))), {}]]
             for n in ("a", "b", "global", "neg", "neg_b", "detail")}
    left = np.zeros((1, 32, 32), np.float32)
    left[..., :16] = 1.0
    left_ovl = np.zeros((1, 32, 32), np.float32)
    left_ovl[..., :20] = 1.0
    right_ovl = np.zeros((1, 32, 32), np.float32)
    right_ovl[..., 12:] = 1.0
    yy, xx = np.mgrid[0:32, 0:32]
    blob = np.clip(1.2 - np.hypot(yy - 15, xx - 18) / 9.0, 0, 1).astype(np.float32)[None]
    boxm = np.zeros((1, 32, 32), np.float32)
    boxm[:, 6:20, 10:26] = 1.0
    left256 = np.zeros((1, 256, 256), np.float32)
    left256[..., :150] = 1.0
    right256 = np.zeros((1, 256, 256), np.float32)
    right256[..., 106:] = 1.0
    masks = {n: inp(f"mask_{n}", a) for n, a in (
        ("left32", left), ("right32", 1 - left), ("left32_ovl", left_ovl), ("right32_ovl", right_ovl),
        ("blob32", blob), ("box32", boxm), ("zero32", np.zeros((1, 32, 32), np.float32)),
        ("noise_box32", boxm), ("left256", left256), ("right256", right256))}
    # latents of 32 x 32 (a 256 x 256 image): the masks above are at latent resolution, the 256 ones at image's
    latents = {"latent_empty_1x32": inp("latent_empty_1x32", np.zeros((1, 4, 32, 32), np.float32)),
               "latent_img_1x32": inp("latent_img_1x32", arr("cond.img", (1, 4, 32, 32))),
               "latent_empty_2x32": inp("latent_empty_2x32", np.zeros((2, 4, 32, 32), np.float32))}

    def set_mask(c, m, strength=1.0, area="default"):
        return nodes.ConditioningSetMask().append(c, masks[m], area, strength)[0]

    def set_area(c, w, h, x, y, strength=1.0):
        return nodes.ConditioningSetArea().append(c, w, h, x, y, strength)[0]

    def combine(*cs):
        out = cs[0]
        for c in cs[1:]:
            out = nodes.ConditioningCombine().combine(out, c)[0]
        return out

    def trange(c, start, end):
        return nodes.ConditioningSetTimestepRange().set_range(c, start, end)[0]

    def pct(c, w, h, x, y, strength=1.0):
        return nodes.ConditioningSetAreaPercentage().append(c, w, h, x, y, strength)[0]

    def strength(c, s):
        return nodes.ConditioningSetAreaStrength().append(c, s)[0]

    g, a, b, n, nb, d = (texts[k] for k in ("global", "a", "b", "neg", "neg_b", "detail"))
    cases = {
        "m01_two_masks_lr_euler_normal": (combine(set_mask(a, "left32"), set_mask(b, "right32")), n, 1, 8, "euler",
                                          "normal", "latent_empty_1x32", None),
        "m03_overlap_strength06": (combine(set_mask(a, "left32_ovl", 0.6), set_mask(b, "right32_ovl")), n, 3, 8,
                                   "uni_pc", "karras", "latent_empty_1x32", None),
        "m07_image_res_256_overlap": (combine(set_mask(a, "left256"), set_mask(b, "right256", 0.6)), n, 7, 8, "euler",
                                      "karras", "latent_empty_1x32", None),
        "m11_mask_bounds_box32_plus_global": (combine(g, set_mask(a, "box32", 1.0, "mask bounds")), n, 11, 8,
                                              "uni_pc", "normal", "latent_empty_1x32", None),
        "m14_mask_bounds_empty_mask": (combine(g, set_mask(a, "zero32", 1.0, "mask bounds")), n, 14, 6, "euler",
                                       "normal", "latent_empty_1x32", None),
        "g01_global_plus_blob": (combine(g, set_mask(a, "blob32")), n, 21, 8, "euler", "karras", "latent_empty_1x32",
                                 None),
        "g04_masked_negatives": (combine(g, set_mask(a, "left32")),
                                 combine(set_mask(n, "left32"), set_mask(nb, "right32", 0.6)), 24, 8, "euler",
                                 "normal", "latent_empty_1x32", None),
        "a01_area_left_right": (combine(set_area(a, 128, 256, 0, 0), set_area(b, 128, 256, 128, 0)), n, 31, 8,
                                "euler", "normal", "latent_empty_1x32", None),
        "a04_area_percentage": (combine(g, pct(a, 0.5, 0.75, 0.25, 0.1)), n, 34, 8, "euler", "karras",
                                "latent_empty_1x32", None),
        "a06_area_strength": (combine(g, strength(set_area(a, 128, 128, 64, 64), 1.7)), n, 36, 8, "dpmpp_2m",
                              "karras", "latent_empty_1x32", None),
        "a08_area_then_mask": (combine(g, set_mask(set_area(a, 128, 128, 128, 0), "blob32", 0.7)), n, 38, 8, "euler",
                               "karras", "latent_empty_1x32", None),
        "t01_composition_then_detail": (combine(trange(g, 0.0, 0.4), trange(d, 0.4, 1.0)), n, 41, 10, "euler",
                                        "normal", "latent_empty_1x32", None),
        "t03_range_on_masked": (combine(g, trange(set_mask(a, "left32"), 0.2, 0.7)), n, 43, 8, "uni_pc", "normal",
                                "latent_empty_1x32", None),
        "b01_batch2_one_mask_broadcast": (combine(g, set_mask(a, "left32")), n, 51, 8, "euler", "karras",
                                          "latent_empty_2x32", None),
        "b04_inpaint_box_masked_cond": (combine(g, set_mask(a, "noise_box32")), n, 54, 8, "euler", "normal",
                                        "latent_img_1x32", "noise_box32"),
        "b05_area_batch2_dpmpp_2m": (combine(set_area(a, 128, 256, 0, 0), set_area(b, 128, 256, 128, 0)), n, 55, 8,
                                     "dpmpp_2m", "karras", "latent_empty_2x32", None),
    }
    for name, (pos, neg, seed, steps, sampler, sch, lat, nm) in cases.items():
        latent = {"samples": latents[lat].clone()}
        if nm:
            m = masks[nm]
            latent["noise_mask"] = m.reshape((-1, 1, m.shape[-2], m.shape[-1])).clone()
            T[f"cond/in/{nm}__latent_noise_mask"] = latent["noise_mask"].clone()
        out = nodes.common_ksampler(toy.patcher, seed, steps, 6.5, sampler, sch, pos, neg, latent, denoise=1.0)[0]
        k = f"cond/{name}"
        T[k] = out["samples"].float().clone()
        M[k] = {"kind": "case", "positive": encode_cond(pos, T), "negative": encode_cond(neg, T), "seed": seed,
                "steps": steps, "cfg": 6.5, "sampler_name": sampler, "scheduler": sch, "denoise": 1.0,
                "latent": f"cond/in/{lat}", "noise_mask": f"cond/in/{nm}__latent_noise_mask" if nm else None,
                "batch_index": None, "latent_dict_keys": sorted(latent), "out_keys": sorted(out), "out": k}
    M["_meta"] = {**machine(torch), "n_cases": len(cases),
                  "option_encoding": "options are the conditioning dict as ComfyUI's nodes left it; {'tensor': key} "
                                     "is a tensor from reference.safetensors; a JSON list is a Python tuple",
                  "call": "nodes.common_ksampler(toy, seed, steps, cfg, sampler_name, scheduler, positive, "
                          "negative, latent, denoise)"}
    os.makedirs(out_dir, exist_ok=True)
    save_file({k: v.contiguous() for k, v in T.items()}, os.path.join(out_dir, "reference.safetensors"))
    with open(os.path.join(out_dir, "manifest.json"), "w") as f:
        json.dump(M, f, indent=1, sort_keys=True)
    print(f"cond: {len(cases)} cases -> {out_dir}", flush=True)


def encode_cond(cond, T) -> list:
    """A CONDITIONING list as JSON: tensors by their key in T (stored once), tuples as lists."""
    import torch

    out = []
    for tensor, opts in cond:
        key = next((k for k, v in T.items() if k.startswith("cond/in/") and v.shape == tensor.shape
                    and torch.equal(v, tensor)), None)
        if key is None:
            raise ValueError("conditioning tensor not among the inputs")
        enc = {}
        for ok, ov in opts.items():
            if torch.is_tensor(ov):
                mkey = next((k for k, v in T.items() if k.startswith("cond/in/") and v.shape == ov.shape
                             and torch.equal(v, ov)), None)
                if mkey is None:
                    mkey = f"cond/in/opt_{len(T)}"
                    T[mkey] = ov.clone()
                enc[ok] = {"tensor": mkey}
            elif isinstance(ov, tuple):
                enc[ok] = list(ov)
            else:
                enc[ok] = ov
        out.append([key, enc])
    return out


# ------------------------------------------------------------------------------------------------ regional
def _stub_modules(names: tuple[str, ...]) -> None:
    """Importable placeholders for Impact Pack's optional dependencies (detectors, image tools) that the
    sampler nodes never call: any attribute is a placeholder class, calling one raises."""
    import importlib.abc
    import importlib.machinery

    class Placeholder:
        def __init__(self, *a, **k):
            raise RuntimeError("stubbed dependency called")

    class Module(types.ModuleType):
        def __getattr__(self, item):
            if item.startswith("__"):
                raise AttributeError(item)
            return Placeholder

    class Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
        def find_spec(self, fullname, path=None, target=None):
            if fullname.split(".")[0] in names:
                return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
            return None

        def create_module(self, spec):
            m = Module(spec.name)
            m.__path__ = []
            return m

        def exec_module(self, module):
            pass

    sys.meta_path.insert(0, Finder())
    if "server" in names:  # the nodes report progress to ComfyUI's web server: a silent one
        server = Module("server")
        server.__path__ = []
        server.PromptServer = type("PromptServer", (), {"instance": types.SimpleNamespace(
            send_sync=lambda *a, **k: None, client_id=None, last_node_id=None)})
        sys.modules["server"] = server


def regional_set(torch, out_dir: str, impact: str) -> None:
    """Impact Pack's TwoAdvancedSamplersForMask and RegionalSampler (its own code, imported from `impact`)."""
    from safetensors.torch import save_file

    _stub_modules(("cv2", "piexif", "skimage", "segment_anything", "server", "spandrel"))
    import asyncio
    import logging

    import nodes

    logging.getLogger().setLevel(logging.CRITICAL)  # comfy_extras modules that cannot load here are skipped
    asyncio.run(nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))  # LatentCompositeMasked, ...
    logging.getLogger().setLevel(logging.WARNING)
    sys.path.insert(0, os.path.join(impact, "modules"))
    from impact import special_samplers  # noqa: E402  (Impact Pack's own module)

    toy = Toy(torch)
    T, M = {}, {}

    def inp(name, a):
        T[f"regional/in/{name}"] = t(torch, a).clone()
        return f"regional/in/{name}"

    keys = {n: inp(n, arr(f"reg.{n}", (1, 3, 8))) for n in ("positive_a", "negative_a", "positive_b", "negative_b")}
    inp("latent_nz_b1", arr("reg.lat1", (1, 4, 8, 8)))
    inp("latent_zero_b1", np.zeros((1, 4, 8, 8), np.float32))
    box8 = np.zeros((8, 8), np.float32)
    box8[2:6, 3:7] = 1.0
    inp("mask_box8_hw", box8)
    right8 = np.zeros((8, 8), np.float32)
    right8[:, 5:] = 1.0
    inp("mask_right8_hw", right8)
    box64 = np.zeros((1, 64, 64), np.float32)
    box64[:, 16:44, 20:52] = 1.0
    inp("mask_box64_1hw", box64)
    yy, xx = np.mgrid[0:64, 0:64]
    inp("mask_soft64_hw", np.clip(1.3 - np.hypot(yy - 28, xx - 34) / 16.0, 0, 1).astype(np.float32))
    _ = keys

    def adv(cfg, sampler, sch, pos, neg, sigma_factor=1.0):
        pipe = (toy.patcher, None, None, [[T[pos], {}]], [[T[neg], {}]])
        return special_samplers.KSamplerAdvancedProvider().doit(cfg, sampler, sch, pipe, sigma_factor=sigma_factor)[0]

    def spec(cfg, sampler, sch, pos, neg):
        return {"cfg": cfg, "sampler_name": sampler, "scheduler": sch, "sigma_factor": 1.0,
                "positive": f"regional/in/{pos}", "negative": f"regional/in/{neg}"}

    two = {
        "ta01_box8_ov0_d1": (101, 6, 1.0, "latent_nz_b1", "mask_box8_hw", 0, spec(7.5, "euler", "normal", "positive_a",
                             "negative_a"), spec(5.0, "dpmpp_2m", "karras", "positive_b", "negative_b")),
        "ta03_box64_ov10_d1_unipc_empty": (103, 6, 1.0, "latent_zero_b1", "mask_box64_1hw", 10,
                                           spec(7.5, "euler", "karras", "positive_a", "negative_a"),
                                           spec(5.0, "uni_pc", "normal", "positive_b", "negative_b")),
        "ta05_soft64_ov3_d08": (105, 6, 0.8, "latent_nz_b1", "mask_soft64_hw", 3,
                                spec(6.0, "dpmpp_2m", "karras", "positive_a", "negative_a"),
                                spec(7.0, "euler", "normal", "positive_b", "negative_a")),
    }
    for name, (seed, steps, den, lat, mask, ov, base, msk) in two.items():
        latent = {"samples": T[f"regional/in/{lat}"].clone()}
        b = adv(base["cfg"], base["sampler_name"], base["scheduler"], base["positive"], base["negative"])
        m = adv(msk["cfg"], msk["sampler_name"], msk["scheduler"], msk["positive"], msk["negative"])
        out = special_samplers.TwoAdvancedSamplersForMask().doit(seed, steps, den, latent, b, m,
                                                                 T[f"regional/in/{mask}"].clone(), ov)[0]
        k = f"regional/{name}"
        T[k] = out["samples"].float().clone()
        rp = special_samplers.RegionalPrompt().doit(T[f"regional/in/{mask}"].clone(), m)[0][0]
        T[f"{k}/region_mask1"] = rp.get_mask_erosion(ov).float().squeeze().clone()
        M[k] = {"mask_keys": [f"regional/in/{mask}"], "diag_keys": {"region_mask1": f"{k}/region_mask1"},
                "node": "TwoAdvancedSamplersForMask.doit(seed, steps, denoise, samples, base_sampler, mask_sampler, "
                        "mask, overlap_factor)[0]['samples']", "seed": seed, "steps": steps, "denoise": den,
                "latent": f"regional/in/{lat}", "batch_index": None, "mask": f"regional/in/{mask}",
                "overlap_factor": ov, "base_sampler": base, "mask_sampler": msk, "out_keys": sorted(out),
                "out_batch_index": None}
    regional = {
        "rs01_1r_bos0_ignore_disable": dict(seed=201, seed_2nd=0, seed_2nd_mode="ignore", steps=6, base_only_steps=0,
                                            denoise=1.0, latent="latent_nz_b1", overlap_factor=3, restore_latent=True,
                                            additional_mode="DISABLE", additional_sampler="AUTO",
                                            additional_sigma_ratio=0.3,
                                            base=spec(7.5, "euler", "normal", "positive_a", "negative_a"),
                                            regions=[("mask_box8_hw", spec(5.0, "dpmpp_2m", "karras", "positive_b",
                                                                           "negative_b"))]),
        "rs05_2r_bos1_seedsum_between": dict(seed=205, seed_2nd=3, seed_2nd_mode="seed+seed_2nd", steps=6,
                                             base_only_steps=1, denoise=1.0, latent="latent_nz_b1", overlap_factor=3,
                                             restore_latent=True, additional_mode="ratio between",
                                             additional_sampler="AUTO", additional_sigma_ratio=0.3,
                                             base=spec(7.5, "euler", "normal", "positive_a", "negative_a"),
                                             regions=[("mask_box8_hw", spec(5.0, "dpmpp_2m", "karras", "positive_b",
                                                                            "negative_b")),
                                                      ("mask_right8_hw", spec(6.0, "uni_pc", "normal", "positive_a",
                                                                              "negative_b"))]),
        "rs07_1r_bos2_increment_additional": dict(seed=207, seed_2nd=5, seed_2nd_mode="increment", steps=6,
                                                  base_only_steps=2, denoise=0.9, latent="latent_nz_b1",
                                                  overlap_factor=0, restore_latent=False,
                                                  additional_mode="ratio additional", additional_sampler="AUTO",
                                                  additional_sigma_ratio=0.3,
                                                  base=spec(7.0, "euler", "karras", "positive_a", "negative_a"),
                                                  regions=[("mask_box64_1hw", spec(5.0, "dpmpp_sde", "karras",
                                                                                   "positive_b", "negative_b"))]),
    }
    for name, c in regional.items():
        b = adv(c["base"]["cfg"], c["base"]["sampler_name"], c["base"]["scheduler"], c["base"]["positive"],
                c["base"]["negative"])
        prompts = []
        for mask, s in c["regions"]:
            sampler = adv(s["cfg"], s["sampler_name"], s["scheduler"], s["positive"], s["negative"])
            prompts += special_samplers.RegionalPrompt().doit(T[f"regional/in/{mask}"].clone(), sampler)[0]
        latent = {"samples": T[f"regional/in/{c['latent']}"].clone()}
        out = special_samplers.RegionalSampler().doit(
            c["seed"], c["seed_2nd"], c["seed_2nd_mode"], c["steps"], c["base_only_steps"], c["denoise"], latent, b,
            prompts, c["overlap_factor"], c["restore_latent"], c["additional_mode"], c["additional_sampler"],
            c["additional_sigma_ratio"])[0]
        k = f"regional/{name}"
        T[k] = out["samples"].float().clone()
        diag = {}
        for j, rp in enumerate(prompts, 1):
            T[f"{k}/region_mask{j}"] = rp.get_mask_erosion(c["overlap_factor"]).float().squeeze().clone()
            diag[f"region_mask{j}"] = f"{k}/region_mask{j}"
        M[k] = {"mask_keys": [f"regional/in/{m}" for m, _ in c["regions"]], "diag_keys": diag,
                "node": "RegionalSampler.doit(...)[0]['samples']; regional_prompts = concatenation of "
                        "RegionalPrompt().doit(mask, advanced_sampler)[0] over `regions`",
                **{kk: v for kk, v in c.items() if kk not in ("base", "regions", "latent")},
                "latent": f"regional/in/{c['latent']}", "batch_index": None, "base_sampler": c["base"],
                "regions": [{"mask": f"regional/in/{m}", "sampler": s} for m, s in c["regions"]],
                "out_keys": sorted(out), "out_batch_index": None}
    import subprocess

    commit = subprocess.run(["git", "-C", impact, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    if not commit and os.path.isfile(os.path.join(impact, "IMPACT_COMMIT")):  # an exported snapshot
        with open(os.path.join(impact, "IMPACT_COMMIT")) as f:
            commit = f.read().strip()
    M["_meta"] = {**machine(torch), "impact_commit": commit or None, "impact_root": "a checkout beside ComfyUI",
                  "stubbed_modules": ["cv2", "piexif", "skimage", "segment_anything", "server", "spandrel"],
                  "regional_sampler_construction": "every sampler is Impact's KSamplerAdvancedProvider().doit(cfg, "
                  "sampler_name, scheduler, basic_pipe=(toy ModelPatcher, None, None, [[positive, {}]], "
                  "[[negative, {}]]), sigma_factor)[0]"}
    os.makedirs(out_dir, exist_ok=True)
    save_file({k: v.contiguous() for k, v in T.items()}, os.path.join(out_dir, "reference.safetensors"))
    with open(os.path.join(out_dir, "manifest.json"), "w") as f:
        json.dump(M, f, indent=1, sort_keys=True)
    print(f"regional: {len(two) + len(regional)} cases -> {out_dir}", flush=True)


def main(argv: list[str]) -> int:
    out = os.path.dirname(os.path.abspath(__file__))
    impact = only = None
    threads = 2
    rest = list(argv)
    while rest:
        a = rest.pop(0)
        if a == "--impact":
            impact = rest.pop(0)
        elif a == "--only":
            only = rest.pop(0)
        elif a == "--threads":
            threads = int(rest.pop(0))
        else:
            out = a
    torch = setup(threads)
    os.makedirs(out, exist_ok=True)
    if only in (None, "engine"):
        engine_set(torch, out)
    if only in (None, "cond"):
        cond_set(torch, os.path.join(out, "cond"))
    if only not in (None, "regional"):
        return 0
    if impact:
        regional_set(torch, os.path.join(out, "regional"), impact)
    else:
        print("regional: skipped (pass --impact DIR, a checkout of ltdrdata/ComfyUI-Impact-Pack)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
