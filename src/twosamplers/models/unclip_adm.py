"""The ADM vector of image prompts (CLIP image embeddings): SD2.1 unCLIP checkpoints and SDXL Revision (ComfyUI's
unCLIPConditioning), with ComfyUI's numbers. The unCLIP checkpoint loader is models/unclip.py.

unCLIPConditioning appends {"clip_vision_output", "strength", "noise_augmentation"} to each entry's
"unclip_conditioning" list. When the model samples, the list becomes one ADM vector per entry:
- each image embedding e (one per image of each CLIP_VISION_OUTPUT) is noise-augmented at level
  n = round(999 * noise_augmentation): z = sqrt(abar[n]) e + sqrt(1 - abar[n]) noise, with the "squaredcos_cap_v2"
  schedule (abar(t) = cos((t + 0.008) / 1.008 * pi / 2)^2, betas capped at 0.999, 1000 steps) and noise drawn
  from a generator seeded with (the sampling seed - 10); its vector is [z, sinusoidal embedding of n] * strength
  (the embedding as the UNet's timestep embedding: cosines first, width = the image embedding's);
- one embedding: that vector. Several (images or unCLIP nodes): their sum, whose first half is noise-augmented
  again at the merge level (SD2.1 unCLIP 0.05, SDXL 0), the noise continuing the same generator, and joined
  with the merge level's embedding (the strengths are not applied again).
- SD2.1 unCLIP: the vector is the UNet's class-embedding input ("y"); an entry without image prompt gets zeros.
  SDXL: its first 1280 numbers replace the prompt's pooled output.
An SD1.x / SD2.x model ignores image prompts, as ComfyUI's do.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

MAX_NOISE_LEVEL = 1000
MERGE_LEVEL = {"sdxl": 0.0, "unclip": 0.05}
SDXL_POOLED = 1280


@lru_cache(maxsize=1)
def _augment_schedule() -> tuple[torch.Tensor, torch.Tensor]:
    """(sqrt(abar), sqrt(1 - abar)) of the squaredcos_cap_v2 schedule, float64 -> float32."""
    def abar(t: float) -> float:
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    n = MAX_NOISE_LEVEL
    betas = np.array([min(1 - abar((i + 1) / n) / abar(i / n), 0.999) for i in range(n)])
    cumprod = np.cumprod(1.0 - betas, axis=0)
    return (torch.tensor(np.sqrt(cumprod), dtype=torch.float32),
            torch.tensor(np.sqrt(1.0 - cumprod), dtype=torch.float32))


def level_embedding(level: int, dim: int) -> torch.Tensor:
    """The sinusoidal embedding (1, dim) of an integer level: cos then sin of level * 10000^(-i / (dim/2))."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(0, half, dtype=torch.float32) / half)
    args = torch.tensor([level], dtype=torch.float32)[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1) if dim % 2 else emb


def _level(noise_augmentation: float) -> int:
    return round((MAX_NOISE_LEVEL - 1) * noise_augmentation)


def augment(embed: torch.Tensor, level: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(noise-augmented embedding (1, dim), its level's embedding (1, dim))."""
    x = embed.reshape(1, -1).float()
    noise = torch.randn(x.size(), dtype=x.dtype, generator=generator)
    a, b = _augment_schedule()
    z = a[level] * x + b[level] * noise
    return z, level_embedding(level, x.shape[1])


def adm_vector(unclip: list, seed: int, merge_level: float) -> torch.Tensor:
    """An entry's "unclip_conditioning" list -> its ADM vector (1, 2 * dim) (see the module docstring)."""
    gen = None
    parts = []
    for item in unclip:
        output, strength = item["clip_vision_output"], float(item["strength"])
        level = _level(float(item["noise_augmentation"]))
        embeds = output["image_embeds"] if not hasattr(output, "image_embeds") else output.image_embeds
        for e in embeds:
            gen = torch.Generator().manual_seed(int(seed))  # ComfyUI seeds a generator per embedding
            z, emb = augment(e, level, gen)
            parts.append(torch.cat((z, emb), 1) * strength)
    if not parts:
        raise ValueError("unclip_conditioning holds no image embedding")
    if len(parts) == 1:
        return parts[0]
    total = torch.stack(parts).sum(0)
    dim = total.shape[1] // 2
    z, emb = augment(total[:, :dim], _level(merge_level), gen)
    return torch.cat((z, emb), 1)


def check_unclip(value, where: str) -> list:
    if not isinstance(value, (list, tuple)) or not all(
            isinstance(v, dict) and {"clip_vision_output", "strength", "noise_augmentation"} <= set(v) for v in value):
        raise ValueError(f"{where}: unclip_conditioning must be a list of {{clip_vision_output, strength, "
                         "noise_augmentation}} (from unCLIPConditioning)")
    return list(value)


def sdxl_extras(extras: dict, seed: int | None) -> dict:
    """SDXL Revision: the pooled output replaced by the image prompts' ADM vector's first 1280 numbers (the
    pooled output's width: 1280 for SDXL)."""
    out = {k: v for k, v in extras.items() if k != "unclip_conditioning"}
    pooled = extras.get("pooled_output")
    width = int(pooled.shape[-1]) if isinstance(pooled, torch.Tensor) else SDXL_POOLED
    adm = adm_vector(check_unclip(extras["unclip_conditioning"], "conditioning"), (seed or 0) - 10,
                     MERGE_LEVEL["sdxl"])
    if adm.shape[1] // 2 != width:
        raise ValueError(f"SDXL Revision needs a CLIP vision model with {width}-wide image embeddings (CLIP-G, "
                         f"clip_vision_g); this one gives {adm.shape[1] // 2}")
    out["pooled_output"] = adm[:, :width]
    return out


def unclip_extras(model, extras: dict, seed: int | None) -> dict:
    """An entry's extras for `model` once its image prompts are resolved (SDXL: pooled output; other families
    ignore them, as ComfyUI does; SD2.1 unCLIP models resolve theirs in `UnclipModel.extra_conds`)."""
    if getattr(model, "family", None) == "sdxl":
        return sdxl_extras(extras, seed)
    return {k: v for k, v in extras.items() if k != "unclip_conditioning"}


__all__ = ["MAX_NOISE_LEVEL", "MERGE_LEVEL", "adm_vector", "augment", "check_unclip", "level_embedding", "sdxl_extras",
           "unclip_extras"]
