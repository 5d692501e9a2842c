"""Impact Pack's iterative upscalers (issue 23) against Impact's own code: tests/comfy_refs/upscale.safetensors holds
what Impact Pack's IterativeLatentUpscale / IterativeImageUpscale / LatentPixelScale and its upscaler providers and
schedule hooks gave inside ComfyUI 0.30 (made by tests/comfy_refs/make_upscale_refs.py from an Impact snapshot), on
the random SD1.5-like UNet "a" and the full-size random VAE; here the project's node classes run on the same inputs.
Plus the pure parts (iteration sizes, schedules, hooks, mask resize), bad input and a workflow run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from twosamplers.nodes import upscale_hooks as uh
from twosamplers.nodes import upscalers as up
from twosamplers.nodes.registry import NODES, scope_note

REFS = Path(__file__).parent / "comfy_refs"
sys.path.insert(0, str(REFS))
import random_models as rm  # noqa: E402

R = load_file(str(REFS / "upscale.safetensors"))
_C = rm.conditioning()
R.update({"in/latent": torch.from_numpy(_C["latent"]), "in/mask": torch.from_numpy(_C["mask"][0]),
          "in/image": torch.from_numpy(_C["image"])})  # the oracle's inputs
CASES = json.loads((REFS / "upscale.json").read_text())["cases"]
# after 1-3 rounds of decode / resize / encode / sample: 2e-3 absolute, or 1e-4 of max |ref| where the random UNet's
# latents reach 100-255 (measured: at most 1.3e-3 absolute, 6.2e-5 relative; images within 4.1e-6)
LATENT_TOL, LATENT_RTOL = 2e-3, 1e-4
IMAGE_TOL = 1e-4


def t(a):
    return torch.from_numpy(a.copy())


# ------------------------------------------------------------------------------------------------ pure parts
def test_iteration_sizes_simple_and_geometric():
    assert up.iteration_sizes(64, 64, 1.5, 2, "simple") == [(0, 80.0, 80.0), (1, 96.0, 96.0)]
    sizes = up.iteration_sizes(64, 48, 2.0, 3, "geometric")
    assert [int(w) for _i, w, _h in sizes] == [80, 101, 128] and [int(h) for *_x, h in sizes] == [60, 76, 96]
    assert up.iteration_sizes(64, 64, 1.5, 1, "simple") == [(0, 96.0, 96.0)]
    # factor 1: steps - 1 resamples at the same size, no final one
    assert up.iteration_sizes(64, 64, 1.0, 3, "simple") == [(0, 64, 64), (1, 64, 64)]


def test_full_sample_schedules_keep_upstream_counting():
    def on(schedule, total):
        return [i for i in range(total) if up.is_full_sample_time(i, total, schedule)]

    assert on("none", 4) == []
    assert on("interleave1", 5) == [1, 3]
    assert on("interleave2", 6) == [2, 5]
    assert on("interleave3", 8) == [3, 7]
    assert on("last1", 4) == []  # upstream's off-by-one: never
    assert on("last2", 4) == [3]
    assert on("interleave1+last1", 5) == on("interleave3+last1", 5) == [1, 3, 4]


def test_hooks_move_linearly_and_truncate_like_upstream():
    s = {"seed": 1, "steps": 10, "cfg": 7.5, "sampler_name": "euler", "scheduler": "normal", "denoise": 0.8}
    cfg = uh.CfgScheduleHookProvider().doit("simple", 2.0)[0]
    assert [cfg.adjust(s, i, 3)["cfg"] for i in range(3)] == [7, 4, 2]  # int(7.5), int(4.75), int(2.0)
    assert cfg.adjust(s, 0, 1)["cfg"] == 2.0
    den = uh.DenoiseScheduleHookProvider().doit("simple", 0.2)[0]
    assert [round(den.adjust(s, i, 3)["denoise"], 6) for i in range(3)] == [0.8, 0.5, 0.2]
    steps = uh.StepsScheduleHookProvider().doit("simple", 4)[0]
    both = uh.PixelKSampleHookCombine().doit(uh.PixelKSampleHookCombine().doit(cfg, den)[0], steps)[0]
    assert both.adjust(s, 1, 3) == {**s, "cfg": 4, "denoise": pytest.approx(0.5), "steps": 7}
    assert s["cfg"] == 7.5  # the settings are not mutated


def test_latent_mask_reproduces_the_top_row_resize_and_fixes_it_on_request():
    mask = torch.zeros(64, 64)
    mask[0, 32:] = 1.0  # top row: right half on
    mask[16:48, 8:40] = 1.0
    bug = up.latent_mask(mask, 12, 12, 1)
    assert bug.shape == (1, 12, 12)
    # the top row's 64 values laid down the 12 rows, constant across each row
    assert torch.equal(bug[0, :, 0], bug[0, :, 11]) and bug[0, 0, 0] == 0 and bug[0, 11, 0] == 1
    fixed = up.latent_mask(mask, 12, 12, 1, fix_resize=True)
    assert fixed[0, 6, 3] > 0.99 and fixed[0, 6, 10] < 0.01
    two = up.latent_mask(torch.stack([mask, 1 - mask]), 12, 12, 2)  # a batch of masks is resized correctly
    assert torch.allclose(two[0], fixed[0]) and two.shape == (2, 12, 12)


# ------------------------------------------------------------------------------------------------ parity
@pytest.fixture(scope="module")
def env(tmp_path_factory):
    pytest.importorskip("diffusers")
    import random_vae
    from safetensors.numpy import save_file as save_np
    from safetensors.torch import save_file
    from test_sd_backend import canonical_clip_keys, tiny_clip, tiny_vae, to_ldm_vae

    from twosamplers.models.vae_file import load_vae_file
    from twosamplers.nodes.folders import Folders
    from twosamplers.nodes.handles import VaeHandle

    root = tmp_path_factory.mktemp("upscale_refs")
    clip = canonical_clip_keys(tiny_clip(seed=1))
    extra = {"cond_stage_model.transformer." + k: v.contiguous() for k, v in clip.items()}
    extra.update({k: v.contiguous() for k, v in to_ldm_vae(tiny_vae()).items()})
    (root / "checkpoints").mkdir()
    unet = {k: t(v) for k, v in rm.unet("a").items()}
    save_file({**unet, **extra}, str(root / "checkpoints" / "a.safetensors"))
    folders = Folders.create(models=root, load_options={"device": "cpu", "dtype": "fp32"})
    model = NODES["CheckpointLoaderSimple"](folders).load_checkpoint("a.safetensors")[0]
    shapes = json.loads((REFS / "nodes.json").read_text())["cases"]["vae_shapes"]
    save_np(random_vae.state_dict(shapes), str(root / "sd_vae.safetensors"))
    vae = VaeHandle(load_vae_file(root / "sd_vae.safetensors", device="cpu"))
    c = rm.conditioning()
    pos, neg = [[t(c["positive"]), {}]], [[t(c["negative"]), {}]]
    pos2 = [[t(c["negative"]) * 0.5 + t(c["positive"]) * 0.5, {}]]
    return {"root": root, "model": model, "vae": vae, "pos": pos, "neg": neg, "pos2": pos2,
            "pipe": (model, None, vae, pos, neg)}


def close(out: torch.Tensor, key: str, tol: float = LATENT_TOL, rtol: float = LATENT_RTOL) -> float:
    ref = R[key]
    assert tuple(out.shape) == tuple(ref.shape), f"{key}: shape {tuple(out.shape)} vs Impact {tuple(ref.shape)}"
    diff, scale = (out.float() - ref).abs().max().item(), ref.abs().max().item()
    print(f"parity {key}: max |ours - Impact| = {diff:.3g} at max |Impact| = {scale:.3g}")  # pytest -s shows it
    assert diff <= max(tol, rtol * scale), f"{key}: max |ours - Impact| = {diff:.3g}"
    return diff


def box():
    b = torch.zeros(64, 64)
    b[16:48, 8:40] = 1.0
    b[16:48, 40] = 0.5
    return b


def pixel_upscaler(env, method, s, tiled=False, tile=512, hook=None):
    return NODES["PixelKSampleUpscalerProvider"]().doit(
        method, env["model"], env["vae"], s["seed"], s["steps"], s["cfg"], s["sampler_name"], s["scheduler"],
        env["pos"], env["neg"], s["denoise"], tiled, None, hook, tile_size=tile)[0]


def iterate(case, upscaler, latent=None):
    c = CASES[case]
    latent = latent or {"samples": R["in/latent"]}
    out, vae = NODES["IterativeLatentUpscale"]().doit(latent, c["factor"], c["steps"], "", upscaler, c["step_mode"],
                                                      disable_pbar=True)
    assert vae is upscaler.vae
    close(out["samples"], case)
    if case + "/noise_mask" in R:
        assert torch.equal(out["noise_mask"], R[case + "/noise_mask"])
    else:
        assert "noise_mask" not in out
    return out


@pytest.mark.slow
@pytest.mark.parametrize("case", ["pixel/bilinear/simple/1.5/2", "pixel/nearest-exact/geometric/2.0/3",
                                  "pixel/bilinear/tiled320/1.25/1"])
@pytest.mark.slow
def test_pixel_ksample_upscaler_matches_impact(env, case):
    c = CASES[case]
    iterate(case, pixel_upscaler(env, case.split("/")[1], c["sampler"], tiled="tile_size" in c,
                                 tile=c.get("tile_size", 512)))


@pytest.mark.slow
def test_pixel_upscaler_keeps_the_noise_mask(env):
    case = "pixel/area/noise_mask/1.3/2"
    latent = {"samples": R["in/latent"], "noise_mask": box()[None]}
    before = latent["noise_mask"].clone()
    iterate(case, pixel_upscaler(env, "area", CASES[case]["sampler"]), latent)
    assert torch.equal(latent["noise_mask"], before)


@pytest.mark.slow
def test_pipe_provider_with_combined_hooks_matches_impact(env):
    case = "pixel/lanczos/hooks/1.5/3"
    c = CASES[case]
    s = c["sampler"]
    cfg = NODES["CfgScheduleHookProvider"]().doit("simple", c["target_cfg"])[0]
    den = NODES["DenoiseScheduleHookProvider"]().doit("simple", c["target_denoise"])[0]
    steps = NODES["StepsScheduleHookProvider"]().doit("simple", c["target_steps"])[0]
    combine = NODES["PixelKSampleHookCombine"]()
    hook = combine.doit(combine.doit(cfg, den)[0], steps)[0]
    ups = NODES["PixelKSampleUpscalerProviderPipe"]().doit_pipe(
        "lanczos", s["seed"], s["steps"], s["cfg"], s["sampler_name"], s["scheduler"], s["denoise"], False,
        env["pipe"], None, hook)[0]
    iterate(case, ups)


def two_upscaler(env, method, schedule, mask, full=False, hooks=(None, None, None), pipe=False):
    ksp = NODES["KSamplerProvider"]()
    base = ksp.doit(*CASES["two/bilinear/none/box/1.5/2"]["base"], env["pipe"])[0]
    m_pipe = (env["model"], None, env["vae"], env["pos2"], env["neg"])
    mask_s = ksp.doit(*CASES["two/bilinear/none/box/1.5/2"]["mask"], m_pipe)[0]
    f = ksp.doit(*CASES["two/bilinear/none/box/1.5/2"]["full"], env["pipe"])[0] if full else None
    if pipe:
        return NODES["TwoSamplersForMaskUpscalerProviderPipe"]().doit(method, schedule, False, base, mask_s, mask,
                                                                      env["pipe"], f, None, *hooks)[0]
    return NODES["TwoSamplersForMaskUpscalerProvider"]().doit(method, schedule, False, base, mask_s, mask, env["vae"],
                                                              f, None, *hooks)[0]


@pytest.mark.slow
def test_two_samplers_upscaler_matches_impact(env):
    iterate("two/bilinear/none/box/1.5/2", two_upscaler(env, "bilinear", "none", box()))
    iterate("two/area/interleave1/soft/1.5/3",
            two_upscaler(env, "area", "interleave1", R["in/mask"], full=True))
    iterate("two/nearest-exact/last1/box/1.4/2", two_upscaler(env, "nearest-exact", "last1", box()[None], pipe=True))


@pytest.mark.slow
def test_two_samplers_upscaler_with_hooks_matches_impact(env):
    cfg = NODES["CfgScheduleHookProvider"]().doit("simple", 2.0)[0]
    den = NODES["DenoiseScheduleHookProvider"]().doit("simple", 0.3)[0]
    iterate("two/bilinear/interleave2+last1/box/hooks/1.5/3",
            two_upscaler(env, "bilinear", "interleave2+last1", box(), hooks=(cfg, den, None)))


@pytest.mark.slow
def test_fix_mask_resize_changes_the_result(env):
    ups = two_upscaler(env, "bilinear", "none", box())
    fixed = NODES["TwoSamplersForMaskUpscalerProvider"]().doit(
        "bilinear", "none", False, ups.base_sampler, ups.mask_sampler, box(), env["vae"], fix_mask_resize=True)[0]
    lat = {"samples": R["in/latent"]}
    a = ups.upscale_shape(0, 1, lat, 72, 72, disable_pbar=True)["samples"]
    b = fixed.upscale_shape(0, 1, lat, 72, 72, disable_pbar=True)["samples"]
    assert a.shape == b.shape == (1, 4, 9, 9) and (a - b).abs().max() > 0.1


@pytest.mark.slow
def test_latent_pixel_scale_matches_impact(env):
    lps = NODES["LatentPixelScale"]()
    for method, factor in (("bilinear", 1.5), ("lanczos", 0.75)):
        lat, img = lps.doit({"samples": R["in/latent"]}, method, factor, env["vae"], False)
        close(lat["samples"], f"LatentPixelScale/{method}/{factor}")
        close(img, f"LatentPixelScale/{method}/{factor}/image", IMAGE_TOL, 0.0)


@pytest.mark.slow
def test_iterative_image_upscale_matches_impact(env):
    case = "IterativeImageUpscale/bilinear/1.3/2"
    ups = pixel_upscaler(env, "bilinear", CASES[case]["sampler"])
    (img,) = NODES["IterativeImageUpscale"]().doit(R["in/image"], 1.3, 2, "", ups, env["vae"], disable_pbar=True)
    close(img, case, IMAGE_TOL, 0.0)


# ------------------------------------------------------------------------------------------------ bad input
@pytest.fixture(scope="module")
def esrgan(tmp_path_factory):
    """The tiny x2 ESRGAN whose weights tests/comfy_refs/nodes.safetensors keeps, through UpscaleModelLoader."""
    from safetensors.torch import save_file
    from spandrel_shim import import_spandrel

    if import_spandrel() is None:
        pytest.skip("spandrel is not installed (pip install 'twosamplers[upscale]')")
    from twosamplers.nodes.folders import Folders

    root = tmp_path_factory.mktemp("esrgan")
    (root / "upscale_models").mkdir()
    sd = {k.removeprefix("esrgan/"): v for k, v in load_file(str(REFS / "nodes.safetensors")).items()
          if k.startswith("esrgan/")}
    save_file(sd, str(root / "upscale_models" / "2x_tiny.safetensors"))
    return NODES["UpscaleModelLoader"](Folders.create(root)).load_model("2x_tiny.safetensors")[0]


@pytest.mark.slow
def test_upscale_model_then_resize_matches_impact(env, esrgan):
    s = CASES["pixel/area/esrgan/1.5/2"]["sampler"]
    ups = NODES["PixelKSampleUpscalerProvider"]().doit(
        "area", env["model"], env["vae"], s["seed"], s["steps"], s["cfg"], s["sampler_name"], s["scheduler"],
        env["pos"], env["neg"], s["denoise"], False, esrgan)[0]
    iterate("pixel/area/esrgan/1.5/2", ups)
    # x2 twice (64 -> 128 -> 256 px) before the resize to 160
    lat, img = NODES["LatentPixelScale"]().doit({"samples": R["in/latent"]}, "bilinear", 2.5, env["vae"], False,
                                                esrgan)
    close(lat["samples"], "LatentPixelScale/esrgan/bilinear/2.5")
    assert img.shape == (1, 160, 160, 3)
    close(img[:, ::3, ::3], "LatentPixelScale/esrgan/bilinear/2.5/image/strided", IMAGE_TOL, 0.0)


@pytest.mark.slow
def test_bad_inputs_get_clear_errors(env):
    s = CASES["pixel/bilinear/simple/1.5/2"]["sampler"]
    ups = pixel_upscaler(env, "bilinear", s)
    it = NODES["IterativeLatentUpscale"]()
    lat = {"samples": R["in/latent"]}
    with pytest.raises(ValueError, match="upscale_factor"):
        it.doit(lat, 0.5, 2, "", ups)
    with pytest.raises(ValueError, match="upscale_factor"):
        it.doit(lat, 5000.0, 2, "", ups)  # 320000 pixels wide
    with pytest.raises(ValueError, match="steps"):
        it.doit(lat, 1.5, 0, "", ups)
    with pytest.raises(ValueError, match="step_mode"):
        it.doit(lat, 1.5, 2, "", ups, "cubic")
    with pytest.raises(TypeError, match="UPSCALER"):
        it.doit(lat, 1.5, 2, "", "not an upscaler")
    with pytest.raises(ValueError, match="scale_method"):
        pixel_upscaler(env, "bicubic", s)
    with pytest.raises(ValueError, match="tile_size"):
        pixel_upscaler(env, "bilinear", s, tiled=True, tile=64)
    with pytest.raises(TypeError, match="PK_HOOK"):
        pixel_upscaler(env, "bilinear", s, hook="cfg")
    with pytest.raises(ValueError, match="full_sample_schedule"):
        two_upscaler(env, "bilinear", "last3", box())
    with pytest.raises(ValueError, match="tile_cnet_opt"):
        NODES["PixelKSampleUpscalerProviderPipe"]().doit_pipe("bilinear", 1, 2, 5.0, "euler", "normal", 0.5, False,
                                                              env["pipe"], tile_cnet_opt=object())
    with pytest.raises(ValueError, match="target_denoise"):
        NODES["DenoiseScheduleHookProvider"]().doit("simple", 1.5)
    with pytest.raises(ValueError, match="scale_factor"):
        NODES["LatentPixelScale"]().doit(lat, "bilinear", 0.1, env["vae"], False)


def test_tiled_and_noise_pack_parts_are_refused_as_out_of_scope():
    for name in ("PixelTiledKSampleUpscalerProvider", "PixelTiledKSampleUpscalerProviderPipe",
                 "NoiseInjectionHookProvider", "UnsamplerHookProvider", "TiledKSamplerProvider"):
        assert name not in NODES
        assert scope_note(name).startswith("out of scope: parts that need another node pack"), name
    for name in up.NODE_CLASSES | uh.NODE_CLASSES:
        assert name in NODES


# ------------------------------------------------------------------------------------------------ workflow
def test_workflow_runs_the_iterative_upscaler(tiny_models_dir, tmp_path):
    """An API-format workflow (checkpoint, prompts, a first KSampler, a cfg hook, the pixel upscaler,
    IterativeLatentUpscale and a decode with its VAE output) run by twosamplers.workflow equals the same node classes
    called directly, and is bit-identical run twice."""
    from twosamplers.nodes.folders import Folders
    from twosamplers.workflow import run

    wf = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd1.safetensors"}},
        "2": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "a house", "clip": ["1", 1]}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "5": {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "seed": 3, "steps": 3, "cfg": 6.0, "sampler_name": "euler", "scheduler": "normal",
            "positive": ["3", 0], "negative": ["4", 0], "latent_image": ["2", 0], "denoise": 1.0}},
        "6": {"class_type": "CfgScheduleHookProvider", "inputs": {"schedule_for_iteration": "simple",
                                                                   "target_cfg": 3.0}},
        "7": {"class_type": "ToBasicPipe", "inputs": {"model": ["1", 0], "clip": ["1", 1], "vae": ["1", 2],
                                                      "positive": ["3", 0], "negative": ["4", 0]}},
        "8": {"class_type": "PixelKSampleUpscalerProviderPipe", "inputs": {
            "scale_method": "bilinear", "seed": 7, "steps": 3, "cfg": 5.0, "sampler_name": "euler",
            "scheduler": "normal", "denoise": 0.5, "use_tiled_vae": False, "basic_pipe": ["7", 0], "tile_size": 512,
            "pk_hook_opt": ["6", 0]}},
        "9": {"class_type": "IterativeLatentUpscale", "inputs": {
            "samples": ["5", 0], "upscale_factor": 1.5, "steps": 2, "temp_prefix": "", "upscaler": ["8", 0],
            "step_mode": "simple"}},
        "10": {"class_type": "VAEDecode", "inputs": {"samples": ["9", 0], "vae": ["9", 1]}},
        "11": {"class_type": "PreviewImage", "inputs": {"images": ["10", 0]}},
    }
    kw = {"models": tiny_models_dir, "input_dir": tmp_path, "output_dir": tmp_path / "out", "device": "cpu",
          "dtype": "fp32"}
    (image,) = [o["images"] for o in run(wf, **kw) if o["node"] == "11"]
    (again,) = [o["images"] for o in run(wf, **kw) if o["node"] == "11"]
    assert torch.equal(image, again)

    folders = Folders.create(models=tiny_models_dir, load_options={"device": "cpu", "dtype": "fp32"})
    model, clip, vae = NODES["CheckpointLoaderSimple"](folders).load_checkpoint("sd1.safetensors")
    pos = NODES["CLIPTextEncode"]().encode(clip, "a house")[0]
    neg = NODES["CLIPTextEncode"]().encode(clip, "")[0]
    empty = NODES["EmptyLatentImage"]().generate(64, 64, 1)[0]
    first = NODES["KSampler"]().sample(model, 3, 3, 6.0, "euler", "normal", pos, neg, empty, 1.0,
                                       disable_pbar=True)[0]
    hook = NODES["CfgScheduleHookProvider"]().doit("simple", 3.0)[0]
    ups = NODES["PixelKSampleUpscalerProvider"]().doit("bilinear", model, vae, 7, 3, 5.0, "euler", "normal", pos, neg,
                                                       0.5, False, None, hook)[0]
    lat, out_vae = NODES["IterativeLatentUpscale"]().doit(first, 1.5, 2, "", ups, disable_pbar=True)
    assert lat["samples"].shape[-1] == first["samples"].shape[-1] * 3 // 2
    assert torch.equal(image, NODES["VAEDecode"]().decode(out_vae, lat)[0])


def test_ui_widget_order_matches_impact():
    """widgets_values of a UI-format node map onto these names in this order (Impact's INPUT_TYPES order)."""
    def widgets(name):
        spec = NODES[name].INPUT_TYPES()
        return [k for part in ("required", "optional") for k, v in spec.get(part, {}).items()
                if isinstance(v[0], list) or v[0] in ("INT", "FLOAT", "STRING", "BOOLEAN")]

    assert widgets("IterativeLatentUpscale") == ["upscale_factor", "steps", "temp_prefix", "step_mode"]
    assert widgets("PixelKSampleUpscalerProviderPipe") == [
        "scale_method", "seed", "steps", "cfg", "sampler_name", "scheduler", "denoise", "use_tiled_vae", "tile_size",
        "tile_cnet_strength"]
    assert widgets("TwoSamplersForMaskUpscalerProvider") == [
        "scale_method", "full_sample_schedule", "use_tiled_vae", "tile_size", "fix_mask_resize"]


def test_memory_estimate_counts_the_upscaled_size(monkeypatch):
    """A workflow is someone else's file: an upscale_factor of 30 on a 1024-pixel latent is refused while planning
    (the memory estimate sees the 30720-pixel result), not when the VAE runs out of memory."""
    from twosamplers.job import memory
    from twosamplers.workflow import WorkflowError
    from twosamplers.workflow.limits import check_memory, image_sizes

    prompt = {
        "1": {"class_type": "EmptyLatentImage", "inputs": {"width": 1024, "height": 768, "batch_size": 2}},
        "2": {"class_type": "KSampler", "inputs": {"latent_image": ["1", 0], "seed": 1}},
        "3": {"class_type": "IterativeLatentUpscale", "inputs": {"samples": ["2", 0], "upscale_factor": 3.5,
                                                                 "steps": 3, "upscaler": ["9", 0]}},
        "4": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["3", 1]}},
        "5": {"class_type": "IterativeImageUpscale", "inputs": {"pixels": ["4", 0], "upscale_factor": 2,
                                                                "upscaler": ["9", 0]}},
        "6": {"class_type": "LatentPixelScale", "inputs": {"samples": [1, 0], "scale_factor": 0.5}},
    }
    order = ["1", "2", "3", "4", "5", "6"]
    assert image_sizes(prompt, order, None) == [(1024, 768, 2, "1"), (3584, 2688, 2, "3"), (7168, 5376, 2, "5"),
                                                (512, 384, 2, "6")]
    monkeypatch.setattr(memory, "available_bytes", lambda device=None: 64 << 30)  # 64 GB
    with pytest.raises(WorkflowError, match=r"node 5 \(IterativeImageUpscale\) makes 2 image\(s\) of 7168x5376"):
        check_memory(prompt, order, None)
    prompt["5"]["inputs"]["upscale_factor"] = ["7", 0]  # not a constant: the size stays unknown there
    check_memory(prompt, order, None)


def test_use_tiled_vae_saved_as_its_label_reads_as_a_boolean():
    """Impact's upscaler tutorials store use_tiled_vae as "enabled" / "disabled" (the toggle was a combo then)."""
    from twosamplers.workflow import load

    ui = {"nodes": [
        {"id": 5, "type": "TwoSamplersForMaskUpscalerProvider", "inputs": [], "outputs": [],
         "widgets_values": ["nearest-exact", "interleave2+last1", "disabled"]},
        {"id": 6, "type": "PixelKSampleUpscalerProviderPipe", "inputs": [], "outputs": [],
         "widgets_values": ["nearest-exact", 11, "fixed", 20, 9, "euler", "karras", 0.42, "enabled"]}],
        "links": []}
    with pytest.warns(UserWarning, match="labels"):
        prompt = load(ui).prompt
    assert prompt["5"]["inputs"]["use_tiled_vae"] is False and prompt["5"]["inputs"]["tile_size"] == 512
    assert prompt["6"]["inputs"]["use_tiled_vae"] is True and prompt["6"]["inputs"]["denoise"] == 0.42
    api = {"1": {"class_type": "LatentPixelScale", "inputs": {"samples": ["2", 0], "scale_method": "area",
                                                              "scale_factor": 2, "vae": ["3", 2],
                                                              "use_tiled_vae": "enabled"}}}
    with pytest.warns(UserWarning, match="labels"):
        assert load(api).prompt["1"]["inputs"]["use_tiled_vae"] is True
