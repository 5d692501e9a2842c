"""Flux and SD3 transformer checkpoints: family detection from the keys (ComfyUI's rules) and the key map from
the layouts people keep (Black Forest Labs' for Flux, Stability's MMDiT for SD3, as in ComfyUI's
`diffusion_models/` files and all-in-one checkpoints) to diffusers' FluxTransformer2DModel / SD3Transformer2DModel.

The map is a table, `KeyMap`: source key -> the diffusers parameters it becomes (a whole tensor, a block of rows
of a fused q/k/v(/mlp) projection, or the two halves of a modulation swapped). The same table converts the
weights at load time and places LoRA deltas (which ComfyUI computes on the source layout) on the diffusers
parameters (`models/flow_lora.py`). diffusers' own single-file converters assume the full-size widths, so they
cannot read the small test models; this table reads widths from the shapes.

Detection follows ComfyUI 0.30's model detection: Flux by `double_blocks.0.img_attn.norm.key_norm` and `img_in`;
dev vs schnell by the guidance embedding (`guidance_in`); SD3 by `joint_blocks.0.context_block.attn.qkv`; SD3.5
medium (MMDiT-X) by its second attention in the image blocks (`x_block.attn2`), SD3.5 large by the q/k RMS norms
without it, SD3 medium (3.0) by neither.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

DIFFUSION_PREFIXES = ("model.diffusion_model.", "diffusion_model.", "")
FLUX_HEAD_DIM = 128  # ComfyUI: num_heads = hidden / sum(axes_dim), axes (16, 56, 56)
FLUX_AXES = (16, 56, 56)
SD3_HEAD_DIM = 64  # ComfyUI: depth = hidden / 64 = num_heads


@dataclass(frozen=True)
class Piece:
    """Where (part of) a source tensor goes: the diffusers parameter `target`, rows [start, stop) of the source's
    first dimension (None: all), with the two halves of those rows exchanged when `swap` (shift/scale order)."""

    target: str
    rows: tuple[int, int] | None = None
    swap: bool = False

    def take(self, t: torch.Tensor) -> torch.Tensor:
        if self.rows is not None:
            t = t[self.rows[0]:self.rows[1]]
        if self.swap:
            a, b = t.chunk(2, dim=0)
            t = torch.cat([b, a], dim=0)
        return t


KeyMap = dict[str, list[Piece]]


def _linear(km: KeyMap, src: str, dst: str, bias: bool = True) -> None:
    km[src + ".weight"] = [Piece(dst + ".weight")]
    if bias:
        km[src + ".bias"] = [Piece(dst + ".bias")]


def _split(km: KeyMap, src: str, dsts: list[str], sizes: list[int], bias: bool = True) -> None:
    """A fused projection (rows = the concatenation of `dsts`, `sizes` rows each)."""
    for suffix in (".weight", ".bias") if bias else (".weight",):
        pieces, start = [], 0
        for d, n in zip(dsts, sizes, strict=True):
            pieces.append(Piece(d + suffix, (start, start + n)))
            start += n
        km[src + suffix] = pieces


def _count(keys, prefix: str) -> int:
    pat = re.compile(re.escape(prefix) + r"(\d+)\.")
    found = {int(m.group(1)) for k in keys if (m := pat.match(k))}
    return max(found) + 1 if found else 0


def diffusion_prefix(keys) -> str | None:
    """The prefix under which a checkpoint keeps a Flux or SD3 transformer, or None when it has neither."""
    keys = set(keys)
    for p in DIFFUSION_PREFIXES:
        if flow_family_at(keys, p) is not None:
            return p
    return None


def flow_family_at(keys, prefix: str) -> str | None:
    """"flux" or "sd3" when a transformer of that family sits under `prefix`, else None (ComfyUI's rules)."""
    keys = keys if isinstance(keys, (set, frozenset, dict)) else set(keys)
    if f"{prefix}joint_blocks.0.context_block.attn.qkv.weight" in keys:
        return "sd3"
    if ((f"{prefix}double_blocks.0.img_attn.norm.key_norm.scale" in keys
         or f"{prefix}double_blocks.0.img_attn.norm.key_norm.weight" in keys)
            and f"{prefix}img_in.weight" in keys):
        return "flux"
    return None


def strip(sd: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The tensors under `prefix`, prefix removed; Flux's RMS norm weights named `.scale` either way."""
    out = {}
    n = len(prefix)
    for k, v in sd.items():
        if k.startswith(prefix):
            k = k[n:]
            if k.endswith("_norm.weight"):
                k = k[: -len("weight")] + "scale"
            out[k] = v
    return out


# ------------------------------------------------------------------------------------------------ Flux
def flux_config(sd: dict[str, torch.Tensor]) -> dict:
    """FluxTransformer2DModel's config from a (prefix-stripped) BFL-layout state dict, plus `variant`
    ("dev": has the guidance embedding, "schnell": has not)."""
    hidden, in_feat = sd["img_in.weight"].shape
    if hidden % FLUX_HEAD_DIM:
        raise ValueError(f"a Flux transformer of width {hidden} is not a multiple of {FLUX_HEAD_DIM} (the head "
                         "width ComfyUI assumes); not a Flux.1 checkpoint")
    mlp = sd["double_blocks.0.img_mlp.0.weight"].shape[0]
    if "vector_in.in_layer.weight" not in sd:
        raise ValueError("no vector_in (pooled text embedding) weights: Chroma-style models are not Flux.1")
    cfg = {
        "patch_size": 1,
        "in_channels": int(in_feat),
        "out_channels": int(sd["final_layer.linear.weight"].shape[0]),
        "num_layers": _count(sd, "double_blocks."),
        "num_single_layers": _count(sd, "single_blocks."),
        "attention_head_dim": FLUX_HEAD_DIM,
        "num_attention_heads": int(hidden // FLUX_HEAD_DIM),
        "joint_attention_dim": int(sd["txt_in.weight"].shape[1]),
        "pooled_projection_dim": int(sd["vector_in.in_layer.weight"].shape[1]),
        "guidance_embeds": "guidance_in.in_layer.weight" in sd,
        "axes_dims_rope": FLUX_AXES,
    }
    if mlp != 4 * hidden:
        raise ValueError(f"Flux MLP width {mlp} is not 4 x {hidden} (ComfyUI's Flux.1 ratio)")
    if any(k.startswith("double_blocks.0.img_mlp.gate_proj") or k.startswith("txt_norm") for k in sd):
        raise ValueError("a Flux-derived model with another block layout (Ovis, ...) is not Flux.1")
    return cfg


def flux_keymap(cfg: dict) -> KeyMap:
    """BFL key -> diffusers FluxTransformer2DModel parameters."""
    h = cfg["num_attention_heads"] * cfg["attention_head_dim"]
    mlp = 4 * h
    km: KeyMap = {}
    _linear(km, "img_in", "x_embedder")
    _linear(km, "txt_in", "context_embedder")
    for src, dst in (("time_in", "timestep_embedder"), ("vector_in", "text_embedder"),
                     ("guidance_in", "guidance_embedder")):
        if dst == "guidance_embedder" and not cfg["guidance_embeds"]:
            continue
        _linear(km, f"{src}.in_layer", f"time_text_embed.{dst}.linear_1")
        _linear(km, f"{src}.out_layer", f"time_text_embed.{dst}.linear_2")
    for i in range(cfg["num_layers"]):
        s, d = f"double_blocks.{i}.", f"transformer_blocks.{i}."
        _linear(km, s + "img_mod.lin", d + "norm1.linear")
        _linear(km, s + "txt_mod.lin", d + "norm1_context.linear")
        _split(km, s + "img_attn.qkv", [d + "attn.to_q", d + "attn.to_k", d + "attn.to_v"], [h, h, h])
        _split(km, s + "txt_attn.qkv", [d + "attn.add_q_proj", d + "attn.add_k_proj", d + "attn.add_v_proj"],
               [h, h, h])
        km[s + "img_attn.norm.query_norm.scale"] = [Piece(d + "attn.norm_q.weight")]
        km[s + "img_attn.norm.key_norm.scale"] = [Piece(d + "attn.norm_k.weight")]
        km[s + "txt_attn.norm.query_norm.scale"] = [Piece(d + "attn.norm_added_q.weight")]
        km[s + "txt_attn.norm.key_norm.scale"] = [Piece(d + "attn.norm_added_k.weight")]
        _linear(km, s + "img_attn.proj", d + "attn.to_out.0")
        _linear(km, s + "txt_attn.proj", d + "attn.to_add_out")
        _linear(km, s + "img_mlp.0", d + "ff.net.0.proj")
        _linear(km, s + "img_mlp.2", d + "ff.net.2")
        _linear(km, s + "txt_mlp.0", d + "ff_context.net.0.proj")
        _linear(km, s + "txt_mlp.2", d + "ff_context.net.2")
    for i in range(cfg["num_single_layers"]):
        s, d = f"single_blocks.{i}.", f"single_transformer_blocks.{i}."
        _split(km, s + "linear1", [d + "attn.to_q", d + "attn.to_k", d + "attn.to_v", d + "proj_mlp"],
               [h, h, h, mlp])
        _linear(km, s + "linear2", d + "proj_out")
        km[s + "norm.query_norm.scale"] = [Piece(d + "attn.norm_q.weight")]
        km[s + "norm.key_norm.scale"] = [Piece(d + "attn.norm_k.weight")]
        _linear(km, s + "modulation.lin", d + "norm.linear")
    _linear(km, "final_layer.linear", "proj_out")
    km["final_layer.adaLN_modulation.1.weight"] = [Piece("norm_out.linear.weight", swap=True)]
    km["final_layer.adaLN_modulation.1.bias"] = [Piece("norm_out.linear.bias", swap=True)]
    return km


# ------------------------------------------------------------------------------------------------ SD3
def sd3_config(sd: dict[str, torch.Tensor]) -> dict:
    """SD3Transformer2DModel's config from a (prefix-stripped) MMDiT state dict, plus `variant`: "sd3.5-large"
    (q/k RMS norms), "sd3.5-medium" (MMDiT-X: a second attention in some image blocks) or "sd3-medium"."""
    w = sd["x_embedder.proj.weight"]
    hidden, in_ch, patch = int(w.shape[0]), int(w.shape[1]), int(w.shape[2])
    depth = hidden // SD3_HEAD_DIM
    if hidden % SD3_HEAD_DIM:
        raise ValueError(f"an MMDiT of width {hidden} is not a multiple of {SD3_HEAD_DIM}; not an SD3 checkpoint")
    layers = _count(sd, "joint_blocks.")
    if "pos_embed" not in sd:
        raise ValueError("no pos_embed: this MMDiT layout is not SD3's")
    num_patches = int(sd["pos_embed"].shape[1])
    max_size = round(num_patches ** 0.5)
    attn2 = tuple(sorted(i for i in range(layers) if f"joint_blocks.{i}.x_block.attn2.qkv.weight" in sd))
    qk_norm = "joint_blocks.0.context_block.attn.ln_q.weight" in sd
    if "y_embedder.mlp.0.weight" not in sd or "context_embedder.weight" not in sd:
        raise ValueError("no y_embedder / context_embedder: not an SD3 text-to-image MMDiT")
    cfg = {
        "sample_size": 128,
        "patch_size": patch,
        "in_channels": in_ch,
        "num_layers": layers,
        "attention_head_dim": SD3_HEAD_DIM,
        "num_attention_heads": depth,
        "joint_attention_dim": int(sd["context_embedder.weight"].shape[1]),
        "caption_projection_dim": int(sd["context_embedder.weight"].shape[0]),
        "pooled_projection_dim": int(sd["y_embedder.mlp.0.weight"].shape[1]),
        "out_channels": int(sd["final_layer.linear.weight"].shape[0]) // (patch * patch),
        "pos_embed_max_size": max_size,
        "dual_attention_layers": attn2,
        "qk_norm": "rms_norm" if qk_norm else None,
    }
    if cfg["caption_projection_dim"] != hidden:
        raise ValueError(f"context_embedder width {cfg['caption_projection_dim']} differs from the transformer's "
                         f"{hidden}; not an SD3 MMDiT")
    if any(k.startswith("context_processor.") for k in sd):
        raise ValueError("an MMDiT with a context processor is not SD3")
    return cfg


def sd3_variant(cfg: dict) -> str:
    if cfg["dual_attention_layers"]:
        return "sd3.5-medium"
    if cfg["qk_norm"]:
        return "sd3.5-large"
    return "sd3-medium"


def flux_variant(cfg: dict) -> str:
    return "flux-dev" if cfg["guidance_embeds"] else "flux-schnell"


def _attn(km: KeyMap, src: str, dst: str, h: int, qk_norm: bool, names: tuple[str, str, str], out: str | None,
          norms: tuple[str, str]) -> None:
    _split(km, src + "qkv", [dst + n for n in names], [h, h, h])
    if out is not None:
        _linear(km, src + "proj", dst + out)
    if qk_norm:
        km[src + "ln_q.weight"] = [Piece(dst + norms[0] + ".weight")]
        km[src + "ln_k.weight"] = [Piece(dst + norms[1] + ".weight")]


def sd3_keymap(cfg: dict) -> KeyMap:
    """MMDiT key -> diffusers SD3Transformer2DModel parameters."""
    h = cfg["num_attention_heads"] * cfg["attention_head_dim"]
    qk = cfg["qk_norm"] is not None
    km: KeyMap = {}
    km["pos_embed"] = [Piece("pos_embed.pos_embed")]
    _linear(km, "x_embedder.proj", "pos_embed.proj")
    _linear(km, "t_embedder.mlp.0", "time_text_embed.timestep_embedder.linear_1")
    _linear(km, "t_embedder.mlp.2", "time_text_embed.timestep_embedder.linear_2")
    _linear(km, "y_embedder.mlp.0", "time_text_embed.text_embedder.linear_1")
    _linear(km, "y_embedder.mlp.2", "time_text_embed.text_embedder.linear_2")
    _linear(km, "context_embedder", "context_embedder")
    last = cfg["num_layers"] - 1
    for i in range(cfg["num_layers"]):
        s, d = f"joint_blocks.{i}.", f"transformer_blocks.{i}."
        _attn(km, s + "x_block.attn.", d + "attn.", h, qk, ("to_q", "to_k", "to_v"), "to_out.0", ("norm_q", "norm_k"))
        _attn(km, s + "context_block.attn.", d + "attn.", h, qk, ("add_q_proj", "add_k_proj", "add_v_proj"),
              None if i == last else "to_add_out", ("norm_added_q", "norm_added_k"))
        if i in cfg["dual_attention_layers"]:
            _attn(km, s + "x_block.attn2.", d + "attn2.", h, qk, ("to_q", "to_k", "to_v"), "to_out.0",
                  ("norm_q", "norm_k"))
        _linear(km, s + "x_block.adaLN_modulation.1", d + "norm1.linear")
        if i == last:  # the last context block only modulates its input (AdaLayerNormContinuous: scale first)
            km[s + "context_block.adaLN_modulation.1.weight"] = [Piece(d + "norm1_context.linear.weight", swap=True)]
            km[s + "context_block.adaLN_modulation.1.bias"] = [Piece(d + "norm1_context.linear.bias", swap=True)]
        else:
            _linear(km, s + "context_block.adaLN_modulation.1", d + "norm1_context.linear")
            _linear(km, s + "context_block.mlp.fc1", d + "ff_context.net.0.proj")
            _linear(km, s + "context_block.mlp.fc2", d + "ff_context.net.2")
        _linear(km, s + "x_block.mlp.fc1", d + "ff.net.0.proj")
        _linear(km, s + "x_block.mlp.fc2", d + "ff.net.2")
    _linear(km, "final_layer.linear", "proj_out")
    km["final_layer.adaLN_modulation.1.weight"] = [Piece("norm_out.linear.weight", swap=True)]
    km["final_layer.adaLN_modulation.1.bias"] = [Piece("norm_out.linear.bias", swap=True)]
    return km


# ------------------------------------------------------------------------------------------------ converting
def convert(sd: dict[str, torch.Tensor], km: KeyMap, what: str) -> dict[str, torch.Tensor]:
    """A (prefix-stripped) source state dict -> diffusers state dict by `km`; every source key must be mapped
    and every mapped key present (a clear error naming a few otherwise)."""
    missing = [k for k in km if k not in sd]
    unknown = [k for k in sd if k not in km]
    if missing or unknown:
        raise ValueError(f"{what}: the weights do not match the detected layout: {len(missing)} missing "
                         f"(e.g. {missing[:3]}), {len(unknown)} unexpected (e.g. {unknown[:3]})")
    out: dict[str, torch.Tensor] = {}
    for k, pieces in km.items():
        t = sd[k]
        for p in pieces:
            out[p.target] = p.take(t)
    return out
