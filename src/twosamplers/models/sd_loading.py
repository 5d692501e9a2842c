"""Reading Stable Diffusion checkpoints: file checks, family detection, configs inferred from weight shapes,
and the key conversion to diffusers/transformers modules (diffusers' own conversion utilities do the renaming).

Supported families: SD1.x, SD2.x (eps or v), SDXL base and SDXL refiner. Everything here works offline.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import torch

from .._paths import regular_file

SUPPORTED = ("SD1.x, SD2.x (eps or v-prediction), SDXL base and SDXL refiner, their inpainting models, and "
             "SD1.x / SDXL InstructPix2Pix edit models (CosXL edit)")
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl")
UNET = "model.diffusion_model."
VAE_PREFIXES = ("first_stage_model.", "vae.")
SD1_CLIP = ("cond_stage_model.transformer.text_model.", "cond_stage_model.transformer.")
SD2_CLIP = "cond_stage_model.model."
XL_CLIP_L = "conditioner.embedders.0.transformer.text_model."
XL_CLIP_G = "conditioner.embedders.1.model."
REFINER_CLIP_G = "conditioner.embedders.0.model."
LATENT_SCALE = {"sd1": 0.18215, "sd2": 0.18215, "sdxl": 0.13025, "sdxl_refiner": 0.13025}
FAMILY_NAMES = {"sd1": "SD1.x", "sd2": "SD2.x", "sdxl": "SDXL base", "sdxl_refiner": "SDXL refiner"}
SDXL_FAMILIES = ("sdxl", "sdxl_refiner")
# ComfyUI's SD2 v-prediction test: the spread of this late norm bias (population std > 0.09 -> v)
SD2_V_KEY = UNET + "output_blocks.11.1.transformer_blocks.0.norm1.bias"
SD2_V_STD = 0.09


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
    except RecursionError:
        raise CheckpointError(f"{path}: corrupt safetensors header (nested too deeply)") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: corrupt safetensors header (expected a JSON object)")


def pickle_only_folder(folder: Path) -> list[str]:
    """The weight files of a diffusers model folder (or one of its component folders) when they are all pickle
    files (.bin/.pt/.ckpt/.pth), else []: such a folder loads only with allow_pickle."""
    weights = [p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in (".safetensors", *PICKLE_SUFFIXES)
               and p.name != "training_args.bin"]
    by_dir: dict[Path, list[Path]] = {}
    for p in weights:
        by_dir.setdefault(p.parent, []).append(p)
    return sorted(str(p.relative_to(folder)) for files in by_dir.values()
                  if not any(f.suffix.lower() == ".safetensors" for f in files) for p in files)
_ST_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
              "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
              "BOOL": torch.bool}


class MappedFile:
    """A checkpoint's bytes mapped copy-on-write: its tensors are views of the page cache (no copy is made
    when they are read), and `release(tensor)` gives the pages of a tensor that has been copied into its
    module back to the system, so that loading peaks at about the final model's size, not model + file."""

    def __init__(self, path: Path) -> None:
        import mmap

        with path.open("rb") as f:
            self.map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
        self.base = torch.frombuffer(self.map, dtype=torch.uint8) if len(self.map) else torch.empty(0, torch.uint8)
        self.start = self.base.data_ptr()
        self.page = mmap.PAGESIZE

    def tensor(self, begin: int, end: int, dtype: torch.dtype, shape: list[int]) -> torch.Tensor:
        size = torch.empty((), dtype=dtype).element_size()
        raw = self.base[begin:end]
        if begin % size or (end - begin) % size:  # misaligned: a copy (rare; safetensors pads its header)
            return raw.clone().view(dtype).reshape(shape)
        return raw.view(dtype).reshape(shape)

    def release(self, t: torch.Tensor) -> None:
        """Drop the pages holding `t` from this process (if it is a view of this file)."""
        import mmap

        offset = t.data_ptr() - self.start
        n = t.numel() * t.element_size()
        if not hasattr(mmap, "MADV_DONTNEED") or offset < 0 or offset + n > len(self.map) or n < self.page:
            return
        lo = -(-offset // self.page) * self.page
        hi = (offset + n) // self.page * self.page
        if hi > lo:
            try:
                self.map.madvise(mmap.MADV_DONTNEED, lo, hi - lo)
            except (OSError, ValueError):
                pass


def read_state_dict_mapped(path: str | Path) -> tuple[dict[str, torch.Tensor], MappedFile | None]:
    """A `.safetensors` checkpoint as views of the mapped file (and the MappedFile, to release pages as the
    tensors are consumed); other files through `read_state_dict` (None). Same checks and errors."""
    path = Path(path)
    if not path.is_file() or path.suffix.lower() != ".safetensors":
        return read_state_dict(path), None
    _check_safetensors_header(path)
    with path.open("rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n).decode("utf-8"))
    mapped = MappedFile(path)
    data = 8 + n
    out: dict[str, torch.Tensor] = {}
    try:
        for k, v in header.items():
            if k == "__metadata__":
                continue
            dt = _ST_DTYPES.get(v.get("dtype")) if isinstance(v, dict) else None
            begin, end = v["data_offsets"] if isinstance(v, dict) else (0, -1)
            shape = v.get("shape") if isinstance(v, dict) else None
            if dt is None or not isinstance(shape, list) or not 0 <= begin <= end or data + end > len(mapped.map):
                raise CheckpointError(f"{path}: corrupt safetensors file (tensor {k!r}: {v})")
            numel = 1
            for d in shape:
                numel *= int(d)
            if numel * torch.empty((), dtype=dt).element_size() != end - begin:
                raise CheckpointError(f"{path}: corrupt safetensors file (tensor {k!r}: size does not match shape)")
            out[k] = mapped.tensor(data + begin, data + end, dt, [int(d) for d in shape])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: corrupt safetensors file ({e})") from None
    return out, mapped


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
    try:  # an ordinary file only: a FIFO or a device named as a checkpoint would block or never end
        regular_file(path, "checkpoint")
    except ValueError as e:
        raise CheckpointError(str(e)) from None
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
    elif isinstance(obj, dict) and isinstance(obj.get("adapter"), dict):  # TencentARC's T2I-Adapter pickles
        obj = obj["adapter"]
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
    if in_ch not in (4, 8, 9):
        raise UnsupportedModelError(f"{source}: a UNet with {in_ch} input channels is not supported. Supported: "
                                    f"{SUPPORTED} with 4 latent channels (9 for inpainting models, 8 for "
                                    "InstructPix2Pix edit models).")
    fam = _family(sd, source)
    if in_ch == 8 and fam.name not in ("sd1", "sdxl"):
        raise UnsupportedModelError(f"{source}: a {fam.title} UNet with 8 input channels (an edit model?) is not "
                                    "supported: InstructPix2Pix edit models load for SD1.x and SDXL, as in ComfyUI.")
    return fam


def _family(sd: dict[str, torch.Tensor], source: str) -> Family:
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
        if has_g0 and not has_l:
            return Family("sdxl_refiner", None, REFINER_CLIP_G)
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
    """(prediction, how it was decided) the way ComfyUI 0.30 decides for a single file:
    - SD2.x: v when the UNet takes 4 latent channels (inpainting models are eps) and the population standard
      deviation of `output_blocks.11.1.transformer_blocks.0.norm1.bias`, computed in the file's dtype as torch
      computes it, is > 0.09; else eps. A "v_pred" key is not looked at.
    - SDXL base: a "v_pred" key means v (EDM v-prediction files: `edm_vpred_range`; Playground files are refused
      by `check_sdxl_markers`).
    - SD1.x and the SDXL refiner: always eps ("v_pred" is ignored, as ComfyUI ignores it)."""
    if family == "sd2":
        conv_in = sd.get(UNET + "input_blocks.0.0.weight")
        if conv_in is not None and conv_in.shape[1] != 4:
            return "eps", "ComfyUI's rule: SD2 inpainting models are eps"
        bias = sd.get(SD2_V_KEY)
        if bias is None:
            return "eps", "ComfyUI's default (no SD2 v-prediction marker weight in this layout)"
        std = torch.std(bias, unbiased=False)
        return ("v" if bool(std > SD2_V_STD) else "eps"), \
            f"ComfyUI's SD2 test (norm bias std {float(std):.4f} vs {SD2_V_STD})"
    if family == "sdxl" and "v_pred" in sd:
        return "v", "the checkpoint's 'v_pred' marker"
    return "eps", "the family default"


def check_sdxl_markers(sd: dict[str, torch.Tensor], source: str) -> None:
    """SDXL files whose marker keys make ComfyUI sample them another way (Playground's EDM latent format): refused,
    not sampled wrongly. EDM v-prediction files (CosXL) load: `edm_vpred_range`."""
    if "edm_mean" in sd and "edm_std" in sd:
        raise UnsupportedModelError(f"{source}: Playground v2.5 (EDM, 'edm_mean'/'edm_std') checkpoints are not "
                                    f"supported. Supported: {SUPPORTED}.")


def edm_vpred_range(sd: dict[str, torch.Tensor]) -> tuple[float, float] | None:
    """(sigma_min, sigma_max) of an SDXL EDM v-prediction checkpoint (CosXL, CosXL edit: an `edm_vpred.sigma_max`
    key, `edm_vpred.sigma_min` optional, 0.002 by default, as ComfyUI 0.30 reads them), else None."""
    if "edm_vpred.sigma_max" not in sd:
        return None
    lo = float(sd["edm_vpred.sigma_min"].float().item()) if "edm_vpred.sigma_min" in sd else 0.002
    return lo, float(sd["edm_vpred.sigma_max"].float().item())


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
    layers = _transformer_layers(depths, down_types, mid_attn, mid_depth, family)
    cfg = {
        "_class_name": "UNet2DConditionModel",
        "sample_size": {"sd1": 64, "sd2": 96, "sdxl": 128, "sdxl_refiner": 128}[family],
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
        "transformer_layers_per_block": layers,
        "upcast_attention": family == "sd2",
        "norm_num_groups": 32,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
    }
    if time_dim != 4 * model_ch:
        cfg["time_embedding_dim"] = int(time_dim)
    if family in SDXL_FAMILIES:
        cfg.update(_sdxl_addition(sd, family))
    mid_ref = layers if isinstance(layers, int) else layers[-1]
    if mid_attn and mid_depth != mid_ref:
        # diffusers takes the mid block depth from the last level's
        raise UnsupportedModelError(f"mid block depth {mid_depth} differs from the last level's {mid_ref}")
    return cfg


def _transformer_layers(depths: list[int], down_types: list[str], mid_attn: bool, mid_depth: int,
                        family: str) -> int | list[int]:
    """diffusers' transformer_layers_per_block: one number when every attention level (and the mid block)
    has the same depth (SDXL refiner: 4), else the per-level list (SDXL base: 1, 2, 10), else 1."""
    attn_depths = {d for d, t in zip(depths, down_types, strict=True) if t == "CrossAttnDownBlock2D"}
    if len(attn_depths) == 1 and (not mid_attn or mid_depth in attn_depths) and attn_depths != {1}:
        return attn_depths.pop()
    if any(d != 1 for d in depths) or family == "sdxl" or (mid_attn and mid_depth != 1):
        return depths
    return 1


def _sdxl_addition(sd: dict, family: str) -> dict:
    """The size / pooled-text embedding of SDXL UNets: 6 size values for the base, 5 for the refiner (height,
    width, crop_h, crop_w, aesthetic score), each embedded in (label width - pooled width) / n channels."""
    label_in = sd[UNET + "label_emb.0.0.weight"].shape[1]
    clip_g = XL_CLIP_G if family == "sdxl" else REFINER_CLIP_G
    pooled = sd[clip_g + "text_projection"].shape[1]
    n_ids = 6 if family == "sdxl" else 5
    if label_in <= pooled or (label_in - pooled) % n_ids:
        raise UnsupportedModelError(
            f"the UNet's size embedding takes {label_in} values, which is not the {FAMILY_NAMES[family]} layout "
            f"({pooled} pooled text values + {n_ids} size values of equal width): the UNet does not belong to "
            "this checkpoint's text encoders")
    return {"addition_embed_type": "text_time", "addition_time_embed_dim": (label_in - pooled) // n_ids,
            "projection_class_embeddings_input_dim": int(label_in)}


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
        "sample_size": {"sd1": 512, "sd2": 768, "sdxl": 1024, "sdxl_refiner": 1024}[family],
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
    module.load_state_dict(_converted(state, dtype), strict=True, assign=True)
    return module.eval().requires_grad_(False)


def _converted(state: dict, dtype: torch.dtype, release=None) -> dict[str, torch.Tensor]:
    """`state` in `dtype`, each tensor a copy of its own (never a view of a mapped file); with `release`, each
    source tensor's file pages are given back as soon as it is copied (streaming load)."""
    release = release or _RELEASE.get()
    out = {}
    for k in list(state):
        v = state[k]
        out[k] = v.to(dtype, copy=True).contiguous() if v.dtype != dtype or release is not None else v.to(dtype)
        if release is not None:
            release(v)
    return out


_RELEASE = contextvars.ContextVar("twosamplers_release_pages", default=None)


@contextlib.contextmanager
def releasing(mapped: MappedFile | None):
    """While building modules from a mapped checkpoint, give each tensor's pages back once it is copied."""
    token = _RELEASE.set(mapped.release if mapped is not None else None)
    try:
        yield
    finally:
        _RELEASE.reset(token)


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
    model.load_state_dict(_converted(state, dtype), strict=False, assign=True)
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
