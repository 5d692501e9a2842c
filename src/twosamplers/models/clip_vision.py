"""CLIP vision encoders (ComfyUI's CLIPVisionLoader / CLIPVisionEncode) through transformers'
`CLIPVisionModelWithProjection`, for unCLIP checkpoints and SDXL Revision.

Files: ComfyUI's models/clip_vision/*.safetensors in transformers' layout (`vision_model.*`,
`visual_projection.weight`), or OpenCLIP's (`visual.*`, also inside SD2.1-unCLIP checkpoints under
`embedder.model.visual.*`), converted here. The architecture is read off the shapes; what shapes cannot tell
follows ComfyUI's configs: ViT-L/14 (24 layers, width 1024) uses quick-GELU, the others GELU; 16 heads from
width 1024 up (ViT-L, ViT-H, ViT-bigG), else one head per 64 channels.

Encoding, as ComfyUI's CLIPVisionEncode does it:
- the image (B, H, W, C) in [0, 1], alpha dropped, is resized so that its shorter side is 224 (the model's image
  size; the other side round(scale * side)) with antialiased bicubic interpolation and centre-cropped to a square
  (crop="center"), or squeezed to the square (crop="none"); then quantized to 8 bits (round(255 x) / 255) and
  normalised with CLIP's mean and standard deviation;
- outputs: `last_hidden_state` (the last layer, no final norm), `penultimate_hidden_states` (the layer before),
  `image_embeds` (the class token through the final norm and the projection).
ComfyUI keeps these weights in float16 on the CPU and computes in float32: the weights are rounded to float16
here too (`round_weights`), so a float32 file gives ComfyUI's numbers.
"""

from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from .sd_loading import CheckpointError, read_state_dict

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
OPEN_CLIP_PREFIXES = ("visual.", "embedder.model.visual.")


class ClipVisionError(CheckpointError):
    """A file that is not a CLIP vision encoder we can load."""


@dataclass
class ClipVisionOutput:
    """CLIP_VISION_OUTPUT: what CLIPVisionEncode gives (items readable as attributes or by key, as in ComfyUI)."""

    last_hidden_state: torch.Tensor
    penultimate_hidden_states: torch.Tensor
    image_embeds: torch.Tensor
    image_sizes: list = field(default_factory=list)

    def __getitem__(self, key: str):
        return getattr(self, key)


def preprocess(image: torch.Tensor, size: int = 224, crop: bool = True, mean=CLIP_MEAN, std=CLIP_STD) -> torch.Tensor:
    """IMAGE (B, H, W, C) in [0, 1] -> normalised pixel values (B, 3, size, size) (see the module docstring)."""
    x = image[..., :3].movedim(-1, 1)
    h, w = x.shape[-2:]
    if (h, w) != (size, size):
        if crop:
            s = size / min(h, w)
            target = (round(s * h), round(s * w))
        else:
            target = (size, size)
        x = F.interpolate(x, size=target, mode="bicubic", antialias=True)
        top, left = (x.shape[-2] - size) // 2, (x.shape[-1] - size) // 2
        x = x[:, :, top:top + size, left:left + size]
    x = torch.clip(255.0 * x, 0, 255).round() / 255.0
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(3, 1, 1)
    sd = torch.tensor(std, dtype=x.dtype, device=x.device).view(3, 1, 1)
    return (x - m) / sd


class ClipVisionModel:
    """CLIP_VISION: a transformers CLIPVisionModelWithProjection and its preprocessing."""

    def __init__(self, model, source: str = "") -> None:
        self.model = model
        self.source = source
        self.image_size = int(model.config.image_size)

    def __repr__(self) -> str:
        c = self.model.config
        return (f"ClipVisionModel(width={c.hidden_size}, layers={c.num_hidden_layers}, "
                f"projection={c.projection_dim}, source={self.source!r})")

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def encode_image(self, image: torch.Tensor, crop: bool = True) -> ClipVisionOutput:
        if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[-1] not in (3, 4):
            raise ValueError(f"image must be an IMAGE tensor (B, H, W, 3), got "
                             f"{tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__}")
        pixels = preprocess(image.to(self.device, torch.float32), self.image_size, crop).float()
        dtype = next(self.model.parameters()).dtype
        out = self.model(pixel_values=pixels.to(dtype), output_hidden_states=True)
        return ClipVisionOutput(last_hidden_state=out.last_hidden_state.float().cpu(),
                                penultimate_hidden_states=out.hidden_states[-2].float().cpu(),
                                image_embeds=out.image_embeds.float().cpu(),
                                image_sizes=[tuple(pixels.shape[1:])] * pixels.shape[0])


# ------------------------------------------------------------------------------------------- loading
def from_open_clip(sd: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """OpenCLIP's visual tower (`prefix` + conv1, class_embedding, transformer.resblocks.N...) -> transformers."""
    p = prefix
    v = "vision_model."
    out = {v + "embeddings.class_embedding": sd[p + "class_embedding"],
           v + "embeddings.patch_embedding.weight": sd[p + "conv1.weight"],
           v + "embeddings.position_embedding.weight": sd[p + "positional_embedding"]}
    for a, b in (("ln_pre", "pre_layrnorm"), ("ln_post", "post_layernorm")):
        for t in ("weight", "bias"):
            out[f"{v}{b}.{t}"] = sd[f"{p}{a}.{t}"]
    if p + "proj" in sd:
        out["visual_projection.weight"] = sd[p + "proj"].t().contiguous()
    i = 0
    while f"{p}transformer.resblocks.{i}.ln_1.weight" in sd:
        src, dst = f"{p}transformer.resblocks.{i}.", f"{v}encoder.layers.{i}."
        for t in ("weight", "bias"):
            for name, chunk in zip(("q_proj", "k_proj", "v_proj"), sd[src + f"attn.in_proj_{t}"].chunk(3), strict=True):
                out[dst + f"self_attn.{name}.{t}"] = chunk.contiguous()
            for a, b in (("attn.out_proj", "self_attn.out_proj"), ("ln_1", "layer_norm1"), ("ln_2", "layer_norm2"),
                         ("mlp.c_fc", "mlp.fc1"), ("mlp.c_proj", "mlp.fc2")):
                out[dst + f"{b}.{t}"] = sd[src + f"{a}.{t}"]
        i += 1
    return out


def vision_state(sd: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """The transformers-layout vision tower of a file's state dict, or a clear error."""
    for p in OPEN_CLIP_PREFIXES:
        if p + "transformer.resblocks.0.attn.in_proj_weight" in sd:
            return from_open_clip(sd, p)
    if "vision_model.embeddings.patch_embedding.weight" in sd and "vision_model.embeddings.class_embedding" not in sd \
            and any(k.startswith("vision_model.head.") for k in sd):
        raise ClipVisionError(f"{source}: a SigLIP vision model (sigclip, what Flux Redux reads): out of scope, only "
                              "CLIP vision models (ViT-L/14, ViT-H/14, ViT-bigG/14) load here")
    if "vision_model.embeddings.patch_embedding.weight" in sd:
        return {k: v for k, v in sd.items() if k.startswith(("vision_model.", "visual_projection."))}
    hint = " (it looks like a whole checkpoint)" if any(k.startswith("model.diffusion_model.") for k in sd) else ""
    raise ClipVisionError(f"{source}: not a CLIP vision model (no vision_model.* or visual.* weights){hint}")


def infer_config(state: dict[str, torch.Tensor]):
    from transformers import CLIPVisionConfig

    patch = state["vision_model.embeddings.patch_embedding.weight"]
    width, channels, patch_size = int(patch.shape[0]), int(patch.shape[1]), int(patch.shape[2])
    positions = int(state["vision_model.embeddings.position_embedding.weight"].shape[0])
    grid = math.isqrt(positions - 1)
    if grid * grid != positions - 1:
        raise ClipVisionError(f"{positions} position embeddings is not a square grid plus the class token")
    layers = 0
    while f"vision_model.encoder.layers.{layers}.layer_norm1.weight" in state:
        layers += 1
    proj = state.get("visual_projection.weight")
    if proj is None:
        raise ClipVisionError("the CLIP vision model has no projection (visual_projection / proj)")
    return CLIPVisionConfig(
        hidden_size=width, intermediate_size=int(state["vision_model.encoder.layers.0.mlp.fc1.weight"].shape[0]),
        projection_dim=int(proj.shape[0]), num_hidden_layers=layers,
        num_attention_heads=16 if width >= 1024 else max(1, width // 64), num_channels=channels,
        image_size=grid * patch_size, patch_size=patch_size,
        hidden_act="quick_gelu" if (layers, width) == (24, 1024) else "gelu", layer_norm_eps=1e-5)


def round_weights(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Float weights rounded through float16, as ComfyUI stores CLIP vision weights on the CPU."""
    return {k: v.to(torch.float16).to(torch.float32) if v.is_floating_point() else v for k, v in state.items()}


def clip_vision_from_state(sd: dict[str, torch.Tensor], source: str = "CLIP vision", *, device=None,
                           dtype: torch.dtype = torch.float32) -> ClipVisionModel:
    from transformers import CLIPVisionModelWithProjection

    state = round_weights(vision_state(sd, source))
    try:
        config = infer_config(state)
    except KeyError as e:
        raise ClipVisionError(f"{source}: incomplete CLIP vision weights (missing {e})") from None
    with torch.device("meta"):
        model = CLIPVisionModelWithProjection(config)
    own = model.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("position_ids")]
    unexpected = [k for k in state if k not in own]
    bad = [k for k in state if k in own and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or bad:
        raise ClipVisionError(f"{source}: CLIP vision weights do not fit the inferred model ({len(missing)} missing, "
                              f"e.g. {missing[:2]}; {len(unexpected)} unexpected, e.g. {unexpected[:2]}; "
                              f"{len(bad)} of another shape, e.g. {bad[:2]})")
    model.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=False, assign=True)
    for mod in model.modules():  # the position-id buffers are not weights: rebuild them
        for name, buf in list(mod.named_buffers(recurse=False)):
            if buf.is_meta:
                persistent = name not in mod._non_persistent_buffers_set
                mod.register_buffer(name, torch.arange(buf.shape[-1]).expand(buf.shape).clone(), persistent=persistent)
    model = model.eval().requires_grad_(False).to(device or "cpu")
    return ClipVisionModel(model, source)


_CACHE: dict[tuple, ClipVisionModel] = {}
_LOCK = threading.Lock()


def load_clip_vision(path: str | os.PathLike, *, device=None, allow_pickle: bool = False) -> ClipVisionModel:
    """A CLIP vision file (models/clip_vision/), cached per file."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"CLIP vision model not found: {os.fspath(path)}")
    p = p.resolve()
    key = (str(p), p.stat().st_mtime_ns, str(device), allow_pickle)
    with _LOCK:
        if key in _CACHE:
            return _CACHE[key]
    model = clip_vision_from_state(read_state_dict(p, allow_pickle=allow_pickle), str(p), device=device)
    with _LOCK:
        return _CACHE.setdefault(key, model)


__all__ = ["CLIP_MEAN", "CLIP_STD", "ClipVisionError", "ClipVisionModel", "ClipVisionOutput", "clip_vision_from_state",
           "from_open_clip", "load_clip_vision", "preprocess", "round_weights"]
