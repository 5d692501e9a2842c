"""MODEL patch, merge, hypernetwork and diff-ControlNet nodes against ComfyUI 0.30's own: tests/comfy_refs/models.*
hold the KSampler latents ComfyUI gave (made by tests/comfy_refs/make_model_refs.py with the shared oracle) on the
random SD1.5-like UNets of comfy_refs/random_models.py; the same weights are drawn here, saved as checkpoints
(with a tiny text encoder and VAE, unused: the conditioning is given as tensors) and run through this project's
node classes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from safetensors.torch import load_file, save_file  # noqa: E402

from twosamplers.nodes.folders import Folders  # noqa: E402
from twosamplers.nodes.handles import ModelHandle  # noqa: E402
from twosamplers.nodes.registry import NODES  # noqa: E402

REFS = Path(__file__).parent / "comfy_refs"
sys.path.insert(0, str(REFS))
import random_models as rm  # noqa: E402

REF = load_file(str(REFS / "models.safetensors"))
CASES = json.loads((REFS / "models.json").read_text())["cases"]
# |latent| reaches ~400 (ModelMergeAdd) and ~26000 (zero terminal SNR at 3 steps): compare relative to the scale
RTOL = 2e-4


def t(a):
    return torch.from_numpy(a.copy())


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    from test_sd_backend import canonical_clip_keys, tiny_clip, tiny_vae, to_ldm_vae

    root = tmp_path_factory.mktemp("model_refs")
    clip = canonical_clip_keys(tiny_clip(seed=1))
    extra = {"cond_stage_model.transformer." + k: v.contiguous() for k, v in clip.items()}
    extra.update({k: v.contiguous() for k, v in to_ldm_vae(tiny_vae()).items()})
    (root / "checkpoints").mkdir()
    for name in rm.UNET_SEEDS:
        unet = {k: t(v) for k, v in rm.unet(name).items()}
        save_file({**unet, **extra}, str(root / "checkpoints" / f"{name}.safetensors"))
    (root / "hypernetworks").mkdir()
    hn = rm.hypernetwork()
    torch.save({k: ([{n: t(a) for n, a in s.items()} for s in v] if isinstance(k, int) else v) for k, v in hn.items()},
               str(root / "hypernetworks" / "hn.pt"))
    (root / "controlnet").mkdir()
    save_file({k: t(v) for k, v in rm.controlnet().items()}, str(root / "controlnet" / "cn.safetensors"))
    save_file({k: t(v) for k, v in rm.diff_controlnet(rm.unet("a")).items()},
              str(root / "controlnet" / "diff_cn.safetensors"))
    return root


@pytest.fixture(scope="module")
def env(models_dir):
    folders = Folders.create(models=models_dir, load_options={"device": "cpu", "dtype": "fp32", "allow_pickle": True})
    load = NODES["CheckpointLoaderSimple"](folders)
    models = {n: load.load_checkpoint(f"{n}.safetensors")[0] for n in rm.UNET_SEEDS}
    return folders, models


C = rm.conditioning()
POS, NEG = [[t(C["positive"]), {}]], [[t(C["negative"]), {}]]


def run(case, model, positive=POS, latent=None):
    s = CASES[case]
    latent = latent or {"samples": torch.zeros(1, 4, 8, 8)}
    (out,) = NODES["KSampler"]().sample(model, s["seed"], s["steps"], s["cfg"], s["sampler"], s["scheduler"], positive,
                                        NEG, latent, s["denoise"], disable_pbar=True)
    ref = REF[case]
    diff = (out["samples"] - ref).abs().max().item()
    scale = ref.abs().max().item()
    assert diff <= RTOL * max(scale, 1.0), f"{case}: max |diff| {diff:.3g} at |ref| {scale:.3g}"
    return out["samples"]


def test_base_model_matches(env):
    run("base", env[1]["a"])


@pytest.mark.parametrize("case", [c for c in CASES if c.startswith("ModelSamplingDiscrete/")])
def test_model_sampling_discrete(env, case):
    _, sampling, zsnr = case.split("/")
    (m,) = NODES["ModelSamplingDiscrete"]().patch(env[1]["a"], sampling, zsnr == "True")
    run(case, m)


def test_model_sampling_continuous_edm(env):
    node = NODES["ModelSamplingContinuousEDM"]()
    run("ModelSamplingContinuousEDM/edm", node.patch(env[1]["a"], "edm", 80.0, 0.002)[0])
    run("ModelSamplingContinuousEDM/v_prediction", node.patch(env[1]["a"], "v_prediction", 120.0, 0.002)[0])


def test_rescale_cfg(env):
    (v,) = NODES["ModelSamplingDiscrete"]().patch(env[1]["a"], "v_prediction", False)
    run("RescaleCFG/0.7", NODES["RescaleCFG"]().patch(v, 0.7)[0])


@pytest.mark.parametrize("strength", [1.0, 0.4])
def test_differential_diffusion(env, strength):
    (m,) = NODES["DifferentialDiffusion"]().apply(env[1]["a"], strength)
    latent = {"samples": t(C["latent"]), "noise_mask": t(C["mask"]).reshape(1, 1, 64, 64)}
    run(f"DifferentialDiffusion/{strength}", m, latent=latent)


def test_merges(env):
    a, b, c = (env[1][n] for n in "abc")
    run("ModelMergeSimple/0.3", NODES["ModelMergeSimple"]().merge(a, b, 0.3)[0])
    run("ModelMergeBlocks/0.2/0.6/0.9", NODES["ModelMergeBlocks"]().merge(a, b, input=0.2, middle=0.6, out=0.9)[0])
    run("ModelMergeAdd", NODES["ModelMergeAdd"]().merge(a, b)[0])
    run("ModelMergeSubtract/0.7", NODES["ModelMergeSubtract"]().merge(a, b, 0.7)[0])
    (d,) = NODES["ModelMergeSubtract"]().merge(b, c, 1.0)
    run("ModelMergeAdd(A, Subtract(B, C))", NODES["ModelMergeAdd"]().merge(a, d)[0])
    run("ModelMergeSD1", NODES["ModelMergeSD1"]().merge(a, b, **CASES["ModelMergeSD1"]["ratios"])[0])


def test_merges_leave_the_networks_unchanged(env):
    a, b = env[1]["a"], env[1]["b"]
    before = {k: v.clone() for k, v in a.unet.state_dict().items()}
    run("ModelMergeSimple/0.3", NODES["ModelMergeSimple"]().merge(a, b, 0.3)[0])
    run("base", a)
    assert all(torch.equal(before[k], v) for k, v in a.unet.state_dict().items())


@pytest.mark.parametrize("strength", [0.8, -0.5])
def test_hypernetwork(env, strength):
    folders, models = env
    (m,) = NODES["HypernetworkLoader"](folders).load_hypernetwork(models["a"], "hn.pt", strength)
    run(f"HypernetworkLoader/{strength}", m)
    run("base", models["a"])  # the patch is gone once the hypernetwork model has sampled


def test_diff_controlnet(env):
    folders, models = env
    a, b = models["a"], models["b"]
    hint = t(C["hint"])
    apply = NODES["ControlNetApply"]()
    (cn,) = NODES["ControlNetLoader"](folders).load_controlnet("cn.safetensors")
    run("ControlNet", a, positive=apply.apply_controlnet(POS, cn, hint, 0.9)[0])
    (dcn,) = NODES["DiffControlNetLoader"](folders).load_diff_controlnet(a, "diff_cn.safetensors")
    run("DiffControlNet/A", a, positive=apply.apply_controlnet(POS, dcn, hint, 0.9)[0])
    (merged,) = NODES["ModelMergeSimple"]().merge(a, b, 0.5)
    (dcn,) = NODES["DiffControlNetLoader"](folders).load_diff_controlnet(merged, "diff_cn.safetensors")
    run("DiffControlNet/merged", a, positive=apply.apply_controlnet(POS, dcn, hint, 0.9)[0])


def test_handles_wrap_models(env):
    assert isinstance(env[1]["a"], ModelHandle)


# ------------------------------------------------------------------------------------------ image prompts
def test_clip_preprocess_matches():
    from twosamplers.models.clip_vision import preprocess

    for key in [k for k in REF if k.startswith("clip_preprocess/")]:
        _, name, size = key.split("/")
        image = t(C["image2" if name == "batch" else "image"])
        out = preprocess(image, int(size), crop=name != "wide_none")
        assert (out - REF[key]).abs().max().item() < 1e-5, key


def _vision():
    from twosamplers.models.clip_vision import clip_vision_from_state

    return clip_vision_from_state({k: t(v) for k, v in rm.clip_vision().items()}, "tiny CLIP vision")


@pytest.mark.parametrize("case", ["center", "none", "batch"])
def test_clip_vision_encode(case):
    vision = _vision()
    image = t(C["image2" if case == "batch" else "image"])
    (out,) = NODES["CLIPVisionEncode"]().encode(vision, image, "none" if case == "none" else "center")
    for field in ("last_hidden_state", "penultimate_hidden_states", "image_embeds"):
        ref = REF[f"CLIPVisionEncode/{case}/{field}"]
        assert (out[field] - ref).abs().max().item() < 2e-4 * max(1.0, ref.abs().max().item()), field


class _Embeds:
    def __init__(self, e):
        self.image_embeds = e


def test_unclip_adm_vectors():
    from twosamplers.models.unclip_adm import adm_vector

    e = t(C["embeds"])
    cases = {"one": [{"clip_vision_output": _Embeds(e[:1]), "strength": 0.7, "noise_augmentation": 0.3}],
             "two": [{"clip_vision_output": _Embeds(e[:1]), "strength": 0.75, "noise_augmentation": 0.0},
                     {"clip_vision_output": _Embeds(e[1:]), "strength": 0.5, "noise_augmentation": 0.6}],
             "batch": [{"clip_vision_output": _Embeds(e), "strength": 1.2, "noise_augmentation": 0.125}]}
    for name, unclip in cases.items():
        for merge, seed in ((0.05, -3), (0.0, 123446)):
            ref = REF[f"unclip_adm/{name}/{merge}/{seed}"]
            assert (adm_vector(unclip, seed, merge) - ref).abs().max().item() < 1e-5, (name, merge)


@pytest.fixture(scope="module")
def unclip_env(models_dir):
    from test_sd_backend import tiny_clip, tiny_vae, to_ldm_open_clip, to_ldm_vae, to_open_clip_visual

    sd = {k: t(v) for k, v in rm.unclip_unet().items()}
    sd.update(to_ldm_open_clip(tiny_clip(act="gelu", seed=2), "cond_stage_model.model."))
    sd.update({k: v.contiguous() for k, v in to_ldm_vae(tiny_vae()).items()})
    sd.update(to_open_clip_visual({k: t(v) for k, v in rm.clip_vision().items()}, "embedder.model.visual."))
    save_file(sd, str(models_dir / "checkpoints" / "unclip.safetensors"))
    folders = Folders.create(models=models_dir, load_options={"device": "cpu", "dtype": "fp32"})
    return NODES["unCLIPCheckpointLoader"](folders).load_checkpoint("unclip.safetensors")


def test_unclip_checkpoint_sampling(unclip_env):
    model, _clip, _vae, vision = unclip_env
    pos, neg = [[t(C["positive_1024"]), {}]], [[t(C["negative_1024"]), {}]]
    (vo,) = NODES["CLIPVisionEncode"]().encode(vision, t(C["image"]), "center")
    ref = REF["CLIPVisionEncode/center/image_embeds"]
    assert (vo.image_embeds - ref).abs().max().item() < 2e-4 * ref.abs().max().item()  # the checkpoint's own tower
    (vo2,) = NODES["CLIPVisionEncode"]().encode(vision, t(C["image2"]), "center")

    def sample(case, positive, seed=7):
        (out,) = NODES["KSampler"]().sample(model, seed, 3, 5.0, "euler", "normal", positive, neg,
                                            {"samples": torch.zeros(1, 4, 8, 8)}, 1.0, disable_pbar=True)
        r = REF[case]
        assert (out["samples"] - r).abs().max().item() <= RTOL * r.abs().max().item(), case

    sample("unCLIP/no_image", pos)
    (p,) = NODES["unCLIPConditioning"]().apply_adm(pos, vo, 0.8, 0.25)
    sample("unCLIP/one", p)
    (p,) = NODES["unCLIPConditioning"]().apply_adm(p, vo2, 1.1, 0.0)
    sample("unCLIP/merged", p, seed=3)


# ------------------------------------------------------------------------------------------ GLIGEN
class _PhraseClip:
    """A CLIP whose pooled phrase embeddings are the drawn ones (the reference drew them the same way)."""

    def __init__(self):
        self.i = 0

    def encode_prompt(self, text, **_):
        pooled = t(C["phrases"][self.i])
        self.i += 1
        return [[torch.zeros(1, 77, 768), {"pooled_output": pooled}]]


def test_gligen_text_boxes(env, models_dir):
    (models_dir / "gligen").mkdir(exist_ok=True)
    save_file({k: t(v) for k, v in rm.gligen().items()}, str(models_dir / "gligen" / "g.safetensors"))
    folders, models = env
    (g,) = NODES["GLIGENLoader"](folders).load_gligen("g.safetensors")
    clip = _PhraseClip()
    apply = NODES["GLIGENTextBoxApply"]()
    (p,) = apply.append(POS, clip, g, "a", 64, 48, 16, 32)
    (p,) = apply.append(p, clip, g, "b", 40, 40, 80, 8)
    before = {k for k, _ in models["a"].unet.named_parameters()}
    run("GLIGEN/two_boxes", models["a"], positive=p, latent={"samples": torch.zeros(1, 4, 16, 16)})
    assert {k for k, _ in models["a"].unet.named_parameters()} == before  # the layers are attached only per call


# ------------------------------------------------------------------------------------------ image filters
@pytest.mark.parametrize("key", [k for k in REF if k.startswith(("ImageBlur/", "ImageSharpen/",
                                                                  "ImageScaleToTotalPixels/"))])
def test_image_filters(key):
    node, *args = key.split("/")
    photo = t(C["photo"])
    if node == "ImageBlur":
        (out,) = NODES[node]().blur(photo, int(args[0]), float(args[1]))
    elif node == "ImageSharpen":
        (out,) = NODES[node]().sharpen(photo, int(args[0]), float(args[1]), float(args[2]))
    else:
        (out,) = NODES[node]().upscale(photo[:1], args[0], float(args[1]), int(args[2]))
    assert out.shape == REF[key].shape and (out - REF[key]).abs().max().item() < 1e-5, key


# ------------------------------------------------------------------------------------------ FreeU
@pytest.mark.parametrize("key", sorted({k.rsplit("/", 1)[0] for k in REF if k.startswith("FreeU/")}))
def test_freeu_join(key):
    """ComfyUI's output-block patch on (h, skip) pairs; widths 4x / 2x the base (320) are patched, 320 is not."""
    from twosamplers.models.freeu import freeu_join

    _, name, ch, _hw = key.split("/")
    v2 = name == "FreeU_V2"
    b1, b2, s1, s2 = (1.3, 1.4, 0.7, 0.4) if v2 else (1.1, 1.2, 0.9, 0.2)
    scales = {1280: (b1, s1), 640: (b2, s2)}
    h, s = REF[key + "/h_in"], REF[key + "/s_in"]
    if int(ch) in scales:
        h2, s2_ = freeu_join(h, s, *scales[int(ch)], v2=v2)
    else:
        h2, s2_ = h, s
    assert (h2 - REF[key + "/h"]).abs().max().item() < 1e-5 and (s2_ - REF[key + "/s"]).abs().max().item() < 1e-5
