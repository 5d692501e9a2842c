"""GLIGEN text boxes (ComfyUI's GLIGENLoader / GLIGENTextBoxApply) on a Stable Diffusion 1.x UNet, through
diffusers' own GLIGEN layers (`GatedSelfAttentionDense`, `GLIGENTextBoundingboxProjection`).

A GLIGEN file (gligen_sd14_textbox_pruned.safetensors) holds one gated self-attention layer ("fuser") per UNet
transformer block (`<LDM block>.transformer_blocks.0.fuser.*`) and a position network (`position_net.*`).
What ComfyUI does, and so what this module does:
- GLIGENTextBoxApply appends (the phrase's pooled text embedding, height // 8, width // 8, y // 8, x // 8) to each
  entry's box list (sizes in latent pixels).
- At each model call, the boxes become (x1, y1, x2, y2) = (x / w, y / h, (x + width) / w, (y + height) / h) of the
  latent's size, padded to 30 objects with zero boxes and embeddings and a 0/1 mask; the position network turns
  them into object tokens (Fourier features of the box, 8 frequencies, and the embedding, masked slots replaced by
  learnt null features, through a 3-layer MLP).
- In every transformer block, after self-attention, x <- x + tanh(alpha_attn) * attn(norm1([x, linear(objs)]))[:N]
  then x <- x + tanh(alpha_dense) * ff(norm2(x)). Heads: 8 when the text width is 768 (SD1.x), else 64 channels
  per head.
- The uncond gets the positive's boxes when it has none (conditioning.share_with_uncond).
The layers are attached to the shared UNet only for the duration of a call that has boxes.
"""

from __future__ import annotations

import os
import re
import threading
from contextlib import contextmanager
from pathlib import Path

import torch

from .sd_loading import CheckpointError, read_state_dict

MAX_OBJECTS = 30
_FUSER = re.compile(r"(?:.*?)((?:input_blocks\.\d+\.\d+|middle_block\.\d+|output_blocks\.\d+\.\d+)"
                    r"\.transformer_blocks\.\d+)\.fuser\.(.+)$")


class GligenError(CheckpointError):
    """A GLIGEN file that cannot be used with this model."""


class GligenModel:
    """GLIGEN: gated self-attention layers by LDM transformer-block name, and the position network."""

    def __init__(self, fusers: dict[str, torch.nn.Module], position_net: torch.nn.Module, key_dim: int,
                 source: str) -> None:
        self.fusers = fusers
        self.position_net = position_net
        self.key_dim = key_dim
        self.source = source
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"GligenModel({len(self.fusers)} layers, text width {self.key_dim}, source={self.source!r})"


def load_gligen(path: str | os.PathLike, *, allow_pickle: bool = False) -> GligenModel:
    from diffusers.models.attention import GatedSelfAttentionDense
    from diffusers.models.embeddings import GLIGENTextBoundingboxProjection

    p = Path(path)
    sd = read_state_dict(p, allow_pickle=allow_pickle)
    groups: dict[str, dict[str, torch.Tensor]] = {}
    for k, v in sd.items():
        m = _FUSER.match(k)
        if m:
            groups.setdefault(m.group(1), {})[m.group(2)] = v
    pos = {k.split("position_net.", 1)[1]: v for k, v in sd.items() if "position_net." in k}
    if not groups or "null_positive_feature" not in pos:
        raise GligenError(f"{p}: not a GLIGEN text-box model (no *.fuser.* layers and position_net.*)")
    fusers = {}
    key_dim = 768
    for block, state in groups.items():
        if "linear.weight" not in state:
            raise GligenError(f"{p}: the layer of {block} has no linear projection")
        query_dim, key_dim = (int(s) for s in state["linear.weight"].shape)
        # ComfyUI's rule (one head below 64 channels: only tiny test models have those)
        heads, d_head = (8, query_dim // 8) if key_dim == 768 else (max(1, query_dim // 64), min(64, query_dim))
        layer = GatedSelfAttentionDense(query_dim, key_dim, heads, d_head)
        _load(layer, state, f"{p}: {block}")
        fusers[block] = layer.eval().requires_grad_(False)
    net = GLIGENTextBoundingboxProjection(int(pos["null_positive_feature"].shape[0]),
                                          int(pos["linears.4.weight"].shape[0]))
    _load(net, pos, f"{p}: position_net")
    return GligenModel(fusers, net.eval().requires_grad_(False), key_dim, str(p))


def _load(module: torch.nn.Module, state: dict, where: str) -> None:
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    bad = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or bad:
        raise GligenError(f"{where}: weights do not fit ({len(missing)} missing, e.g. {missing[:2]}; "
                          f"{len(bad)} of another shape, e.g. {bad[:2]})")
    module.load_state_dict({k: state[k].float() for k in own}, strict=True)


def box_inputs(boxes: list, batch: int, height: int, width: int, key_dim: int) -> dict[str, torch.Tensor]:
    """The position network's inputs for a call on a (batch, C, height, width) latent (see the docstring)."""
    if len(boxes) > MAX_OBJECTS:
        raise ValueError(f"GLIGEN takes at most {MAX_OBJECTS} text boxes, got {len(boxes)}")
    coords = torch.zeros(MAX_OBJECTS, 4)
    masks = torch.zeros(MAX_OBJECTS)
    embeds = torch.zeros(MAX_OBJECTS, key_dim)
    for i, (embed, h, w, y, x) in enumerate(boxes):
        coords[i] = torch.tensor((x / width, y / height, (x + w) / width, (y + h) / height))
        masks[i] = 1.0
        embeds[i] = embed.reshape(-1).float()
    return {"boxes": coords.unsqueeze(0).repeat(batch, 1, 1), "masks": masks.unsqueeze(0).repeat(batch, 1),
            "positive_embeddings": embeds.unsqueeze(0).repeat(batch, 1, 1)}


def _blocks(unet) -> dict[str, torch.nn.Module]:
    """LDM transformer-block name -> the diffusers BasicTransformerBlock."""
    from .merge import ldm_names_of

    names = ldm_names_of(unet)
    modules = dict(unet.named_modules())
    out = {}
    for dname, lname in names.items():
        if dname.endswith(".attn1.to_q.weight"):
            out[lname[: -len(".attn1.to_q.weight")]] = modules[dname[: -len(".attn1.to_q.weight")]]
    return out


@contextmanager
def installed(unet, gligen: GligenModel):
    """gligen's layers attached to `unet`'s transformer blocks (and its position network to the UNet)."""
    blocks = _blocks(unet)
    unknown = sorted(set(gligen.fusers) - set(blocks))
    lacking = sorted(set(blocks) - set(gligen.fusers))
    if unknown or lacking:
        raise GligenError(f"{gligen.source}: its layers do not match this UNet's transformer blocks (layers for "
                          f"blocks it does not have: {unknown[:2]}; blocks without a layer: {lacking[:2]}); is the "
                          "GLIGEN model for another model family?")
    first = next(unet.parameters())
    with gligen._lock:
        attached = []
        try:
            for name, layer in gligen.fusers.items():
                block = blocks[name]
                attached.append((block, getattr(block, "fuser", None)))
                block.fuser = layer.to(device=first.device, dtype=first.dtype)
            prev_net = getattr(unet, "position_net", None)
            unet.position_net = gligen.position_net.to(device=first.device, dtype=first.dtype)
            yield
        finally:
            for block, prev in attached:
                if prev is None:
                    del block.fuser
                else:
                    block.fuser = prev
            if "position_net" in unet._modules:
                if prev_net is None:
                    del unet.position_net
                else:
                    unet.position_net = prev_net


def call_unet(unet, gligen_extra, x: torch.Tensor, kwargs: dict) -> torch.Tensor:
    """unet(x, **kwargs) with a conditioning entry's GLIGEN boxes ("position", GligenModel, [boxes])."""
    kind, gligen, boxes = gligen_extra
    if kind != "position" or not isinstance(gligen, GligenModel):
        raise ValueError(f"unsupported GLIGEN conditioning {kind!r} (text boxes from GLIGENTextBoxApply only)")
    first = next(unet.parameters())
    inputs = {k: v.to(device=first.device, dtype=first.dtype)
              for k, v in box_inputs(boxes, x.shape[0], x.shape[-2], x.shape[-1], gligen.key_dim).items()}
    with installed(unet, gligen):
        cak = dict(kwargs.pop("cross_attention_kwargs", None) or {}, gligen=inputs)
        return unet(x, cross_attention_kwargs=cak, **kwargs)


__all__ = ["GligenError", "GligenModel", "MAX_OBJECTS", "box_inputs", "call_unet", "installed", "load_gligen"]
