"""ControlNets for SD1.x / SD2.x / SDXL through diffusers' `ControlNetModel`, loaded offline.

A ControlNet is a trained copy of its UNet's encoder plus a small "hint" encoder; its outputs (one residual per
UNet skip connection and one for the middle block) are added to the UNet's. Files come as a diffusers folder
(config.json + weights) or as one `.safetensors` in the LDM layout ComfyUI keeps under models/controlnet/
(keys `input_blocks.*`, `zero_convs.*`, `input_hint_block.*`, `middle_block_out.*`, optionally below
`control_model.`). For single files the architecture is read off the weight shapes, and whatever the weights
cannot say (attention heads, the SDXL size-embedding width) is taken from the UNet the ControlNet is loaded for,
of which it must be a copy; a ControlNet of another family is refused with both families named.

A T2I-Adapter file in that folder loads as a `t2i_adapter.T2IAdapterHandle`, as ComfyUI's loader takes it too.
How the residuals are used during sampling (strength, step window, chaining) is `control.py`'s job.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import torch

from .sd_loading import (
    UNET,
    CheckpointError,
    UnsupportedModelError,
    _materialize,
    infer_unet_config,
    read_state_dict,
)
from .t2i_adapter import T2IAdapterHandle, is_t2i_adapter_state, t2i_adapter_from_state

HINT_PREFIX = "input_hint_block."
LDM_PREFIX = "control_model."
CROSS_DIM_FAMILY = {768: "SD1.x", 1024: "SD2.x", 2048: "SDXL"}

_CACHE: dict[tuple, ControlNetModelHandle] = {}
_CACHE_LOCK = threading.Lock()


class ControlNetModelHandle:
    """A loaded ControlNet: the diffusers network and what it was made for.

    `residuals(x_in, timesteps, context, hint, extras)` runs the network as ComfyUI runs its ControlNet: on the
    UNet's own input (x already scaled by c_in, the quantized timestep, the prompt context; SDXL's pooled output
    and size conditioning as for the UNet) and returns (down residuals, mid residual) at strength 1.
    """

    def __init__(self, network, source: str) -> None:
        self.network = network
        self.source = source
        cfg = network.config
        self.cross_attention_dim = int(cfg.cross_attention_dim)
        self.sdxl = cfg.addition_embed_type == "text_time"

    def __repr__(self) -> str:
        return f"ControlNet({self.family_title}, source={self.source!r})"

    @property
    def family_title(self) -> str:
        name = CROSS_DIM_FAMILY.get(self.cross_attention_dim, f"cross-attention width {self.cross_attention_dim}")
        return "SDXL" if self.sdxl else name

    @property
    def dtype(self) -> torch.dtype:
        return next(self.network.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    def check_fits(self, unet) -> None:
        """Refuse a ControlNet whose residuals cannot be added to `unet` (another family or size)."""
        ours, theirs = self.network.config, unet.config
        fields = ("cross_attention_dim", "block_out_channels", "layers_per_block")
        mismatch = [f for f in fields if _norm(getattr(ours, f)) != _norm(getattr(theirs, f))]
        sdxl_unet = theirs.addition_embed_type == "text_time"
        if mismatch or self.sdxl != sdxl_unet:
            unet_dim = int(theirs.cross_attention_dim)
            unet_title = "SDXL" if sdxl_unet else CROSS_DIM_FAMILY.get(unet_dim, f"cross-attention width {unet_dim}")
            what = ", ".join(f"{f} {_norm(getattr(ours, f))} vs {_norm(getattr(theirs, f))}" for f in mismatch)
            raise UnsupportedModelError(f"ControlNet {self.source} ({self.family_title}) does not fit this "
                                        f"{unet_title} model{': ' + what if what else ''}")

    def residuals(self, x_in: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor, hint: torch.Tensor,
                  added_cond: dict | None = None) -> tuple[list[torch.Tensor], torch.Tensor]:
        dt = self.dtype
        down, mid = self.network(x_in.to(dt), timesteps.to(dt), encoder_hidden_states=context.to(dt),
                                 controlnet_cond=hint.to(dt), conditioning_scale=1.0,
                                 added_cond_kwargs=added_cond, return_dict=False)
        return list(down), mid


def _norm(v):
    return list(v) if isinstance(v, (list, tuple)) else v


# --------------------------------------------------------------------------------------------- loading
def load_controlnet(path: str | os.PathLike, *, unet=None, device=None, dtype: torch.dtype | None = None,
                    allow_pickle: bool = False, cache: bool = True) -> ControlNetModelHandle:
    """Load a ControlNet from a diffusers folder or an LDM-layout single file, for `unet` when given.

    unet: the diffusers UNet2DConditionModel of the model it will be used with (an SDModel's `.unet`); it
    supplies device, dtype and the facts weights cannot tell, and the ControlNet is checked against it.
    Pickle files (.pth/.ckpt) only with allow_pickle=True (read with torch.load(weights_only=True)).
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"ControlNet not found: {os.fspath(path)}")
    p = p.resolve()
    if unet is not None:
        first = next(unet.parameters())
        device = first.device if device is None else torch.device(device)
        dtype = first.dtype if dtype is None else dtype
    device = torch.device(device or "cpu")
    dtype = dtype or torch.float32
    stamp = p.stat().st_mtime_ns if p.is_file() else _folder_stamp(p)
    key = (str(p), stamp, str(device), str(dtype), id(unet) if unet is not None else None, allow_pickle)
    if cache:
        with _CACHE_LOCK:
            if key in _CACHE:
                return _CACHE[key]
    if p.is_dir() and _is_adapter_folder(p):  # diffusers' T2IAdapter.save_pretrained: the one-file keys
        handle = t2i_adapter_from_state(read_state_dict(_adapter_weights(p), allow_pickle=allow_pickle), str(p),
                                        device, dtype)
    elif p.is_dir():
        handle = ControlNetModelHandle(_load_folder(p, dtype, allow_pickle).to(device), str(p))
    else:
        sd = read_state_dict(p, allow_pickle=allow_pickle)
        if is_t2i_adapter_state(sd):  # ComfyUI's ControlNetLoader takes T2I-Adapters too
            handle = t2i_adapter_from_state(sd, str(p), device, dtype)
        else:
            handle = ControlNetModelHandle(controlnet_from_state(sd, p, unet, dtype).to(device), str(p))
    if unet is not None and isinstance(handle, T2IAdapterHandle):
        handle.placements(unet)  # refuses a UNet it does not fit
    elif unet is not None:
        handle.check_fits(unet)
    if cache:
        with _CACHE_LOCK:
            handle = _CACHE.setdefault(key, handle)
    return handle


def clear_cache() -> None:
    with _CACHE_LOCK:
        _CACHE.clear()


def _folder_stamp(p: Path) -> int:
    cfg = p / "config.json"
    return cfg.stat().st_mtime_ns if cfg.exists() else 0


def _folder_config(p: Path) -> dict:
    from .._paths import read_regular

    cfg_file = p / "config.json"
    if not cfg_file.exists():
        raise CheckpointError(f"{p} is a folder without config.json: not a diffusers ControlNet folder")
    try:
        cfg = json.loads(read_regular(cfg_file, "config file", 64 << 20).decode("utf-8"))
    except (OSError, ValueError, RecursionError) as e:
        raise CheckpointError(f"{cfg_file}: cannot read ({e})") from None
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{cfg_file}: not a JSON object")
    return cfg


def _is_adapter_folder(p: Path) -> bool:
    return _folder_config(p).get("_class_name") == "T2IAdapter"


def _adapter_weights(p: Path) -> Path:
    for name in ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"):
        if (p / name).is_file():
            return p / name
    raise CheckpointError(f"{p}: a T2IAdapter folder without diffusion_pytorch_model.safetensors (or .bin)")


def _load_folder(p: Path, dtype: torch.dtype, allow_pickle: bool = False):
    from diffusers import ControlNetModel

    from .sd_loading import PickleNotAllowedError, pickle_only_folder

    cfg = _folder_config(p)
    pickles = pickle_only_folder(p)
    if pickles and not allow_pickle:
        raise PickleNotAllowedError(f"{p}: the ControlNet folder's weights are pickle files "
                                    f"({', '.join(pickles[:3])}); refused without --allow-pickle (allow_pickle=True)")
    if cfg.get("_class_name") not in (None, "ControlNetModel"):
        raise UnsupportedModelError(f"{p}: a {cfg.get('_class_name')} folder, not a ControlNetModel")
    try:
        net = ControlNetModel.from_pretrained(p, torch_dtype=dtype, local_files_only=True,
                                              use_safetensors=not allow_pickle)
    except (OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{p}: cannot load the ControlNet folder ({type(e).__name__}: {e})") from None
    return net.eval().requires_grad_(False)


def ldm_controlnet_state(sd: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """The ControlNet's own keys (prefix `control_model.` removed), or a clear error for other files."""
    if "lora_controlnet" in sd:
        raise UnsupportedModelError(f"{source}: a Control-LoRA (Stability's low-rank SDXL ControlNets): out of "
                                    "scope: control LoRAs are not run; use a full ControlNet of the same kind")
    if any(k.startswith(LDM_PREFIX) for k in sd):
        sd = {k[len(LDM_PREFIX):]: v for k, v in sd.items() if k.startswith(LDM_PREFIX)}
    if HINT_PREFIX + "0.weight" not in sd or "zero_convs.0.0.weight" not in sd:
        hint = ""
        if any(k.startswith(UNET) for k in sd):
            hint = " (it looks like a whole Stable Diffusion checkpoint)"
        elif "controlnet_blocks.0.weight" in sd or "controlnet_blocks.0.linear.weight" in sd:
            hint = " (it is a Flux / SD3 ControlNet: it guides a Flux or SD3 model, not Stable Diffusion)"
        elif "controlnet_cond_embedding.conv_in.weight" in sd:
            hint = " (diffusers layout: pass the folder with its config.json instead)"
        elif any(k.startswith(("lora_", "lora_unet")) for k in list(sd)[:2000]):
            hint = " (it looks like a LoRA)"
        elif any(k.startswith(("controlnet_blocks.", "controlnet_x_embedder.", "pos_embed_input.",
                                "controlnet_single_blocks.", "double_blocks.")) for k in sd):
            hint = (" (its keys are those of a Flux / SD3 ControlNet, but not of a layout run here: XLabs, "
                    "Mistoline, InstantX / Union, Alimama inpainting, SD3 diffusers or Stability SD3.5)")
        raise UnsupportedModelError(f"{source}: not a ControlNet in the LDM layout (no input_hint_block / "
                                    f"zero_convs weights){hint}")
    return sd


def infer_controlnet_config(cn: dict[str, torch.Tensor], unet=None) -> dict:
    """A diffusers ControlNetModel config from an LDM ControlNet's shapes (+ the target UNet's config)."""
    sdxl = "label_emb.0.0.weight" in cn
    as_unet = {UNET + k: v for k, v in cn.items()}
    cross = _first_cross_dim(cn)
    family = "sdxl" if sdxl else ("sd2" if cross == 1024 else "sd1")
    if sdxl:  # infer_unet_config reads the pooled width off the text encoder; take it from the UNet instead
        as_unet["conditioner.embedders.1.model.text_projection"] = torch.empty(0, _pooled_width(cn, unet),
                                                                               device="meta")
    as_unet[UNET + "out.2.weight"] = torch.empty(cn["input_blocks.0.0.weight"].shape[1], 1, device="meta")
    u = infer_unet_config(as_unet, family)
    hint_convs = sorted(int(k.split(".")[1]) for k in cn if k.startswith(HINT_PREFIX) and k.endswith(".weight"))
    outs = [int(cn[f"{HINT_PREFIX}{i}.weight"].shape[0]) for i in hint_convs]
    # conv_in, then (same-width conv, stride-2 conv) pairs, then conv_out: the widths are conv_in's and every
    # stride-2 conv's output
    embedding = [outs[0]] + outs[2:-1:2]
    cfg = {k: u[k] for k in ("in_channels", "down_block_types", "block_out_channels", "layers_per_block",
                             "cross_attention_dim", "attention_head_dim", "use_linear_projection",
                             "transformer_layers_per_block", "upcast_attention", "norm_num_groups",
                             "flip_sin_to_cos", "freq_shift") if k in u}
    cfg.update({
        "_class_name": "ControlNetModel",
        "conditioning_channels": int(cn[HINT_PREFIX + "0.weight"].shape[1]),
        "conditioning_embedding_out_channels": embedding,
        "mid_block_type": u.get("mid_block_type") or "UNetMidBlock2DCrossAttn",
    })
    for k in ("addition_embed_type", "addition_time_embed_dim", "projection_class_embeddings_input_dim",
              "time_embedding_dim"):
        if k in u:
            cfg[k] = u[k]
    if unet is not None:  # what weights cannot tell: the UNet's own choices
        uc = unet.config
        for k in ("attention_head_dim", "num_attention_heads", "upcast_attention", "use_linear_projection"):
            if getattr(uc, k, None) is not None:
                cfg[k] = _norm(getattr(uc, k))
    return cfg


def _first_cross_dim(cn: dict) -> int:
    for k, v in cn.items():
        if k.endswith("attn2.to_k.weight"):
            return int(v.shape[1])
    raise UnsupportedModelError("a ControlNet without cross-attention is not supported")


def _pooled_width(cn: dict, unet) -> int:
    label_in = int(cn["label_emb.0.0.weight"].shape[1])
    if unet is not None and getattr(unet.config, "addition_time_embed_dim", None):
        return label_in - 6 * int(unet.config.addition_time_embed_dim)
    return label_in - 6 * 256  # SDXL: 2816 = 1280 (pooled) + 6 x 256 (size embeddings)


def controlnet_from_state(sd: dict[str, torch.Tensor], p: Path, unet, dtype: torch.dtype):
    """The diffusers ControlNetModel of an LDM-layout ControlNet state dict (read from `p`), for `unet`."""
    from diffusers import ControlNetModel
    from diffusers.loaders.single_file_utils import convert_controlnet_checkpoint

    cn = ldm_controlnet_state(sd, str(p))
    if len({k.split(".")[1] for k in cn if k.startswith(HINT_PREFIX)}) != 8:
        raise UnsupportedModelError(f"{p}: unusual hint encoder ({HINT_PREFIX}* is not 8 convolutions)")
    if unet is not None:  # another family cannot even be built with this UNet's facts: refuse it first
        sdxl, cross = "label_emb.0.0.weight" in cn, _first_cross_dim(cn)
        unet_sdxl = unet.config.addition_embed_type == "text_time"
        if sdxl != unet_sdxl or cross != int(unet.config.cross_attention_dim):
            title = "SDXL" if sdxl else CROSS_DIM_FAMILY.get(cross, f"cross-attention width {cross}")
            unet_title = "SDXL" if unet_sdxl else CROSS_DIM_FAMILY.get(int(unet.config.cross_attention_dim),
                                                                      "another family")
            raise UnsupportedModelError(f"ControlNet {p} ({title}) does not fit this {unet_title} model "
                                        f"(cross-attention width {cross} vs {unet.config.cross_attention_dim})")
    cfg = infer_controlnet_config(cn, unet)
    state = convert_controlnet_checkpoint(cn, cfg)
    if "label_emb.0.0.weight" in cn:  # diffusers' converter leaves SDXL's size embedding out
        for i, j in ((0, 1), (2, 2)):
            for t in ("weight", "bias"):
                state[f"add_embedding.linear_{j}.{t}"] = cn[f"label_emb.0.{i}.{t}"]
    try:
        return _materialize(ControlNetModel, cfg, state, f"ControlNet {p.name}", dtype)
    except CheckpointError as e:
        raise CheckpointError(f"{p}: {e}") from None
