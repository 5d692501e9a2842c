"""Stable Diffusion backend on tiny random-weight models built here with diffusers/transformers.

Each tiny model is saved twice: as a diffusers folder and as a single-file LDM checkpoint (ComfyUI's
models/checkpoints layout, keys renamed by the hand-written `to_ldm_*` helpers below). Loading the single
file goes through diffusers' own conversion utilities, so the two loaders agreeing checks both directions.
"""

from __future__ import annotations

import json
import os
import warnings

import numpy as np
import pytest
import torch

diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")

from PIL import Image  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from twosamplers import common_ksampler  # noqa: E402
from twosamplers.engine.schedules import ModelSamplingDiscrete  # noqa: E402
from twosamplers.models import NetworkModel  # noqa: E402
from twosamplers.models.sd import (  # noqa: E402
    CheckpointError,
    PickleNotAllowedError,
    SDModel,
    UnsupportedModelError,
    clear_cache,
    load_sd,
    resolve_device_dtype,
)
from twosamplers.models.sd_loading import detect_family, guess_prediction, infer_unet_config  # noqa: E402
from twosamplers.models.sd_text import clip_tokenizer  # noqa: E402

# ----------------------------------------------------------------------------------------- tiny models


def tiny_clip(hidden=64, act="quick_gelu", projection=False, seed=0):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    cfg = CLIPTextConfig(vocab_size=49408, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                         num_attention_heads=max(1, hidden // 64), max_position_embeddings=77, hidden_act=act,
                         projection_dim=hidden, bos_token_id=49406, eos_token_id=49407, pad_token_id=1)
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(cfg).eval()


def tiny_vae(seed=0):
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(block_out_channels=(32, 32, 32, 32), layers_per_block=1, latent_channels=4,
                         norm_num_groups=32, down_block_types=("DownEncoderBlock2D",) * 4,
                         up_block_types=("UpDecoderBlock2D",) * 4, sample_size=64).eval()


def tiny_unet(sdxl=False, seed=0):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    if sdxl:
        unet = UNet2DConditionModel(
            sample_size=8, block_out_channels=(32, 64), layers_per_block=1,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            transformer_layers_per_block=(1, 2), attention_head_dim=(1, 1), cross_attention_dim=128,
            use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=8,
            projection_class_embeddings_input_dim=64 + 6 * 8, norm_num_groups=32)
    else:
        unet = UNet2DConditionModel(
            sample_size=8, block_out_channels=(32, 64), layers_per_block=1,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            attention_head_dim=8, cross_attention_dim=64, norm_num_groups=32)
    # random init leaves some layers at zero (conv_out, ...): make every weight matter
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return unet.eval()


def save_folder(root, sdxl: bool):
    """A diffusers folder: unet, vae, text encoder(s), tokenizer(s), scheduler config, model_index.json."""
    unet, vae = tiny_unet(sdxl), tiny_vae()
    unet.save_pretrained(root / "unet")
    vae.save_pretrained(root / "vae")
    tok = clip_tokenizer()
    index = {"_class_name": "StableDiffusionXLPipeline" if sdxl else "StableDiffusionPipeline",
             "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
             "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
             "scheduler": ["diffusers", "EulerDiscreteScheduler"]}
    tiny_clip(seed=1).save_pretrained(root / "text_encoder")
    tok.save_pretrained(root / "tokenizer")
    if sdxl:
        tiny_clip(act="gelu", projection=True, seed=2).save_pretrained(root / "text_encoder_2")
        tok2 = clip_tokenizer().__class__.from_pretrained(root / "tokenizer", pad_token="!")
        tok2.save_pretrained(root / "tokenizer_2")
        index.update(text_encoder_2=["transformers", "CLIPTextModelWithProjection"],
                     tokenizer_2=["transformers", "CLIPTokenizer"])
    (root / "scheduler").mkdir()
    (root / "scheduler" / "scheduler_config.json").write_text(json.dumps(
        {"_class_name": "EulerDiscreteScheduler", "beta_start": 0.00085, "beta_end": 0.012,
         "beta_schedule": "scaled_linear", "num_train_timesteps": 1000, "prediction_type": "epsilon"}))
    (root / "model_index.json").write_text(json.dumps(index))
    return root


# ------------------------------------------------------------------ diffusers -> LDM (single-file) keys

_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1", "norm2": "out_layers.0",
           "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}


def _sub(key: str, table: dict) -> str:
    for a, b in table.items():
        if key.startswith(a + "."):
            return b + key[len(a):]
    return key


def to_ldm_unet(unet) -> dict:
    cfg = unet.config
    lpb = cfg.layers_per_block
    out = {}
    for k, v in unet.state_dict().items():
        parts = k.split(".")
        if parts[0] in ("time_embedding", "add_embedding"):
            base = "time_embed" if parts[0] == "time_embedding" else "label_emb.0"
            n = {"linear_1": "0", "linear_2": "2"}[parts[1]]
            new = f"{base}.{n}." + ".".join(parts[2:])
        elif parts[0] == "conv_in":
            new = "input_blocks.0.0." + ".".join(parts[1:])
        elif parts[0] == "conv_norm_out":
            new = "out.0." + ".".join(parts[1:])
        elif parts[0] == "conv_out":
            new = "out.2." + ".".join(parts[1:])
        elif parts[0] == "down_blocks":
            i, kind, j, rest = int(parts[1]), parts[2], int(parts[3]), ".".join(parts[4:])
            if kind == "resnets":
                new = f"input_blocks.{(lpb + 1) * i + j + 1}.0." + _sub(rest, _RESNET)
            elif kind == "attentions":
                new = f"input_blocks.{(lpb + 1) * i + j + 1}.1." + rest
            else:  # downsamplers.0.conv
                new = f"input_blocks.{(lpb + 1) * (i + 1)}.0.op." + ".".join(parts[5:])
        elif parts[0] == "mid_block":
            kind, j, rest = parts[1], int(parts[2]), ".".join(parts[3:])
            if kind == "resnets":
                new = f"middle_block.{0 if j == 0 else 2}." + _sub(rest, _RESNET)
            else:
                new = "middle_block.1." + rest
        elif parts[0] == "up_blocks":
            i, kind, j, rest = int(parts[1]), parts[2], int(parts[3]), ".".join(parts[4:])
            has_attn = "CrossAttn" in cfg.up_block_types[i]
            if kind == "resnets":
                new = f"output_blocks.{(lpb + 1) * i + j}.0." + _sub(rest, _RESNET)
            elif kind == "attentions":
                new = f"output_blocks.{(lpb + 1) * i + j}.1." + rest
            else:  # upsamplers.0.conv
                new = f"output_blocks.{(lpb + 1) * i + lpb}.{2 if has_attn else 1}.conv." + ".".join(parts[5:])
        else:
            raise AssertionError(k)
        out["model.diffusion_model." + new] = v.clone()
    return out


def to_ldm_vae(vae) -> dict:
    n = len(vae.config.block_out_channels)
    out = {}
    attn = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
    for k, v in vae.state_dict().items():
        new = k
        parts = k.split(".")
        if parts[1] == "down_blocks":
            i = parts[2]
            if parts[3] == "resnets":
                new = f"{parts[0]}.down.{i}.block.{parts[4]}." + ".".join(parts[5:])
            else:
                new = f"{parts[0]}.down.{i}.downsample.conv." + ".".join(parts[6:])
        elif parts[1] == "up_blocks":
            i = n - 1 - int(parts[2])
            if parts[3] == "resnets":
                new = f"{parts[0]}.up.{i}.block.{parts[4]}." + ".".join(parts[5:])
            else:
                new = f"{parts[0]}.up.{i}.upsample.conv." + ".".join(parts[6:])
        elif parts[1] == "mid_block":
            if parts[2] == "resnets":
                new = f"{parts[0]}.mid.block_{int(parts[3]) + 1}." + ".".join(parts[4:])
            else:
                rest = ".".join(parts[4:])
                new = f"{parts[0]}.mid.attn_1." + _sub(rest, attn)
                if v.ndim == 2:
                    v = v[:, :, None, None]
        elif parts[1] == "conv_norm_out":
            new = f"{parts[0]}.norm_out." + ".".join(parts[2:])
        new = new.replace("conv_shortcut", "nin_shortcut")
        out["first_stage_model." + new] = v.clone()
    return out


def canonical_clip_keys(te) -> dict:
    """transformers 4.x layout ("text_model." prefix) whatever the installed version names them."""
    return {k if k.startswith(("text_model.", "text_projection")) else "text_model." + k: v
            for k, v in te.state_dict().items() if not k.endswith("position_ids")}


def to_ldm_open_clip(te, prefix: str) -> dict:
    sd = canonical_clip_keys(te)
    out = {prefix + "token_embedding.weight": sd["text_model.embeddings.token_embedding.weight"],
           prefix + "positional_embedding": sd["text_model.embeddings.position_embedding.weight"],
           prefix + "ln_final.weight": sd["text_model.final_layer_norm.weight"],
           prefix + "ln_final.bias": sd["text_model.final_layer_norm.bias"]}
    if "text_projection.weight" in sd:
        out[prefix + "text_projection"] = sd["text_projection.weight"].T.contiguous()
    for i in range(te.config.num_hidden_layers):
        s = f"text_model.encoder.layers.{i}."
        d = f"{prefix}transformer.resblocks.{i}."
        for w in ("weight", "bias"):
            out[d + f"attn.in_proj_{w}"] = torch.cat([sd[s + f"self_attn.{q}_proj.{w}"] for q in "qkv"])
            out[d + f"attn.out_proj.{w}"] = sd[s + f"self_attn.out_proj.{w}"]
            out[d + f"ln_1.{w}"] = sd[s + f"layer_norm1.{w}"]
            out[d + f"ln_2.{w}"] = sd[s + f"layer_norm2.{w}"]
            out[d + f"mlp.c_fc.{w}"] = sd[s + f"mlp.fc1.{w}"]
            out[d + f"mlp.c_proj.{w}"] = sd[s + f"mlp.fc2.{w}"]
    return {k: v.clone().contiguous() for k, v in out.items()}


def to_open_clip_visual(state: dict, prefix: str) -> dict:
    """transformers CLIP vision names -> OpenCLIP's visual tower (as SD2.1 unCLIP checkpoints store it)."""
    v, out = "vision_model.", {}
    out[prefix + "class_embedding"] = state[v + "embeddings.class_embedding"]
    out[prefix + "conv1.weight"] = state[v + "embeddings.patch_embedding.weight"]
    out[prefix + "positional_embedding"] = state[v + "embeddings.position_embedding.weight"]
    out[prefix + "proj"] = state["visual_projection.weight"].t().contiguous()
    for a, b in (("ln_pre", "pre_layrnorm"), ("ln_post", "post_layernorm")):
        for w in ("weight", "bias"):
            out[f"{prefix}{a}.{w}"] = state[f"{v}{b}.{w}"]
    i = 0
    while f"{v}encoder.layers.{i}.layer_norm1.weight" in state:
        s, d = f"{v}encoder.layers.{i}.", f"{prefix}transformer.resblocks.{i}."
        for w in ("weight", "bias"):
            out[d + f"attn.in_proj_{w}"] = torch.cat([state[s + f"self_attn.{q}_proj.{w}"] for q in "qkv"])
            for a, b in (("attn.out_proj", "self_attn.out_proj"), ("ln_1", "layer_norm1"), ("ln_2", "layer_norm2"),
                         ("mlp.c_fc", "mlp.fc1"), ("mlp.c_proj", "mlp.fc2")):
                out[d + f"{a}.{w}"] = state[s + f"{b}.{w}"]
        i += 1
    return out


def folder_to_single_file(folder, target, sdxl: bool):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    sd = to_ldm_unet(UNet2DConditionModel.from_pretrained(folder / "unet"))
    sd.update(to_ldm_vae(AutoencoderKL.from_pretrained(folder / "vae")))
    te = CLIPTextModel.from_pretrained(folder / "text_encoder")
    prefix = "conditioner.embedders.0.transformer." if sdxl else "cond_stage_model.transformer."
    sd.update({prefix + k: v.clone() for k, v in canonical_clip_keys(te).items()})
    if sdxl:
        te2 = CLIPTextModelWithProjection.from_pretrained(folder / "text_encoder_2")
        sd.update(to_ldm_open_clip(te2, "conditioner.embedders.1.model."))
    save_file(sd, str(target))
    return target


@pytest.fixture(scope="module")
def tiny(tiny_sd_files):
    paths = dict(tiny_sd_files)
    clear_cache()
    return paths


def _cpu(path, **kw):
    return load_sd(path, device="cpu", **kw)


# ---------------------------------------------------------------------------------------------- tests


def test_device_dtype_defaults():
    dev, dt = resolve_device_dtype("cpu")
    assert (dev.type, dt) == ("cpu", torch.float32)
    assert resolve_device_dtype("cpu", "fp16")[1] == torch.float16
    with pytest.raises(ValueError, match="dtype"):
        resolve_device_dtype("cpu", "int8")


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_folder_and_single_file_load_the_same_model(tiny, family):
    a = _cpu(tiny[family + "_folder"])
    b = _cpu(tiny[family + "_file"])
    assert isinstance(a, SDModel) and isinstance(b, SDModel)
    assert a.family == b.family == family
    scale = 0.13025 if family == "sdxl" else 0.18215
    assert a.latent_format.scale_factor == b.latent_format.scale_factor == scale
    assert a.latent_format.channels == 4 and a.latent_format.downscale == 8
    assert a.model_sampling.prediction == b.model_sampling.prediction == "eps"
    ca, cb = a.encode_prompt("a (red:1.3) cat, [blue] dog"), b.encode_prompt("a (red:1.3) cat, [blue] dog")
    ctx_dim = 128 if family == "sdxl" else 64
    assert ca[0][0].shape == (1, 77, ctx_dim)
    torch.testing.assert_close(ca[0][0], cb[0][0], rtol=0, atol=1e-5)
    torch.testing.assert_close(ca[0][1]["pooled_output"], cb[0][1]["pooled_output"], rtol=0, atol=1e-5)
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    sigma = torch.tensor([3.0, 3.0])
    extras = {k: v.expand(2, *v.shape[1:]) for k, v in ca[0][1].items()}
    ctx = ca[0][0].expand(2, -1, -1)
    torch.testing.assert_close(a.apply_model(x, sigma, ctx, **extras), b.apply_model(x, sigma, ctx, **extras),
                               rtol=0, atol=1e-5)
    # VAE: same weights too
    img = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a.encode_image(img), b.encode_image(img), rtol=0, atol=1e-5)


def test_models_are_loaded_once_and_shared(tiny):
    assert _cpu(tiny["sd1_file"]) is _cpu(tiny["sd1_file"])
    assert _cpu(tiny["sd1_file"], cache=False) is not _cpu(tiny["sd1_file"])


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_backend_is_networkmodel_on_the_unet(tiny, prediction):
    """SDModel.apply_model is NetworkModel.apply_model around a plain UNet call: nothing else."""
    m = _cpu(tiny["sd1_folder"], prediction=prediction, cache=False)
    assert isinstance(m, NetworkModel) and type(m).apply_model is NetworkModel.apply_model
    unet = m.unet

    def bare(x, t, c, **_):
        return unet(x, t, encoder_hidden_states=c).sample

    ref = NetworkModel(bare, ModelSamplingDiscrete(prediction), latent_scale=0.18215)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 4, 8, 8, generator=g)
    ctx = torch.randn(2, 77, 64, generator=g)
    for s in (14.6146, 3.2, 0.5, 0.0292):
        sigma = torch.tensor([s, s])
        assert torch.equal(m.apply_model(x, sigma, ctx), ref.apply_model(x, sigma, ctx))
    # per-row sigmas and the quantized timestep: the UNet sees the nearest table index, as a float
    seen = []
    h = unet.register_forward_pre_hook(lambda mod, args, kw: seen.append(args[1].clone()), with_kwargs=True)
    try:
        m.apply_model(x, torch.tensor([14.6146, 1.0]), ctx)
    finally:
        h.remove()
    assert seen[0].dtype == torch.float32 and seen[0].tolist() == [999.0, float(m.model_sampling.timestep(
        torch.tensor(1.0)))]


def test_sdxl_size_conditioning(tiny):
    m = _cpu(tiny["sdxl_file"])
    c_default = m.encode_prompt("a cat")
    c_768 = m.encode_prompt("a cat", width=768, height=768)
    c_1024 = m.encode_prompt("a cat", width=1024, height=1024)
    assert set(c_default[0][1]) == {"pooled_output"}
    assert c_768[0][1]["width"].tolist() == [768.0] and c_768[0][1]["target_height"].tolist() == [768.0]
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    s = torch.tensor([2.0])

    def run(c):
        return m.apply_model(x, s, c[0][0], **c[0][1])

    # ComfyUI 0.30's default is the latent's size x 8 (here 8 x 8 -> 64)
    torch.testing.assert_close(run(c_default), run(m.encode_prompt("a cat", width=64, height=64)), rtol=0, atol=0)
    assert not torch.allclose(run(c_default), run(c_768))
    assert not torch.allclose(run(c_default), run(c_1024))
    with pytest.raises(ValueError, match="pooled_output"):
        m.apply_model(x, s, c_default[0][0])


def test_prompt_chunks_and_clip_skip(tiny):
    m = _cpu(tiny["sd1_file"])
    long = m.encode_prompt(" ".join(["tree"] * 100))
    assert long[0][0].shape == (1, 154, 64)
    last = m.encode_prompt("a cat")[0][0]
    pen = m.encode_prompt("a cat", clip_skip=-2)[0][0]
    assert not torch.allclose(last, pen)
    torch.testing.assert_close(m.encode_prompt("a cat", clip_skip=2)[0][0], pen, rtol=0, atol=0)
    torch.testing.assert_close(m.encode_prompt("a cat", clip_skip=-1)[0][0], last, rtol=0, atol=1e-6)
    # deeper than the model: ComfyUI falls back to the last layer
    torch.testing.assert_close(m.encode_prompt("a cat", clip_skip=-5)[0][0], last, rtol=0, atol=0)
    # (word:1.0) weights nothing; (word:w) moves only that token's row
    plain = m.encode_prompt("a cat")[0][0]
    torch.testing.assert_close(m.encode_prompt("a (cat:1.0)")[0][0], plain, rtol=0, atol=0)
    w = m.encode_prompt("a (cat:1.5)")[0][0]
    changed = (w - plain).abs().amax(dim=-1)[0]
    assert changed[2] > 0 and changed[1] == 0 and changed[3:].abs().max() == 0


def test_vae_round_trip_shapes_and_tiled_decode(tiny):
    m = _cpu(tiny["sd1_folder"])
    img = torch.rand(2, 68, 61, 3, generator=torch.Generator().manual_seed(0))
    lat = m.encode_image(img)
    assert lat.shape == (2, 4, 8, 7)  # cropped to a multiple of 8 like VAEEncode
    px = m.decode_latent(lat)
    assert px.shape == (2, 64, 56, 3) and px.min() >= 0 and px.max() <= 1
    big = torch.randn(1, 4, 20, 20, generator=torch.Generator().manual_seed(1))
    full = m.decode_latent(big)
    tiled = m.decode_latent(big, tiled=True, tile_size=12, overlap=4)
    assert tiled.shape == full.shape == (1, 160, 160, 3)
    assert (tiled - full).abs().mean() < 0.1


def _png(path, arr):
    Image.fromarray(arr).save(path)
    return path


def _load_png(path) -> torch.Tensor:
    return torch.from_numpy(np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0)[None]


def _two_samplers(model, latent, mask, pos, neg, seed):
    """TwoSamplersForMask (the node) when it exists, else KSampler twice with the inverse mask / the mask."""
    try:
        from twosamplers import KSamplerWrapper, TwoSamplersForMask
    except ImportError:
        TwoSamplersForMask = None
    if TwoSamplersForMask is not None:
        base = KSamplerWrapper(model, seed, 3, 5.0, "euler", "normal", pos, neg, 1.0)
        inside = KSamplerWrapper(model, seed + 1, 3, 7.0, "dpmpp_2m", "karras", pos, neg, 0.6)
        return TwoSamplersForMask().doit(latent, base, inside, mask, disable_pbar=True)[0]
    out = common_ksampler(model, seed, 3, 5.0, "euler", "normal", pos, neg,
                          dict(latent, noise_mask=1.0 - mask), disable_pbar=True)
    out = common_ksampler(model, seed + 1, 3, 7.0, "dpmpp_2m", "karras", pos, neg,
                          dict(out, noise_mask=mask), denoise=0.6, disable_pbar=True)
    out.pop("noise_mask", None)
    return out


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
@pytest.mark.parametrize("kind", ["file", "folder"])
def test_end_to_end_png_in_png_out(tiny, tmp_path, family, kind):
    rng = np.random.default_rng(0)
    img_path = _png(tmp_path / "in.png", rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    mask_arr = np.zeros((64, 64), np.uint8)
    mask_arr[16:48, 16:48] = 255
    mask_path = _png(tmp_path / "mask.png", mask_arr)

    def run(out_name):
        model = _cpu(tiny[f"{family}_{kind}"])
        pixels = _load_png(img_path)
        mask = torch.from_numpy(np.asarray(Image.open(mask_path).convert("L"), dtype=np.float32) / 255.0)[None]
        latent = {"samples": model.encode_image(pixels)}
        assert latent["samples"].shape == (1, 4, 8, 8)
        pos = model.encode_prompt("a (red:1.2) house")
        neg = model.encode_prompt("blurry")
        out = _two_samplers(model, latent, mask, pos, neg, seed=42)
        assert out["samples"].shape == (1, 4, 8, 8) and torch.isfinite(out["samples"]).all()
        px = model.decode_latent(out["samples"])
        assert px.shape == (1, 64, 64, 3)
        path = tmp_path / out_name
        Image.fromarray((px[0].numpy() * 255).round().astype(np.uint8)).save(path)
        return out["samples"], path

    s1, p1 = run("out1.png")
    s2, p2 = run("out2.png")
    assert torch.equal(s1, s2)  # deterministic
    assert p1.read_bytes() == p2.read_bytes()
    assert Image.open(p1).size == (64, 64)


# -------------------------------------------------------------------------------------------- errors


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_sd(tmp_path / "nope.safetensors", device="cpu")


def test_not_a_checkpoint(tmp_path):
    p = tmp_path / "notes.safetensors"
    p.write_text("hello, this is not a model")
    with pytest.raises(CheckpointError, match="corrupt safetensors header"):
        load_sd(p, device="cpu")
    p2 = tmp_path / "x.safetensors"
    p2.write_bytes(b"\x01")
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        load_sd(p2, device="cpu")
    d = tmp_path / "folder"
    d.mkdir()
    with pytest.raises(CheckpointError, match="model_index.json"):
        load_sd(d, device="cpu")


def test_corrupt_safetensors_header(tmp_path):
    p = tmp_path / "bad.safetensors"
    save_file({"a": torch.zeros(4)}, str(p))
    raw = bytearray(p.read_bytes())
    raw[8:12] = b"{{{{"
    p.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="corrupt safetensors header"):
        load_sd(p, device="cpu")
    p.write_bytes(bytes(raw[:20]))  # truncated: declared header longer than the file
    with pytest.raises(CheckpointError, match="corrupt safetensors header"):
        load_sd(p, device="cpu")


def test_unsupported_family(tmp_path):
    p = tmp_path / "lora.safetensors"
    save_file({"lora_unet_down.lora_up.weight": torch.zeros(2, 2)}, str(p))
    with pytest.raises(UnsupportedModelError, match="SD1.x, SD2.x .* SDXL base"):
        load_sd(p, device="cpu")
    odd = {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(320, 7, 3, 3)}  # 8: edit models load
    with pytest.raises(UnsupportedModelError, match="7 input channels"):
        detect_family(odd)
    refiner = {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(384, 4, 3, 3),
               "model.diffusion_model.label_emb.0.0.weight": torch.zeros(1536, 2560),
               "conditioner.embedders.0.model.ln_final.weight": torch.zeros(1280)}
    assert detect_family(refiner).name == "sdxl_refiner"  # issue 22: refiners load
    unclip = {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(320, 4, 3, 3),
              "model.diffusion_model.label_emb.0.0.weight": torch.zeros(1280, 1536),
              "cond_stage_model.model.ln_final.weight": torch.zeros(1024)}
    with pytest.raises(UnsupportedModelError, match="class-conditioned"):
        detect_family(unclip)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickle_needs_allow_pickle(tiny, tmp_path):
    from safetensors.torch import load_file

    p = tmp_path / "model.ckpt"
    torch.save({"state_dict": load_file(str(tiny["sd1_file"]))}, str(p))
    with pytest.raises(PickleNotAllowedError, match="--allow-pickle"):
        load_sd(p, device="cpu")
    m = load_sd(p, device="cpu", allow_pickle=True, cache=False)
    ref = _cpu(tiny["sd1_file"])
    torch.testing.assert_close(m.encode_prompt("a cat")[0][0], ref.encode_prompt("a cat")[0][0], rtol=0, atol=0)
    bad = tmp_path / "evil.ckpt"
    bad.write_bytes(b"\x80\x04\x95" + os.urandom(40))
    with pytest.raises(CheckpointError):
        load_sd(bad, device="cpu", allow_pickle=True)


def test_repo_id_offline_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="Hugging Face repo"):
        load_sd("someone/not-a-real-model-xyz", device="cpu")


def test_sd2_single_file_detection_and_v_prediction(tmp_path):
    """SD2 layout (OpenCLIP text tower, linear projections, 64-channel heads): eps by default with a warning,
    v on request."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        attention_head_dim=(1, 1), cross_attention_dim=64, use_linear_projection=True, upcast_attention=True,
        norm_num_groups=32)
    sd = to_ldm_unet(unet)
    sd.update(to_ldm_vae(tiny_vae()))
    sd.update(to_ldm_open_clip(tiny_clip(act="gelu"), "cond_stage_model.model."))
    path = tmp_path / "sd2.safetensors"
    save_file(sd, str(path))
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        m = load_sd(path, device="cpu", cache=False)
    assert any("prediction='eps' or 'v'" in str(x.message) for x in w)
    assert m.family == "sd2" and m.model_sampling.prediction == "eps"
    mv = load_sd(path, device="cpu", prediction="v", cache=False)
    assert mv.model_sampling.prediction == "v"
    cond = m.encode_prompt("a cat")
    assert cond[0][0].shape == (1, 77, 64)
    x = torch.randn(1, 4, 8, 8)
    ref = unet(x / (1 + 4.0) ** 0.5, torch.tensor([m.model_sampling.timestep(torch.tensor(2.0))]),
               encoder_hidden_states=cond[0][0]).sample
    torch.testing.assert_close(m.apply_model(x, torch.tensor([2.0]), cond[0][0]), x - ref * 2.0, rtol=1e-5, atol=1e-5)


def test_prediction_guess_like_comfyui():
    key = "model.diffusion_model.output_blocks.11.1.transformer_blocks.0.norm1.bias"
    g = torch.Generator().manual_seed(0)
    assert guess_prediction({key: torch.randn(1024, generator=g) * 0.2}, "sd2")[0] == "v"
    assert guess_prediction({key: torch.randn(1024, generator=g) * 0.01}, "sd2")[0] == "eps"
    assert guess_prediction({}, "sd2")[0] == "eps"
    assert guess_prediction({"v_pred": torch.zeros(())}, "sdxl")[0] == "v"
    assert guess_prediction({}, "sdxl")[0] == "eps"
    with pytest.raises(UnsupportedModelError, match="ztsnr"):
        detect_family({"ztsnr": torch.zeros(()),
                       "model.diffusion_model.input_blocks.0.0.weight": torch.zeros(8, 4, 3, 3)})


# ------------------------------------------------------------- real-size configs from shapes (meta device)


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl"])
def test_real_size_unet_config_is_inferred_from_shapes(family):
    from diffusers import UNet2DConditionModel

    if family == "sd1":
        cfg = dict(cross_attention_dim=768, attention_head_dim=8)
    elif family == "sd2":
        cfg = dict(cross_attention_dim=1024, attention_head_dim=[5, 10, 20, 20], use_linear_projection=True)
    else:
        cfg = dict(block_out_channels=(320, 640, 1280), cross_attention_dim=2048, attention_head_dim=[5, 10, 20],
                   use_linear_projection=True, transformer_layers_per_block=[1, 2, 10],
                   down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                   up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                   addition_embed_type="text_time", addition_time_embed_dim=256,
                   projection_class_embeddings_input_dim=2816)
    with torch.device("meta"):
        unet = UNet2DConditionModel(**cfg)
    sd = to_ldm_unet(unet)
    if family == "sdxl":
        sd["conditioner.embedders.1.model.text_projection"] = torch.empty(1280, 1280, device="meta")
    got = infer_unet_config(sd, family)
    with torch.device("meta"):
        again = UNet2DConditionModel.from_config(got)
    assert {k: tuple(v.shape) for k, v in again.state_dict().items()} == \
        {k: tuple(v.shape) for k, v in unet.state_dict().items()}
    heads = {"sd1": 8, "sd2": [5, 10, 20, 20], "sdxl": [5, 10, 20]}[family]
    assert got["attention_head_dim"] == heads


def _small_vocab_tokenizer(folder):
    """A CLIP tokenizer with its own 514-token vocabulary (bytes, bytes + </w>, then start/end): not CLIP's."""
    from transformers import CLIPTokenizer

    from twosamplers.models.sd_text import _bytes_to_unicode

    base = list(_bytes_to_unicode().values())
    vocab = {t: i for i, t in enumerate(base + [c + "</w>" for c in base] + ["<|startoftext|>", "<|endoftext|>"])}
    folder.mkdir(parents=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tok = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
    tok.save_pretrained(folder)
    return tok


def test_diffusers_folder_uses_its_own_tokenizer(tmp_path):
    """A folder whose text encoder has another vocabulary is tokenized with the folder's tokenizer and its own
    start/end tokens (the shipped CLIP vocabulary gave ids past the embedding: IndexError)."""
    from transformers import CLIPTextConfig, CLIPTextModel

    root = save_folder(tmp_path / "small_vocab", sdxl=False)
    import shutil

    shutil.rmtree(root / "tokenizer")
    shutil.rmtree(root / "text_encoder")
    tok = _small_vocab_tokenizer(root / "tokenizer")
    assert len(tok) == 514 and tok.bos_token_id == 512 and tok.eos_token_id == 513
    torch.manual_seed(3)
    cfg = CLIPTextConfig(vocab_size=514, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=1, max_position_embeddings=77, hidden_act="quick_gelu",
                         projection_dim=64, bos_token_id=512, eos_token_id=513, pad_token_id=513)
    CLIPTextModel(cfg).eval().save_pretrained(root / "text_encoder")
    clear_cache()
    model = _cpu(root)
    spec = model.text_encoders[0].spec
    cond = model.encode_prompt("a red barn")
    assert cond[0][0].shape == (1, 77, 64) and torch.isfinite(cond[0][0]).all()
    assert (spec.start_token, spec.end_token, spec.pad_token) == (512, 513, 513)
    other = model.encode_prompt("a blue barn")
    assert not torch.equal(cond[0][0], other[0][0])
    # a folder without a tokenizer for such an encoder is a clear error, not an IndexError
    shutil.rmtree(root / "tokenizer")
    clear_cache()
    with pytest.raises(CheckpointError, match="vocabulary"):
        _cpu(root)
    clear_cache()
