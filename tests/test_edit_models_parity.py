"""InstructPix2Pix / CosXL-edit checkpoints (8-channel UNets), InstructPixToPixConditioning, DualCFGGuider and
ModelSamplingContinuousEDM against ComfyUI 0.30's own: tests/comfy_refs/edit.* hold the latents ComfyUI gave (made
by tests/comfy_refs/make_edit_refs.py with the shared oracle) on the tiny edit models of comfy_refs/edit_models.py;
the same weights are saved here as checkpoints (with tiny text encoders and VAE, unused: the conditioning is given
as tensors; the image to edit is encoded by the full-size random VAE through VAELoader) and run through this
project's nodes."""

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
from twosamplers.nodes.registry import NODES  # noqa: E402

REFS = Path(__file__).parent / "comfy_refs"
sys.path.insert(0, str(REFS))
import edit_models as em  # noqa: E402

REF = load_file(str(REFS / "edit.safetensors"))
CASES = json.loads((REFS / "edit.json").read_text())["cases"]
TOL = 2e-3  # |latent| up to ~300 (SD1.5-like UNet, cfg 5): tight
I = {k: torch.from_numpy(v) for k, v in em.inputs().items()}


def t(a):
    return torch.from_numpy(a.copy())


@pytest.fixture(scope="module")
def edit_env(tmp_path_factory):
    from test_sd_backend import canonical_clip_keys, tiny_clip, tiny_vae, to_ldm_open_clip, to_ldm_vae
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    root = tmp_path_factory.mktemp("edit_models")
    (root / "checkpoints").mkdir()
    (root / "vae").mkdir()
    # the image is encoded by the full-size random VAE (VAELoader, one file); the checkpoints carry a tiny one
    save_file({k: t(v) for k, v in em.vae().items()}, str(root / "vae" / "sd_vae.safetensors"))
    vae = {k: v.contiguous() for k, v in to_ldm_vae(tiny_vae()).items()}
    clip_l = {k: v.contiguous() for k, v in canonical_clip_keys(tiny_clip(seed=1)).items()}
    torch.manual_seed(2)
    cfg = CLIPTextConfig(vocab_size=49408, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=1, max_position_embeddings=77, hidden_act="gelu", projection_dim=1280,
                         bos_token_id=49406, eos_token_id=49407, pad_token_id=1)
    clip_g = to_ldm_open_clip(CLIPTextModelWithProjection(cfg).eval(), "conditioner.embedders.1.model.")
    sd15 = {**{k: t(v) for k, v in em.sd15_ip2p_unet().items()}, **vae,
            **{"cond_stage_model.transformer." + k: v for k, v in clip_l.items()}}
    save_file(sd15, str(root / "checkpoints" / "sd15_ip2p.safetensors"))
    xl = {**{k: t(v) for k, v in em.sdxl_ip2p_unet().items()}, **vae, **clip_g,
          **{"conditioner.embedders.0.transformer." + k: v for k, v in clip_l.items()}}
    save_file(xl, str(root / "checkpoints" / "sdxl_ip2p.safetensors"))
    markers = {k: torch.tensor(v) for k, v in em.EDM_VPRED.items()}
    save_file({**xl, **markers}, str(root / "checkpoints" / "cosxl_edit.safetensors"))
    folders = Folders.create(models=root, load_options={"device": "cpu", "dtype": "fp32"})
    load = NODES["CheckpointLoaderSimple"](folders)
    (vae,) = NODES["VAELoader"](folders).load_vae("sd_vae.safetensors")
    return {name: load.load_checkpoint(f"{name}.safetensors")[:2] + (vae,)
            for name in ("sd15_ip2p", "sdxl_ip2p", "cosxl_edit")}


def close(ours, key, tol=TOL):
    ref = REF[key]
    assert tuple(ours.shape) == tuple(ref.shape), key
    diff = float((ours.float() - ref).abs().max())
    print(f"{key}: max |diff| {diff:.3e} (max |ref| {float(ref.abs().max()):.1f})")
    assert diff <= tol, f"{key}: max |diff| {diff:.3e} (max |ref| {float(ref.abs().max()):.1f})"
    return diff


_ENCODED: dict = {}


def ip2p(vae, pos, neg):
    """InstructPixToPixConditioning's outputs, encoded once per prompt pair (the full-size VAE is slow on a CPU)."""
    key = (id(vae), id(pos[0][0]), id(neg[0][0]))
    if key not in _ENCODED:
        _ENCODED[key] = NODES["InstructPixToPixConditioning"]().encode(pos, neg, I["image"], vae)
    return _ENCODED[key]


def sd15_ip2p(env):
    model, _, vae = env["sd15_ip2p"]
    pos, neg = [[I["pos"], {}]], [[I["neg"], {}]]
    p, n, latent = ip2p(vae, pos, neg)
    return model, pos, neg, p, n, latent


def ksample(case, model, positive, negative, latent):
    s = CASES[case]
    (out,) = NODES["KSampler"]().sample(model, s["seed"], s["steps"], s["cfg"], s["sampler"], s["scheduler"],
                                        positive, negative, latent, s["denoise"], disable_pbar=True)
    return out["samples"]


def test_checkpoints_load_as_edit_models(edit_env):
    sd15, xl, cosxl = (edit_env[n][0].model for n in ("sd15_ip2p", "sdxl_ip2p", "cosxl_edit"))
    assert sd15.ip2p and not sd15.ip2p_scaled and sd15.family == "sd1"
    assert xl.ip2p and not xl.ip2p_scaled and xl.model_sampling.prediction == "eps"
    assert cosxl.ip2p and cosxl.ip2p_scaled and cosxl.family == "sdxl"
    ms = cosxl.model_sampling  # CosXL's markers: EDM v-prediction over its sigma range
    assert ms.prediction == "v" and float(ms.sigma_max) == pytest.approx(120.0) and float(ms.sigma_min) == \
        pytest.approx(0.002)


def test_instruct_pix2pix_conditioning_matches_comfyui(edit_env):
    _, _, _, p, n, latent = sd15_ip2p(edit_env)
    close(p[0][1]["concat_latent_image"], "ip2p/concat", 1e-4)
    assert n[0][1]["concat_latent_image"] is p[0][1]["concat_latent_image"]
    assert torch.equal(latent["samples"], REF["ip2p/latent"]) and latent["samples"].shape == (1, 4, 9, 12)


@pytest.mark.parametrize("case", ["sd15/ip2p", "sd15/no_image", "sd15/ip2p_img2img"])
def test_sd15_ip2p_ksampler_matches_comfyui(edit_env, case):
    model, pos, neg, p, n, latent = sd15_ip2p(edit_env)
    if case == "sd15/no_image":  # no concat_latent_image: the 4 extra channels are zeros
        p, n, latent = pos, neg, {"samples": torch.zeros(1, 4, 9, 12)}
    elif case == "sd15/ip2p_img2img":
        latent = {"samples": p[0][1]["concat_latent_image"].clone()}
    close(ksample(case, model, p, n, latent), case)


def xl(name, pooled):
    return [[I[name], {"pooled_output": I[pooled]}]]


def dual(env, case, checkpoint):
    s = CASES[case]
    model, _, vae = env[checkpoint]
    if s["edm_node"]:
        (model,) = NODES["ModelSamplingContinuousEDM"]().patch(model, "v_prediction", 120.0, 0.002)
    p, n, latent = ip2p(vae, xl("pos_xl", "pooled_pos"), xl("neg_xl", "pooled_neg"))
    (guider,) = NODES["DualCFGGuider"]().get_guider(model, p, n, xl("zero_xl", "pooled_zero"), s["cfg_conds"],
                                                    s["cfg_cond2_negative"], s["style"])
    (noise,) = NODES["RandomNoise"]().get_noise(s["seed"])
    (sampler,) = NODES["KSamplerSelect"]().get_sampler(s["sampler"])
    (sigmas,) = NODES["BasicScheduler"]().get_sigmas(model, s["scheduler"], s["steps"], 1.0)
    out, _ = NODES["SamplerCustomAdvanced"]().sample(noise, guider, sampler, sigmas, latent, disable_pbar=True)
    return out["samples"]


@pytest.mark.parametrize("case", ["cosxl/regular", "cosxl/regular_edm_node", "cosxl/nested", "cosxl/cfg2_one",
                                  "cosxl/both_one"])
def test_cosxl_edit_dual_cfg_matches_comfyui(edit_env, case):
    close(dual(edit_env, case, "cosxl_edit"), case)


def test_sdxl_ip2p_with_edm_node_matches_comfyui(edit_env):
    """An SDXL edit checkpoint without CosXL's markers: eps, the image latent unscaled; the ModelSamplingContinuousEDM
    node makes it v-prediction EDM but, as in ComfyUI, does not scale the image latent."""
    close(dual(edit_env, "sdxl_ip2p/edm_node", "sdxl_ip2p"), "sdxl_ip2p/edm_node")


def test_edit_channels_and_dual_cfg_change_the_result(edit_env):
    """The tests above cannot pass by ignoring the image or the second scale: without the image (zeros), or with
    the guider's styles swapped, the numbers move far past the tolerance."""
    assert float((REF["sd15/ip2p"] - REF["sd15/no_image"]).abs().max()) > 100 * TOL
    assert float((REF["cosxl/regular"] - REF["cosxl/cfg2_one"]).abs().max()) > 100 * TOL
    s = dict(CASES["cosxl/regular"])
    CASES["cosxl/regular"] = {**s, "style": "nested"}
    try:
        swapped = dual(edit_env, "cosxl/regular", "cosxl_edit")
    finally:
        CASES["cosxl/regular"] = s
    assert float((swapped - REF["cosxl/regular"]).abs().max()) > 100 * TOL


def test_dual_cfg_runs_are_bit_identical(edit_env):
    assert torch.equal(dual(edit_env, "cosxl/nested", "cosxl_edit"), dual(edit_env, "cosxl/nested", "cosxl_edit"))
