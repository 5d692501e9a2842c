"""The 16-channel KL VAE of Flux.1 (ae.safetensors) and SD3/SD3.5, on diffusers' AutoencoderKL, encoding and
decoding like ComfyUI's VAEEncode / VAEDecode.

`is_flow_vae(keys)` tells such a VAE from the 4-channel SD ones (16 latent channels, LDM or diffusers layout, with
or without a prefix); `load_flow_vae(path_or_state_dict)` builds it (config from the shapes, diffusers' own LDM
key conversion) and returns a `FlowVAE`, which has the interface of the model objects a VAE handle wraps:
`latent_format`, `encode_image(pixels) -> latent`, `decode_latent(latent) -> pixels`.

ComfyUI's rules kept: pixels are cropped to a multiple of 8 (centred), mapped to [-1, 1], encoded to the
distribution's mode; latents are the VAE's raw ones (the model's scale and shift are applied by the sampler, not
here); the decoded image is mapped back to [0, 1] and clamped. Weights and compute in float32 on the CPU and in
bfloat16 on GPUs that have it (else float32), as ComfyUI picks the VAE dtype.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from .base import LatentFormat
from .flow_nets import build_module

VAE_PREFIXES = ("first_stage_model.", "vae.", "")
FLOW_VAE_CHANNELS = 16
RAW_FORMAT = LatentFormat(scale_factor=1.0, channels=FLOW_VAE_CHANNELS, downscale=8)


def _vae_prefix(keys) -> tuple[str, str] | None:
    """(prefix, "ldm" | "diffusers") of a 16-channel VAE in `keys`, or None."""
    keys = keys if isinstance(keys, (set, frozenset, dict)) else set(keys)
    for p in VAE_PREFIXES:
        if f"{p}decoder.conv_in.weight" in keys and f"{p}encoder.conv_in.weight" in keys:
            layout = "diffusers" if f"{p}decoder.up_blocks.0.resnets.0.norm1.weight" in keys else "ldm"
            return p, layout
    return None


def is_flow_vae(sd) -> bool:
    """Whether a state dict (or its keys with shapes: a dict) holds a 16-channel KL VAE (Flux / SD3)."""
    found = _vae_prefix(sd)
    if found is None:
        return False
    w = sd[f"{found[0]}decoder.conv_in.weight"]
    return w.ndim == 4 and int(w.shape[1]) == FLOW_VAE_CHANNELS


def _levels(keys, prefix: str) -> list[int]:
    pat = re.compile(re.escape(prefix) + r"(\d+)\.")
    return sorted({int(m.group(1)) for k in keys if (m := pat.match(k))})


def vae_config(sd: dict[str, torch.Tensor], layout: str) -> dict:
    """AutoencoderKL config from a (prefix-stripped) VAE state dict's shapes."""
    if layout == "diffusers":
        levels = _levels(sd, "encoder.down_blocks.")
        chans = [int(sd[f"encoder.down_blocks.{i}.resnets.0.conv1.weight"].shape[0]) for i in levels]
        lpb = len(_levels(sd, "encoder.down_blocks.0.resnets."))
    else:
        levels = _levels(sd, "encoder.down.")
        chans = [int(sd[f"encoder.down.{i}.block.0.conv1.weight"].shape[0]) for i in levels]
        lpb = len(_levels(sd, "encoder.down.0.block."))
    quant = "quant_conv.weight" in sd
    return {
        "in_channels": int(sd["encoder.conv_in.weight"].shape[1]),
        "out_channels": 3,
        "down_block_types": ["DownEncoderBlock2D"] * len(levels),
        "up_block_types": ["UpDecoderBlock2D"] * len(levels),
        "block_out_channels": chans,
        "layers_per_block": lpb,
        "latent_channels": int(sd["decoder.conv_in.weight"].shape[1]),
        "norm_num_groups": 32,
        "sample_size": 1024,
        "use_quant_conv": quant,
        "use_post_quant_conv": "post_quant_conv.weight" in sd,
    }


def vae_dtype(device: torch.device) -> torch.dtype:
    """ComfyUI's VAE dtype for these VAEs: bfloat16 on a GPU that has it, else float32."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


class FlowVAE:
    """A 16-channel VAE. `latent_format` is the model family's when known (Flux or SD3 checkpoints), else the raw
    16-channel format (scale 1, no shift): a VAE file alone does not say which model it belongs to, and encoding
    and decoding do not depend on it."""

    def __init__(self, vae, dtype: torch.dtype, latent_format: LatentFormat = RAW_FORMAT, source: str = "") -> None:
        self.vae = vae
        self.vae_dtype = dtype
        self.latent_format = latent_format
        self.source = source

    def __repr__(self) -> str:
        return f"FlowVAE(16 channels, {self.vae_dtype}, device={self.device}, source={self.source!r})"

    @property
    def device(self) -> torch.device:
        return next(self.vae.parameters()).device

    def with_latent_format(self, latent_format: LatentFormat) -> FlowVAE:
        return FlowVAE(self.vae, self.vae_dtype, latent_format, self.source)

    @torch.no_grad()
    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels (B, H, W, 3) in [0, 1] -> raw latent (B, 16, H/8, W/8), the distribution's mode, float32 CPU."""
        if not isinstance(pixels, torch.Tensor) or pixels.ndim != 4 or pixels.shape[-1] not in (3, 4):
            got = tuple(pixels.shape) if isinstance(pixels, torch.Tensor) else type(pixels).__name__
            raise ValueError(f"pixels must be a (B, H, W, 3) tensor in [0, 1], got {got}")
        pixels = pixels[..., :3].float()
        h, w = pixels.shape[1] // 8 * 8, pixels.shape[2] // 8 * 8
        if h == 0 or w == 0:
            raise ValueError(f"image {pixels.shape[2]}x{pixels.shape[1]} is smaller than 8 pixels")
        if (h, w) != tuple(pixels.shape[1:3]):  # ComfyUI crops to a multiple of 8, centred
            y0, x0 = (pixels.shape[1] % 8) // 2, (pixels.shape[2] % 8) // 2
            pixels = pixels[:, y0:y0 + h, x0:x0 + w]
        x = (pixels.movedim(-1, 1) * 2.0 - 1.0).to(device=self.device, dtype=self.vae_dtype)
        return self.vae.encode(x).latent_dist.mode().float().cpu()

    @torch.no_grad()
    def decode_latent(self, samples: torch.Tensor) -> torch.Tensor:
        """Raw latent (B, 16, h, w) -> pixels (B, 8h, 8w, 3) in [0, 1], float32 CPU."""
        if not isinstance(samples, torch.Tensor) or samples.ndim != 4:
            raise ValueError("samples must be a latent tensor (B, C, H, W)")
        if samples.shape[1] != FLOW_VAE_CHANNELS:
            raise ValueError(f"samples has {samples.shape[1]} channels; this VAE decodes {FLOW_VAE_CHANNELS}-channel "
                             "latents (Flux / SD3)")
        z = samples.to(device=self.device, dtype=self.vae_dtype)
        x = self.vae.decode(z).sample.float()
        return ((x + 1.0) / 2.0).clamp(0.0, 1.0).movedim(1, -1).cpu()


def load_flow_vae(path_or_state_dict: str | os.PathLike | dict, *, device=None, dtype=None,
                  latent_format: LatentFormat = RAW_FORMAT) -> FlowVAE:
    """A Flux / SD3 16-channel VAE from a file (ae.safetensors, a diffusers vae/ file, or an all-in-one checkpoint)
    or a state dict. `dtype` None: ComfyUI's choice (`vae_dtype`)."""
    from diffusers import AutoencoderKL
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    from .sd_loading import CheckpointError, read_state_dict

    if isinstance(path_or_state_dict, dict):
        sd, source = path_or_state_dict, "state dict"
    else:
        sd, source = read_state_dict(Path(path_or_state_dict)), os.fspath(path_or_state_dict)
    found = _vae_prefix(sd)
    if found is None or not is_flow_vae(sd):
        raise CheckpointError(f"{source}: not a 16-channel (Flux / SD3) VAE")
    prefix, layout = found
    sub = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    sub = {k: v for k, v in sub.items() if k.startswith(("encoder.", "decoder.", "quant_conv.", "post_quant_conv."))}
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dt = dtype or vae_dtype(dev)
    try:
        cfg = vae_config(sub, layout)
        state = sub if layout == "diffusers" else convert_ldm_vae_checkpoint(sub, cfg)
        vae = build_module(AutoencoderKL, cfg, {k: v.to(dt) for k, v in state.items()}, f"{source} (VAE)")
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"{source}: cannot read the VAE ({type(e).__name__}: {e})") from None
    return FlowVAE(vae.to(dev), dt, latent_format, source)
