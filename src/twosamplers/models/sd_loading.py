"""Reading Stable Diffusion checkpoints: file checks, family detection, configs inferred from weight shapes,
and the key conversion to diffusers/transformers modules (diffusers' own conversion utilities do the renaming).

Supported families: SD1.x, SD2.x (eps or v), SDXL base. Everything here works offline.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import torch

SUPPORTED = "SD1.x, SD2.x (eps or v-prediction) and SDXL base, and their inpainting models"
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl")
UNET = "model.diffusion_model."
VAE_PREFIXES = ("first_stage_model.", "vae.")
SD1_CLIP = ("cond_stage_model.transformer.text_model.", "cond_stage_model.transformer.")
SD2_CLIP = "cond_stage_model.model."
XL_CLIP_L = "conditioner.embedders.0.transformer.text_model."
XL_CLIP_G = "conditioner.embedders.1.model."
LATENT_SCALE = {"sd1": 0.18215, "sd2": 0.18215, "sdxl": 0.13025}
FAMILY_NAMES = {"sd1": "SD1.x", "sd2": "SD2.x", "sdxl": "SDXL base"}


class CheckpointError(ValueError):
    """A file that cannot be loaded as a supported Stable Diffusion checkpoint."""


class PickleNotAllowedError(CheckpointError):
    """A pickle-based checkpoint (.ckpt/.pt/...) without allow_pickle=True / --allow-pickle."""


class UnsupportedModelError(CheckpointError):
    """A checkpoint of a model family this backend does not run."""


# ------------------------------------------------------------------------------------------- reading
def _check_safetensors_header(path: Path) -> None:
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path}: not a checkpoint (a safetensors file starts with an 8-byte header size; "
                                  f"this file has {size} bytes)")
        (n,) = struct.unpack("<Q", head)
        if n == 0 or n > size - 8 or n > 100_000_000:
            raise CheckpointError(f"{path}: corrupt safetensors header (declared header size {n} bytes, file size "
                                  f"{size} bytes); the file is truncated or not a safetensors file")
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: corrupt safetensors header (not valid JSON: {e})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: corrupt safetensors header (expected a JSON object)")


def _is_pickle_like(path: Path) -> bool:
    with path.open("rb") as f:
        head = f.read(4)
    return head[:2] == b"PK" or head[:1] == b"\x80"


def read_state_dict(path: str | Path, *, allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    """Tensors of a single-file checkpoint on CPU. Pickle files need `allow_pickle` and load with
    weights_only=True (no code runs)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder without model_index.json: not a diffusers model folder")
    suffix = path.suffix.lower()
    # a file is read by its content: safetensors under a .ckpt name (a renamed or converted file) needs no pickle
    if suffix == ".safetensors" or not _is_pickle_like(path):
        _check_safetensors_header(path)
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError, RuntimeError) as e:
            raise CheckpointError(f"{path}: corrupt safetensors file ({e})") from None
    if not allow_pickle:
        raise PickleNotAllowedError(
            f"{path} is a pickle checkpoint ({suffix or 'pickle data'}), which can run code when loaded; refused. "
            "Convert it to .safetensors, or pass --allow-pickle (allow_pickle=True) if you trust the file "
            "(it is then loaded with torch.load(weights_only=True))."
        )
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for bad pickles
        raise CheckpointError(f"{path}: cannot be read as a weights-only torch checkpoint ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''})") from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values() if v is not None):
        raise CheckpointError(f"{path}: not a checkpoint (no state dict of tensors inside)")
    return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}


# ------------------------------------------------------------------------------------------- detection
@dataclass(frozen=True)
class Family:
    name: str  # "sd1" | "sd2" | "sdxl"
    clip_l_prefix: str | None
    clip_g_prefix: str | None

    @property
    def title(self) -> str:
        return FAMILY_NAMES[self.name]


def detect_family(sd: dict[str, torch.Tensor], source: str = "checkpoint") -> Family:
    """SD1.x / SD2.x / SDXL base from the keys and shapes; anything else is a clear error."""
    if not any(k.startswith(UNET) for k in sd):
        hint = ""
        if any(k.startswith(("lora_", "lora_unet", "lora_te")) or ".lora_" in k for k in list(sd)[:2000]):
            hint = " (it looks like a LoRA)"
        elif any(k.startswith(("encoder.", "decoder.")) for k in sd):
            hint = " (it looks like a VAE on its own)"
        elif any(k.startswith(("down_blocks.", "conv_in.")) for k in sd):
            hint = " (it looks like a bare diffusers UNet; pass the whole diffusers model folder instead)"
        raise UnsupportedModelError(f"{source}: not a Stable Diffusion checkpoint: no UNet weights "
                                    f"('{UNET}*'){hint}. Supported: {SUPPORTED}.")
    if any(k.startswith((UNET + "joint_blocks", UNET + "double_blocks", UNET + "x_embedder")) for k in sd):
        raise UnsupportedModelError(f"{source}: an SD3/Flux-style transformer checkpoint is not supported. "
                                    f"Supported: {SUPPORTED}.")
    conv_in = sd.get(UNET + "input_blocks.0.0.weight")
    if conv_in is None or conv_in.ndim != 4:
        raise UnsupportedModelError(f"{source}: unknown UNet layout (no input_blocks.0.0.weight). "
                                    f"Supported: {SUPPORTED}.")
    in_ch = conv_in.shape[1]
    if in_ch not in (4, 9):
        raise UnsupportedModelError(f"{source}: a UNet with {in_ch} input channels is not supported. Supported: "
                                    f"{SUPPORTED} with 4 latent channels (9 for inpainting models).")
    if "ztsnr" in sd:
        raise UnsupportedModelError(f"{source}: zero-terminal-SNR ('ztsnr') checkpoints are not supported yet. "
                                    f"Supported: {SUPPORTED}.")
    has_label = UNET + "label_emb.0.0.weight" in sd
    has_l = any(k.startswith("conditioner.embedders.0.transformer.") for k in sd)
    has_g1 = any(k.startswith(XL_CLIP_G) for k in sd)
    has_g0 = any(k.startswith("conditioner.embedders.0.model.") for k in sd)
    if has_label:
        if has_l and has_g1:
            return Family("sdxl", XL_CLIP_L, XL_CLIP_G)
        if has_g0:
            raise UnsupportedModelError(f"{source}: the SDXL refiner is not supported. Supported: {SUPPORTED}.")
        raise UnsupportedModelError(f"{source}: a class-conditioned UNet (label_emb) without SDXL's two text "
                                    f"encoders (SD2 unCLIP / SVD / refiner?) is not supported. Supported: {SUPPORTED}.")
    if any(k.startswith(SD2_CLIP) for k in sd):
        return Family("sd2", None, SD2_CLIP)
    for p in SD1_CLIP:
        if p + "embeddings.token_embedding.weight" in sd:
            return Family("sd1", p, None)
    raise UnsupportedModelError(f"{source}: no text encoder found (CLIP 'cond_stage_model.transformer.*' for SD1.x, "
                                f"OpenCLIP 'cond_stage_model.model.*' for SD2.x, 'conditioner.embedders.*' for SDXL). "
                                f"Supported: {SUPPORTED}.")


def guess_prediction(sd: dict[str, torch.Tensor], family: str) -> tuple[str, str]:
    """(prediction, how it was decided) the way ComfyUI decides for a single file: a "v_pred" marker key
    means v; for SD2.x, the spread of one late norm bias (output_blocks.11.1.transformer_blocks.0.norm1.bias,
    standard deviation > 0.09 -> v), a heuristic that ComfyUI uses too; otherwise eps."""
    if "v_pred" in sd:
        return "v", "the checkpoint's 'v_pred' marker"
    if family == "sd2":
        bias = sd.get(UNET + "output_blocks.11.1.transformer_blocks.0.norm1.bias")
        if bias is not None:
            std = float(bias.float().std(unbiased=False))
            return ("v" if std > 0.09 else "eps"), f"ComfyUI's SD2 heuristic (norm bias std {std:.3f} vs 0.09)"
        return "eps", "the default (no SD2 heuristic key in this layout)"
    return "eps", "the family default"


# -------------------------------------------------------------------------------------- UNet config
def _indices(sd: dict, prefix: str) -> list[int]:
    pat = re.compile(re.escape(prefix) + r"(\d+)\.")
    return sorted({int(m.group(1)) for k in sd if (m := pat.match(k))})


def _depth(sd: dict, prefix: str) -> int:
    return len(_indices(sd, prefix + "transformer_blocks."))


def _down_levels(sd: dict[str, torch.Tensor], levels: int, lpb: int):
    """Per down level: output channels, block type, transformer depth; and the cross-attention width and
    whether the projections are linear (from the last level with attention)."""
    p = UNET
    channels, down_types, depths = [], [], []
    cross_dim, linear_proj = None, None
    for lvl in range(levels):
        first = 1 + lvl * (lpb + 1)
        channels.append(sd[p + f"input_blocks.{first}.0.out_layers.3.weight"].shape[0])
        attn = p + f"input_blocks.{first}.1."
        if any(k.startswith(attn) for k in sd):
            down_types.append("CrossAttnDownBlock2D")
            depths.append(_depth(sd, attn))
            cross_dim = sd[attn + "transformer_blocks.0.attn2.to_k.weight"].shape[1]
            linear_proj = sd[attn + "proj_in.weight"].ndim == 2
        else:
            down_types.append("DownBlock2D")
            depths.append(1)
    return channels, down_types, depths, cross_dim, linear_proj


def infer_unet_config(sd: dict[str, torch.Tensor], family: str) -> dict:
    """A diffusers UNet2DConditionModel config from the LDM UNet's weight shapes.

    Head counts cannot be read from weights; they follow the families: SD1.x 8 heads, SD2.x and SDXL 64
    channels per head (at least one head), like the original configs.
    """
    p = UNET
    conv_in = sd[p + "input_blocks.0.0.weight"]
    model_ch = conv_in.shape[0]
    n_in = len(_indices(sd, p + "input_blocks."))
    down_idx = [i for i in _indices(sd, p + "input_blocks.") if p + f"input_blocks.{i}.0.op.weight" in sd]
    levels = len(down_idx) + 1
    lpb = (n_in - 1 - len(down_idx)) // levels
    if lpb < 1 or 1 + levels * lpb + len(down_idx) != n_in:
        raise UnsupportedModelError(f"unexpected UNet layout ({n_in} input blocks, {len(down_idx)} downsamplers)")
    channels, down_types, depths, cross_dim, linear_proj = _down_levels(sd, levels, lpb)
    if cross_dim is None:
        raise UnsupportedModelError("UNet without cross-attention is not supported")
    mid_attn = any(k.startswith(p + "middle_block.1.transformer_blocks.") for k in sd)
    mid_depth = _depth(sd, p + "middle_block.1.") if mid_attn else 1
    if family == "sd1":
        heads: int | list[int] = 8
    else:
        heads = [max(1, c // 64) for c in channels]
    time_dim = sd[p + "time_embed.0.weight"].shape[0]
    cfg = {
        "_class_name": "UNet2DConditionModel",
        "sample_size": {"sd1": 64, "sd2": 96, "sdxl": 128}[family],
        "in_channels": conv_in.shape[1],
        "out_channels": sd[p + "out.2.weight"].shape[0],
        "down_block_types": down_types,
        "up_block_types": [t.replace("Down", "Up") for t in reversed(down_types)],
        "mid_block_type": "UNetMidBlock2DCrossAttn" if mid_attn else None,
        "block_out_channels": channels,
        "layers_per_block": lpb,
        "cross_attention_dim": int(cross_dim),
        "attention_head_dim": heads,
        "use_linear_projection": bool(linear_proj),
        "transformer_layers_per_block": depths if any(d != 1 for d in depths) or family == "sdxl" else 1,
        "upcast_attention": family == "sd2",
        "norm_num_groups": 32,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
    }
    if mid_attn and mid_depth != 1 and family != "sdxl":
        cfg["transformer_layers_per_block"] = depths
    if time_dim != 4 * model_ch:
        cfg["time_embedding_dim"] = int(time_dim)
    if family == "sdxl":
        label_in = sd[p + "label_emb.0.0.weight"].shape[1]
        pooled = sd[XL_CLIP_G + "text_projection"].shape[1]
        cfg.update({
            "addition_embed_type": "text_time",
            "addition_time_embed_dim": (label_in - pooled) // 6,
            "projection_class_embeddings_input_dim": int(label_in),
        })
    if mid_attn and mid_depth != depths[-1] and cfg["transformer_layers_per_block"] != 1:
        # diffusers takes the mid block depth from the last level's
        raise UnsupportedModelError(f"mid block depth {mid_depth} differs from the last level's {depths[-1]}")
    return cfg


# --------------------------------------------------------------------------------------- VAE config
def vae_prefix(sd: dict) -> str:
    for p in VAE_PREFIXES:
        if p + "encoder.conv_in.weight" in sd:
            return p
    raise CheckpointError(f"no VAE weights ('first_stage_model.*') in the checkpoint. Supported: {SUPPORTED} "
                          "single-file checkpoints with their VAE.")


def infer_vae_config(sd: dict[str, torch.Tensor], family: str) -> dict:
    p = vae_prefix(sd)
    levels = _indices(sd, p + "encoder.down.")
    channels = [sd[p + f"encoder.down.{i}.block.{_indices(sd, p + f'encoder.down.{i}.block.')[-1]}.conv2.weight"]
                .shape[0] for i in levels]
    lpb = len(_indices(sd, p + "encoder.down.0.block."))
    latent = sd[p + "decoder.conv_in.weight"].shape[1]
    return {
        "_class_name": "AutoencoderKL",
        "in_channels": sd[p + "encoder.conv_in.weight"].shape[1],
        "out_channels": sd[p + "decoder.conv_out.weight"].shape[0],
        "down_block_types": ["DownEncoderBlock2D"] * len(levels),
        "up_block_types": ["UpDecoderBlock2D"] * len(levels),
        "block_out_channels": [int(c) for c in channels],
        "layers_per_block": lpb,
        "latent_channels": int(latent),
        "norm_num_groups": 32,
        "sample_size": {"sd1": 512, "sd2": 768, "sdxl": 1024}[family],
        "scaling_factor": LATENT_SCALE[family],
    }


# ---------------------------------------------------------------------------------- text encoder config
def infer_clip_config(sd: dict[str, torch.Tensor], prefix: str, openclip: bool) -> dict:
    """transformers CLIPTextConfig fields for an OpenAI CLIP (HF layout) or OpenCLIP text tower."""
    if openclip:
        emb = sd[prefix + "token_embedding.weight"]
        pos = sd[prefix + "positional_embedding"]
        layers = len(_indices(sd, prefix + "transformer.resblocks."))
        inter = sd[prefix + "transformer.resblocks.0.mlp.c_fc.weight"].shape[0]
        proj = sd.get(prefix + "text_projection")
        act = "gelu"
    else:
        emb = sd[prefix + "embeddings.token_embedding.weight"]
        pos = sd[prefix + "embeddings.position_embedding.weight"]
        layers = len(_indices(sd, prefix + "encoder.layers."))
        inter = sd[prefix + "encoder.layers.0.mlp.fc1.weight"].shape[0]
        proj = None
        act = "quick_gelu"
    hidden = emb.shape[1]
    return {
        "vocab_size": int(emb.shape[0]),
        "hidden_size": int(hidden),
        "intermediate_size": int(inter),
        "num_hidden_layers": int(layers),
        "num_attention_heads": max(1, hidden // 64),
        "max_position_embeddings": int(pos.shape[0]),
        "hidden_act": act,
        "layer_norm_eps": 1e-5,
        "projection_dim": int(proj.shape[1]) if proj is not None else int(hidden),
        "bos_token_id": 49406,
        "eos_token_id": 49407,
        "pad_token_id": 1,
    }


# ------------------------------------------------------------------------------------------ building
def _materialize(module_cls, config: dict, state: dict, name: str, dtype: torch.dtype):
    """Instantiate a diffusers model without random init (meta device) and load `state` strictly."""
    with torch.device("meta"):
        module = module_cls.from_config(config)
    missing = set(module.state_dict()) - set(state)
    unexpected = set(state) - set(module.state_dict())
    if missing or unexpected:
        raise CheckpointError(f"{name} weights do not match the inferred architecture: "
                              f"{len(missing)} missing (e.g. {sorted(missing)[:3]}), "
                              f"{len(unexpected)} unexpected (e.g. {sorted(unexpected)[:3]})")
    shapes = {k: v.shape for k, v in module.state_dict().items()}
    bad = [k for k, v in state.items() if v.shape != shapes[k]]
    if bad:
        raise CheckpointError(f"{name} weights have unexpected shapes, e.g. {bad[0]}: {tuple(state[bad[0]].shape)} "
                              f"vs {tuple(shapes[bad[0]])}")
    module.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=True, assign=True)
    return module.eval().requires_grad_(False)


def build_unet(sd: dict, family: str, dtype: torch.dtype, config: dict | None = None):
    from diffusers import UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    config = config or infer_unet_config(sd, family)
    state = convert_ldm_unet_checkpoint(sd, config)
    return _materialize(UNet2DConditionModel, config, state, "UNet", dtype)


def build_vae(sd: dict, family: str, dtype: torch.dtype, config: dict | None = None):
    from diffusers import AutoencoderKL
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    config = config or infer_vae_config(sd, family)
    state = convert_ldm_vae_checkpoint(sd, config)
    return _materialize(AutoencoderKL, config, state, "VAE", dtype)


def _build_clip_module(cls, cfg: dict, state: dict, name: str, dtype: torch.dtype):
    """A transformers CLIP text model from converted weights, built on the meta device (no random init)."""
    from transformers import CLIPTextConfig

    config = CLIPTextConfig(**cfg)
    with torch.device("meta"):
        model = cls(config)
    own = model.state_dict()
    if not any(k.startswith("text_model.") for k in own):  # transformers >= 5: CLIPTextModel has no text_model.
        state = {k.removeprefix("text_model."): v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not k.endswith("position_ids")}
    missing = [k for k in own if k not in state and not k.endswith("position_ids")]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise CheckpointError(f"{name} weights do not match: {len(missing)} missing (e.g. {missing[:3]}), "
                              f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})")
    bad = [k for k, v in state.items() if v.shape != own[k].shape]
    if bad:
        raise CheckpointError(f"{name} weights have unexpected shapes, e.g. {bad[0]}: {tuple(state[bad[0]].shape)} "
                              f"vs {tuple(own[bad[0]].shape)}")
    model.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=False, assign=True)
    for mod_name, mod in model.named_modules():  # the position-id buffers are not weights: rebuild them
        for buf_name, buf in list(mod.named_buffers(recurse=False)):
            if buf.is_meta:
                if not buf_name.endswith("position_ids"):
                    raise CheckpointError(f"{name}: buffer {mod_name}.{buf_name} has no value")
                n = buf.shape[-1]
                persistent = buf_name not in mod._non_persistent_buffers_set
                mod.register_buffer(buf_name, torch.arange(n).expand(buf.shape).clone(), persistent=persistent)
    return model.eval().requires_grad_(False)


def build_clip_l(sd: dict, prefix: str, dtype: torch.dtype):
    """OpenAI CLIP ViT-L text tower stored in transformers' layout under `prefix` (SD1.x, SDXL's first)."""
    from transformers import CLIPTextModel

    cfg = infer_clip_config(sd, prefix, openclip=False)
    state = {"text_model." + k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    return _build_clip_module(CLIPTextModel, cfg, state, "CLIP text encoder", dtype)


def build_open_clip(sd: dict, prefix: str, dtype: torch.dtype, *, with_projection: bool):
    """OpenCLIP text tower (SD2.x's ViT-H, SDXL's bigG) converted with diffusers' utility, all layers kept."""
    from diffusers.loaders.single_file_utils import convert_open_clip_checkpoint
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    cfg = infer_clip_config(sd, prefix, openclip=True)
    # A neutral prefix so that diffusers' SD2 "drop the 24th layer" list does not apply: we keep every layer
    # and pick the layer ComfyUI uses at encode time.
    sub = {"te." + k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    cls = CLIPTextModelWithProjection if with_projection else CLIPTextModel

    class _Cfg:  # what convert_open_clip_checkpoint reads from the text model
        config = type("C", (), {"hidden_size": cfg["hidden_size"]})()

    if "te.text_projection" not in sub:
        # diffusers splits the fused qkv by text_projection's first dimension (the width); without one, some
        # versions fall back to ViT-H's 1024: give it a placeholder of the right size, dropped below
        width = cfg["hidden_size"]
        sub["te.text_projection"] = torch.empty(width, width, device="meta")
        with_projection_weights = False
    else:
        with_projection_weights = True
    state = convert_open_clip_checkpoint(_Cfg(), sub, prefix="te.")
    if not with_projection_weights:
        if with_projection:
            raise CheckpointError(f"OpenCLIP text encoder under {prefix!r} has no text_projection")
        state.pop("text_projection.weight", None)
    if not with_projection:
        state.pop("text_projection.weight", None)
    state.pop("logit_scale", None)
    return _build_clip_module(cls, cfg, state, "OpenCLIP text encoder", dtype)
