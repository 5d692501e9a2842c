"""Which LoRA key names address which weight of a loaded Stable Diffusion model.

The table is derived from the model itself, never written per model:
- UNet: every parameter of the diffusers `UNet2DConditionModel`, under its diffusers name (kohya's
  `lora_unet_down_blocks_0_...`, diffusers/PEFT's `unet.down_blocks.0...`) and under its original LDM name
  (kohya-SDXL / A1111 `lora_unet_input_blocks_4_1_...`, ComfyUI's `diffusion_model.input_blocks.4.1...`). The
  LDM names come from the UNet's config by the block arithmetic of the LDM layout, and every one of them is
  checked by sending it through diffusers' own LDM -> diffusers conversion (the one the single-file loader
  uses): a name is only accepted when that conversion brings it back to the same parameter.
- Text encoders: every parameter of each transformers CLIP model, under kohya's `lora_te_` (SD1.x/2.x) or
  `lora_te1_` / `lora_te2_` (SDXL) names, diffusers' `text_encoder.` / `text_encoder_2.` names and ComfyUI's
  `text_encoders.clip_l.transformer.` (clip_h for SD2.x, clip_g for SDXL's second) names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

UNET_PART = "unet"


@dataclass(frozen=True)
class Target:
    """One weight of the model: `part` is "unet" or "clip<i>" (the i-th text encoder), `param` its name
    in that module's state dict (without the `.weight` suffix).

    A LoRA addressing a fused weight of another layout (Flux's qkv, which diffusers splits into to_q/to_k/to_v)
    reaches a parameter through a piece: the patch is formed at `source_shape`, then rows [rows[0], rows[1]) are
    taken, their two halves exchanged when `swap` (models/flow_keys.Piece)."""

    part: str
    param: str
    rows: tuple[int, int] | None = None
    swap: bool = False
    source_shape: tuple[int, ...] | None = None

    @property
    def is_piece(self) -> bool:
        return self.source_shape is not None

    def take(self, t):
        """This piece of a patch formed at `source_shape`."""
        if self.rows is not None:
            t = t[self.rows[0]:self.rows[1]]
        if self.swap:
            a, b = t.chunk(2, dim=0)
            t = torch.cat([b, a], dim=0)
        return t

    @property
    def is_clip(self) -> bool:
        return self.part != UNET_PART


# ------------------------------------------------------------------------------------------- UNet
_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1", "norm2": "out_layers.0",
           "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}


def _resnet(rest: str) -> str:
    for a, b in _RESNET.items():
        if rest.startswith(a + "."):
            return b + rest[len(a):]
    return rest


def _ldm_name(key: str, lpb: int, up_types: list[str]) -> str | None:
    """The LDM (original Stable Diffusion) name of a diffusers UNet parameter, from the layout arithmetic:
    level i of the down path holds input_blocks (lpb+1)*i+1 ... with its downsampler last; the up path
    mirrors it with lpb+1 blocks per level; resnet sub-layers have their own LDM names."""
    p = key.split(".")
    if p[0] in ("time_embedding", "add_embedding"):
        base = "time_embed" if p[0] == "time_embedding" else "label_emb.0"
        n = {"linear_1": "0", "linear_2": "2"}.get(p[1])
        return None if n is None else f"{base}.{n}." + ".".join(p[2:])
    if p[0] == "conv_in":
        return "input_blocks.0.0." + ".".join(p[1:])
    if p[0] == "conv_norm_out":
        return "out.0." + ".".join(p[1:])
    if p[0] == "conv_out":
        return "out.2." + ".".join(p[1:])
    if p[0] in ("down_blocks", "up_blocks") and len(p) > 4:
        i, kind, j, rest = int(p[1]), p[2], int(p[3]), ".".join(p[4:])
        if p[0] == "down_blocks":
            if kind == "resnets":
                return f"input_blocks.{(lpb + 1) * i + j + 1}.0." + _resnet(rest)
            if kind == "attentions":
                return f"input_blocks.{(lpb + 1) * i + j + 1}.1." + rest
            return f"input_blocks.{(lpb + 1) * (i + 1)}.0.op." + ".".join(p[5:])
        if kind == "resnets":
            return f"output_blocks.{(lpb + 1) * i + j}.0." + _resnet(rest)
        if kind == "attentions":
            return f"output_blocks.{(lpb + 1) * i + j}.1." + rest
        slot = 2 if "CrossAttn" in up_types[i] else 1
        return f"output_blocks.{(lpb + 1) * i + lpb}.{slot}.conv." + ".".join(p[5:])
    if p[0] == "mid_block" and len(p) > 3:
        kind, j, rest = p[1], int(p[2]), ".".join(p[3:])
        if kind == "resnets":
            return f"middle_block.{0 if j == 0 else 2}." + _resnet(rest)
        return "middle_block.1." + rest
    return None


def ldm_unet_names(unet) -> dict[str, str]:
    """diffusers parameter name -> LDM name, for the parameters whose LDM name diffusers' own conversion maps
    back onto them (others are left out: they are then only addressable by their diffusers names)."""
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    cfg = dict(unet.config)
    names = list(unet.state_dict())
    lpb = cfg["layers_per_block"]
    lpb = lpb if isinstance(lpb, int) else lpb[0]
    guess = {k: _ldm_name(k, lpb, list(cfg["up_block_types"])) for k in names}
    guess = {k: v for k, v in guess.items() if v is not None}
    tagged = {"model.diffusion_model." + v: torch.tensor([float(i)]) for i, (k, v) in enumerate(guess.items())}
    order = list(guess)
    try:
        converted = convert_ldm_unet_checkpoint(tagged, cfg)
    except Exception:  # a layout the conversion does not know: fall back to diffusers names only
        return {}
    out = {}
    for new_key, t in converted.items():
        k = order[int(t.item())] if t.numel() == 1 else None
        if k == new_key:
            out[k] = guess[k]
    return out


# ------------------------------------------------------------------------------------------- aliases
def _strip_weight(name: str) -> str | None:
    return name[: -len(".weight")] if name.endswith(".weight") else None


def _clip_aliases(family: str, index: int, count: int) -> tuple[list[str], list[str]]:
    """(underscore prefixes, dotted prefixes) of one text encoder's LoRA names."""
    if family == "sdxl":
        kohya = [f"lora_te{index + 1}_"]
        comfy = ["clip_l", "clip_g"][index]
        diffusers = ["text_encoder.", "text_encoder_2."][index]
    else:
        kohya = ["lora_te_", "lora_te1_"]
        comfy = "clip_h" if family == "sd2" else "clip_l"
        diffusers = "text_encoder."
    dotted = [diffusers, f"text_encoders.{comfy}.transformer.", f"{comfy}.transformer."]
    if family == "sd1":
        dotted.append("cond_stage_model.transformer.")
    return kohya, dotted


def _canonical_clip_name(name: str) -> str:
    """transformers 4 names ("text_model.encoder...") whatever the installed version uses."""
    return name if name.startswith(("text_model.", "text_projection")) else "text_model." + name


def build_key_map(model) -> dict[str, Target]:
    """Every LoRA prefix this model answers to -> the weight it addresses (prefix = the LoRA key without its
    adapter suffix such as `.lora_up.weight`). Built once per model object and kept on it."""
    cached = getattr(model, "_lora_key_map", None)
    if cached is None:
        own = getattr(model, "make_lora_key_map", None)  # models of other layouts (Flux, SD3) bring their own
        cached = own() if callable(own) else _make_key_map(model)
        try:
            model._lora_key_map = cached
        except AttributeError:
            pass
    return cached


def _make_key_map(model) -> dict[str, Target]:
    keys: dict[str, Target] = {}
    unet = model.unet
    ldm = ldm_unet_names(unet)
    for name, _ in unet.named_parameters():
        base = _strip_weight(name)
        if base is None:
            continue
        t = Target(UNET_PART, base)
        keys["lora_unet_" + base.replace(".", "_")] = t
        keys["unet." + base] = t
        keys[base] = t
        lname = _strip_weight(ldm.get(name, ""))
        if lname:
            keys["lora_unet_" + lname.replace(".", "_")] = t
            keys["diffusion_model." + lname] = t
    encoders = list(model.text_encoders)
    for i, enc in enumerate(encoders):
        kohya, dotted = _clip_aliases(model.family, i, len(encoders))
        for name, _ in enc.model.named_parameters():
            base = _strip_weight(name)
            if base is None:
                continue
            t = Target(f"clip{i}", base)
            canon = _canonical_clip_name(base)
            for pre in kohya:
                keys.setdefault(pre + canon.replace(".", "_"), t)
            for pre in dotted:
                keys.setdefault(pre + canon, t)
                keys.setdefault(pre + base, t)
    return keys


_PROCESSOR = re.compile(r"\.processor\.(to_q|to_k|to_v|to_out)$")


def normalize_prefix(prefix: str) -> str:
    """diffusers' old attention-processor names (`attn1.processor.to_q_lora`) -> module names (`attn1.to_q`)."""
    m = _PROCESSOR.search(prefix)
    if m:
        mod = m.group(1)
        prefix = prefix[: m.start()] + "." + (mod + ".0" if mod == "to_out" else mod)
    return prefix
