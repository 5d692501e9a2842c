"""Seeded random-weight checkpoints in the standard single-file (LDM) layout, for the end-to-end parity set.

    python tests/parity/e2e/checkpoints.py [CACHE_DIR]      # default: $TWOSAMPLERS_PARITY_CACHE or
                                                            # ~/.cache/twosamplers/parity-e2e

Writes CACHE_DIR/models/ in ComfyUI's layout (checkpoints/, loras/, embeddings/, controlnet/), once: files
that exist with the recorded SHA-256 are kept. No download, no ComfyUI: modules are laid out with diffusers /
transformers on the meta device, every tensor is filled from numpy's PCG64 seeded by its name (uniform
values; the same bytes on every machine and numpy version) and stored in float16, then renamed to the LDM keys
ComfyUI reads (the tests' own converters).

Sizes: ComfyUI detects a family from the UNet's shapes (model channels, context width, linear projections,
label embedding width, and for SDXL / the refiner the exact transformer depths), and builds its text encoders
and VAE from fixed configs, so the text encoders (CLIP-L, OpenCLIP-H, OpenCLIP-bigG) and the VAE are full size;
the UNets are cut down where ComfyUI allows:

| file | ComfyUI detects | UNet | text encoder(s) | size |
| --- | --- | --- | --- | --- |
| sd15_mini | SD15 (eps) | 320/640 channels, 1 block per level, attention at both | CLIP-L | ~0.6 GB |
| sd2v_mini | SD20, v (norm-bias std 0.14) | 4 levels of 320, attention at the top two | OpenCLIP-H | ~1.0 GB |
| sdxl_mini | SDXL (eps) | 3 levels of 320, SDXL's transformer depths (0, 2, 10) | CLIP-L + bigG | ~2.3 GB |
| sdxl_refiner_mini | SDXLRefiner | 4 levels of 384, depths (0, 4, 4, 0) | bigG | ~2.0 GB |

Also: a kohya LoRA (UNet + text encoder) and a ControlNet for sd15_mini, and textual-inversion embeddings for
every family (`embedding:pe_<family>`).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import zlib
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
TESTS = HERE.parents[1]
VERSION = 1  # bump when a builder changes what it writes (the manifest's hashes then change too)
SEED = 22


def cache_dir(arg: str | None = None) -> Path:
    d = arg or os.environ.get("TWOSAMPLERS_PARITY_CACHE") or Path.home() / ".cache" / "twosamplers" / "parity-e2e"
    return Path(d).expanduser()


# ------------------------------------------------------------------------------------------ values
def fill(name: str, shape: tuple[int, ...], family_seed: int) -> torch.Tensor:
    """A deterministic float16 tensor for parameter `name`: uniform, scaled like torch's default init
    (+-1/sqrt(fan_in)); norm weights 1 +- 0.1, norm biases +-0.1, embeddings +-0.035 (std ~0.02)."""
    rng = np.random.Generator(np.random.PCG64([family_seed, zlib.crc32(name.encode())]))
    n = int(np.prod(shape)) if shape else 1
    u = rng.random(n, dtype=np.float64) * 2.0 - 1.0  # [-1, 1)
    low = name.lower()
    is_norm = any(t in low for t in ("norm", "ln_", "layer_norm", ".ln.", "ln_final"))
    if "embedding" in low and "weight" in low and len(shape) == 2 and "time" not in low and "add_" not in low:
        v = u * 0.035
    elif "position" in low or low.endswith("positional_embedding"):
        v = u * 0.035
    elif is_norm and low.endswith("weight"):
        v = 1.0 + 0.1 * u
    elif is_norm and low.endswith("bias"):
        v = 0.1 * u
    elif len(shape) >= 2:
        fan_in = int(np.prod(shape[1:]))
        v = u / np.sqrt(fan_in)
    else:  # biases and other vectors
        v = u * 0.05
    return torch.from_numpy(v.astype(np.float16).reshape(shape))


def fill_module(module, prefix: str, family_seed: int) -> None:
    """Replace the meta tensors of `module` by `fill` values (names prefixed, so that two towers differ)."""
    for name, p in list(module.named_parameters()):
        owner = module.get_submodule(name.rsplit(".", 1)[0]) if "." in name else module
        leaf = name.rsplit(".", 1)[-1]
        setattr(owner, leaf, torch.nn.Parameter(fill(prefix + name, tuple(p.shape), family_seed),
                                                requires_grad=False))
    for name, b in list(module.named_buffers()):
        if b.is_meta:
            owner = module.get_submodule(name.rsplit(".", 1)[0]) if "." in name else module
            leaf = name.rsplit(".", 1)[-1]
            value = torch.arange(b.shape[-1]).expand(b.shape).clone() if leaf.endswith("position_ids") \
                else fill(prefix + name, tuple(b.shape), family_seed)
            owner.register_buffer(leaf, value, persistent=leaf not in owner._non_persistent_buffers_set)


def _meta(factory):
    with torch.device("meta"):
        return factory()


# ------------------------------------------------------------------------------------------ modules
def clip_l():
    from transformers import CLIPTextConfig, CLIPTextModel

    cfg = CLIPTextConfig(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                         num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu",
                         projection_dim=768, bos_token_id=49406, eos_token_id=49407, pad_token_id=1)
    return _meta(lambda: CLIPTextModel(cfg))


def open_clip(hidden: int, layers: int, heads: int):
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    cfg = CLIPTextConfig(vocab_size=49408, hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=layers,
                         num_attention_heads=heads, max_position_embeddings=77, hidden_act="gelu",
                         projection_dim=hidden, bos_token_id=49406, eos_token_id=49407, pad_token_id=1)
    return _meta(lambda: CLIPTextModelWithProjection(cfg))


def vae():
    from diffusers import AutoencoderKL

    return _meta(lambda: AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                                       norm_num_groups=32, down_block_types=("DownEncoderBlock2D",) * 4,
                                       up_block_types=("UpDecoderBlock2D",) * 4, sample_size=512))


def unet(family: str):
    from diffusers import UNet2DConditionModel

    common = {"norm_num_groups": 32, "sample_size": 64}
    if family == "sd15":
        kw = dict(block_out_channels=(320, 640), layers_per_block=1,
                  down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                  up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
                  attention_head_dim=8, cross_attention_dim=768)
    elif family == "sd2v":
        kw = dict(block_out_channels=(320,) * 4, layers_per_block=2,
                  down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
                  up_block_types=("UpBlock2D", "UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
                  attention_head_dim=(5, 5, 5, 5), cross_attention_dim=1024, use_linear_projection=True,
                  upcast_attention=True)
    elif family == "sdxl":
        kw = dict(block_out_channels=(320,) * 3, layers_per_block=2,
                  down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                  up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                  transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 5, 5), cross_attention_dim=2048,
                  use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
                  projection_class_embeddings_input_dim=2816)
    elif family == "sdxl_refiner":
        kw = dict(block_out_channels=(384,) * 4, layers_per_block=2,
                  down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
                  up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                  transformer_layers_per_block=4, attention_head_dim=(6, 6, 6, 6), cross_attention_dim=1280,
                  use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
                  projection_class_embeddings_input_dim=2560)
    else:
        raise ValueError(family)
    return _meta(lambda: UNet2DConditionModel(**kw, **common))


# ------------------------------------------------------------------------------------------ checkpoints
FAMILIES = {  # name: (family seed, text encoders)
    "sd15_mini": 1, "sd2v_mini": 2, "sdxl_mini": 3, "sdxl_refiner_mini": 4,
}
SD2_V_KEY = "model.diffusion_model.output_blocks.11.1.transformer_blocks.0.norm1.bias"


def _converters():
    if str(TESTS) not in sys.path:
        sys.path.insert(0, str(TESTS))
    from test_sd_backend import canonical_clip_keys, to_ldm_open_clip, to_ldm_unet, to_ldm_vae

    return canonical_clip_keys, to_ldm_open_clip, to_ldm_unet, to_ldm_vae


def build_state_dict(name: str) -> dict[str, torch.Tensor]:
    canonical_clip_keys, to_ldm_open_clip, to_ldm_unet, to_ldm_vae = _converters()
    seed = SEED * 100 + FAMILIES[name]
    family = {"sd15_mini": "sd15", "sd2v_mini": "sd2v", "sdxl_mini": "sdxl", "sdxl_refiner_mini": "sdxl_refiner"}[name]
    u = unet(family)
    fill_module(u, "unet.", seed)
    sd = to_ldm_unet(u)
    del u
    v = vae()
    fill_module(v, "vae.", seed)
    sd.update(to_ldm_vae(v))
    del v
    if family == "sd15":
        te = clip_l()
        fill_module(te, "clip_l.", seed)
        sd.update({"cond_stage_model.transformer." + k: t for k, t in canonical_clip_keys(te).items()})
    elif family == "sd2v":
        te = open_clip(1024, 24, 16)
        fill_module(te, "clip_h.", seed)
        sd.update(to_ldm_open_clip(te, "cond_stage_model.model."))
        # ComfyUI's SD2 v-prediction test reads this bias's spread (> 0.09 -> v)
        g = np.random.Generator(np.random.PCG64([seed, 9]))
        sd[SD2_V_KEY] = torch.from_numpy(((g.random(sd[SD2_V_KEY].numel()) * 2 - 1) * 0.25).astype(np.float16))
    elif family == "sdxl":
        te = clip_l()
        fill_module(te, "clip_l.", seed)
        sd.update({"conditioner.embedders.0.transformer." + k: t for k, t in canonical_clip_keys(te).items()})
        te = open_clip(1280, 32, 20)
        fill_module(te, "clip_g.", seed)
        sd.update(to_ldm_open_clip(te, "conditioner.embedders.1.model."))
    else:
        te = open_clip(1280, 32, 20)
        fill_module(te, "clip_g.", seed)
        sd.update(to_ldm_open_clip(te, "conditioner.embedders.0.model."))
    return {k: t.to(torch.float16).contiguous() for k, t in sorted(sd.items())}


def build_lora() -> dict[str, torch.Tensor]:
    """kohya LoRA for sd15_mini: rank 4, alpha 2, UNet attention + text-encoder attention/MLP modules."""
    targets: dict[str, tuple[int, int]] = {}
    for blk, c in (("down_blocks_0_attentions_0", 320), ("down_blocks_1_attentions_0", 640),
                   ("mid_block_attentions_0", 640), ("up_blocks_1_attentions_1", 320)):
        p = f"lora_unet_{blk}_transformer_blocks_0_"
        for a in ("attn1_to_q", "attn1_to_k", "attn1_to_v", "attn1_to_out_0", "attn2_to_q", "attn2_to_out_0"):
            targets[p + a] = (c, c)
        targets[p + "attn2_to_k"] = (c, 768)
        targets[p + "attn2_to_v"] = (c, 768)
        targets[p + "ff_net_2"] = (c, 4 * c)
    for layer in (0, 5, 11):
        p = f"lora_te_text_model_encoder_layers_{layer}_"
        for a in ("self_attn_q_proj", "self_attn_k_proj", "self_attn_v_proj", "self_attn_out_proj"):
            targets[p + a] = (768, 768)
        targets[p + "mlp_fc1"] = (3072, 768)
        targets[p + "mlp_fc2"] = (768, 3072)
    out = {}
    for k, (o, i) in sorted(targets.items()):
        g = np.random.Generator(np.random.PCG64([SEED, zlib.crc32(k.encode())]))
        out[k + ".lora_down.weight"] = torch.from_numpy(((g.random((4, i)) * 2 - 1) / np.sqrt(i)).astype(np.float16))
        out[k + ".lora_up.weight"] = torch.from_numpy(((g.random((o, 4)) * 2 - 1) * 0.5).astype(np.float16))
        out[k + ".alpha"] = torch.tensor(2.0, dtype=torch.float16)
    return out


def build_controlnet() -> dict[str, torch.Tensor]:
    from diffusers import ControlNetModel

    if str(TESTS) not in sys.path:
        sys.path.insert(0, str(TESTS))
    from test_controlnet import to_ldm_controlnet

    u = unet("sd15")
    cn = _meta(lambda: ControlNetModel.from_unet(u, conditioning_embedding_out_channels=(16, 32, 96, 256)))
    fill_module(cn, "controlnet.", SEED * 100 + 7)
    return {k: t.to(torch.float16).contiguous() for k, t in sorted(to_ldm_controlnet(cn).items())}


def build_embedding(family: str) -> dict[str, torch.Tensor]:
    widths = {"sd15": {"emb_params": 768}, "sd2v": {"emb_params": 1024},
              "sdxl": {"clip_l": 768, "clip_g": 1280}, "sdxl_refiner": {"clip_g": 1280}}[family]
    out = {}
    for key, w in widths.items():
        g = np.random.Generator(np.random.PCG64([SEED, zlib.crc32(f"{family}.{key}".encode())]))
        out[key] = torch.from_numpy(((g.random((2, w)) * 2 - 1) * 0.035).astype(np.float32))
    return out


FILES = {  # relative path -> builder
    "checkpoints/sd15_mini.safetensors": lambda: build_state_dict("sd15_mini"),
    "checkpoints/sd2v_mini.safetensors": lambda: build_state_dict("sd2v_mini"),
    "checkpoints/sdxl_mini.safetensors": lambda: build_state_dict("sdxl_mini"),
    "checkpoints/sdxl_refiner_mini.safetensors": lambda: build_state_dict("sdxl_refiner_mini"),
    "loras/sd15_mini_lora.safetensors": build_lora,
    "controlnet/sd15_mini_cn.safetensors": build_controlnet,
    "embeddings/pe_sd15.safetensors": lambda: build_embedding("sd15"),
    "embeddings/pe_sd2v.safetensors": lambda: build_embedding("sd2v"),
    "embeddings/pe_sdxl.safetensors": lambda: build_embedding("sdxl"),
    "embeddings/pe_refiner.safetensors": lambda: build_embedding("sdxl_refiner"),
}


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def hashes_file() -> Path:
    return HERE / "checkpoints.sha256.json"


def build(root: Path, only: list[str] | None = None, *, verbose: bool = True) -> Path:
    """Build what is missing under root/models (files whose hash differs from the recorded one are rebuilt);
    returns the models folder. Raises when a rebuilt file's hash is not the recorded one."""
    from safetensors.torch import save_file

    models = root / "models"
    recorded = json.loads(hashes_file().read_text()) if hashes_file().is_file() else {}
    for rel, make in FILES.items():
        if only and not any(o in rel for o in only):
            continue
        path = models / rel
        stamp = path.with_name(path.name + ".sha256")
        want = recorded.get(rel)
        if path.is_file() and stamp.is_file() and stamp.read_text().strip() == want and want:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        if verbose:
            print(f"building {rel} ...", flush=True)
        tensors = make()
        tmp = path.with_name(path.name + ".tmp")
        save_file(tensors, str(tmp), metadata={"twosamplers": f"parity-e2e v{VERSION}, random weights"})
        del tensors
        os.replace(tmp, path)
        got = sha256(path)
        if want and got != want:
            raise RuntimeError(f"{rel}: built with SHA-256 {got}, the references were made from {want}: this "
                               "machine's numpy/safetensors/diffusers write other bytes; the parity references "
                               "do not apply (tell the maintainers which versions you have)")
        stamp.write_text(got)
    return models


def main(argv: list[str]) -> int:
    root = cache_dir(argv[0] if argv and not argv[0].startswith("--") else None)
    record = "--record" in argv
    models = build(root)
    if record:  # maintainers: after changing a builder, record the new hashes (then regenerate the references)
        hashes = {rel: (models / rel).with_name(Path(rel).name + ".sha256").read_text().strip() for rel in FILES}
        hashes_file().write_text(json.dumps(hashes, indent=1, sort_keys=True) + "\n")
    print(models)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
