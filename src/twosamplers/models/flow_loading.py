"""Loading Flux.1 and SD3/SD3.5 files the ways ComfyUI users keep them, with ComfyUI's detection rules:

- a diffusion model alone (`diffusion_models/` or `unet/`, ComfyUI's UNETLoader) -> `load_diffusion_model`,
  with UNETLoader's `weight_dtype` ("default" keeps the file's dtype; "fp8_e4m3fn", "fp8_e4m3fn_fast",
  "fp8_e5m2" store the weights in 8 bits);
- text encoders alone (DualCLIPLoader / TripleCLIPLoader / CLIPLoader) -> `flow_text.load_text_encoders`;
- the 16-channel VAE alone (VAELoader) -> `flow_vae.load_flow_vae`;
- all-in-one single-file checkpoints (CheckpointLoaderSimple) -> `load_flow_checkpoint`: the transformer under
  `model.diffusion_model.`, text encoders under `text_encoders.` (and, in older SD3 files, `cond_stage_model.`),
  the VAE under `vae.` (Flux) or `first_stage_model.` (SD3);
- a folder of such files (`load_flow_folder`): one diffusion model, its text encoders and a VAE side by side
  (what `--model DIR` takes), each file's role told by its keys.

Compute dtype (`dtype`): float32 on the CPU; on CUDA bfloat16 for Flux where the GPU has it and float16 for SD3
(ComfyUI's choice); weights keep their stored dtype and are cast layer by layer (flow_nets.cast_on_use).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .flow import FlowModel, build_transformer
from .flow_keys import diffusion_prefix, flow_family_at, strip
from .sd_loading import CheckpointError, read_state_dict

WEIGHT_DTYPES = {"default": None, "fp8_e4m3fn": torch.float8_e4m3fn, "fp8_e4m3fn_fast": torch.float8_e4m3fn,
                 "fp8_e5m2": torch.float8_e5m2}
_DTYPE_NAMES = {"fp16": torch.float16, "float16": torch.float16, "half": torch.float16, "bf16": torch.bfloat16,
                "bfloat16": torch.bfloat16, "fp32": torch.float32, "float32": torch.float32, "float": torch.float32}


def resolve_flow_device_dtype(family: str, device=None, dtype=None) -> tuple[torch.device, torch.dtype]:
    """The device and compute dtype: CUDA when available, else the CPU; float32 on the CPU, bfloat16 (Flux, where
    supported) or float16 (SD3, or Flux without bf16) on CUDA. Either can be given."""
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but CUDA is not available")
    if dtype is None:
        if dev.type != "cuda":
            return dev, torch.float32
        if family == "flux" and torch.cuda.is_bf16_supported():
            return dev, torch.bfloat16
        return dev, torch.float16
    if isinstance(dtype, torch.dtype):
        dt = dtype
    elif isinstance(dtype, str) and dtype.lower() in _DTYPE_NAMES:
        dt = _DTYPE_NAMES[dtype.lower()]
    else:
        raise ValueError(f"dtype must be one of {sorted(_DTYPE_NAMES)} or a torch.dtype, got {dtype!r}")
    if dt not in (torch.float16, torch.bfloat16, torch.float32):
        raise ValueError(f"unsupported compute dtype {dt}; weights in 8 bits are a weight_dtype, not a dtype")
    return dev, dt


def weight_dtype_of(weight_dtype: str | None) -> torch.dtype | None:
    if weight_dtype is None:
        return None
    if weight_dtype not in WEIGHT_DTYPES:
        raise ValueError(f"weight_dtype={weight_dtype!r} is not known; valid: {', '.join(WEIGHT_DTYPES)}")
    return WEIGHT_DTYPES[weight_dtype]


def _check_not_scaled(sd: dict, prefix: str, what: str) -> None:
    if f"{prefix}scaled_fp8" in sd or any(k.endswith(".scale_weight") for k in sd):
        raise CheckpointError(f"{what}: 'scaled fp8' checkpoints (per-tensor weight scales) are not supported yet; "
                              "use the fp16/bf16 file, or load it with weight_dtype='fp8_e4m3fn'")


def load_diffusion_model(path: str | os.PathLike, *, weight_dtype: str = "default", device=None, dtype=None,
                         state: dict | None = None) -> FlowModel:
    """A Flux or SD3 transformer file (ComfyUI's UNETLoader) as a `FlowModel` without text encoders or VAE."""
    path = Path(path)
    storage = weight_dtype_of(weight_dtype)
    sd = state if state is not None else read_state_dict(path)
    prefix = diffusion_prefix(sd)
    if prefix is None:
        raise CheckpointError(f"{path}: not a Flux.1 or SD3/SD3.5 diffusion model (no 'double_blocks' / "
                              "'joint_blocks' transformer weights)")
    _check_not_scaled(sd, prefix, str(path))
    family = flow_family_at(sd, prefix)
    dev, dt = resolve_flow_device_dtype(family, device, dtype)
    try:
        net, variant = build_transformer(strip(sd, prefix), family, storage_dtype=storage,
                                         compute_dtype=dt, device=dev, what=str(path))
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from None
    return FlowModel(net, family, variant, source=str(path))


def load_text_encoders(paths, family: str, *, device=None, dtype=None, text_dtype: str | None = None,
                       states: list | None = None):
    """Text encoder files (ComfyUI's CLIPLoader / DualCLIPLoader / TripleCLIPLoader with type "flux" or "sd3")
    -> `FluxTextEncoders` / `SD3TextEncoders`. Each file's kind (CLIP-L, CLIP-G, T5-XXL) comes from its keys,
    not its name or place in the list."""
    from .flow_text import build_encoders, find_text_encoders

    paths = [Path(p) for p in paths]
    dev, dt = resolve_flow_device_dtype(family, device, dtype)
    parts = []
    for i, path in enumerate(paths):
        sd = states[i] if states is not None else read_state_dict(path)
        found = find_text_encoders(sd)
        if not found:
            raise CheckpointError(f"{path}: not a CLIP or T5 text encoder (no 'text_model.*' or 'encoder.block.*' "
                                  "weights)")
        _check_not_scaled(sd, "", str(path))
        parts += [(sd, prefix, kind) for kind, prefix in found.items()]
    try:
        return build_encoders(parts, family, device=dev, compute=dt, text_dtype=text_dtype)
    except ValueError as e:
        raise CheckpointError(f"{', '.join(p.name for p in paths)}: {e}") from None


def load_flow_checkpoint(path: str | os.PathLike, *, device=None, dtype=None, weight_dtype: str = "default",
                         text_dtype: str | None = None, state: dict | None = None) -> FlowModel:
    """An all-in-one Flux / SD3 checkpoint (ComfyUI's CheckpointLoaderSimple): the transformer with whatever text
    encoders and VAE the file holds (a checkpoint without them gives a model without them)."""
    from .flow_text import build_encoders, find_text_encoders
    from .flow_vae import is_flow_vae, load_flow_vae

    path = Path(path)
    storage = weight_dtype_of(weight_dtype)
    sd = state if state is not None else read_state_dict(path)
    prefix = diffusion_prefix(sd)
    if prefix is None:
        raise CheckpointError(f"{path}: not a Flux.1 or SD3/SD3.5 checkpoint")
    _check_not_scaled(sd, prefix, str(path))
    family = flow_family_at(sd, prefix)
    dev, dt = resolve_flow_device_dtype(family, device, dtype)
    try:
        net, variant = build_transformer(strip(sd, prefix), family, storage_dtype=storage, compute_dtype=dt,
                                         device=dev, what=str(path))
        found = {k: p for k, p in find_text_encoders(sd).items() if p}
        text = None
        if found:
            parts = [(sd, p, kind) for kind, p in found.items()]
            text = build_encoders(parts, family, device=dev, compute=dt, text_dtype=text_dtype)
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from None
    from .flow import LATENT_FORMATS

    vae = load_flow_vae(sd, device=dev, latent_format=LATENT_FORMATS[family]) if is_flow_vae(sd) else None
    return FlowModel(net, family, variant, text=text, vae=vae, source=str(path))


# ------------------------------------------------------------------------------------------------ files by keys
_SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                       "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2, "I64": torch.int64,
                       "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool}


def header_tensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors as meta tensors of the right shape and dtype, from its header alone (no
    weights read): what the detection rules need to tell a file's role."""
    import json
    import struct

    path = Path(path)
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path}: not a safetensors file")
        (n,) = struct.unpack("<Q", head)
        if n == 0 or n > 100_000_000 or n > path.stat().st_size - 8:
            raise CheckpointError(f"{path}: corrupt safetensors header")
        try:
            header = json.loads(f.read(n).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{path}: corrupt safetensors header ({e})") from None
    out = {}
    for k, v in header.items():
        if k == "__metadata__" or not isinstance(v, dict):
            continue
        dt = _SAFETENSORS_DTYPES.get(v.get("dtype"), torch.float32)
        out[k] = torch.empty(v.get("shape", []), dtype=dt, device="meta")
    return out


def file_role(path: str | os.PathLike) -> str | None:
    """What a .safetensors file is, from its header: "checkpoint" (a Flux/SD3 transformer with text encoders
    or VAE), "diffusion_model" (a transformer alone), "text_encoder", "vae" (16-channel), or None."""
    from .flow_text import find_text_encoders
    from .flow_vae import is_flow_vae

    keys = header_tensors(path)
    prefix = diffusion_prefix(keys)
    if prefix is not None:
        others = any(not k.startswith(prefix) for k in keys) if prefix else False
        return "checkpoint" if others else "diffusion_model"
    if is_flow_vae(keys):
        return "vae"
    if find_text_encoders(keys):
        return "text_encoder"
    return None


def is_flow_path(path: str | os.PathLike) -> bool:
    """Whether `path` is a Flux / SD3 model the flow loader takes: a .safetensors file holding a Flux or SD3
    transformer, a diffusers folder of a Flux or SD3 pipeline, or a folder of ComfyUI-style Flux / SD3 files."""
    p = Path(path).expanduser()
    if p.is_file():
        if p.suffix.lower() not in (".safetensors", ".sft"):
            return False
        try:
            return file_role(p) in ("checkpoint", "diffusion_model")
        except (CheckpointError, OSError):
            return False
    if p.is_dir():
        index = p / "model_index.json"
        if index.is_file():
            return _diffusers_pipeline(p) is not None
        try:
            return any(file_role(f) in ("checkpoint", "diffusion_model") for f in _folder_files(p))
        except (CheckpointError, OSError):
            return False
    return False


def _folder_files(folder: Path) -> list[Path]:
    return sorted(f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in (".safetensors", ".sft"))


def _diffusers_pipeline(folder: Path) -> str | None:
    import json

    try:
        cls = str(json.loads((folder / "model_index.json").read_text(encoding="utf-8")).get("_class_name", ""))
    except (OSError, ValueError):
        return None
    if cls.startswith("Flux") and not cls.startswith("Flux2"):
        return "flux"
    if cls.startswith("StableDiffusion3"):
        return "sd3"
    return None


def load_flow_folder(folder: str | os.PathLike, *, device=None, dtype=None, weight_dtype: str = "default",
                     text_dtype: str | None = None) -> FlowModel:
    """A folder of ComfyUI-style files: one Flux / SD3 diffusion model (or all-in-one checkpoint), and optionally
    its text encoder files and a 16-channel VAE, told apart by their keys (names do not matter)."""
    from .flow import LATENT_FORMATS
    from .flow_vae import load_flow_vae

    folder = Path(folder).expanduser()
    roles: dict[str, list[Path]] = {}
    for f in _folder_files(folder):
        role = file_role(f)
        if role is not None:
            roles.setdefault(role, []).append(f)
    models = roles.get("checkpoint", []) + roles.get("diffusion_model", [])
    if len(models) != 1:
        found = ", ".join(f.name for f in models) or "none"
        raise CheckpointError(f"{folder}: a model folder needs exactly one Flux / SD3 diffusion model or checkpoint "
                              f"file (found: {found})")
    path = models[0]
    if roles.get("checkpoint"):
        model = load_flow_checkpoint(path, device=device, dtype=dtype, weight_dtype=weight_dtype,
                                     text_dtype=text_dtype)
    else:
        model = load_diffusion_model(path, weight_dtype=weight_dtype, device=device, dtype=dtype)
    if roles.get("text_encoder"):
        model.text = load_text_encoders(roles["text_encoder"], model.family, device=model.device, dtype=model.dtype,
                                        text_dtype=text_dtype)
    vaes = roles.get("vae", [])
    if len(vaes) > 1:
        raise CheckpointError(f"{folder}: more than one VAE file ({', '.join(f.name for f in vaes)})")
    if vaes:
        model.vae = load_flow_vae(vaes[0], device=model.device, latent_format=LATENT_FORMATS[model.family])
    model.source = str(folder)
    return model


def load_flow(path: str | os.PathLike, *, device=None, dtype=None, weight_dtype: str = "default",
              text_dtype: str | None = None, clip_skip: int | None = None, **options) -> FlowModel:
    """`twosamplers.models.load` for Flux / SD3 paths: an all-in-one or transformer-only file, or a folder.
    `clip_skip`: the model's default CLIPSetLastLayer value for its prompts (it reaches T5 too, as in ComfyUI)."""
    from .sd_text import normalize_clip_skip

    model = _load_flow(path, device=device, dtype=dtype, weight_dtype=weight_dtype, text_dtype=text_dtype,
                       **options)
    model.clip_skip = normalize_clip_skip(clip_skip)
    return model


def _load_flow(path, *, device, dtype, weight_dtype, text_dtype, **options) -> FlowModel:
    extra = {k: v for k, v in options.items() if v is not None and v is not False}
    if extra:
        raise ValueError(f"{', '.join(sorted(extra))} only apply to Stable Diffusion 1.x/2.x/XL checkpoints, not to "
                         "Flux / SD3 models")
    p = Path(path).expanduser()
    if p.is_dir():
        if (p / "model_index.json").is_file():
            return load_diffusers_flow(p, device=device, dtype=dtype, weight_dtype=weight_dtype,
                                       text_dtype=text_dtype)
        return load_flow_folder(p, device=device, dtype=dtype, weight_dtype=weight_dtype, text_dtype=text_dtype)
    return load_flow_checkpoint(p, device=device, dtype=dtype, weight_dtype=weight_dtype, text_dtype=text_dtype)


# (cfg, image side) for the front ends: Flux guides through its guidance embedding (cfg 1; schnell needs none),
# SD3.5 with cfg (4.5, ComfyUI's example workflows); both were trained at 1024 x 1024.
FLOW_DEFAULTS = {"flux": (1.0, 1024), "sd3": (4.5, 1024)}


def flow_defaults(path) -> tuple[float, int] | None:
    """FLOW_DEFAULTS of the family a path holds, or None when it is not a Flux / SD3 model (header only)."""
    try:
        if not is_flow_path(path):
            return None
        p = Path(path).expanduser()
        files = [p] if p.is_file() else [f for f in _folder_files(p)
                                        if file_role(f) in ("checkpoint", "diffusion_model")]
        keys = header_tensors(files[0])
    except (OSError, CheckpointError, IndexError):
        return None
    prefix = diffusion_prefix(keys)
    return FLOW_DEFAULTS.get(flow_family_at(keys, prefix) if prefix is not None else "")


# ------------------------------------------------------------------------------------------------ diffusers folders
def _read_folder_weights(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a diffusers / transformers model folder (one .safetensors file or shards)."""
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{folder}: no .safetensors weights (pickle .bin weights are not read)")
    sd: dict[str, torch.Tensor] = {}
    for f in files:
        sd.update(read_state_dict(f))
    return sd


def load_diffusers_flow(folder: str | os.PathLike, *, device=None, dtype=None, weight_dtype: str = "default",
                        text_dtype: str | None = None) -> FlowModel:
    """A diffusers FluxPipeline / StableDiffusion3Pipeline folder (transformer/, text_encoder*/, vae/): the same
    models as the single files, read with the same rules (the folders' tokenizers are the shipped ones)."""
    import json

    from diffusers import FluxTransformer2DModel, SD3Transformer2DModel

    from .flow import LATENT_FORMATS, FlowModel
    from .flow_keys import flux_keymap, flux_variant, sd3_keymap, sd3_variant
    from .flow_nets import FluxNetwork, SD3Network, build_module, cast_on_use
    from .flow_text import build_encoders, find_text_encoders
    from .flow_vae import load_flow_vae

    folder = Path(folder).expanduser()
    family = _diffusers_pipeline(folder)
    if family is None:
        raise CheckpointError(f"{folder}: not a Flux.1 or SD3 diffusers pipeline folder")
    dev, dt = resolve_flow_device_dtype(family, device, dtype)
    storage = weight_dtype_of(weight_dtype)
    try:
        cfg = json.loads((folder / "transformer" / "config.json").read_text(encoding="utf-8"))
        cls = FluxTransformer2DModel if family == "flux" else SD3Transformer2DModel
        cfg = {k: v for k, v in cfg.items() if not k.startswith("_")}
        state = _read_folder_weights(folder / "transformer")
        if storage is not None:
            state = {k: v.to(storage) for k, v in state.items()}
        module = cast_on_use(build_module(cls, cfg, state, f"{folder}/transformer"), storage, dt).to(dev)
        conf = module.config
        if family == "flux":
            net, variant = FluxNetwork(module, dt), flux_variant(dict(conf))
            net.key_map = flux_keymap(dict(conf))
        else:
            c = {**dict(conf), "dual_attention_layers": tuple(conf.dual_attention_layers or ())}
            net, variant = SD3Network(module, dt), sd3_variant(c)
            net.key_map = sd3_keymap(c)
        parts = []
        for sub in ("text_encoder", "text_encoder_2", "text_encoder_3"):
            if (folder / sub).is_dir():
                sd = _read_folder_weights(folder / sub)
                parts += [(sd, p, kind) for kind, p in find_text_encoders(sd).items()]
        text = build_encoders(parts, family, device=dev, compute=dt, text_dtype=text_dtype) if parts else None
    except (OSError, ValueError, KeyError) as e:
        raise CheckpointError(f"{folder}: cannot load the diffusers folder ({type(e).__name__}: {e})") from None
    vae = None
    if (folder / "vae").is_dir():
        vae = load_flow_vae(_read_folder_weights(folder / "vae"), device=dev, latent_format=LATENT_FORMATS[family])
    return FlowModel(net.eval().requires_grad_(False), family, variant, text=text, vae=vae, source=str(folder))
