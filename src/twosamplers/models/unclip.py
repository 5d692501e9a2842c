"""SD2.1 unCLIP checkpoints (ComfyUI's unCLIPCheckpointLoader): a Stable Diffusion 2.x model whose UNet takes the
image prompts' ADM vector (models/unclip_adm.py) through a class embedding, and the checkpoint's own CLIP vision
encoder."""

from __future__ import annotations

import threading

import torch

from .sd_loading import CheckpointError
from .unclip_adm import MERGE_LEVEL, adm_vector, check_unclip


class UnclipError(CheckpointError):
    """A checkpoint that is not an SD2.1 unCLIP model we can load."""


# ------------------------------------------------------------------------------------------- SD2.1 unCLIP
LABEL_EMB = "model.diffusion_model.label_emb.0.0.weight"


def is_unclip_checkpoint(sd: dict) -> bool:
    """SD2.1 unCLIP: a class-embedding UNet, an OpenCLIP text encoder and a CLIP vision tower."""
    return LABEL_EMB in sd and any(k.startswith("cond_stage_model.model.") for k in sd)


def _unclip_model_class():
    from .sd import SDModel

    class UnclipModel(SDModel):
        """An SD2.1 unCLIP checkpoint: SDModel whose UNet takes the image prompts' ADM vector
        through its class embedding, and the checkpoint's own CLIP vision encoder."""

        clip_vision = None

        @property
        def adm_channels(self) -> int:
            return int(self.unet.config.projection_class_embeddings_input_dim)

        def extra_conds(self, extras: dict, *, latent_image, denoise_mask, prompt_type: str = "",
                        seed: int | None = None) -> dict:
            unclip = extras.get("unclip_conditioning")
            rest = {k: v for k, v in extras.items() if k != "unclip_conditioning"}
            out = super().extra_conds(rest, latent_image=latent_image, denoise_mask=denoise_mask,
                                      prompt_type=prompt_type)
            if unclip:
                y = adm_vector(check_unclip(unclip, "conditioning"), (seed or 0) - 10, MERGE_LEVEL["unclip"])
            else:
                y = torch.zeros(1, self.adm_channels)
            if y.shape[1] != self.adm_channels:
                raise ValueError(f"this unCLIP model takes {self.adm_channels // 2}-wide image embeddings; the "
                                 f"CLIP vision output has {y.shape[1] // 2} (use the checkpoint's own CLIP_VISION)")
            out["y"] = y
            return out

    return UnclipModel


_CACHE: dict[tuple, tuple] = {}
_CACHE_LOCK = threading.Lock()


def load_unclip(path, *, device=None, dtype=None, allow_pickle: bool = False):
    """An SD2.1 unCLIP single-file checkpoint -> (UnclipModel, its ClipVisionModel), loaded once per process."""
    from pathlib import Path

    from .devices import resolve_device_dtype

    p = Path(path).expanduser().resolve()
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    dev, dt = resolve_device_dtype(device, dtype)
    key = (str(p), p.stat().st_mtime_ns, str(dev), str(dt), bool(allow_pickle))
    with _CACHE_LOCK:
        if key in _CACHE:
            return _CACHE[key]
    pair = _load_unclip(p, dev, dt, allow_pickle)
    with _CACHE_LOCK:
        return _CACHE.setdefault(key, pair)


def _load_unclip(p, dev, dt, allow_pickle: bool):
    from .clip_vision import clip_vision_from_state
    from .devices import _vae_dtype
    from .sd_loading import (
        SD2_CLIP,
        build_open_clip,
        build_unet,
        build_vae,
        guess_prediction,
        infer_unet_config,
        read_state_dict,
    )
    from .sd_text import ClipTextEncoder, TokenizerSpec, clip_tokenizer

    sd = read_state_dict(p, allow_pickle=allow_pickle)
    if not is_unclip_checkpoint(sd):
        raise UnclipError(f"{p}: not an SD2.1 unCLIP checkpoint (no class-embedding UNet with an OpenCLIP text "
                          "encoder)")
    config = infer_unet_config(sd, "sd2")
    config.update(class_embed_type="projection", projection_class_embeddings_input_dim=int(sd[LABEL_EMB].shape[1]))
    unet = build_unet(sd, "sd2", dt, config).to(dev)
    vae_dt = _vae_dtype(dev, dt)
    vae = build_vae(sd, "sd2", vae_dt).to(dev)
    te = build_open_clip(sd, SD2_CLIP, dt, with_projection=False).to(dev)
    encoders = [ClipTextEncoder(te, TokenizerSpec(clip_tokenizer(), 0), layer_idx=-2, layer_norm_hidden_state=True,
                                embedding_key="clip_h")]
    vision = clip_vision_from_state(sd, f"{p} (its CLIP vision encoder)", device=dev)
    # eps or v as ComfyUI decides for SD2.x (released unCLIP checkpoints come out v)
    prediction, _how = guess_prediction(sd, "sd2")
    model = _unclip_model_class()(unet, vae, encoders, "sd2", prediction=prediction, vae_dtype=vae_dt, source=str(p))
    model.clip_vision = vision
    return model, vision


__all__ = ["UnclipError", "is_unclip_checkpoint", "load_unclip"]
